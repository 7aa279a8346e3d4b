"""``hrnas demo`` (``--task segmentation``): the whole pipeline on a laptop CPU with no downloads.

1. generate the demo scenes (real textures with Fashion-MNIST items pasted on them, exact labels) in
   the Cityscapes layout, if missing;
2. search a small supernet under a MAC budget (progressive shrinking while training);
3. retrain the searched architecture, starting from the weights the search left (``--init inherit``);
4. evaluate it on the validation scenes (mIoU) next to a predict-background baseline;
5. write prediction overlays and export the deployed network to ONNX (checked in onnxruntime);
6. print a short report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hrnas.space.cost import cost, format_macs
from hrnas.utils.atomic import atomic_write_text

DEFAULT_DATA_ROOT = "data/demo"
DEMO_SEARCH = [
    "model.spec=hrnas_demo_supernet",
    "train.steps=500",
    "train.eval_every=0",
    "train.checkpoint_every=100",
    "search.enabled=true",
    "search.shrink_every=100",
    "search.rho_free_steps=25",
    "search.rho_warmup_steps=100",
    "search.target_macs=40M",
    # a short search: a faster rate for the importance factors and a threshold above the factors'
    # oscillation around zero under an adaptive optimizer (about factor lr)
    "search.factor_lr_mult=10",
    "search.threshold=0.05",
]
DEMO_RETRAIN = ["train.steps=1000", "train.eval_every=0", "train.checkpoint_every=200", "search.enabled=false"]
QUICK = [
    "train.steps=12",
    "search.shrink_every=6",
    "search.rho_free_steps=0",
    "search.rho_warmup_steps=3",
    "train.checkpoint_every=0",
    "train.bn_calib_batches=1",
]


def background_miou(task: Any) -> float:
    """mIoU of predicting class 0 (background) everywhere on the validation split."""
    from hrnas.tasks.segmentation.metrics import ConfusionMatrix

    ds = task.val_dataset()
    matrix = ConfusionMatrix(task.num_outputs(), ignore_index=task.cfg.task.ignore_index)
    for i in range(len(ds)):
        _, target = ds[i]
        target = torch.as_tensor(target).unsqueeze(0)
        matrix.update(torch.zeros_like(target), target)
    return float(matrix.compute()["miou"])


def _real_image_batches(val: Any, size: tuple[int, int], count: int = 3) -> list[torch.Tensor] | None:
    """The first validation images as two check batches for the ONNX export (``None``, i.e. random inputs,
    when they are not of the exported size): a barely trained network gives outputs far larger on random
    input than on images, and the float32 differences between runtimes grow with the outputs."""
    images = [val[i][0] for i in range(min(count, len(val)))]
    if not images or any(tuple(x.shape[-2:]) != tuple(size) for x in images):
        return None
    return [images[0].unsqueeze(0), torch.stack(images)]


def run_demo(
    out_dir: Path = Path("runs/demo"),
    data_root: Path | None = None,
    quick: bool = False,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Run the segmentation demo (see the module docstring) into ``out_dir`` on the demo scenes at
    ``data_root`` (default ``data/demo``, generated if missing); returns the report it writes to
    ``out_dir/report.json``. ``quick`` runs a few steps (a smoke test); ``overrides`` are ``KEY=VALUE``
    config overrides applied to both search and retrain."""
    from hrnas.demos.common import search_and_retrain, search_target
    from hrnas.demos.scenes import ensure_demo_scenes
    from hrnas.engine.trainer import load_model_from_checkpoint
    from hrnas.export.onnx import export_onnx

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    data_root = Path(data_root) if data_root is not None else Path(DEFAULT_DATA_ROOT)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = [f"data.root={data_root}"]
    extra = QUICK if quick else []
    ensure_demo_scenes(data_root)

    run = search_and_retrain(
        "demo_seg",
        [*data, *DEMO_SEARCH, *extra, *overrides],
        [*data, *DEMO_SEARCH, *DEMO_RETRAIN, *extra, *overrides],
        out_dir,
        total_steps=4,
    )
    task, supernet, size, search_cfg = run.task, run.supernet, run.input_size, run.search_cfg
    searched, retrained, t_search, t_retrain = run.searched, run.retrained, run.search_seconds, run.retrain_seconds

    print("[3/4] evaluate, predict")
    baseline = background_miou(task)
    model, spec, _ = load_model_from_checkpoint(out_dir / "retrain" / "final.pt")
    val = task.val_dataset()
    images = [str(p) for p, _ in val.samples[:4]]
    task.predict(model, images, out_dir / "predictions")

    print("[4/4] export to ONNX")
    report = export_onnx(
        model,
        out_dir / "model.onnx",
        input_size=size,
        in_channels=spec.stem.in_channels,
        check_inputs=_real_image_batches(val, size),
    )

    sup, fin = cost(supernet, size), cost(spec, size)
    latency_file = out_dir / "search" / "latency.json"
    latency = json.loads(latency_file.read_text()) if latency_file.is_file() else None
    summary = {
        "input_size": list(size),
        "supernet": {"name": supernet.name, "macs": sup.macs, "params": sup.params},
        "searched": {"macs": fin.macs, "params": fin.params, "arch": str(out_dir / "search" / "arch.json")},
        "target_macs": search_cfg.search.target_macs,
        "target_latency_ms": search_cfg.search.target_latency_ms,
        "latency": latency,
        "val_miou": retrained.metrics["miou"],
        "val_pixel_acc": retrained.metrics["pixel_acc"],
        "val_iou_per_class": dict(zip(val.classes, retrained.metrics["iou"], strict=True)),
        "background_baseline_miou": baseline,
        "onnx": {"path": str(report.path), "max_abs_diff": report.max_abs_diff},
        "seconds": {
            "search": round(t_search, 1),
            "retrain": round(t_retrain, 1),
            "total": round(time.perf_counter() - t_start, 1),
        },
        "search_log": [{k: r.get(k) for k in ("step", "macs", "step_time_s", "final")} for r in searched.search_log],
    }
    atomic_write_text(out_dir / "report.json", json.dumps(summary, indent=1) + "\n")
    print()
    print(f"supernet   {format_macs(sup.macs):>8s} MACs  {sup.params / 1e6:.3f} M params  ({supernet.name})")
    print(
        f"searched   {format_macs(fin.macs):>8s} MACs  {fin.params / 1e6:.3f} M params  "
        f"(target {search_target(search_cfg)}, {out_dir / 'search' / 'arch.json'})"
    )
    if latency is not None:
        print(
            f"latency    {latency['predicted_ms']:.2f} ms predicted, {latency['measured_ms']:.2f} ms measured "
            f"({latency['runtime']}, {latency['threads']} threads, batch 1)"
        )
    print(f"val mIoU   {retrained.metrics['miou']:.4f}  (predict-background baseline {baseline:.4f})")
    per_class = ", ".join(f"{name} {iou:.2f}" for name, iou in summary["val_iou_per_class"].items())
    print(f"class IoU  {per_class}")
    print(f"ONNX       {report.path}  (max abs diff vs PyTorch {report.max_abs_diff:.2e})")
    print(f"files      {out_dir}: search/ retrain/ predictions/ model.onnx report.json; plot search/arch.png")
    print(f"time       {summary['seconds']['total']:.0f} s (search {t_search:.0f} s, retrain {t_retrain:.0f} s)")
    return summary
