"""ONNX export of a PointPillars detector's network part, checked against PyTorch in ONNX Runtime.

The exported graph is :class:`hrnas.tasks.kitti.detector.PillarNetExport` of the deployed detector (BatchNorm
folded everywhere): decorated pillar point features → PFN (Linear + ReLU + max) → scatter to the BEV
pseudo-image → backbone → anchor head, for one frame, with a symbolic number of pillars:

- inputs ``pillar_features`` ``(P, M, C + 6)`` float32 (:func:`~hrnas.tasks.kitti.detector.pillar_point_features`)
  and ``coords`` ``(P, 4)`` int64 ``(0, z, y, x)``;
- outputs ``cls_logits (1, N, K)``, ``box_deltas (1, N, 7)``, ``dir_logits (1, N, bins)``.

Pillarization before the graph and decoding + rotated NMS after it stay in Python
(:func:`hrnas.tasks.kitti.pillars.pillarize`, :func:`hrnas.tasks.kitti.postprocess.postprocess`). The scatter
becomes an ONNX ``ScatterElements`` (which ONNX Runtime runs; TensorRT needs a plugin for it). The export,
the ONNX Runtime check and the atomic write are the shared pipeline :func:`hrnas.export.onnx.export_checked`,
so the file appears only after it was written and checked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

import torch

from hrnas.export.onnx import CheckedExport, Dim, export_checked
from hrnas.space.deploy import deploy
from hrnas.tasks.kitti.detector import PillarNetExport, PointPillarsDetector, pillar_point_features
from hrnas.tasks.kitti.pillars import PillarConfig, pillarize

__all__ = ["DetectorExportReport", "INPUT_NAMES", "OUTPUT_NAMES", "example_pillars", "export_detector_onnx"]

INPUT_NAMES = ("pillar_features", "coords")
OUTPUT_NAMES = ("cls_logits", "box_deltas", "dir_logits")


@dataclass(frozen=True)
class DetectorExportReport(CheckedExport):
    """What :func:`export_detector_onnx` wrote (:class:`~hrnas.export.onnx.CheckedExport`: the file, the
    largest ``|onnxruntime − torch|`` over all outputs and checked frames — None when unchecked — and the
    largest ``|torch|`` output, the opset and the exporter), plus the pillar counts of the checked frames."""

    checked_pillars: tuple[int, ...]


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
    merge_groups: bool = False,
) -> DetectorExportReport:
    """Export the network part of ``detector`` (not modified) to ``out_path`` and check it.

    The graph has a symbolic pillar count shared by both inputs. The check runs two random frames with
    different pillar counts (:func:`example_pillars`) through ONNX Runtime (CPUExecutionProvider) and the
    exported PyTorch module and accepts a largest difference of ``atol + rtol · max|output|``.
    ``dynamo=False`` uses the legacy TorchScript exporter.

    Raises:
        hrnas.export.onnx.ExportError: the export failed or the outputs differ; nothing is left at
            ``out_path`` then.
    """
    # kernel groups padded to 8 channels: ONNX Runtime's blocked convolution layouts (hrnas.space.deploy)
    deployed = deploy(detector, pad_to=8, merge_groups=merge_groups)
    module = PillarNetExport(deployed.to(device="cpu", dtype=torch.float32)).eval()
    nx, ny, _ = config.grid_size
    cells = nx * ny
    examples = [
        example_pillars(config, max(64, cells // 8), seed),
        example_pillars(config, max(32, cells // 20), seed + 1),
    ]
    report = export_checked(
        module,
        examples[0],
        out_path,
        input_names=INPUT_NAMES,
        output_names=OUTPUT_NAMES,
        dynamic_axes={name: {0: Dim("pillars", min=2)} for name in INPUT_NAMES},
        check_inputs=examples,
        check=check,
        atol=atol,
        rtol=rtol,
        dynamo=dynamo,
    )
    return DetectorExportReport(
        **{f.name: getattr(report, f.name) for f in fields(CheckedExport)},
        checked_pillars=tuple(int(f.shape[0]) for f, _ in examples) if check else (),
    )
