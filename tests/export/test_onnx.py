"""ONNX export of deployed networks: ONNX Runtime matches PyTorch, dynamic batch, odd sizes, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from hrnas.export import onnx as onnx_mod
from hrnas.export.onnx import INPUT_NAME, ExportError, export_onnx
from hrnas.space.deploy import deploy
from hrnas.space.network import build_model
from hrnas.space.zoo import get_spec, supernet_spec

ATOL = 1e-4


def calibrated_model(name: str, hw: tuple[int, int], seed: int = 0) -> nn.Module:
    """A zoo network whose BatchNorm statistics match its own activations, as after training.

    A freshly built network normalises with running statistics (0, 1) that do not fit its activations,
    so its outputs grow to thousands and float32 rounding alone exceeds any useful absolute tolerance.
    """
    torch.manual_seed(seed)
    model = build_model(get_spec(name), init="default")
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average: one batch sets the statistics
    model.train()
    with torch.no_grad():
        model(torch.randn(4, model.spec.stem.in_channels, *hw))
    return model.eval()


def run_ort(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT_NAME: x.numpy()})[0]


CASES = [
    ("test_seg", (64, 64)),
    ("test_cls", (64, 64)),
    ("test_kpt", (64, 64)),
    ("hrnas_imagenet_ref", (64, 64)),
    ("test_seg", (70, 54)),
    ("test_kpt", (70, 54)),
]
# The default (dynamo) exporter takes 15-40 s per network on two CPU cores: the default suite runs it on
# one dense network with transformers at an odd size, every case runs with the TorchScript exporter, and
# `-m slow` runs every case with both.
DYNAMO_SMOKE = ("test_seg", (70, 54))
EXPORT_CASES = [pytest.param(name, hw, False, id=f"{name}-{hw[0]}x{hw[1]}-torchscript") for name, hw in CASES] + [
    pytest.param(
        name,
        hw,
        True,
        id=f"{name}-{hw[0]}x{hw[1]}-dynamo",
        marks=() if (name, hw) == DYNAMO_SMOKE else pytest.mark.slow,
    )
    for name, hw in CASES
]


@pytest.mark.parametrize("name,hw,dynamo", EXPORT_CASES)
def test_export_matches_onnxruntime(tmp_path: Path, name: str, hw: tuple[int, int], dynamo: bool) -> None:
    model = calibrated_model(name, hw)
    path = tmp_path / f"{name}.onnx"
    report = export_onnx(model, path, input_size=hw, atol=ATOL, dynamo=dynamo)

    assert report.path == path and path.stat().st_size > 0
    assert report.exporter == ("dynamo" if dynamo else "torchscript")
    assert report.max_abs_diff is not None and report.max_abs_diff <= ATOL
    assert report.onnxruntime_version == ort.__version__
    assert report.checked_batches == (2, 3)
    assert report.input_shape == (2, 3, *hw)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left

    # the batch axis is symbolic and a batch of 2 runs through it, matching the deployed model
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert isinstance(session.get_inputs()[0].shape[0], str)
    assert session.get_inputs()[0].shape[1:] == [3, *hw]
    deployed = deploy(model)
    for batch in (2, 1):
        x = torch.randn(batch, 3, *hw, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = deployed(x).numpy()
        got = session.run(None, {INPUT_NAME: x.numpy()})[0]
        assert got.shape == expected.shape == (batch, *report.output_shapes[0][1:])
        np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


def test_torchscript_exporter_with_transformers_in_every_block(tmp_path: Path) -> None:
    model = calibrated_model("test_cls_all", (48, 40))
    report = export_onnx(model, tmp_path / "m.onnx", input_size=(48, 40), dynamo=False, atol=ATOL)
    assert report.exporter == "torchscript" and report.opset == 17
    assert report.max_abs_diff is not None and report.max_abs_diff <= ATOL
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        expected = deploy(model)(x).numpy()
    np.testing.assert_allclose(run_ort(report.path, x), expected, rtol=0, atol=ATOL)


def test_static_batch_and_input_channels_from_spec(tmp_path: Path) -> None:
    spec = supernet_spec(
        head="classification",
        num_outputs=4,
        stages=((1, (1,), (8,)), (2, (1, 1), (8, 16))),
        stem=(8, 8),
        in_channels=1,
        expand_ratio=1.0,
        num_queries=2,
        token_grid=4,
        cls_head_channels=(8, 12),
        last_channels=16,
    )
    model = build_model(spec, init="default").eval()
    report = export_onnx(model, tmp_path / "gray.onnx", input_size=(33, 31), dynamic_batch=False, dynamo=False)
    assert report.input_shape == (1, 1, 33, 31)
    assert report.checked_batches == (1,)
    assert report.max_abs_diff is not None and report.max_abs_diff <= ATOL
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 1, 33, 31]


def test_model_is_not_modified(tmp_path: Path) -> None:
    model = build_model(get_spec("test_seg")).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "m.onnx", input_size=(32, 32), dynamo=False, check=False)
    assert model.training
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_unchecked_export_reports_no_comparison(tmp_path: Path) -> None:
    model = build_model(get_spec("test_kpt"))
    report = export_onnx(model, tmp_path / "m.onnx", input_size=(32, 32), dynamo=False, check=False)
    assert report.max_abs_diff is None and report.onnxruntime_version is None and report.checked_batches == ()
    assert report.path.stat().st_size > 0


def test_mismatch_raises_and_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous")
    monkeypatch.setattr(onnx_mod, "_compare", lambda *args: (0.5, 2.0, ort.__version__))
    with pytest.raises(ExportError, match=r"differs from PyTorch by up to 0\.5 \(atol 0\.0001"):
        export_onnx(build_model(get_spec("test_cls")), path, input_size=(32, 32), dynamo=False)
    assert path.read_bytes() == b"previous"
    assert list(tmp_path.iterdir()) == [path]


def test_exporter_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_export(model: nn.Module, example: torch.Tensor, path: Path, *args: object) -> None:
        path.write_bytes(b"partial")
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(onnx_mod, "_export", broken_export)
    with pytest.raises(ExportError, match="ONNX export failed: RuntimeError: unsupported operator"):
        export_onnx(build_model(get_spec("test_cls")), tmp_path / "sub" / "m.onnx", input_size=(32, 32))
    assert list((tmp_path / "sub").iterdir()) == []


def test_rejects_bad_inputs(tmp_path: Path) -> None:
    class DictOut(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"y": x}

    with pytest.raises(ValueError, match="input_size"):
        export_onnx(build_model(get_spec("test_cls")), tmp_path / "m.onnx", input_size=(32,))
    with pytest.raises(ExportError, match="tensor or a tuple of tensors"):
        export_onnx(DictOut(), tmp_path / "m.onnx", input_size=(8, 8))
    assert list(tmp_path.iterdir()) == []


def test_check_inputs_replace_the_random_check_batches(tmp_path: Path) -> None:
    model = calibrated_model("test_seg", (32, 32))
    images = [torch.rand(1, 3, 32, 32), torch.rand(4, 3, 32, 32)]
    report = export_onnx(model, tmp_path / "m.onnx", input_size=(32, 32), dynamo=False, check_inputs=images)
    assert report.checked_batches == (1, 4)
    with torch.no_grad():
        expected = deploy(model)(images[1]).numpy()
    np.testing.assert_allclose(run_ort(report.path, images[1]), expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    "inputs,dynamic,match",
    [
        ([torch.rand(2, 3, 16, 32)], True, r"check_inputs\[0\] has shape \(2, 3, 16, 32\), expected \(N, \*\(3, 32"),
        ([torch.rand(3, 32, 32)], True, r"check_inputs\[0\] has shape \(3, 32, 32\)"),
        ([torch.rand(1, 3, 32, 32), torch.rand(3, 3, 32, 32)], False, r"check_inputs\[1\] has batch 3 but the export"),
    ],
)
def test_check_inputs_of_the_wrong_shape_are_named(tmp_path: Path, inputs, dynamic: bool, match: str) -> None:
    model = build_model(get_spec("test_seg"))
    with pytest.raises(ValueError, match=match):
        export_onnx(
            model, tmp_path / "m.onnx", input_size=(32, 32), dynamo=False, dynamic_batch=dynamic, check_inputs=inputs
        )
    assert not list(tmp_path.iterdir())


class TwoInputs(nn.Module):
    """Two inputs sharing a symbolic first axis, two outputs (a detector's pillar-network shape of call)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, features: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.linear(features) * weights[:, None]
        return y.sum(0, keepdim=True), y.amax(1)


@pytest.mark.parametrize("dynamo", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_export_checked_any_module_with_shared_dynamic_axis(tmp_path: Path, dynamo: bool) -> None:
    from hrnas.export.onnx import Dim, export_checked

    torch.manual_seed(0)
    module = TwoInputs().eval()
    example = (torch.randn(5, 4), torch.rand(5))
    other = (torch.randn(9, 4), torch.rand(9))
    axis = {0: Dim("rows", min=2)}
    report = export_checked(
        module,
        example,
        tmp_path / "two.onnx",
        input_names=["features", "weights"],
        output_names=["total", "largest"],
        dynamic_axes={"features": axis, "weights": axis, "largest": axis},
        check_inputs=[example, other],
        dynamo=dynamo,
    )
    assert report.output_names == ("total", "largest") and report.output_shapes == ((1, 3), (5,))
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-5
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    total, largest = session.run(None, {"features": other[0].numpy(), "weights": other[1].numpy()})
    assert total.shape == (1, 3) and largest.shape == (9,)
    assert [p.name for p in tmp_path.iterdir()] == ["two.onnx"]
