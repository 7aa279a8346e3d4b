"""The PointPillars detector network: shapes for both backbone kinds, the export form, and the search
machinery (units, penalty, shrink, optimizer remap) reaching an HRNet backbone inside the detector."""

from __future__ import annotations

import copy

import pytest
import torch

from hrnas.search.penalty import ResourcePenalty
from hrnas.search.shrink import BlockKeep, remap_optimizer, shrink
from hrnas.search.units import as_hrnet, search_blocks
from hrnas.space.deploy import deploy
from hrnas.space.network import HRNet
from hrnas.space.pointpillars import BEVBlockSpec, PointPillarsSpec
from hrnas.space.spec import SpecError
from hrnas.space.zoo import kitti_supernet_spec
from hrnas.tasks.kitti.anchors import AnchorConfig
from hrnas.tasks.kitti.detector import PillarNetExport, PointPillarsDetector, build_detector, pillar_point_features
from hrnas.tasks.kitti.pillars import PillarConfig, pillarize_batch

RANGE = (0.0, -5.12, -3.0, 10.24, 5.12, 1.0)
PILLARS = PillarConfig(point_cloud_range=RANGE, voxel_size=(0.32, 0.32, 4.0), max_pillars_train=300)
ANCHORS = AnchorConfig(point_cloud_range=RANGE)
GRID = (32, 32)  # (ny, nx)


def tiny_pointpillars() -> PointPillarsSpec:
    return PointPillarsSpec(
        blocks=(BEVBlockSpec(8, 2, 1, 16, 1), BEVBlockSpec(16, 2, 1, 16, 2)), in_channels=8, name="tiny_pp"
    )


def tiny_supernet():
    stages = ((1, (1,), (8,)), (2, (1, 1), (8, 16)))
    return kitti_supernet_spec(
        name="tiny_hr",
        stages=stages,
        stem=(8,),
        in_channels=8,
        num_outputs=24,
        last_channels=24,
        expand_ratio=1.0,
        head_expand_ratio=1.0,
        num_queries=4,
        token_grid=4,
    )


def random_clouds(seed: int, sizes: tuple[int, ...] = (400, 250)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lo, hi = torch.tensor(RANGE[:3]), torch.tensor(RANGE[3:])
    out = []
    for n in sizes:
        xyz = lo + torch.rand(n, 3, generator=g) * (hi - lo)
        out.append(torch.cat([xyz, torch.rand(n, 1, generator=g)], dim=1))
    return out


def run(model: PointPillarsDetector, clouds: list[torch.Tensor]):
    p = pillarize_batch(clouds, PILLARS, training=model.training)
    return model(p.voxels, p.num_points, p.coords, len(clouds))


@pytest.mark.parametrize("make_spec", [tiny_pointpillars, tiny_supernet])
def test_output_covers_every_anchor_and_every_parameter_learns(make_spec):
    torch.manual_seed(0)
    model = build_detector(make_spec(), PILLARS, ANCHORS)
    out = run(model, random_clouds(0))
    n = (GRID[0] // 2) * (GRID[1] // 2) * ANCHORS.num_anchors_per_location
    assert out.cls_logits.shape == (2, n, 3) and out.box_deltas.shape == (2, n, 7) and out.dir_logits.shape == (2, n, 2)
    (out.cls_logits.sum() + out.box_deltas.sum() + out.dir_logits.sum()).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    # the head keeps its reference prior; the backbone init does not touch it
    assert torch.allclose(model.head.conv_cls.bias, torch.full_like(model.head.conv_cls.bias, -4.59511985))
    assert set(k.split(".")[0] for k in model.state_dict()) == {"vfe", "backbone", "head"}


def test_hrnet_is_exposed_only_for_searchable_backbones():
    pp = build_detector(tiny_pointpillars(), PILLARS, ANCHORS)
    hr = build_detector(tiny_supernet(), PILLARS, ANCHORS)
    assert pp.hrnet is None and isinstance(hr.hrnet, HRNet)
    with pytest.raises(TypeError, match="expected an HRNet"):
        as_hrnet(pp)
    assert as_hrnet(hr) is hr.backbone


def test_grid_that_does_not_fit_the_backbone_is_an_error():
    odd = PillarConfig(point_cloud_range=(0.0, -4.8, -3.0, 10.24, 4.8, 1.0), voxel_size=(0.32, 0.32, 4.0))
    with pytest.raises(SpecError, match="divisible"):
        build_detector(tiny_pointpillars(), odd, ANCHORS)
    voxels = PillarConfig(point_cloud_range=RANGE, voxel_size=(0.32, 0.32, 2.0))
    with pytest.raises(ValueError, match="pillars"):
        build_detector(tiny_pointpillars(), voxels, ANCHORS)


@pytest.mark.parametrize("make_spec", [tiny_pointpillars, tiny_supernet])
def test_export_form_equals_the_detector_in_eval_mode(make_spec):
    torch.manual_seed(1)
    model = build_detector(make_spec(), PILLARS, ANCHORS)
    run(model.train(), random_clouds(1))  # non-trivial BN statistics
    model.eval()
    cloud = random_clouds(2, (500,))
    ref = run(model, cloud)
    p = pillarize_batch(cloud, PILLARS)
    features = pillar_point_features(p.voxels, p.num_points, p.coords, PILLARS)
    assert features.shape == (p.voxels.shape[0], PILLARS.max_points_per_pillar, 10)
    padded = torch.arange(PILLARS.max_points_per_pillar) >= p.num_points[:, None]
    assert features[padded].abs().max() == 0
    exported = PillarNetExport(deploy(model)).eval()
    with torch.no_grad():
        got = exported(features, p.coords)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_shrink_rebuilds_the_detector_around_the_shrunk_backbone():
    torch.manual_seed(3)
    spec = tiny_supernet()
    model = build_detector(spec, PILLARS, ANCHORS)
    run(model.train(), random_clouds(3))
    model.eval()
    keep = {}
    with torch.no_grad():
        for path, block in search_blocks(model, spec).items():
            dead = torch.arange(block.spec.total_hidden) % 2 == 1
            block.dw_bn.weight[dead] = 0.0
            q = None if block.transformer is None else torch.ones(block.spec.num_queries, dtype=torch.bool)
            keep[path] = BlockKeep(~dead, q)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    run(model.train(), random_clouds(4)).cls_logits.sum().backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():  # the step moved the weights: zero the dead γ again
        for path, block in search_blocks(model, spec).items():
            block.dw_bn.weight[~keep[path].channels] = 0.0
    before = copy.deepcopy(model)
    clouds = random_clouds(5)
    with torch.no_grad():
        ref = run(model, clouds)
    new_spec, new_model, maps = shrink(model, spec, keep)
    assert isinstance(new_model, PointPillarsDetector) and not new_model.training
    assert new_model.vfe is model.vfe and new_model.head is model.head  # shared, not copied
    assert new_model.backbone is not model.backbone and new_model.hrnet.spec == new_spec
    with torch.no_grad():
        got = run(new_model, clouds)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for name, tensor in before.state_dict().items():  # the old model is untouched
        torch.testing.assert_close(model.state_dict()[name], tensor)
    new_opt = remap_optimizer(optimizer, model, new_model, maps)
    params = {id(p) for g in new_opt.param_groups for p in g["params"]}
    assert params == {id(p) for p in new_model.parameters()}
    head_state = new_opt.state[new_model.head.conv_cls.weight]
    torch.testing.assert_close(head_state["exp_avg"], optimizer.state[model.head.conv_cls.weight]["exp_avg"])
    penalty = ResourcePenalty(new_model, new_spec, GRID)
    assert penalty(new_model) > 0
