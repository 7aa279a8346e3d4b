"""Tasks: what is learnt, from which data, scored how (layer 4).

:mod:`hrnas.tasks.base` holds the :class:`~hrnas.tasks.base.Task` interface and the registry,
:mod:`hrnas.tasks.options` the config-section base class; every sub-package is one task
(``segmentation``, ``classification``, ``keypoints``, ``kitti``) and registers itself when the registry
first looks tasks up. A task package imports its own modules and the layers below; never another task.
"""
