"""A deterministic LiDAR + camera simulator that writes datasets in the official KITTI object layout
(:mod:`~hrnas.demos.lidar.simulator`; random street scenes in :mod:`~hrnas.demos.lidar.scene`, the ray
caster in :mod:`~hrnas.demos.lidar.raycast`). It generates data for demos and tests; the ``kitti`` task
reads what it writes like any real KITTI folder."""
