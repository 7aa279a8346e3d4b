"""The whole KITTI detector's cost (PillarVFE + backbone + anchor head): the published PointPillars
figures through ``hrnas cost``, the fixed parts against torch modules, options and mismatches."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hrnas.cli import main
from hrnas.space.spec import SpecError
from hrnas.space.zoo import get_spec
from hrnas.tasks.kitti.cost import AnchorHeadSpec, PillarVFESpec, bev_features, detector_cost

GRID = (496, 432)


def _cli_json(capsys, *args: str) -> dict:
    assert main(["cost", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# --- published figures --------------------------------------------------------------------------------


def test_cli_cost_of_pointpillars_reproduces_the_published_figures(capsys):
    out = _cli_json(capsys, "pointpillars_bev", "--input-size", "496", "432")
    groups = out["groups"]

    def near(value: float, published: float) -> bool:
        return abs(value / published - 1) <= 0.01

    assert near(out["macs"], 34.17e9) and near(out["params"], 4.834e6)
    assert near(groups["backbone"]["macs"], 32.69e9) and near(groups["backbone"]["params"], 4.806e6)
    assert near(groups["head"]["macs"], 1.48e9) and near(groups["head"]["params"], 27.7e3)
    assert groups["vfe"] == {"macs": 0, "params": 768}
    assert out["macs"] == sum(g["macs"] for g in groups.values())
    assert out["params"] == sum(g["params"] for g in groups.values())


@pytest.mark.parametrize("name", ["pointpillars_bev", "hrnas_kitti_supernet"])
def test_bev_features_of_either_backbone_at_the_full_grid(name):
    assert bev_features(get_spec(name), GRID) == (384, (248, 216))


def test_kitti_supernet_is_cheaper_than_pointpillars_and_reports_the_same_parts(capsys):
    pp = _cli_json(capsys, "pointpillars_bev", "--input-size", "496", "432")
    hr = _cli_json(capsys, "hrnas_kitti_supernet", "--input-size", "496", "432")
    assert set(hr["groups"]) == {"vfe", "backbone", "head"}
    assert hr["groups"]["head"] == pp["groups"]["head"] and hr["groups"]["vfe"] == pp["groups"]["vfe"]
    assert 0.6 * pp["groups"]["backbone"]["macs"] < hr["groups"]["backbone"]["macs"] < pp["groups"]["backbone"]["macs"]


# --- detector parts against torch modules ---------------------------------------------------------------


def test_anchor_head_and_vfe_costs_equal_their_modules():
    head = AnchorHeadSpec()
    assert head.conv_channels() == {"cls": 18, "box": 42, "dir": 12}
    convs = nn.ModuleList(nn.Conv2d(384, k, 1, bias=True) for k in head.conv_channels().values())
    x = torch.randn(1, 384, 6, 5)
    with FlopCounterMode(display=False) as counter:
        for conv in convs:
            conv(x)
    items = head.cost_items((6, 5))
    assert counter.get_total_flops() == 2 * sum(i.macs for i in items)
    assert sum(p.numel() for p in convs.parameters()) == sum(i.params for i in items) == 27_720

    vfe = PillarVFESpec()
    linear, norm = nn.Linear(10, 64, bias=False), nn.BatchNorm1d(64, eps=1e-3, momentum=0.01)
    points = torch.randn(7, 32, 10)  # (pillars, slots, features)
    with FlopCounterMode(display=False) as counter:
        norm(linear(points).permute(0, 2, 1))
    assert counter.get_total_flops() == 2 * vfe.macs(7)
    assert sum(p.numel() for p in [*linear.parameters(), *norm.parameters()]) == vfe.params == 768


def test_detector_cost_options_and_mismatches():
    spec = get_spec("pointpillars_bev")
    base = detector_cost(spec, GRID)
    with_pillars = detector_cost(spec, GRID, num_pillars=16000)
    assert with_pillars.macs - base.macs == 16000 * 32 * 10 * 64
    assert with_pillars.params == base.params
    with pytest.raises(SpecError, match="anchor head in_channels: 256"):
        detector_cost(spec, GRID, head=AnchorHeadSpec(in_channels=256))
    with pytest.raises(SpecError, match="PillarVFE out_channels: 32"):
        detector_cost(spec, GRID, vfe=PillarVFESpec(out_channels=32))
    with pytest.raises(SpecError, match="not a detection head"):
        detector_cost(get_spec("test_seg"), (32, 32))


# --- the task's cost: what `hrnas cost` and `hrnas evaluate` report -------------------------------------


def test_the_kitti_task_claims_detection_specs_and_costs_the_whole_detector(capsys):
    from hrnas.space.cost import cost
    from hrnas.tasks.kitti.task import KittiTask

    assert KittiTask.claims_spec(get_spec("pointpillars_bev")) and KittiTask.claims_spec(
        get_spec("hrnas_kitti_supernet")
    )
    assert not KittiTask.claims_spec(get_spec("test_seg"))
    spec = get_spec("pointpillars_bev")
    mc = KittiTask.model_cost(spec, GRID, num_pillars=100)
    assert mc.whole == detector_cost(spec, GRID, num_pillars=100)
    assert mc.backbone == cost(spec, GRID)
    assert set(mc.parts) == {"vfe", "backbone", "head"}
    assert sum(p.macs for p in mc.parts.values()) == mc.whole.macs
    assert sum(p.params for p in mc.parts.values()) == mc.whole.params
    assert mc.parts["backbone"].macs == mc.backbone.macs and mc.parts["vfe"].macs == 100 * 32 * 10 * 64
    out = _cli_json(capsys, "pointpillars_bev", "--input-size", "496", "432", "--pillars", "100")
    assert (out["macs"], out["params"]) == (mc.whole.macs, mc.whole.params)
    assert out["backbone"] == {"macs": mc.backbone.macs, "params": mc.backbone.params}
