"""ONNX export of a PointPillars detector's network part, checked against PyTorch in ONNX Runtime.

The exported graph is :class:`hrnas.tasks.kitti.detector.PillarNetExport` of the deployed detector (BatchNorm
folded everywhere): decorated pillar point features → PFN (Linear + ReLU + max) → scatter to the BEV
pseudo-image → backbone → anchor head, for one frame, with a symbolic number of pillars:

- inputs ``pillar_features`` ``(P, M, C + 6)`` float32 (:func:`~hrnas.tasks.kitti.detector.pillar_point_features`)
  and ``coords`` ``(P, 4)`` int64 ``(0, z, y, x)``;
- outputs ``cls_logits (1, N, K)``, ``box_deltas (1, N, 7)``, ``dir_logits (1, N, bins)``.

Pillarization before the graph and decoding + rotated NMS after it stay in Python
(:func:`hrnas.tasks.kitti.pillars.pillarize`, :func:`hrnas.tasks.kitti.postprocess.postprocess`). The scatter
becomes an ONNX ``ScatterElements`` (which ONNX Runtime runs; TensorRT needs a plugin for it). As
:func:`hrnas.export.onnx.export_onnx`, the file appears only after it was written and checked.
"""

from __future__ import annotations

import os
import secrets
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hrnas.export.onnx import ExportError
from hrnas.space.deploy import deploy
from hrnas.tasks.kitti.detector import PillarNetExport, PointPillarsDetector, pillar_point_features
from hrnas.tasks.kitti.pillars import PillarConfig, pillarize

__all__ = ["DetectorExportReport", "INPUT_NAMES", "OUTPUT_NAMES", "example_pillars", "export_detector_onnx"]

INPUT_NAMES = ("pillar_features", "coords")
OUTPUT_NAMES = ("cls_logits", "box_deltas", "dir_logits")


@dataclass(frozen=True)
class DetectorExportReport:
    """What :func:`export_detector_onnx` wrote: the file, the largest ``|onnxruntime − torch|`` over all
    outputs and checked frames (None when unchecked) and the largest ``|torch|`` output, the pillar counts
    of the checked frames, the opset and the exporter."""

    path: Path
    max_abs_diff: float | None
    max_abs_output: float | None
    checked_pillars: tuple[int, ...]
    output_shapes: tuple[tuple[int, ...], ...]
    opset: int
    exporter: str
    export_seconds: float


def example_pillars(config: PillarConfig, num_points: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pillar_features, coords)`` of a random cloud of ``num_points`` points spread over the range
    (reflectance uniform in [0, 1)), pillarized with the test cap; for export checks."""
    g = torch.Generator().manual_seed(seed)
    lo = torch.tensor(config.point_cloud_range[:3])
    hi = torch.tensor(config.point_cloud_range[3:])
    xyz = lo + torch.rand(num_points, 3, generator=g) * (hi - lo)
    extra = torch.rand(num_points, config.num_point_features - 3, generator=g)
    pillars = pillarize(torch.cat([xyz, extra], dim=1), config, training=False)
    coords = torch.nn.functional.pad(pillars.coords, (1, 0))
    return pillar_point_features(pillars.voxels, pillars.num_points, coords, config), coords


def _export(module: torch.nn.Module, example: tuple[torch.Tensor, torch.Tensor], path: Path, dynamo: bool) -> None:
    if dynamo:
        pillars = torch.export.Dim("pillars", min=2)
        with warnings.catch_warnings():
            # both inputs share the pillar axis; the exporter warns that it keeps one name for it
            warnings.filterwarnings("ignore", message=".*axis name: pillars will not be used")
            torch.onnx.export(
                module,
                example,
                str(path),
                dynamo=True,
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                dynamic_shapes=({0: pillars}, {0: pillars}),
                external_data=False,
                verbose=False,
            )
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            example,
            str(path),
            dynamo=False,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            opset_version=17,
            dynamic_axes={name: {0: "pillars"} for name in INPUT_NAMES},
        )


def _compare(
    path: Path, module: torch.nn.Module, examples: list[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[float, float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    max_diff = max_out = 0.0
    for features, coords in examples:
        with torch.no_grad():
            expected = [t.numpy() for t in module(features, coords)]
        got = session.run(None, {INPUT_NAMES[0]: features.numpy(), INPUT_NAMES[1]: coords.numpy()})
        for name, a, b in zip(OUTPUT_NAMES, got, expected, strict=True):
            if a.shape != b.shape:
                raise ExportError(f"{path}: {name} has shape {a.shape} in ONNX Runtime but {b.shape} in PyTorch")
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            if not np.all(np.isfinite(diff)):
                raise ExportError(f"{path}: {name} is not finite in ONNX Runtime or PyTorch")
            max_diff = max(max_diff, float(diff.max(initial=0.0)))
            max_out = max(max_out, float(np.abs(b).max(initial=0.0)))
    return max_diff, max_out


def export_detector_onnx(
    detector: PointPillarsDetector,
    out_path: str | os.PathLike[str],
    config: PillarConfig,
    *,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-5,
    dynamo: bool = True,
    seed: int = 0,
) -> DetectorExportReport:
    """Export the network part of ``detector`` (not modified) to ``out_path`` and check it.

    The check runs two random frames with different pillar counts (:func:`example_pillars`) through
    ONNX Runtime (CPUExecutionProvider) and the exported PyTorch module and accepts a largest difference
    of ``atol + rtol · max|output|``. ``dynamo=False`` uses the legacy TorchScript exporter.

    Raises:
        ExportError: the export failed or the outputs differ; nothing is left at ``out_path`` then.
    """
    out_path = Path(out_path)
    module = PillarNetExport(deploy(detector).to(device="cpu", dtype=torch.float32)).eval()
    nx, ny, _ = config.grid_size
    cells = nx * ny
    examples = [
        example_pillars(config, max(64, cells // 8), seed),
        example_pillars(config, max(32, cells // 20), seed + 1),
    ]
    with torch.no_grad():
        example_out = module(*examples[0])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        start = time.perf_counter()
        try:
            _export(module, examples[0], tmp, dynamo)
        except Exception as exc:
            raise ExportError(f"{out_path}: ONNX export failed: {type(exc).__name__}: {exc}") from exc
        seconds = time.perf_counter() - start
        if not tmp.is_file():
            raise ExportError(f"{out_path}: the exporter wrote no file")
        import onnx

        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto)
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), -1)
        max_diff = max_out = None
        if check:
            max_diff, max_out = _compare(tmp, module, examples)
            if max_diff > atol + rtol * max_out:
                raise ExportError(
                    f"{out_path}: ONNX Runtime output differs from PyTorch by up to {max_diff:.3g} "
                    f"(atol {atol:.3g} + rtol {rtol:.3g} × largest output {max_out:.3g}); the file was not written"
                )
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return DetectorExportReport(
        path=out_path,
        max_abs_diff=max_diff,
        max_abs_output=max_out,
        checked_pillars=tuple(int(f.shape[0]) for f, _ in examples) if check else (),
        output_shapes=tuple(tuple(t.shape) for t in example_out),
        opset=opset,
        exporter="dynamo" if dynamo else "torchscript",
        export_seconds=seconds,
    )
