"""Per-stage CPU time of one full-size KITTI frame through the PointPillars pipeline.

One synthetic LiDAR frame (default 120 k points from a 64-beam scanner looking at the camera's field of
view, shuffled as in training) goes through the stages in ``STAGES`` in order; each stage is timed alone,
on the outputs of the stages before it, and reported as the median (and the minimum) over ``--repeats``
runs after warm-up. Targets from the KITTI issue: pillarization of 120 k points <= 10 ms on 2 CPU cores.

    OMP_NUM_THREADS=2 python benchmarks/kitti_speed.py                  # test caps (40000 pillars)
    OMP_NUM_THREADS=2 python benchmarks/kitti_speed.py --train --json   # train caps (16000 pillars)
    python benchmarks/kitti_speed.py --device cuda --stages scatter     # only the stages up to scatter

Run it on an idle machine (check ``uptime``): the medians move with the load, and with 2 threads a busy
second core makes them jump (OpenMP threads wait for each other); the minimum is the steadier figure then.

To add a stage, write ``def stage_x(ctx: Context) -> dict[str, Any]`` that reads earlier outputs from
``ctx.outputs`` (and ``ctx.args``) and returns its own, and append ``("x", stage_x)`` to ``STAGES``. The
inputs a stage reads are fixed while it is timed, so every stage must be a pure function of them.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from hrnas.detection.pillars import PillarConfig, PillarVFE, pillarize, scatter_to_bev
from hrnas.detection.postprocess import nms_benchmark_boxes, rotated_nms

# HDL-64E-like scanner, mounted 1.73 m above a flat ground.
SENSOR_HEIGHT = 1.73
ELEVATIONS_DEG = (2.0, -24.9)
FOV_DEG = 90.0


def synthetic_cloud(num_points: int, seed: int = 0) -> torch.Tensor:
    """A deterministic (N, 4) LiDAR-like cloud: 64 rings over a 90-degree field of view ahead, hitting the
    ground or, along a third of the rays, an obstacle nearer than the ground or a far wall; range noise
    2 cm, reflectance uniform in [0, 1), rows shuffled. Some points fall outside the KITTI range, as in
    real frames."""
    g = torch.Generator().manual_seed(seed)
    beams = 64
    per_ring = math.ceil(num_points / beams)
    elev = torch.deg2rad(torch.linspace(*ELEVATIONS_DEG, beams)).repeat_interleave(per_ring)[:num_points]
    azim = torch.deg2rad((torch.rand(num_points, generator=g) - 0.5) * FOV_DEG)
    far = 10.0 + 70.0 * torch.rand(num_points, generator=g)
    ground = torch.where(elev < 0, SENSOR_HEIGHT / torch.tan(-elev).clamp_min(1e-6), far)
    rng = torch.minimum(ground, far)
    obstacle = torch.rand(num_points, generator=g) < 1 / 3
    rng = torch.where(obstacle, 3.0 + (rng - 3.0).clamp_min(0) * torch.rand(num_points, generator=g), rng)
    rng = rng + 0.02 * torch.randn(num_points, generator=g)
    flat = rng * torch.cos(elev)
    pts = torch.stack(
        [
            flat * torch.cos(azim),
            flat * torch.sin(azim),
            rng * torch.sin(elev),
            torch.rand(num_points, generator=g),
        ],
        dim=1,
    )
    return pts[torch.randperm(num_points, generator=g)].contiguous()


@dataclass
class Context:
    """What the stages share: the parsed arguments, the pillar config and the outputs of earlier stages."""

    args: argparse.Namespace
    config: PillarConfig
    points: torch.Tensor
    outputs: dict[str, Any] = field(default_factory=dict)
    modules: dict[str, torch.nn.Module] = field(default_factory=dict)


def stage_pillarize(ctx: Context) -> dict[str, Any]:
    return {"pillars": pillarize(ctx.points, ctx.config, training=ctx.args.train)}


def stage_vfe(ctx: Context) -> dict[str, Any]:
    vfe = ctx.modules.setdefault("vfe", PillarVFE(ctx.config).eval())
    p = ctx.outputs["pillars"]
    with torch.inference_mode():
        return {"pillar_features": vfe(p.voxels, p.num_points, p.coords)}


def stage_scatter(ctx: Context) -> dict[str, Any]:
    p = ctx.outputs["pillars"]
    with torch.inference_mode():
        bev = scatter_to_bev(ctx.outputs["pillar_features"], p.coords, 1, ctx.config.grid_size)
    return {"bev": bev}


@functools.cache
def _nms_input(num_boxes: int, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    boxes, scores = nms_benchmark_boxes(num_boxes, seed=seed)
    return boxes.to(device), scores.to(device)


def stage_nms(ctx: Context) -> dict[str, Any]:
    """Rotated BEV NMS (IoU 0.01, <= 500 kept) of 4096 synthetic pre-NMS boxes clustered like a detector's
    output (target <= 50 ms on 2 CPU cores); independent of the stages before it."""
    boxes, scores = _nms_input(4096, ctx.args.seed, str(ctx.points.device))
    return {"nms_keep": rotated_nms(boxes, scores, iou_threshold=0.01, max_output=500)}


STAGES: list[tuple[str, Callable[[Context], dict[str, Any]]]] = [
    ("pillarize", stage_pillarize),
    ("vfe", stage_vfe),
    ("scatter", stage_scatter),
    ("nms", stage_nms),
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_stage(
    fn: Callable[[Context], dict[str, Any]], ctx: Context, repeats: int, warmup: int
) -> tuple[list[float], dict[str, Any]]:
    """Wall times of ``fn(ctx)`` in milliseconds (one per repeat, after ``warmup`` calls), and its outputs."""
    device = ctx.points.device
    for _ in range(warmup):
        out = fn(ctx)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        out = fn(ctx)
        _sync(device)
        times.append(1e3 * (time.perf_counter() - t0))
    return times, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=120_000, help="points in the synthetic frame")
    ap.add_argument("--repeats", type=int, default=50, help="timed runs per stage (median reported)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--train", action="store_true", help="training caps (16000 pillars) instead of test (40000)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default / OMP_NUM_THREADS)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="torch device of the points and modules (cpu, cuda, ...)")
    ap.add_argument("--stages", nargs="*", default=None, help="run only the first stages up to these names")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    config = PillarConfig()
    points = synthetic_cloud(args.points, args.seed).to(args.device)
    ctx = Context(args=args, config=config, points=points)
    wanted = set(args.stages) if args.stages else None
    results: dict[str, float] = {}
    fastest: dict[str, float] = {}
    for name, fn in STAGES:
        times, out = time_stage(fn, ctx, args.repeats, args.warmup)
        ctx.outputs.update(out)
        results[name], fastest[name] = statistics.median(times), min(times)
        if wanted is not None:
            wanted.discard(name)
            if not wanted:
                break

    pillars = ctx.outputs["pillars"]
    info = {
        "points": args.points,
        "mode": "train" if args.train else "test",
        "device": str(points.device),
        "threads": torch.get_num_threads(),
        "pillars": int(pillars.num_points.numel()),
        "kept_points": int(pillars.num_points.sum()),
        "median_ms": {k: round(v, 3) for k, v in results.items()},
        "min_ms": {k: round(v, 3) for k, v in fastest.items()},
    }
    if args.json:
        print(json.dumps(info))
        return
    print(
        f"{info['points']} points, {info['mode']} caps, {info['device']}, {info['threads']} threads: "
        f"{info['pillars']} pillars, {info['kept_points']} points kept"
    )
    print(f"  {'stage':<12} {'median ms':>10} {'min ms':>10}")
    for name, ms in results.items():
        print(f"  {name:<12} {ms:10.2f} {fastest[name]:10.2f}")
    print(f"  {'total':<12} {sum(results.values()):10.2f} {sum(fastest.values()):10.2f}")


if __name__ == "__main__":
    main()
