"""Does the search pay? Searched vs uniformly thinned vs hand-designed networks, several seeds, one plot.

For a task preset, each budget (a fraction of the supernet's MACs) and each seed it trains

- **searched**: the search to that budget, then the retrain of the searched network from the search's
  weights: the recipe of ``hrnas demo`` (``hrnas search`` + ``hrnas retrain --init inherit``);
- **uniform**: the supernet thinned uniformly to the same MACs (every kernel group and transformer keeps
  one fraction of its units), trained from scratch for search + retrain steps: the *equal-compute rule*,
  both arms see the same number of training steps;

and once per seed a **reference**, a hand-designed network of similar cost trained with the same steps
and recipe (the task's data, loss, optimizer, schedule, EMA, BN calibration and metric):

- ``demo_seg``: torchvision's ``lraspp_mobilenet_v3_large`` (no pretrained weights), its ``width_mult``
  chosen so that its MACs are closest to ``--reference-budget`` (default: the middle budget);
- ``demo_cls``: torchvision's ``mobilenet_v3_small`` the same way;
- ``demo_kitti``: PointPillars' own ``pointpillars_bev`` backbone (its width is fixed).

Every finished run appends one line to ``OUT/results.jsonl`` (a rerun skips it; an interrupted run
resumes from its ``last.pt``). Then the CPU latency of each network's ONNX export (batch 1, ONNX Runtime,
``--threads``, the deployed form for hrnas networks) is measured once into ``OUT/latency.jsonl``; time it
on a quiet machine, or skip it with ``--no-latency`` and rerun later. Last, it writes ``OUT/pareto.png``
(metric vs MACs and vs latency, mean ± std over seeds), ``OUT/summary.json`` and prints the tables with
the paired difference searched − uniform per budget.

    python benchmarks/pareto.py demo_seg --budgets 0.2 0.4 0.6 --seeds 0 1 2 --out runs/pareto_seg
    python benchmarks/pareto.py demo_seg --search-steps 250 --retrain-steps 500 --out runs/pareto_seg_short
    python benchmarks/pareto.py demo_kitti --budgets 0.5 0.8 --device cuda
    python benchmarks/pareto.py demo_seg --quick --out /tmp/pareto   # a smoke run of every stage

``OUT/learning_curves.png`` draws the validation metric of every run against the steps trained
(``--eval-every N`` adds points before the final one), to see whether the recipe has stopped moving.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hrnas.engine.checkpoint import load_checkpoint
from hrnas.engine.config import RunConfig, load_config
from hrnas.engine.trainer import Trainer, inference_state, load_model_from_checkpoint
from hrnas.search.uniform import uniformly_thinned
from hrnas.space.cost import cost, format_macs
from hrnas.space.spec import NetSpec
from hrnas.tasks.base import get_task
from hrnas.utils.atomic import atomic_write_text

KINDS = ("searched", "uniform", "reference")


@dataclass(frozen=True)
class Preset:
    """How to run one task: its config preset, data overrides and data generator, the demo's search and
    retrain overrides, the metrics to report and the hand-designed reference."""

    config: str
    data: Callable[[str, bool], list[str]]
    search: list[str]
    retrain: list[str]
    quick: list[str]
    metrics: tuple[str, ...]
    reference: str
    default_budgets: tuple[float, ...]
    default_data: str
    extra_report: tuple[str, ...] = field(default=())


def _seg_data(root: str, quick: bool) -> list[str]:
    from hrnas.demos.scenes import ensure_demo_scenes

    if quick:
        ensure_demo_scenes(root, num_train=24, num_val=8, size=64, progress=False)
        return [f"data.root={root}", "data.crop_size=[64, 64]", "data.batch_size=4", "data.eval_batch_size=4"]
    ensure_demo_scenes(root)
    return [f"data.root={root}"]


def _cls_data(root: str, quick: bool) -> list[str]:
    return ["data.root=" + (root or '""')]  # "": the reader's default places (and the Debian package when missing)


def _kitti_data(root: str, quick: bool) -> list[str]:
    from hrnas.demos.kitti import DEMO_KITTI_DATA, NUM_TRAIN, NUM_VAL, QUICK_FRAMES, SEED
    from hrnas.demos.lidar.simulator import FAST_SCANNER, generate

    frames = QUICK_FRAMES if quick else (NUM_TRAIN, NUM_VAL)
    generate(root, *frames, SEED, scanner=FAST_SCANNER, progress=not quick)
    return [f"data.root={root}", *DEMO_KITTI_DATA]


def _presets() -> dict[str, Preset]:
    from hrnas.demos.kitti import DEMO_KITTI_RETRAIN, DEMO_KITTI_SEARCH, QUICK_KITTI
    from hrnas.demos.segmentation import DEMO_RETRAIN, DEMO_SEARCH, QUICK

    quick = [
        "train.steps=4",
        "search.shrink_every=2",
        "search.rho_free_steps=0",
        "search.rho_warmup_steps=1",
        "train.checkpoint_every=0",
        "train.bn_calib_batches=1",
    ]
    return {
        "demo_seg": Preset(
            "demo_seg",
            _seg_data,
            DEMO_SEARCH,
            DEMO_RETRAIN,
            [*QUICK, "train.steps=4", "search.shrink_every=2"],
            ("miou", "pixel_acc"),
            "lraspp_mobilenet_v3_large",
            (0.2, 0.4, 0.6),
            "data/demo",
        ),
        "demo_cls": Preset(
            "demo_cls",
            _cls_data,
            ["search.enabled=true"],
            ["train.steps=3500", "train.eval_every=0", "search.enabled=false"],
            [*quick, "data.batch_size=8", "data.eval_batch_size=64"],
            ("top1", "top5"),
            "mobilenet_v3_small",
            (0.3, 0.6),
            "",
        ),
        "demo_kitti": Preset(
            "demo_kitti",
            _kitti_data,
            DEMO_KITTI_SEARCH,
            DEMO_KITTI_RETRAIN,
            QUICK_KITTI,
            ("car_3d_moderate_r40", "car_bev_moderate_r40"),
            "pointpillars_bev",
            (0.5, 0.8),
            "data/kitti_sim_demo",
        ),
    }


# --- hand-designed references ---------------------------------------------------------------------


class _SegmentationLogits(nn.Module):
    """torchvision's segmentation models return ``{"out": logits}``; the task's loss takes the logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


