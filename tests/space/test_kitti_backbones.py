"""The KITTI backbones: pointpillars_bev reproduces OpenPCDet's BaseBEVBackbone and the published costs;
hrnas_kitti_supernet maps the pseudo-image to the anchor grid; spec validation and JSON (the whole
detector's cost is tested with the kitti task, tests/tasks/kitti/test_cost.py)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hrnas.cli import main
from hrnas.space import build_model, cost
from hrnas.space.pointpillars import BEVBlockSpec, PointPillarsSpec
from hrnas.space.spec import DenseHeadSpec, NetSpec, SpecError
from hrnas.space.zoo import get_spec, load_spec_file, spec_from_dict

GRID = (496, 432)


pytestmark = pytest.mark.usefixtures("single_thread")


# --- published figures --------------------------------------------------------------------------------


def test_per_block_costs_match_the_reference_breakdown():
    by = cost(get_spec("pointpillars_bev"), GRID).by_group()
    expected_gmacs = {"blocks[0]": 7.9, "blocks[1]": 10.9, "blocks[2]": 10.9}
    expected_gmacs |= {"deblocks[0]": 0.44, "deblocks[1]": 0.88, "deblocks[2]": 1.76}
    for key, g in expected_gmacs.items():
        assert by[key][0] / 1e9 == pytest.approx(g, rel=0.01), key


@pytest.mark.parametrize("name", ["pointpillars_bev", "hrnas_kitti_supernet"])
def test_cost_equals_counter_at_the_full_grid(name):
    """At 496×432 itself, on the meta device: no memory, no arithmetic, exact counts."""
    spec = get_spec(name)
    with torch.device("meta"):
        model = build_model(spec, init="default").eval()
        x = torch.empty(1, 64, *GRID)
    with FlopCounterMode(display=False) as counter:
        out = model(x)
    c = cost(spec, GRID)
    assert counter.get_total_flops() == 2 * c.macs
    assert sum(p.numel() for p in model.parameters()) == c.params
    assert tuple(out.shape) == (1, 384, 248, 216)


# --- pointpillars_bev is OpenPCDet's BaseBEVBackbone ---------------------------------------------------


class _ReferenceBEVBackbone(nn.Module):
    """OpenPCDet BaseBEVBackbone as its source builds it: ZeroPad2d(1) + unpadded stride-s conv first."""

    def __init__(self) -> None:
        super().__init__()

        def bn(c: int) -> nn.BatchNorm2d:
            return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)

        self.blocks, self.deblocks = nn.ModuleList(), nn.ModuleList()
        cin = 64
        for n, c, up in ((3, 64, 1), (5, 128, 2), (5, 256, 4)):
            layers = [nn.ZeroPad2d(1), nn.Conv2d(cin, c, 3, 2, 0, bias=False), bn(c), nn.ReLU()]
            for _ in range(n):
                layers += [nn.Conv2d(c, c, 3, padding=1, bias=False), bn(c), nn.ReLU()]
            self.blocks.append(nn.Sequential(*layers))
            self.deblocks.append(nn.Sequential(nn.ConvTranspose2d(c, 128, up, up, bias=False), bn(128), nn.ReLU()))
            cin = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ups = []
        for block, deblock in zip(self.blocks, self.deblocks, strict=True):
            x = block(x)
            ups.append(deblock(x))
        return torch.cat(ups, dim=1)


def test_pointpillars_bev_computes_what_openpcdet_computes():
    torch.manual_seed(0)
    ours = build_model(get_spec("pointpillars_bev"), init="default")
    ref = _ReferenceBEVBackbone()
    ours_state, ref_state = ours.state_dict(), ref.state_dict()
    assert [v.shape for v in ours_state.values()] == [v.shape for v in ref_state.values()]
    gen = torch.Generator().manual_seed(1)
    randomised = {
        k: torch.rand(v.shape, generator=gen) + 0.5 if v.is_floating_point() else v for k, v in ours_state.items()
    }
    ours.load_state_dict(randomised)
    ref.load_state_dict(dict(zip(ref_state, randomised.values(), strict=True)))
    x = torch.randn(2, 64, 32, 24)
    for mode in (True, False):
        ours.train(mode), ref.train(mode)
        with torch.no_grad():
            a, b = ours(x), ref(x)
        assert a.shape == (2, 384, 16, 12)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    bns = [m for m in ours.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 4 + 6 + 6 + 3 and all(m.eps == 1e-3 and m.momentum == 0.01 for m in bns)


# --- PointPillarsSpec: JSON and validation ----------------------------------------------------------------


def test_pointpillars_json_round_trip_and_dispatch(tmp_path):
    spec = get_spec("pointpillars_bev")
    data = json.loads(spec.to_json())
    assert data["kind"] == "pointpillars" and len(data["blocks"]) == 3
    assert PointPillarsSpec.from_dict(data) == spec and spec_from_dict(data) == spec
    net = get_spec("hrnas_kitti_supernet")
    assert isinstance(spec_from_dict(net.to_dict()), NetSpec)
    path = tmp_path / "pp.json"
    spec.save(path)
    assert load_spec_file(path) == spec
    assert get_spec("pointpillars_bev", transformer=False) == spec


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["blocks"][1].update(up_stride=3), r"blocks\[1\]\.up_stride: 3 does not divide"),
        (lambda d: d["blocks"][2].update(up_stride=2), r"blocks\[2\]\.up_stride: 2 brings stride 8 to 4"),
        (lambda d: d["blocks"][0].update(num_layers=-1), r"blocks\[0\]\.num_layers: must be >= 0"),
        (lambda d: d["blocks"][0].update(filters=3), r"blocks\[0\]\.filters: unknown key"),
        (lambda d: d.update(blocks=[]), "blocks: needs at least one block"),
        (lambda d: d.update(activation="gelu"), "activation: unknown 'gelu'"),
        (lambda d: d.update(in_channels=0), "in_channels: must be >= 1"),
    ],
)
def test_bad_pointpillars_specs_name_the_value(edit, message):
    data = get_spec("pointpillars_bev").to_dict()
    edit(data)
    with pytest.raises(SpecError, match=message):
        spec_from_dict(data)


def test_output_size_and_odd_grids():
    spec = get_spec("pointpillars_bev")
    assert (spec.out_channels, spec.out_stride, spec.total_stride) == (384, 2, 8)
    assert spec.output_size(GRID) == (248, 216)
    with pytest.raises(SpecError, match="input size 35×29: .* divisible by 8"):
        cost(spec, (35, 29))
    one = PointPillarsSpec(
        blocks=(BEVBlockSpec(16, stride=1, num_layers=0, up_channels=8, up_stride=1),), in_channels=4
    )
    assert cost(one, (5, 7)).macs == 9 * 4 * 16 * 35 + 16 * 8 * 35
    assert build_model(one)(torch.randn(1, 4, 5, 7)).shape == (1, 8, 5, 7)


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    data = get_spec("pointpillars_bev").to_dict()
    data["blocks"][1]["stride"] = "two"
    bad.write_text(json.dumps(data))
    assert main(["cost", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"hrnas cost: error: {bad}: blocks[1].stride: expected an integer, got 'two'"
    assert main(["plot", "pointpillars_bev", "-o", str(tmp_path / "p.png")]) == 2
    assert "without search blocks" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


# --- hrnas_kitti_supernet -------------------------------------------------------------------------------


def test_kitti_supernet_layout():
    spec = get_spec("hrnas_kitti_supernet")
    assert spec.stem.in_channels == 64 and spec.stem.channels == (24,)
    assert spec.branch_channels() == [18, 36, 72, 144] and len(spec.blocks()) == 61
    head = spec.head
    assert isinstance(head, DenseHeadSpec) and head.kind == "detection"
    assert (head.transform.in_channels, head.transform.out_channels, head.num_outputs) == (270, 384, 384)
    assert head.transform.hidden == (90, 90, 90)
    assert all(b.num_queries == 64 for _, b in spec.blocks() if b.residual)
    model = build_model(spec).eval()
    assert model.head.classifier is None
    with torch.no_grad():
        out = model(torch.randn(1, 64, 24, 40))
    assert out.shape == (1, 384, 12, 20)


def test_detection_head_must_output_its_transform_channels():
    spec = get_spec("hrnas_kitti_supernet")
    with pytest.raises(SpecError, match="head.num_outputs: 72 but a detection head outputs its transform's 384"):
        replace(spec, head=replace(spec.head, num_outputs=72))
