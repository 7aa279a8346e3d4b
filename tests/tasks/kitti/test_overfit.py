"""One-frame overfit of the KITTI detector: after a few hundred steps on one simulated frame, its
top-scored detections are the frame's ground-truth boxes (right class, BEV IoU >= 0.7 for cars and >= 0.5
for pedestrians and cyclists). The whole path runs: pillars, VFE, scatter, backbone, anchor head, target
assignment, loss, BN calibration, decoding and rotated NMS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hrnas.engine.bn_calibration import calibrate_bn
from hrnas.engine.config import load_config
from hrnas.space.pointpillars import BEVBlockSpec, PointPillarsSpec
from hrnas.space.zoo import kitti_supernet_spec
from hrnas.tasks.base import get_task
from hrnas.tasks.kitti.iou import bev_iou_lidar
from hrnas.tasks.kitti.task import KittiTask

# 35.84 m × 20.48 m in front of the car at 0.32 m pillars (64×112); no augmentation, so the frame is the
# same at every step but for the point order.
SETTINGS = [
    "task.point_cloud_range=[0, -10.24, -3, 35.84, 10.24, 1]",
    "task.voxel_size=[0.32, 0.32, 4]",
    "data.crop_size=[64, 112]",
    "task.gt_sampling=false",
    "task.flip=false",
    "task.rotation=0",
    "task.scaling_range=[1, 1]",
]
MIN_IOU = {1: 0.7, 2: 0.5, 3: 0.5}

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def root(kitti_root: Path) -> Path:
    """The tiny simulated set of tests/tasks/conftest.py (2 training frames, 1 validation frame)."""
    return kitti_root


def setup(root: Path, spec, tmp_path: Path) -> tuple[KittiTask, torch.nn.Module, dict]:
    spec.save(tmp_path / "spec.json")
    cfg = load_config("kitti", [f"data.root={root}", f"model.spec={tmp_path / 'spec.json'}", *SETTINGS])
    task = get_task(cfg)
    torch.manual_seed(0)
    model = task.build_model(task.build_spec(), init="default")
    sample = task.dataset("train", training=True).sample(0, np.random.default_rng(0))
    return task, model, task.collate([sample])


def fit(task: KittiTask, model: torch.nn.Module, batch: dict, steps: int, lr: float = 3e-3) -> list[float]:
    """The reference recipe on one batch: AdamW one-cycle, gradient clip 10; returns the losses."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.95, 0.99), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    losses = []
    model.train()
    for _ in range(steps):
        loss = task.loss(task.forward(model, batch), batch)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    return losses


def assert_recovers_every_box(task: KittiTask, model: torch.nn.Module, batch: dict) -> None:
    calibrate_bn(model, [batch] * 4, 4, forward=task.forward)
    det = task.detect(model.eval(), batch)[0]
    gt = batch["gt_boxes"][0]
    labels = gt[:, 7].long().numpy()
    k = len(labels)
    assert k >= 5 and set(labels.tolist()) == {1, 2, 3}  # cars, a pedestrian and a cyclist in range
    assert len(det.scores) >= k
    iou = bev_iou_lidar(gt[:, :7].double().numpy(), det.boxes[:k].double().numpy())  # (gt, top-k detections)
    best = iou.argmax(axis=1)
    assert sorted(best.tolist()) == list(range(k)), np.round(iou, 2)  # one top-k detection per box
    for g, d in enumerate(best):
        assert int(det.labels[d]) == labels[g], (g, int(det.labels[d]), labels[g])
        assert iou[g, d] >= MIN_IOU[int(labels[g])], (g, iou[g, d])


def tiny_pointpillars() -> PointPillarsSpec:
    return PointPillarsSpec(blocks=(BEVBlockSpec(16, 2, 2, 64, 1), BEVBlockSpec(32, 2, 2, 64, 2)), in_channels=16)


def test_one_frame_overfit_recovers_every_box(root, tmp_path):
    task, model, batch = setup(root, tiny_pointpillars(), tmp_path)
    losses = fit(task, model, batch, steps=200)
    assert losses[-1] < 0.01 * losses[0]
    assert_recovers_every_box(task, model, batch)


def test_loss_falls_within_thirty_steps(root, tmp_path):
    task, model, batch = setup(root, tiny_pointpillars(), tmp_path)
    losses = fit(task, model, batch, steps=30)
    assert np.mean(losses[-5:]) < 0.2 * losses[0]
    parts = task.last_loss
    assert parts is not None and float(parts.num_pos) > 0
    torch.testing.assert_close(parts.total, parts.cls + parts.loc + parts.dir)


@pytest.mark.slow
def test_one_frame_overfit_with_a_searchable_backbone(root, tmp_path):
    spec = kitti_supernet_spec(
        name="tiny_hr",
        stages=((1, (1,), (8,)), (2, (1, 1), (8, 16)), (3, (1, 1, 1), (8, 16, 24))),
        stem=(16,),
        in_channels=16,
        num_outputs=48,
        last_channels=48,
        expand_ratio=1.0,
        head_expand_ratio=1.0,
        num_queries=4,
        token_grid=4,
    )
    task, model, batch = setup(root, spec, tmp_path)
    fit(task, model, batch, steps=300)
    assert_recovers_every_box(task, model, batch)
