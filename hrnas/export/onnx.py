"""ONNX export of a network's inference form, checked against PyTorch in ONNX Runtime.

:func:`export_checked` is the one pipeline every export goes through: export any module for given example
inputs, check the file with ``onnx.checker`` and in ONNX Runtime (``CPUExecutionProvider``) against
PyTorch, and only then move it into place atomically (:mod:`hrnas.utils.atomic`), so a failed export or a
failed comparison leaves no partial or unchecked file behind. :func:`export_onnx` uses it for image
networks: it exports :func:`hrnas.space.deploy.deploy` of the model (BatchNorm folded into the
convolutions, dropout removed, eval mode) for one fixed input size ``(H, W)``, optionally with a dynamic
batch axis, checked on seeded random inputs or on given images. Task networks with other inputs (e.g. a
detector's pillar features) call :func:`export_checked` with their own example inputs.

Exporter choice. ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript, the default since torch
2.9) is used by default: it is the maintained exporter, it records the graph from torch.export's
semantics rather than from a trace, and it exports every operator these networks use (bilinear resizes
of odd sizes, nearest ×2 upsampling, the transformer's batched matmuls, softmax and LayerNorm, and the
``split``/``cat`` of the mixed depthwise convolution). ``dynamo=False`` selects the legacy TorchScript
exporter, which gives the same graphs and outputs about ten times faster on a CPU but is deprecated and
slated for removal; it is correct here only because every Python branch of the forward pass depends on
the input's height and width, which an export fixes, and not on the batch size or the values.

Two details of the dynamo path: torch.export specialises a dimension of size 1, so a dynamic batch axis
is exported from an example batch of 2; and weights are embedded in the ``.onnx`` file (no external
data file), which keeps the write atomic and limits a model to ONNX's 2 GB protobuf size.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from hrnas.space.deploy import deploy
from hrnas.utils.atomic import atomic_path
from hrnas.utils.errors import HrnasError

INPUT_NAME = "images"


class ExportError(HrnasError, RuntimeError):
    """The export failed, or ONNX Runtime's outputs differ from PyTorch's by more than the tolerance."""


@dataclass(frozen=True)
class Dim:
    """A symbolic axis of an exported graph: its ``name`` (inputs sharing a name share the axis) and the
    smallest size it accepts (torch.export specialises size-1 dimensions, so a dynamic axis whose example
    size is 1 cannot be exported; ``min`` is the lower bound the exporter is told)."""

    name: str
    min: int = 1


@dataclass(frozen=True)
class CheckedExport:
    """What :func:`export_checked` wrote and how closely ONNX Runtime reproduced PyTorch.

    Attributes:
        path: the ``.onnx`` file.
        max_abs_diff: largest ``|onnxruntime − torch|`` over all outputs and checked inputs (``None``
            when the check was skipped).
        max_abs_output: largest ``|torch|`` output value in the check, to put ``max_abs_diff`` in scale.
        onnxruntime_version: version of the ONNX Runtime that ran the check (``None`` when skipped).
        torch_version: version of PyTorch that exported the file.
        opset: the default-domain opset of the written model.
        exporter: ``"dynamo"`` or ``"torchscript"``.
        output_names: names of the outputs, in the module's order.
        output_shapes: shapes of the outputs for the example inputs.
        export_seconds: wall time of the export itself.
    """

    path: Path
    max_abs_diff: float | None
    max_abs_output: float | None
    onnxruntime_version: str | None
    torch_version: str
    opset: int
    exporter: str
    output_names: tuple[str, ...]
    output_shapes: tuple[tuple[int, ...], ...]
    export_seconds: float


@dataclass(frozen=True)
class ExportReport(CheckedExport):
    """What :func:`export_onnx` wrote: :class:`CheckedExport` plus the image input's description.

    Attributes:
        input_name: name of the model's single input, ``(N, C, H, W)`` float32.
        input_shape: shape of the example input the model was exported with.
        dynamic_batch: whether the batch axis of the input and outputs is symbolic.
        checked_batches: batch sizes run through ONNX Runtime by the check.
    """

    input_name: str
    input_shape: tuple[int, ...]
    dynamic_batch: bool
    checked_batches: tuple[int, ...]


def _flatten_outputs(out: object) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, list | tuple) and out and all(isinstance(t, Tensor) for t in out):
        return list(out)
    raise ExportError(f"the model must return a tensor or a tuple of tensors, got {type(out).__name__}")


def _default_in_channels(model: nn.Module) -> int:
    spec = getattr(model, "spec", None)
    stem = getattr(spec, "stem", None)
    return int(getattr(stem, "in_channels", 3))


def _export(
    module: nn.Module,
    example: tuple[Tensor, ...],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, Dim]],
    opset: int | None,
    dynamo: bool,
) -> None:
    if dynamo:
        dims: dict[str, object] = {}

        def dim(d: Dim) -> object:
            if d.name not in dims:
                dims[d.name] = torch.export.Dim(d.name, min=d.min)
            return dims[d.name]

        shapes = tuple({axis: dim(d) for axis, d in dynamic_axes.get(name, {}).items()} or None for name in input_names)
        with warnings.catch_warnings():
            # inputs sharing an axis: the exporter warns that it keeps one name for it
            warnings.filterwarnings("ignore", message=".*axis name: .* will not be used")
            torch.onnx.export(
                module,
                example,
                str(path),
                dynamo=True,
                input_names=list(input_names),
                output_names=list(output_names),
                opset_version=opset,
                dynamic_shapes=shapes if any(s is not None for s in shapes) else None,
                external_data=False,
                verbose=False,
            )
        return
    axes = {name: {axis: d.name for axis, d in named.items()} for name, named in dynamic_axes.items() if named}
    with warnings.catch_warnings():
        # the tracer warns about shape comparisons; they depend only on the example's fixed sizes
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            example,
            str(path),
            dynamo=False,
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=opset if opset is not None else 17,
            dynamic_axes=axes or None,
        )


def _compare(
    path: Path,
    module: nn.Module,
    inputs: Sequence[tuple[Tensor, ...]],
    input_names: Sequence[str],
    output_names: Sequence[str],
) -> tuple[float, float, str]:
    """Max |ORT − torch| and max |torch| over all outputs of all ``inputs``, and the ORT version."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    max_diff = max_out = 0.0
    for args in inputs:
        with torch.no_grad():
            expected = [t.numpy() for t in _flatten_outputs(module(*args))]
        got = session.run(None, {name: x.numpy() for name, x in zip(input_names, args, strict=True)})
        if len(got) != len(expected):
            raise ExportError(f"{path}: ONNX Runtime returned {len(got)} outputs, PyTorch {len(expected)}")
        shapes = ", ".join(str(tuple(x.shape)) for x in args)
        for name, a, b in zip(output_names, got, expected, strict=True):
            if a.shape != b.shape:
                raise ExportError(
                    f"{path}: output {name} has shape {a.shape} in ONNX Runtime but {b.shape} in PyTorch "
                    f"(inputs {shapes})"
                )
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            if not np.all(np.isfinite(diff)):
                raise ExportError(f"{path}: output {name} is not finite in ONNX Runtime or PyTorch (inputs {shapes})")
            max_diff = max(max_diff, float(diff.max(initial=0.0)))
            max_out = max(max_out, float(np.abs(b).max(initial=0.0)))
    return max_diff, max_out, ort.__version__