def torchvision_reference(name: str, width: float, num_classes: int) -> nn.Module:
    """A torchvision network, no pretrained weights, scaled by ``width`` (``width_mult``)."""
    from torchvision.models import mobilenet_v3_large, mobilenet_v3_small

    if name == "lraspp_mobilenet_v3_large":
        # torchvision's own builder (lraspp_mobilenet_v3_large) with the backbone's width exposed
        from torchvision.models.segmentation.lraspp import _lraspp_mobilenetv3

        backbone = mobilenet_v3_large(weights=None, width_mult=width, dilated=True)
        return _SegmentationLogits(_lraspp_mobilenetv3(backbone, num_classes))
    if name == "mobilenet_v3_small":
        return mobilenet_v3_small(weights=None, width_mult=width, num_classes=num_classes)
    raise ValueError(f"no torchvision reference {name!r}")


def measured_macs(module: nn.Module, in_channels: int, size: tuple[int, int]) -> tuple[int, int]:
    """MACs (``FlopCounterMode`` FLOPs / 2, batch 1) and parameters of ``module``."""
    from torch.utils.flop_counter import FlopCounterMode

    module = module.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(torch.zeros(1, in_channels, *size))
    return counter.get_total_flops() // 2, sum(p.numel() for p in module.parameters())


