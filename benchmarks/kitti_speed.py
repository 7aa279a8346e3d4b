"""Per-stage CPU time of one full-size KITTI frame through the PointPillars pipeline.

One synthetic LiDAR frame (default 120 k points from a 64-beam scanner looking at the camera's field of
view, shuffled as in training) goes through the stages in ``STAGES`` in order; each stage is timed alone,
on the outputs of the stages before it, and reported as the median (and the minimum) over ``--repeats``
runs after warm-up. Targets from the KITTI issue: pillarization of 120 k points <= 10 ms on 2 CPU cores.

Then the network stages run once per backbone of ``--backbones`` on that frame's pseudo-image (1, 64, 496,
432): ``backbone``, the anchor ``head`` and ``decode_nms`` (score threshold 0 so that the top 4096 anchors
are decoded and go through the rotated NMS: the worst case of the reference post-processing, whatever the
untrained weights score). A backbone is a zoo name, a spec JSON, or ``NAME@REF``: the zoo supernet ``NAME``
thinned uniformly (:func:`hrnas.search.uniform.uniformly_thinned`) to the backbone MACs of ``REF``. The
default compares ``pointpillars_bev`` with ``hrnas_kitti_supernet@pointpillars_bev`` (no more MACs).

    OMP_NUM_THREADS=2 python benchmarks/kitti_speed.py                  # test caps (40000 pillars)
    OMP_NUM_THREADS=2 python benchmarks/kitti_speed.py --train --json   # train caps (16000 pillars)
    python benchmarks/kitti_speed.py --device cuda --stages scatter     # only the stages up to scatter
    OMP_NUM_THREADS=1 python benchmarks/kitti_speed.py --model-repeats 3  # backbones on a busy machine

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

from hrnas.space.cost import cost
from hrnas.space.pointpillars import PointPillarsSpec
from hrnas.space.spec import NetSpec
from hrnas.tasks.kitti.anchors import KITTI_ANCHOR_CLASSES, AnchorConfig, generate_anchors
from hrnas.tasks.kitti.cost import bev_features
from hrnas.tasks.kitti.detector import build_detector
from hrnas.tasks.kitti.pillars import PillarConfig, PillarVFE, pillarize, scatter_to_bev
from hrnas.tasks.kitti.postprocess import PostProcessConfig, nms_benchmark_boxes, postprocess, rotated_nms

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


MODEL_STAGES = ("backbone", "head", "decode_nms")


def resolve_backbone(ref: str, input_size: tuple[int, int]) -> NetSpec | PointPillarsSpec:
    """The backbone spec of ``ref``: a zoo name or spec JSON, or ``NAME@REF`` (the zoo supernet ``NAME``
    thinned uniformly to the backbone MACs of ``REF`` at ``input_size``)."""
    from hrnas.search.uniform import uniformly_thinned
    from hrnas.space.zoo import get_spec, list_specs, load_spec_file

    def load(name: str) -> NetSpec | PointPillarsSpec:
        return get_spec(name) if name in list_specs() else load_spec_file(name)

    if "@" not in ref:
        return load(ref)
    name, budget_ref = ref.split("@", 1)
    supernet = load(name)
    if not isinstance(supernet, NetSpec):
        raise SystemExit(f"--backbones {ref}: {name} is not a supernet that can be thinned")
    return uniformly_thinned(supernet, cost(load(budget_ref), input_size).macs, input_size)


def time_model_stages(
    spec: NetSpec | PointPillarsSpec, config: PillarConfig, bev: torch.Tensor, repeats: int, warmup: int
) -> dict[str, Any]:
    """Median and minimum ms of backbone, head and decode + NMS of the detector around ``spec`` on the
    pseudo-image ``bev (1, 64, H, W)``, with the backbone and head MACs."""
    anchor_config = AnchorConfig(KITTI_ANCHOR_CLASSES, config.point_cloud_range)
    detector = build_detector(spec, config, anchor_config, init="default").to(bev.device).eval()
    channels, feature_size = bev_features(spec, tuple(bev.shape[-2:]))
    anchors = generate_anchors(anchor_config, feature_size, device=bev.device)
    worst_case = PostProcessConfig(score_threshold=0.0)
    fns: dict[str, Callable[[dict[str, Any]], Any]] = {
        "backbone": lambda o: detector.backbone(bev),
        "head": lambda o: detector.head(o["backbone"]),
        "decode_nms": lambda o: postprocess(o["head"], anchors, worst_case),
    }
    outputs: dict[str, Any] = {}
    row: dict[str, Any] = {"name": spec.name, "backbone_macs": cost(spec, tuple(bev.shape[-2:])).macs}
    row["head_macs"] = sum(m.weight.numel() for m in detector.head.modules() if isinstance(m, torch.nn.Conv2d))
    row["head_macs"] *= feature_size[0] * feature_size[1]
    with torch.inference_mode():
        for name in MODEL_STAGES:
            fn = fns[name]
            times = []
            for i in range(warmup + repeats):
                _sync(bev.device)
                t0 = time.perf_counter()
                outputs[name] = fn(outputs)
                _sync(bev.device)
                if i >= warmup:
                    times.append(1e3 * (time.perf_counter() - t0))
            row[f"{name}_median_ms"], row[f"{name}_min_ms"] = statistics.median(times), min(times)
    row["detections"] = int(outputs["decode_nms"][0].scores.numel())
    row["bev_channels"] = channels
    return row


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
    ap.add_argument(
        "--backbones",
        nargs="*",
        default=["pointpillars_bev", "hrnas_kitti_supernet@pointpillars_bev"],
        help="backbones for the network stages (zoo name, JSON, or NAME@REF = NAME thinned to REF's MACs); "
        "none to skip them",
    )
    ap.add_argument("--model-repeats", type=int, default=5, help="timed runs per network stage")
    ap.add_argument("--model-warmup", type=int, default=1)
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

    models = []
    if wanted is None and "bev" in ctx.outputs:
        size = tuple(ctx.outputs["bev"].shape[-2:])
        for ref in args.backbones:
            spec = resolve_backbone(ref, size)
            row = time_model_stages(spec, config, ctx.outputs["bev"], args.model_repeats, args.model_warmup)
            models.append({**row, "name": ref if "@" in ref else row["name"]})

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
        "models": [{k: round(v, 3) if isinstance(v, float) else v for k, v in m.items()} for m in models],
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
    if models:
        print(f"network stages on the {size[0]}×{size[1]} pseudo-image, batch 1 (median / min ms):")
        print(f"  {'backbone':<40} {'bb GMACs':>8} {'head GMACs':>10} {'backbone':>17} {'head':>15} {'decode+nms':>15}")
        for m in models:
            cells = " ".join(
                f"{m[f'{s}_median_ms']:8.1f}/{m[f'{s}_min_ms']:<8.1f}".rjust(w)
                for s, w in zip(MODEL_STAGES, (17, 15, 15), strict=True)
            )
            print(f"  {m['name']:<40} {m['backbone_macs'] / 1e9:8.2f} {m['head_macs'] / 1e9:10.2f} {cells}".rstrip())


if __name__ == "__main__":
    main()
