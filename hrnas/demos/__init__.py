"""Demo commands and the synthetic data generators they use (the layer above the engine).

* :data:`DEMOS` maps each ``hrnas demo --task NAME`` to its runner, imported only when it runs:
  ``segmentation`` (:mod:`hrnas.demos.segmentation`, on the generated demo scenes) and ``kitti``
  (:mod:`hrnas.demos.kitti`, on simulated LiDAR frames). :mod:`hrnas.demos.common` holds what they share.
* Generators: :mod:`hrnas.demos.scenes` (the demo scenes: segmentation in the Cityscapes layout and COCO
  keypoints) and :mod:`hrnas.demos.lidar` (a simulated KITTI set). Importing this package registers the
  demo scenes as the data generator ``demo_scenes`` (:mod:`hrnas.data.generators`), which the tasks'
  ``demo`` data format asks for.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hrnas.data.generators import register_generator

__all__ = ["DEFAULT_DEMO", "DEMOS", "Demo", "demo_names", "ensure_demo_scenes"]


@dataclass(frozen=True)
class Demo:
    """One ``hrnas demo --task NAME``.

    Attributes:
        runner: ``"module:function"``; the function is called as
            ``function(out_dir, data_root, quick=..., overrides=...)`` (``data_root`` None = its default).
        help: one line for ``hrnas demo --help``.
        out: the default output folder.
        data: the default data folder (generated if missing), for the help.
    """

    runner: str
    help: str
    out: str
    data: str

    def run(self, out_dir: Path, data_root: Path | None, quick: bool, overrides: list[str]) -> Any:
        """Import the runner and run it; returns its report."""
        module, _, function = self.runner.partition(":")
        return getattr(importlib.import_module(module), function)(
            out_dir, data_root, quick=quick, overrides=overrides
        )


DEMOS: dict[str, Demo] = {
    "segmentation": Demo(
        "hrnas.demos.segmentation:run_demo",
        "search, retrain, evaluate and export on the generated demo scenes",
        "runs/demo",
        "data/demo",
    ),
    "kitti": Demo(
        "hrnas.demos.kitti:run_kitti_demo",
        "KITTI 3D detection on simulated LiDAR frames",
        "runs/demo_kitti",
        "data/kitti_sim_demo",
    ),
}
DEFAULT_DEMO = "segmentation"


def demo_names() -> list[str]:
    """The demos, the default first."""
    return [DEFAULT_DEMO, *sorted(n for n in DEMOS if n != DEFAULT_DEMO)]


def ensure_demo_scenes(root: str | os.PathLike[str], any_size: bool = False, **options: Any) -> Path:
    """The ``demo_scenes`` data generator: :func:`hrnas.demos.scenes.ensure_demo_scenes` (default size), or,
    with ``any_size``, a complete demo data set of any size already at ``root`` as it is."""
    from hrnas.demos import scenes

    if any_size and scenes.read_demo_meta(root) is not None:
        return Path(root)
    return scenes.ensure_demo_scenes(root, **options)


register_generator("demo_scenes", ensure_demo_scenes)