def choose_width(name: str, target_macs: float, num_classes: int, in_channels: int, size: tuple[int, int]) -> float:
    """The ``width_mult`` in 0.25, 0.30, …, 1.50 whose network's MACs are closest to ``target_macs``."""
    best, best_gap = 1.0, float("inf")
    for i in range(5, 31):
        width = i / 20
        macs, _ = measured_macs(torchvision_reference(name, width, num_classes), in_channels, size)
        if abs(macs - target_macs) < best_gap:
            best, best_gap = width, abs(macs - target_macs)
    return best


class ReferenceTrainer(Trainer):
    """The task's recipe around a module that no spec describes: checkpoints keep the supernet's spec for
    their format and say ``reference`` beside it (they are for this benchmark, not for ``hrnas evaluate``)."""

    def __init__(self, cfg: RunConfig, run_dir: Path, network: Callable[[], nn.Module], **kwargs: Any) -> None:
        self._network = network
        self._cost: tuple[int, int] | None = None
        super().__init__(cfg, run_dir, **kwargs)

    def build_network(self, spec: NetSpec) -> nn.Module:
        module = self._network()
        self._cost = measured_macs(module, spec.stem.in_channels, tuple(self.cfg.penalty_input_size))
        return module.train()

    def network_cost(self) -> tuple[int, int]:
        assert self._cost is not None
        return self._cost

    def _payload(self) -> dict[str, Any]:
        return {**super()._payload(), "reference": True}


# --- runs -----------------------------------------------------------------------------------------


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _train(cfg: RunConfig, run_dir: Path, factory: Callable[..., Trainer] = Trainer, **kwargs: Any) -> Any:
    resume = (run_dir / "last.pt").is_file() and not (run_dir / "final_metrics.json").is_file()
    if (run_dir / "final_metrics.json").is_file():
        return None
    return factory(cfg, run_dir, resume=resume, show_progress=False, **kwargs).fit()


def _final_metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "final_metrics.json").read_text())