def export_checked(
    module: nn.Module,
    example: tuple[Tensor, ...],
    out_path: str | os.PathLike[str],
    *,
    input_names: Sequence[str],
    output_names: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, Dim]] | None = None,
    check_inputs: Sequence[tuple[Tensor, ...]] = (),
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-5,
    opset: int | None = None,
    dynamo: bool = True,
) -> CheckedExport:
    """Export ``module`` as it is to ONNX, check the file in ONNX Runtime, then move it into place.

    The one export pipeline of hrnas (images networks, :func:`export_onnx`; task networks with other
    inputs, e.g. a detector's pillar features): export to a temporary file beside ``out_path``, run
    ``onnx.checker``, compare ONNX Runtime (CPUExecutionProvider) with ``module`` on ``check_inputs``,
    and only then replace ``out_path`` atomically (:func:`hrnas.utils.atomic.atomic_path`). A failed
    export or comparison leaves no file behind and a previous ``out_path`` untouched.

    Args:
        module: the network to export, already in its deployed, eval-mode, float32 CPU form; it is
            called as ``module(*inputs)`` and returns a tensor or a tuple of tensors.
        example: the positional inputs the graph is exported with (their sizes fix the static axes).
        out_path: the ``.onnx`` file; parent folders are created.
        input_names: one name per positional input.
        output_names: one name per output; ``None`` names them ``output`` (one output) or
            ``output_0``, ``output_1``, ...
        dynamic_axes: symbolic axes by input (and, for the TorchScript exporter, output) name, e.g.
            ``{"images": {0: Dim("batch")}}``; inputs that share a :class:`Dim` name share the axis.
        check_inputs: the input tuples compared in ONNX Runtime against ``module`` (none: compare on
            ``example``).
        check: run the comparison at all (the ONNX checker always runs).
        atol, rtol: the largest accepted ``|onnxruntime − torch|`` over all output values is
            ``atol + rtol · max|torch output|``: float32 rounding grows with the outputs' magnitude, and
            two runtimes that order a deep network's sums differently differ by a few 1e-6 of it; a wrong
            graph differs by the order of the outputs themselves.
        opset: ONNX opset; ``None`` takes the exporter's default (17 for the TorchScript exporter).
        dynamo: the torch.export-based exporter (default) or, with ``False``, the legacy TorchScript one.

    Raises:
        ExportError: the exporter failed or wrote nothing, or an output differs (in value beyond the
            tolerance, in shape, or is not finite).
    """
    out_path = Path(out_path)
    with torch.no_grad():
        example_out = _flatten_outputs(module(*example))
    if output_names is None:
        output_names = ["output"] if len(example_out) == 1 else [f"output_{i}" for i in range(len(example_out))]
    with atomic_path(out_path) as tmp:
        start = time.perf_counter()
        try:
            _export(module, example, tmp, input_names, output_names, dynamic_axes or {}, opset, dynamo)
        except Exception as exc:
            raise ExportError(f"{out_path}: ONNX export failed: {type(exc).__name__}: {exc}") from exc
        seconds = time.perf_counter() - start
        if not tmp.is_file():
            raise ExportError(f"{out_path}: the exporter wrote no file")
        import onnx

        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto)
        written_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), -1)
        max_diff = max_out = None
        ort_version = None
        if check:
            inputs = list(check_inputs) or [example]
            max_diff, max_out, ort_version = _compare(tmp, module, inputs, input_names, output_names)
            if max_diff > atol + rtol * max_out:
                raise ExportError(
                    f"{out_path}: ONNX Runtime output differs from PyTorch by up to {max_diff:.3g} "
                    f"(atol {atol:.3g} + rtol {rtol:.3g} × largest output magnitude {max_out:.3g}); "
                    "the file was not written"
                )
    return CheckedExport(
        path=out_path,
        max_abs_diff=max_diff,
        max_abs_output=max_out,
        onnxruntime_version=ort_version,
        torch_version=torch.__version__,
        opset=written_opset,
        exporter="dynamo" if dynamo else "torchscript",
        output_names=tuple(output_names),
        output_shapes=tuple(tuple(t.shape) for t in example_out),
        export_seconds=seconds,
    )


