"""``hrnas demo``: the whole pipeline on a laptop CPU with no downloads.

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

from hrnas.engine.config import load_config
from hrnas.space.cost import cost, format_macs

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
    from hrnas.tasks.seg_metrics import ConfusionMatrix

    ds = task.val_dataset()
    matrix = ConfusionMatrix(task.num_outputs(), ignore_index=task.cfg.task.ignore_index)
    for i in range(len(ds)):
        _, target = ds[i]
        target = torch.as_tensor(target).unsqueeze(0)
        matrix.update(torch.zeros_like(target), target)
    return float(matrix.compute()["miou"])


def run_demo(
    out_dir: Path = Path("runs/demo"),
    data_root: Path = Path("data/demo"),
    quick: bool = False,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    from hrnas.engine.checkpoint import load_checkpoint
    from hrnas.engine.trainer import inference_state, load_model_from_checkpoint, train
    from hrnas.export.onnx import export_onnx
    from hrnas.tasks.base import get_task
    from hrnas.tasks.predict import predict_segmentation
    from hrnas.tasks.segmentation import prepare_demo_data

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = [f"data.root={data_root}"]
    extra = QUICK if quick else []
    prepare_demo_data(data_root)

    search_cfg = load_config("demo_seg", [*data, *DEMO_SEARCH, *extra, *overrides])
    retrain_cfg = load_config("demo_seg", [*data, *DEMO_SEARCH, *DEMO_RETRAIN, *extra, *overrides])
    size = tuple(search_cfg.penalty_input_size)
    task = get_task(search_cfg)
    supernet = task.build_spec()

    print(
        f"[1/4] search: {supernet.name} ({format_macs(cost(supernet, size).macs)} MACs at {size[0]}×{size[1]}) "
        f"→ target {format_macs(search_cfg.search.target_macs)}"
    )
    t0 = time.perf_counter()
    searched = train(search_cfg, out_dir / "search")
    t_search = time.perf_counter() - t0

    print("[2/4] retrain the searched architecture (weights inherited from the search)")
    t0 = time.perf_counter()
    # The short demo budget is spent better continuing from the search's weights than from scratch
    # (`hrnas retrain --init inherit`); benchmarks/searched_vs_uniform.py compares archs from scratch.
    init_state = inference_state(load_checkpoint(out_dir / "search" / "final.pt", expect_task=task.name))
    retrained = train(retrain_cfg, out_dir / "retrain", arch=searched.spec, init_state=init_state)
    t_retrain = time.perf_counter() - t0

    print("[3/4] evaluate, predict")
    baseline = background_miou(task)
    model, spec, _ = load_model_from_checkpoint(out_dir / "retrain" / "final.pt")
    val = task.val_dataset()
    images = [str(p) for p, _ in val.samples[:4]]
    predict_segmentation(task, model, images, out_dir / "predictions")

    print("[4/4] export to ONNX")
    report = export_onnx(model, out_dir / "model.onnx", input_size=size, in_channels=spec.stem.in_channels)

    sup, fin = cost(supernet, size), cost(spec, size)
    summary = {
        "input_size": list(size),
        "supernet": {"name": supernet.name, "macs": sup.macs, "params": sup.params},
        "searched": {"macs": fin.macs, "params": fin.params, "arch": str(out_dir / "search" / "arch.json")},
        "target_macs": search_cfg.search.target_macs,
        "val_miou": retrained.metrics["miou"],
        "val_pixel_acc": retrained.metrics["pixel_acc"],
        "background_baseline_miou": baseline,
        "onnx": {"path": str(report.path), "max_abs_diff": report.max_abs_diff},
        "seconds": {
            "search": round(t_search, 1),
            "retrain": round(t_retrain, 1),
            "total": round(time.perf_counter() - t_start, 1),
        },
        "search_log": [{k: r.get(k) for k in ("step", "macs", "step_time_s", "final")} for r in searched.search_log],
    }
    (out_dir / "report.json").write_text(json.dumps(summary, indent=1) + "\n")
    print()
    print(f"supernet   {format_macs(sup.macs):>8s} MACs  {sup.params / 1e6:.3f} M params  ({supernet.name})")
    print(
        f"searched   {format_macs(fin.macs):>8s} MACs  {fin.params / 1e6:.3f} M params  "
        f"(target {format_macs(search_cfg.search.target_macs)}, {out_dir / 'search' / 'arch.json'})"
    )
    print(f"val mIoU   {retrained.metrics['miou']:.4f}  (predict-background baseline {baseline:.4f})")
    print(f"ONNX       {report.path}  (max abs diff vs PyTorch {report.max_abs_diff:.2e})")
    print(f"files      {out_dir}: search/ retrain/ predictions/ model.onnx report.json; plot search/arch.png")
    print(f"time       {summary['seconds']['total']:.0f} s (search {t_search:.0f} s, retrain {t_retrain:.0f} s)")
    return summary
