"""Image classification (spec §2.7 classification head, §5 ImageNet recipe): everything about the task.

Importing the package registers the ``classification`` task
(:class:`~hrnas.tasks.classification.task.ClassificationTask`).

* configuration: :mod:`~hrnas.tasks.classification.options` (the ``task:`` section);
* data: :mod:`~hrnas.tasks.classification.datasets` (the ``imagefolder`` ImageNet layout and the
  ``fashion_mnist`` IDX files, the TF-style ImageNet transforms, top-k accuracy);
* training, evaluation and prediction: :mod:`~hrnas.tasks.classification.task`.
"""

from hrnas.tasks.classification.options import ClassificationOptions
from hrnas.tasks.classification.task import ClassificationTask

__all__ = ["ClassificationOptions", "ClassificationTask"]