class Benchmark:
    """The runs of one preset into ``out``; see the module docstring."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.preset = _presets()[args.preset]
        self.out: Path = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.results_path = self.out / "results.jsonl"
        self.latency_path = self.out / "latency.jsonl"
        data_root = args.data if args.data is not None else self.preset.default_data
        self.base = [*self.preset.data(data_root, args.quick), f"train.device={args.device}", *args.common]
        quick = self.preset.quick if args.quick else []
        search_steps = [f"train.steps={args.search_steps}"] if args.search_steps else []
        retrain_steps = [f"train.steps={args.retrain_steps}"] if args.retrain_steps else []
        if args.quick:
            search_steps, retrain_steps = ["train.steps=4"], ["train.steps=4"]
        evals = [f"train.eval_every={args.eval_every}"] if args.eval_every else []
        self.search_set = [*self.base, *self.preset.search, *quick, *search_steps]
        self.retrain_set = [*self.search_set, *self.preset.retrain, *quick, *retrain_steps, *evals]
        probe = load_config(self.preset.config, self.search_set)
        self.search_steps = probe.train.steps
        self.retrain_steps = load_config(self.preset.config, self.retrain_set).train.steps
        self.total_steps = self.search_steps + self.retrain_steps
        self.task = get_task(probe)
        self.supernet = self.task.build_spec()
        self.size = tuple(probe.penalty_input_size)
        self.supernet_macs = cost(self.supernet, self.size).macs

    # results ------------------------------------------------------------------------------------
    def results(self) -> list[dict[str, Any]]:
        if not self.results_path.is_file():
            return []
        return [json.loads(line) for line in self.results_path.read_text().splitlines() if line.strip()]

    def _done(self, key: str) -> bool:
        return any(r["key"] == key for r in self.results())

    def _record(self, row: dict[str, Any]) -> None:
        with open(self.results_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def _row(
        self, key: str, kind: str, budget: float | None, seed: int, run_dir: Path, seconds: float, **extra: Any
    ) -> dict[str, Any]:
        metrics = _final_metrics(run_dir)
        return {
            "key": key,
            "preset": self.args.preset,
            "kind": kind,
            "budget": budget,
            "seed": seed,
            "target_macs": None if budget is None else round(budget * self.supernet_macs),
            "macs": metrics["macs"],
            "params": metrics["params"],
            "metrics": {k: v for k, v in _numbers(metrics).items() if k not in ("macs", "params", "step")},
            "steps": self.total_steps,
            "run_dir": str(run_dir),
            "seconds": round(seconds, 1),
            **extra,
        }

    # the three kinds ----------------------------------------------------------------------------
    def run_searched(self, budget: float, seed: int) -> None:
        key = f"searched/{budget:g}/s{seed}"
        if self._done(key):
            print(f"  {key}: done, skipped")
            return
        run_dir = self.out / "runs" / f"searched_{budget:g}_s{seed}"
        target = [f"search.target_macs={round(budget * self.supernet_macs)}", f"train.seed={seed}"]
        t0 = time.perf_counter()
        _train(load_config(self.preset.config, [*self.search_set, *target]), run_dir / "search")
        arch = NetSpec.load(run_dir / "search" / "arch.json")
        init = inference_state(load_checkpoint(run_dir / "search" / "final.pt", expect_task=self.task.name))
        _train(
            load_config(self.preset.config, [*self.retrain_set, *target]),
            run_dir / "retrain",
            arch=arch,
            init_state=init,
        )
        searched_macs = _final_metrics(run_dir / "search")["macs"]
        row = self._row(
            key, "searched", budget, seed, run_dir / "retrain", time.perf_counter() - t0, search_end_macs=searched_macs
        )
        self._record(row)
        self._say(row)

    def run_uniform(self, budget: float, seed: int) -> None:
        key = f"uniform/{budget:g}/s{seed}"
        if self._done(key):
            print(f"  {key}: done, skipped")
            return
        run_dir = self.out / "runs" / f"uniform_{budget:g}_s{seed}"
        arch = uniformly_thinned(self.supernet, budget * self.supernet_macs, self.size)
        steps = [f"train.steps={self.total_steps}", f"train.seed={seed}"]
        t0 = time.perf_counter()
        _train(load_config(self.preset.config, [*self.retrain_set, *steps]), run_dir, arch=arch)
        row = self._row(key, "uniform", budget, seed, run_dir, time.perf_counter() - t0)
        self._record(row)
        self._say(row)

    def reference_width(self) -> float | None:
        if self.preset.reference == "pointpillars_bev":
            return None
        budget = self.args.reference_budget or sorted(self.args.budgets)[len(self.args.budgets) // 2]
        return choose_width(
            self.preset.reference,
            budget * self.supernet_macs,
            self.task.num_outputs(),
            self.supernet.stem.in_channels,
            self.size,
        )

    def run_reference(self, seed: int, width: float | None) -> None:
        key = f"reference/s{seed}"
        if self._done(key):
            print(f"  {key}: done, skipped")
            return
        run_dir = self.out / "runs" / f"reference_s{seed}"
        steps = [f"train.steps={self.total_steps}", f"train.seed={seed}"]
        t0 = time.perf_counter()
        if width is None:  # a spec of the zoo, trained as the task trains any spec
            cfg = load_config(self.preset.config, [*self.retrain_set, *steps, f"model.spec={self.preset.reference}"])
            _train(cfg, run_dir)
        else:
            cfg = load_config(self.preset.config, [*self.retrain_set, *steps])
            classes = self.task.num_outputs()
            _train(
                cfg,
                run_dir,
                ReferenceTrainer,
                network=lambda: torchvision_reference(self.preset.reference, width, classes),
            )
        row = self._row(
            key,
            "reference",
            None,
            seed,
            run_dir,
            time.perf_counter() - t0,
            reference=self.preset.reference,
            width_mult=width,
        )
        self._record(row)
        self._say(row)

    def _say(self, row: dict[str, Any]) -> None:
        shown = ", ".join(f"{k} {row['metrics'].get(k, float('nan')):.4f}" for k in self.preset.metrics)
        print(f"  {row['key']}: {format_macs(row['macs'])} MACs, {shown} ({row['seconds']:.0f} s)", flush=True)

    # latency ------------------------------------------------------------------------------------
    def measure_latency(self, threads: int) -> None:
        from hrnas.export.latency import Protocol, pad_for, time_module
        from hrnas.space.deploy import deploy

        done = {}
        if self.latency_path.is_file():
            done = {json.loads(line)["key"]: 1 for line in self.latency_path.read_text().splitlines() if line.strip()}
        protocol = Protocol(runtime="onnxruntime", threads=threads)
        for row in self.results():
            if row["key"] in done:
                continue
            example = torch.randn(1, self.supernet.stem.in_channels, *self.size)
            if row["kind"] == "reference" and row.get("width_mult") is not None:
                module = torchvision_reference(row["reference"], row["width_mult"], self.task.num_outputs()).eval()
            else:
                model, spec, _ = load_model_from_checkpoint(Path(row["run_dir"]) / "final.pt")
                backbone = getattr(model, "backbone", None)
                if backbone is not None:
                    # a detector: its BEV backbone alone, on the pseudo-image of the pillar grid (the part
                    # the search changes; the pillar encoder and the head are the same for every network)
                    from hrnas.tasks.kitti.detector import backbone_in_channels

                    example = torch.randn(1, backbone_in_channels(spec), *self.size)
                    backbone = backbone.float().cpu().eval()
                    module = deploy(backbone, pad_to=pad_for(protocol)) if isinstance(spec, NetSpec) else backbone
                elif not isinstance(spec, NetSpec):
                    module = None
                else:
                    module = deploy(model.float().cpu().eval(), pad_to=pad_for(protocol))
            ms = None if module is None else time_module(module, example, protocol)
            with open(self.latency_path, "a") as f:
                f.write(json.dumps({"key": row["key"], "ms": ms, "threads": threads, "runtime": "onnxruntime"}) + "\n")
            print(f"  latency {row['key']}: {'n/a' if ms is None else f'{ms:.2f} ms'}", flush=True)

    def latencies(self) -> dict[str, float | None]:
        if not self.latency_path.is_file():
            return {}
        rows = [json.loads(line) for line in self.latency_path.read_text().splitlines() if line.strip()]
        return {r["key"]: r["ms"] for r in rows}


# --- report ---------------------------------------------------------------------------------------


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(rows: list[dict[str, Any]], latency: dict[str, float | None], metric: str) -> dict[str, Any]:
    """Per (kind, budget): MACs, latency and ``metric`` as mean ± std over seeds; per budget: the paired
    difference searched − uniform (mean, std, wins) over the seeds both finished."""
    groups: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["kind"], r["budget"]), []).append(r)
    points = []
    for (kind, budget), rs in sorted(groups.items(), key=lambda kv: (KINDS.index(kv[0][0]), kv[0][1] or 0)):
        m, s = _mean_std([r["metrics"].get(metric) for r in rs])
        macs, _ = _mean_std([r["macs"] for r in rs])
        lat, lat_s = _mean_std([latency.get(r["key"]) for r in rs])
        points.append(
            {
                "kind": kind,
                "budget": budget,
                "seeds": len(rs),
                metric: m,
                f"{metric}_std": s,
                "macs": macs,
                "latency_ms": lat,
                "latency_ms_std": lat_s,
                "width_mult": rs[0].get("width_mult"),
            }
        )
    paired = []
    budgets = sorted({r["budget"] for r in rows if r["kind"] == "searched"})
    for b in budgets:
        searched = {r["seed"]: r["metrics"].get(metric) for r in groups.get(("searched", b), [])}
        uniform = {r["seed"]: r["metrics"].get(metric) for r in groups.get(("uniform", b), [])}
        diffs = [searched[s] - uniform[s] for s in sorted(set(searched) & set(uniform))]
        m, s = _mean_std(diffs)
        paired.append(
            {
                "budget": b,
                "seeds": len(diffs),
                "mean": m,
                "std": s,
                "wins": sum(d > 0 for d in diffs),
                "wins_by_2_points": sum(d >= 0.02 for d in diffs),
            }
        )
    return {"metric": metric, "points": points, "searched_minus_uniform": paired}


def learning_curves(rows: list[dict[str, Any]], metric: str, search_steps: int) -> dict[str, list[list[float]]]:
    """``val/<metric>`` against the training step of every run that logged validation points
    (``--eval-every``; the final evaluation is always there). A searched run's retrain steps count
    after its search steps, so every kind is on the same axis of steps trained."""
    curves = {}
    for r in rows:
        log = Path(r["run_dir"]) / "metrics.jsonl"
        if not log.is_file():
            continue
        offset = search_steps if r["kind"] == "searched" else 0
        points = [
            [rec["step"] + offset, rec[f"val/{metric}"]]
            for rec in map(json.loads, log.read_text().splitlines())
            if f"val/{metric}" in rec
        ]
        curves[r["key"]] = sorted({p[0]: p for p in points}.values())
    return curves


def plot_curves(curves: dict[str, list[list[float]]], metric: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = {"searched": "C0", "uniform": "C1", "reference": "C2"}
    for key, points in sorted(curves.items()):
        if points:
            kind = key.split("/")[0]
            ax.plot(
                [p[0] for p in points], [p[1] for p in points], marker=".", color=colors[kind], alpha=0.7, label=key
            )
    ax.set_xlabel("training steps (a searched run: search + retrain)")
    ax.set_ylabel(f"val {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    ax.set_title(title)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def plot(summary: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = summary["metric"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"searched": ("C0", "o"), "uniform": ("C1", "s"), "reference": ("C2", "^")}
    for ax, xkey, xlabel in ((axes[0], "macs", "MMACs"), (axes[1], "latency_ms", "CPU latency, ms (ONNX Runtime)")):
        for kind in KINDS:
            pts = [p for p in summary["points"] if p["kind"] == kind and p[xkey] == p[xkey]]
            if not pts:
                continue
            pts.sort(key=lambda p: p[xkey])
            scale = 1e-6 if xkey == "macs" else 1.0
            color, marker = styles[kind]
            ax.errorbar(
                [p[xkey] * scale for p in pts],
                [p[metric] for p in pts],
                yerr=[p[f"{metric}_std"] for p in pts],
                color=color,
                marker=marker,
                capsize=3,
                linestyle="-" if kind != "reference" else "none",
                label=kind,
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{metric} (mean ± std over seeds)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "not measured yet", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def print_tables(summary: dict[str, Any]) -> None:
    metric = summary["metric"]
    print(f"\n{'kind':>9s} {'budget':>6s} {'seeds':>5s} {'MACs':>9s} {'latency ms':>12s} {metric:>16s}")
    for p in summary["points"]:
        budget = "-" if p["budget"] is None else f"{p['budget']:.2f}"
        lat = "n/a" if p["latency_ms"] != p["latency_ms"] else f"{p['latency_ms']:.2f}"
        width = f"  (width {p['width_mult']})" if p.get("width_mult") else ""
        print(
            f"{p['kind']:>9s} {budget:>6s} {p['seeds']:5d} {format_macs(p['macs']):>9s} {lat:>12s} "
            f"{p[metric]:8.4f} ± {p[f'{metric}_std']:.4f}{width}"
        )
    print(f"\nsearched − uniform ({metric}), paired by seed:")
    for d in summary["searched_minus_uniform"]:
        print(
            f"  budget {d['budget']:.2f}: {d['mean']:+.4f} ± {d['std']:.4f}, searched wins {d['wins']}/{d['seeds']}"
            f" (by ≥ 0.02: {d['wins_by_2_points']}/{d['seeds']})"
        )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("preset", nargs="?", default="demo_seg", choices=sorted(_presets()), help="task preset")
    ap.add_argument("--budgets", nargs="+", type=float, help="fractions of the supernet's MACs (preset default)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=None, help="output folder (default runs/pareto_PRESET)")
    ap.add_argument("--data", default=None, help="dataset root (the preset's demo data, generated when missing)")
    ap.add_argument("--device", default="auto", help="train.device: auto, cpu, cuda, cuda:N")
    ap.add_argument("--search-steps", type=int, default=None, help="search steps (default: the demo's)")
    ap.add_argument("--retrain-steps", type=int, default=None, help="retrain steps (default: the demo's)")
    ap.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="validation every N steps of the retrain/uniform/reference runs (a learning curve in their metrics.jsonl)",
    )
    ap.add_argument(
        "--reference-budget",
        type=float,
        default=None,
        help="the budget whose MACs the reference's width is matched to (default: the middle one)",
    )
    ap.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads for the latency (default 1)")
    ap.add_argument("--no-latency", action="store_true", help="do not time the exports (rerun later to add them)")
    ap.add_argument(
        "--set", dest="common", action="append", default=[], metavar="KEY=VALUE", help="a config override for every run"
    )
    ap.add_argument("--quick", action="store_true", help="tiny data and 4+4 steps: a smoke run of every stage")
    args = ap.parse_args(argv)
    presets = _presets()
    preset = presets[args.preset]
    args.budgets = args.budgets or ([0.5] if args.quick else list(preset.default_budgets))
    if args.quick and args.seeds == [0, 1, 2]:
        args.seeds = [0, 1]
    args.out = args.out or Path(f"runs/pareto_{args.preset}")
    if any(not 0 < b < 1 for b in args.budgets):
        print(f"pareto.py: error: --budgets {args.budgets}: fractions of the supernet, each in (0, 1)", file=sys.stderr)
        return 2

    bench = Benchmark(args)
    print(
        f"{args.preset}: supernet {bench.supernet.name} {format_macs(bench.supernet_macs)} MACs at "
        f"{bench.size[0]}×{bench.size[1]}; budgets {args.budgets}; seeds {args.seeds}; {bench.search_steps} search + "
        f"{bench.retrain_steps} retrain steps; uniform and reference train {bench.total_steps} steps "
        "(equal-compute rule)",
        flush=True,
    )
    width = bench.reference_width() if "reference" in args.kinds else None
    if "reference" in args.kinds:
        what = f"width_mult {width}" if width is not None else "its own fixed width"
        print(f"reference: {preset.reference} ({what})", flush=True)
    for seed in args.seeds:
        for budget in args.budgets:
            if "searched" in args.kinds:
                bench.run_searched(budget, seed)
            if "uniform" in args.kinds:
                bench.run_uniform(budget, seed)
        if "reference" in args.kinds:
            bench.run_reference(seed, width)
    if not args.no_latency:
        bench.measure_latency(args.threads)

    metric = preset.metrics[0]
    summary = summarise(bench.results(), bench.latencies(), metric)
    summary.update(
        preset=args.preset,
        supernet=bench.supernet.name,
        supernet_macs=bench.supernet_macs,
        input_size=list(bench.size),
        search_steps=bench.search_steps,
        retrain_steps=bench.retrain_steps,
        rule="uniform and reference train search + retrain steps (equal compute)",
        latency={"runtime": "onnxruntime", "threads": args.threads, "batch": 1},
        learning_curves=learning_curves(bench.results(), metric, bench.search_steps),
    )
    atomic_write_text(args.out / "summary.json", json.dumps(summary, indent=1) + "\n")
    plot(summary, args.out / "pareto.png", f"{args.preset}: {metric} vs cost ({len(args.seeds)} seeds)")
    curves_png = args.out / "learning_curves.png"
    plot_curves(summary["learning_curves"], metric, curves_png, f"{args.preset}: val {metric} while training")
    print_tables(summary)
    print(
        f"\nfiles: {bench.results_path}, {bench.latency_path}, {args.out / 'summary.json'}, {args.out / 'pareto.png'}, "
        f"{curves_png}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
