"""Fixtures of the task tests: one tiny run config per task for the suite over every registered task, and
the data behind them.

Each registered task ``NAME`` has a fixture ``NAME_tiny_config`` (one training step of the task's preset on a
tiny data set with a tiny spec) and, when it predicts files, ``NAME_predict_inputs`` (the files to predict).

Segmentation and keypoints: a tiny set of demo scenes (Cityscapes layout and COCO keypoint annotations,
generated from the synthetic Fashion-MNIST of ``fashion_root``), read as ``cityscapes`` and
``coco_keypoints``. Classification: the synthetic Fashion-MNIST itself.

KITTI: a tiny simulated set (2 training + 1 validation frames) on a 64×64 pillar grid, with a tiny HR-NAS
supernet and a tiny PointPillars backbone as spec files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hrnas.demos.lidar import simulator as sim
from hrnas.demos.lidar.raycast import ScannerConfig
from hrnas.demos.scenes import generate_demo_scenes
from hrnas.engine.config import RunConfig, load_config
from hrnas.space.pointpillars import BEVBlockSpec, PointPillarsSpec
from hrnas.space.zoo import kitti_supernet_spec

KITTI_GRID = (
    "task.point_cloud_range=[0, -12.8, -3, 25.6, 12.8, 1]",
    "task.voxel_size=[0.4, 0.4, 4]",
    "data.crop_size=[64, 64]",
)
"""A 25.6 m × 25.6 m area in front of the car at 0.4 m pillars: a 64×64 pseudo-image."""


@pytest.fixture(scope="session")
def kitti_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two training frames and one validation frame (about 10 k points each), simulated once."""
    scanner = ScannerConfig(num_azimuth=512, horizontal_fov_deg=120.0)
    return sim.generate(
        tmp_path_factory.mktemp("kitti") / "sim", 2, 1, seed=3, scanner=scanner, image_scale=8, progress=False
    )


@pytest.fixture(scope="session")
def kitti_specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Spec files of a tiny PointPillars backbone (``pp``) and a tiny HR-NAS supernet (``hr``), both
    reading 16 pillar features and giving 32 BEV channels at stride 2."""
    folder = tmp_path_factory.mktemp("kitti-specs")
    pp = PointPillarsSpec(
        blocks=(BEVBlockSpec(16, 2, 1, 32, 1), BEVBlockSpec(32, 2, 1, 32, 2)), in_channels=16, name="tiny_pp"
    )
    hr = kitti_supernet_spec(
        name="tiny_hr",
        stages=((1, (1,), (8,)), (2, (1, 1), (8, 16)), (3, (1, 1, 1), (8, 16, 24))),
        stem=(8,),
        in_channels=16,
        num_outputs=32,
        last_channels=32,
        expand_ratio=1.0,
        head_expand_ratio=1.0,
        num_queries=4,
        token_grid=4,
    )
    out = {"pp": folder / "tiny_pp.json", "hr": folder / "tiny_hr.json"}
    pp.save(out["pp"])
    hr.save(out["hr"])
    return out


def _kitti_overrides(root: Path, spec: Path, *extra: str) -> list[str]:
    return [
        f"data.root={root}",
        f"model.spec={spec}",
        *KITTI_GRID,
        "data.batch_size=2",
        "data.eval_batch_size=2",
        "data.workers=0",
        "train.log_every=1",
        "train.eval_every=0",
        "train.bn_calib_batches=1",
        "train.checkpoint_every=0",
        "task.sample_groups=[4, 2, 2]",
        *extra,
    ]


@pytest.fixture(scope="session")
def kitti_overrides() -> Callable[..., list[str]]:
    """``(root, spec, *extra) -> list[str]``: the ``KEY=VALUE`` overrides of a tiny run of the ``kitti``
    preset on the dataset ``root`` with the backbone spec file ``spec``, then ``extra``."""
    return _kitti_overrides


@pytest.fixture
def kitti_tiny_config(kitti_root: Path, kitti_specs: dict[str, Path]) -> RunConfig:
    """The ``kitti`` preset on the tiny simulated set with the tiny PointPillars backbone, one training step.

    The fixed backbone keeps a step and the ONNX export near a second each (the tiny HR-NAS supernet takes
    about ten times longer; the KITTI tests search and retrain it). Prediction reads the frames of a split
    (``task.predict(model, [], out_dir)`` predicts the validation frame); export takes no input size (the
    pillar grid is the config's)."""
    return load_config("kitti", _kitti_overrides(kitti_root, kitti_specs["pp"], "train.steps=1"))


TINY_RUN = (
    "data.batch_size=2",
    "data.eval_batch_size=2",
    "data.workers=0",
    "train.steps=1",
    "train.log_every=1",
    "train.eval_every=0",
    "train.checkpoint_every=0",
    "train.bn_calib_batches=1",
    "train.device=cpu",
    "schedule.warmup_steps=0",
    "search.enabled=false",
)
"""One training step on the CPU, evaluated at the end, nothing searched."""


@pytest.fixture(scope="session")
def scenes_root(tmp_path_factory: pytest.TempPathFactory, fashion_root: Path) -> Path:
    """Four training and two validation demo scenes of 48×48 pixels (Cityscapes layout, COCO keypoints)."""
    root = tmp_path_factory.mktemp("scenes") / "demo"
    return generate_demo_scenes(
        root, num_train=4, num_val=2, size=48, seed=1, progress=False, fashion_root=fashion_root
    )


@pytest.fixture
def segmentation_tiny_config(scenes_root: Path) -> RunConfig:
    """The ``demo_seg`` preset on the tiny scenes read as Cityscapes, ``test_seg`` at 32×32."""
    return load_config(
        "demo_seg",
        [f"data.root={scenes_root}", "data.format=cityscapes", "model.spec=test_seg", "data.crop_size=[32, 32]",
         *TINY_RUN],
    )


def _val_scene(scenes_root: Path) -> list[str]:
    """The first validation scene's image: a file every image task can predict."""
    return [str(sorted((scenes_root / "leftImg8bit" / "val").rglob("*.png"))[0])]


@pytest.fixture
def segmentation_predict_inputs(scenes_root: Path) -> list[str]:
    return _val_scene(scenes_root)


@pytest.fixture
def keypoints_tiny_config(scenes_root: Path) -> RunConfig:
    """The ``demo_pose`` preset on the tiny scenes' COCO keypoint files, ``test_kpt`` at 32×24."""
    return load_config(
        "demo_pose",
        [f"data.root={scenes_root}", "data.format=coco_keypoints", "model.spec=test_kpt", "data.crop_size=[32, 24]",
         "task.ann_file=annotations/demo_keypoints_{split}.json", *TINY_RUN],
    )


@pytest.fixture
def keypoints_predict_inputs(scenes_root: Path) -> list[str]:
    return _val_scene(scenes_root)


@pytest.fixture
def classification_tiny_config(fashion_root: Path) -> RunConfig:
    """The ``demo_cls`` preset on the synthetic Fashion-MNIST (30 items per split), ``test_cls`` at 32×32."""
    return load_config(
        "demo_cls",
        [f"data.root={fashion_root}", "model.spec=test_cls", "data.crop_size=[32, 32]", *TINY_RUN],
    )


@pytest.fixture
def classification_predict_inputs(scenes_root: Path) -> list[str]:
    return _val_scene(scenes_root)