def _check_input(x: Tensor, index: int, example: Tensor, dynamic_batch: bool, out_path: Path) -> Tensor:
    x = torch.as_tensor(x).detach().to(device="cpu", dtype=torch.float32).contiguous()
    expected = tuple(example.shape[1:])
    if x.dim() != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(f"{out_path}: check_inputs[{index}] has shape {tuple(x.shape)}, expected (N, *{expected})")
    if not dynamic_batch and x.shape[0] != example.shape[0]:
        raise ValueError(
            f"{out_path}: check_inputs[{index}] has batch {x.shape[0]} but the export has a fixed batch of "
            f"{example.shape[0]} (use dynamic_batch)"
        )
    return x


def export_onnx(
    model: nn.Module,
    out_path: str | os.PathLike[str],
    input_size: Sequence[int] = (224, 224),
    in_channels: int | None = None,
    opset: int | None = None,
    dynamic_batch: bool = True,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-5,
    *,
    dynamo: bool = True,
    seed: int = 0,
    check_inputs: Sequence[Tensor] | None = None,
    pad_to: int = 8,
    merge_groups: bool = False,
) -> ExportReport:
    """Export the deployed form of an image network to ONNX and check it in ONNX Runtime.

    Args:
        model: a network taking ``(N, C, H, W)`` float images and returning a tensor (or a tuple of
            tensors), e.g. :func:`hrnas.space.network.build_model`'s. It is not modified: a BN-folded,
            eval-mode, float32 CPU copy is exported (:func:`hrnas.space.deploy.deploy`).
        pad_to: every kernel group of every search block is zero-padded to a multiple of this many
            channels (same outputs; ONNX Runtime runs convolutions of other widths in a much slower
            layout). 1 exports the widths as they are.
        merge_groups: each search block as one expansion, one depthwise convolution of its largest
            kernel and one projection (same outputs): fewer, larger operators, faster for narrow searched
            networks at batch 1 (``benchmarks/deploy_latency.py``); latency tables model the per-group form.
        out_path: the ``.onnx`` file to write; parent folders are created. It is replaced atomically and
            only once the export (and the check, when enabled) succeeded.
        input_size: (H, W) of the input. The graph is exported for this size only (the resizes between
            branches depend on it); any size the network accepts works, odd ones included.
        in_channels: C of the input; ``None`` reads ``model.spec.stem.in_channels`` when the model carries
            a spec, else 3.
        opset: ONNX opset; ``None`` takes the exporter's default (20 for ``dynamo=True`` with torch 2.14;
            17 for the TorchScript exporter). The opset actually written is in the report.
        dynamic_batch: make the batch axis of the input and outputs symbolic, so any N runs.
        check: run the file in ONNX Runtime (CPUExecutionProvider) on random inputs — the example batch
            (2 with a dynamic batch, else 1) and, with a dynamic batch, also a batch of 3 — and compare
            with the deployed PyTorch model.
        atol, rtol: tolerance of the comparison, ``atol + rtol · max|torch output|`` (see
            :func:`export_checked`).
        dynamo: use the torch.export-based exporter (default) or, with ``False``, the legacy TorchScript
            exporter (faster, deprecated; see the module docstring).
        seed: seed of the random check input, drawn from a private generator.
        check_inputs: batches ``(N, C, H, W)`` to compare on instead of the random ones, e.g. real images
            normalised as the model expects them (a random input can drive a barely trained network to
            outputs far larger than real data does, and the float32 differences grow with them). Batch
            sizes other than the exported one need ``dynamic_batch``.

    Returns:
        An :class:`ExportReport`.

    Raises:
        ExportError: the exporter failed, or an output differs by more than the tolerance (or in shape,
            or is not finite). Nothing is left at ``out_path`` by a failed call (a previous file stays
            untouched).
        ValueError: ``input_size`` is not two positive integers, or a check input has the wrong shape.
    """
    if len(input_size) != 2 or any(int(s) < 1 for s in input_size):
        raise ValueError(f"input_size must be (H, W) with positive sides, got {tuple(input_size)}")
    height, width = (int(s) for s in input_size)
    channels = _default_in_channels(model) if in_channels is None else int(in_channels)
    out_path = Path(out_path)
    deployed = deploy(model, pad_to=pad_to, merge_groups=merge_groups).to(device="cpu", dtype=torch.float32)

    generator = torch.Generator().manual_seed(seed)
    batch = 2 if dynamic_batch else 1  # torch.export specialises a dimension of size 1
    example = torch.randn(batch, channels, height, width, generator=generator)
    if check and check_inputs is not None:
        inputs = [_check_input(x, i, example, dynamic_batch, out_path) for i, x in enumerate(check_inputs)]
    else:
        inputs = [example]
        if dynamic_batch:
            inputs.append(torch.randn(3, channels, height, width, generator=generator))
    with torch.no_grad():
        num_outputs = len(_flatten_outputs(deployed(example)))
    output_names = ["output"] if num_outputs == 1 else [f"output_{i}" for i in range(num_outputs)]
    batch_axis = {0: Dim("batch")}
    report = export_checked(
        deployed,
        (example,),
        out_path,
        input_names=[INPUT_NAME],
        output_names=output_names,
        dynamic_axes={name: batch_axis for name in [INPUT_NAME, *output_names]} if dynamic_batch else None,
        check_inputs=[(x,) for x in inputs],
        check=check,
        atol=atol,
        rtol=rtol,
        opset=opset,
        dynamo=dynamo,
    )
    return ExportReport(
        **{f.name: getattr(report, f.name) for f in fields(CheckedExport)},
        input_name=INPUT_NAME,
        input_shape=tuple(example.shape),
        dynamic_batch=dynamic_batch,
        checked_batches=tuple(int(x.shape[0]) for x in inputs) if check else (),
    )


__all__ = ["INPUT_NAME", "CheckedExport", "Dim", "ExportError", "ExportReport", "export_checked", "export_onnx"]
