"""A search step that shrinks a task model built around the HRNet (the KITTI detector) gives back that task
model, rebuilt around the shrunk HRNet, and training goes on with it."""

from __future__ import annotations

import torch

from hrnas.search.controller import SearchController
from hrnas.space.network import block_modules
from hrnas.space.zoo import get_spec
from hrnas.tasks.kitti.anchors import KITTI_ANCHOR_CLASSES, AnchorConfig
from hrnas.tasks.kitti.detector import PointPillarsDetector, build_detector
from hrnas.tasks.kitti.pillars import PillarConfig, pillarize_batch
from hrnas.utils.ema import ModelEma

RANGE = (0.0, -5.12, -3.0, 10.24, 5.12, 1.0)  # 32×32 pillars of 0.32 m


def _batch(gen: torch.Generator, config: PillarConfig):
    clouds = []
    for _ in range(2):
        pts = torch.rand(400, 4, generator=gen)
        pts[:, 0] *= 10.24
        pts[:, 1] = pts[:, 1] * 10.24 - 5.12
        pts[:, 2] = pts[:, 2] * 3.0 - 2.5
        clouds.append(pts)
    p = pillarize_batch(clouds, config, training=True)
    return p.voxels, p.num_points, p.coords, 2


def test_mid_search_shrink_of_a_detector_returns_a_detector_that_trains_on():
    torch.manual_seed(0)
    spec = get_spec("hrnas_demo_kitti_supernet")
    pillars = PillarConfig(point_cloud_range=RANGE, voxel_size=(0.32, 0.32, 4.0))
    model = build_detector(spec, pillars, AnchorConfig(KITTI_ANCHOR_CLASSES, RANGE), init="default").train()
    ema = ModelEma(model, decay=0.5, warmup_cap=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ctl = SearchController(model, spec, optimizer, ema, (32, 32), threshold=1e-3, rho=1e-3, min_saving=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for net in (model, ema.module):
            block_modules(net.hrnet)["stages[1].parallel[1][0]"].dw_bn.weight.zero_()

    res = ctl.shrink_now(model, optimizer, ema, step=1)

    assert res.shrunk and isinstance(res.model, PointPillarsDetector) and res.model is not model
    assert isinstance(res.ema.module, PointPillarsDetector)
    assert res.model.vfe is model.vfe and res.model.head is model.head
    in_optimizer = {id(p) for g in res.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in in_optimizer for p in res.model.parameters())
    for _ in range(2):
        out = res.model(*_batch(gen, pillars))
        loss = out.cls_logits.square().mean() + out.box_deltas.square().mean() + ctl.penalty(res.model, 2)
        res.optimizer.zero_grad()
        loss.backward()
        res.optimizer.step()
        assert torch.isfinite(loss)
