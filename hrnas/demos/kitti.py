"""``hrnas demo --task kitti``: KITTI 3D detection end to end on a laptop CPU with no downloads.

1. simulate a small KITTI set (:func:`hrnas.demos.lidar.simulator.generate` with the fast scanner), if
   missing;
2. search the demo supernet (``hrnas_demo_kitti_supernet`` of ``demo_kitti.yaml``, here on a 192×192
   pseudo-image of 0.24 m pillars) under a MAC budget while training the detector;
3. retrain the searched backbone, starting from the weights the search left (``--init inherit``);
4. evaluate it on the simulated val split with the official KITTI protocol (R40 and R11);
5. write KITTI result files and BEV / camera pictures for a few val frames, and export the network part
   to ONNX (checked in onnxruntime);
6. print the MACs of the searched backbone, the supernet and ``pointpillars_bev`` at the demo grid and at
   the full 496×432 grid, and the AP table; write ``report.json``.

The recipe (frames, steps, search schedule) is sized to finish in about 5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hrnas.space.cost import cost, format_macs

NUM_TRAIN = 200
NUM_VAL = 48
SEED = 0
PREDICT_FRAMES = 4
FULL_GRID = (496, 432)

# A 46 m x 46 m area ahead at 0.24 m pillars (192x192): with the anchors at stride 2 (0.48 m apart) a car
# gets about 2.4 positive anchors, against 1.5 at the preset's 0.32 m and 5 at KITTI's 0.16 m, which is
# what a few hundred steps need. No global rotation: it halves the AP reached in such a short schedule.
DEMO_KITTI_DATA = [
    "task.voxel_size=[0.24, 0.24, 4.0]",
    "task.point_cloud_range=[0.0, -23.04, -3.0, 46.08, 23.04, 1.0]",
    "data.crop_size=[192, 192]",
    "task.rotation=0.0",
    "schedule.onecycle_pct_start=0.2",
]
DEMO_KITTI_SEARCH = [
    "train.steps=180",
    "train.eval_every=0",
    "train.checkpoint_every=50",
    "search.enabled=true",
    "search.shrink_every=50",
    "search.rho_free_steps=20",
    "search.rho_warmup_steps=50",
    "search.target_macs=190M",
    "search.factor_lr_mult=10",
    "search.threshold=0.05",
]
DEMO_KITTI_RETRAIN = ["train.steps=380", "train.eval_every=0", "train.checkpoint_every=100", "search.enabled=false"]
QUICK_KITTI = [
    "train.steps=4",
    "search.shrink_every=2",
    "search.rho_free_steps=0",
    "search.rho_warmup_steps=1",
    "train.checkpoint_every=0",
    "train.bn_calib_batches=1",
    "data.batch_size=2",
    "data.eval_batch_size=2",
    "data.crop_size=[96, 96]",
    "task.point_cloud_range=[0.0, -11.52, -3.0, 23.04, 11.52, 1.0]",
    "search.target_macs=50M",
]
QUICK_FRAMES = (4, 2)
"""(train, val) frames of the ``quick`` smoke variant."""


def _macs_rows(supernet: Any, searched: Any, demo_grid: tuple[int, int]) -> dict[str, dict[str, Any]]:
    """Backbone MACs and params of the three backbones at the demo grid and at the full KITTI grid."""
    from hrnas.space.zoo import get_spec

    rows: dict[str, dict[str, Any]] = {}
    for key, spec in (
        ("searched", searched),
        ("supernet", supernet),
        ("pointpillars_bev", get_spec("pointpillars_bev")),
    ):
        small, full = cost(spec, demo_grid), cost(spec, FULL_GRID)
        rows[key] = {
            "name": spec.name or key,
            "macs_demo_grid": small.macs,
            "macs_full_grid": full.macs,
            "params": small.params,
        }
    return rows


def format_ap_table(results: dict[str, Any]) -> str:
    """R40 AP (percent) of :func:`hrnas.tasks.kitti.eval.evaluate_kitti` results as one compact table: a row
    per class and metric (2D bbox, BEV, 3D, AOS) at the official IoU, columns easy / moderate / hard."""
    lines = [f"{'AP_R40':<22} {'easy':>7} {'moderate':>9} {'hard':>7}"]
    for cls, per_metric in results.items():
        for metric in ("bbox", "bev", "3d", "aos"):
            e, m, h = per_metric[metric]["R40"]
            label = f"{cls} {metric} @{per_metric[metric]['iou']:.2f}" if metric != "aos" else f"{cls} aos"
            lines.append(f"{label:<22} {e:7.2f} {m:9.2f} {h:7.2f}")
    return "\n".join(lines)


def run_kitti_demo(
    out_dir: Path = Path("runs/demo_kitti"),
    data_root: Path | None = None,
    quick: bool = False,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Run the KITTI demo (see the module docstring) into ``out_dir``; returns the report it writes to
    ``out_dir/report.json``. ``data_root`` defaults to ``data/kitti_sim_demo`` (``data/kitti_sim_quick``
    with ``quick``, so the smoke run never replaces the demo set). ``quick`` runs a few steps on a handful
    of frames (a smoke test); ``overrides`` are ``KEY=VALUE`` config overrides applied to both search and retrain."""
    from hrnas.demos.common import search_and_retrain, search_target
    from hrnas.demos.lidar.simulator import FAST_SCANNER, generate, read_meta
    from hrnas.engine.trainer import load_model_from_checkpoint
    from hrnas.tasks.base import get_task
    from hrnas.tasks.kitti.eval import format_kitti_table
    from hrnas.tasks.kitti.export import export_detector_onnx

    t_start = time.perf_counter()
    data_root = (
        Path(data_root) if data_root is not None else Path("data/kitti_sim_quick" if quick else "data/kitti_sim_demo")
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    num_train, num_val = QUICK_FRAMES if quick else (NUM_TRAIN, NUM_VAL)
    print(f"[0/5] simulated KITTI in {data_root} ({num_train} train + {num_val} val frames, fast scanner)")
    generate(data_root, num_train, num_val, SEED, scanner=FAST_SCANNER, progress=True)
    counts = (read_meta(data_root) or {}).get("counts", {})
    t_data = time.perf_counter() - t_start

    extra = QUICK_KITTI if quick else []
    data = [f"data.root={data_root}", *DEMO_KITTI_DATA]
    run = search_and_retrain(
        "demo_kitti",
        [*data, *DEMO_KITTI_SEARCH, *extra, *overrides],
        [*data, *DEMO_KITTI_SEARCH, *DEMO_KITTI_RETRAIN, *extra, *overrides],
        out_dir,
        total_steps=5,
        searched_what="backbone",
    )
    task, supernet, grid = run.task, run.supernet, run.input_size
    search_cfg, retrain_cfg = run.search_cfg, run.retrain_cfg
    searched, retrained, t_search, t_retrain = run.searched, run.retrained, run.search_seconds, run.retrain_seconds
    metrics = retrained.metrics  # the official evaluation of the val split at the end of the retrain

    print(f"[3/5] predict {PREDICT_FRAMES} val frames (KITTI result files, BEV and camera pictures)")
    t0 = time.perf_counter()
    model, spec, _ = load_model_from_checkpoint(out_dir / "retrain" / "final.pt", expect_task=task.name)
    retrain_task = get_task(retrain_cfg)
    retrain_task.predict_split(
        model, retrain_cfg.data.val_split, out_dir / "predictions", progress=False, max_frames=PREDICT_FRAMES
    )

    print("[4/5] export the network part to ONNX")
    # the TorchScript exporter: seconds instead of half a minute for dynamo, checked the same way
    report = export_detector_onnx(model, out_dir / "model.onnx", retrain_task.pillar_config, dynamo=False)
    t_predict_export = time.perf_counter() - t0

    rows = _macs_rows(supernet, spec, grid)
    summary = {
        "data": {"root": str(data_root), "counts": counts},
        "grid": list(grid),
        "full_grid": list(FULL_GRID),
        "backbones": rows,
        "target_macs": search_cfg.search.target_macs,
        "arch": str(out_dir / "search" / "arch.json"),
        "metrics": {k: v for k, v in metrics.items() if k != "kitti"},
        "kitti": metrics.get("kitti"),
        "onnx": {"path": str(report.path), "max_abs_diff": report.max_abs_diff},
        "seconds": {
            "data": round(t_data, 1),
            "search": round(t_search, 1),
            "retrain_and_evaluate": round(t_retrain, 1),
            "predict_and_export": round(t_predict_export, 1),
            "total": round(time.perf_counter() - t_start, 1),
        },
        "search_log": [{k: r.get(k) for k in ("step", "macs", "step_time_s", "final")} for r in searched.search_log],
    }
    (out_dir / "report.json").write_text(json.dumps(summary, indent=1) + "\n")

    print("[5/5] report")
    print("\nbackbone MACs (2D part; the anchor head and the VFE are not included)")
    print(f"  {'':<18} {f'{grid[0]}×{grid[1]}':>10} {f'{FULL_GRID[0]}×{FULL_GRID[1]}':>10} {'params':>9}")
    for key, row in rows.items():
        print(
            f"  {key:<18} {format_macs(row['macs_demo_grid']):>10} {format_macs(row['macs_full_grid']):>10} "
            f"{row['params'] / 1e6:8.3f}M"
        )
    print(f"  (search target {search_target(search_cfg)} at {grid[0]}×{grid[1]})\n")
    if metrics.get("kitti"):
        (out_dir / "kitti_eval.txt").write_text(format_kitti_table(metrics["kitti"]))
        print(format_ap_table(metrics["kitti"]))
    print(f"\nval: {counts.get('val', {}).get('Car_moderate', '?')} cars at moderate difficulty in {num_val} frames")
    diff = "unchecked" if report.max_abs_diff is None else f"max abs diff vs PyTorch {report.max_abs_diff:.2e}"
    print(f"ONNX       {report.path}  ({diff})")
    print(f"files      {out_dir}: search/ retrain/ predictions/ model.onnx report.json kitti_eval.txt (official table)")
    s = summary["seconds"]
    print(
        f"time       {s['total']:.0f} s (data {s['data']:.0f} s, search {s['search']:.0f} s, "
        f"retrain + evaluation {s['retrain_and_evaluate']:.0f} s, predict + export {s['predict_and_export']:.0f} s)"
    )
    return summary
