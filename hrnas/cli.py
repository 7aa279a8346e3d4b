"""The ``hrnas`` command line. Each subcommand parses its arguments and delegates to the library.

Task-specific behaviour comes from the task registry (:mod:`hrnas.tasks.base`): ``cost`` asks which task
claims a spec and reports that task's whole-model cost, ``evaluate``/``predict``/``export`` call the
checkpoint's task, extra subcommands come from ``Task.cli_commands`` and the demos from
:data:`hrnas.demos.DEMOS`; nothing here names a task.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

EPILOG = """examples:
  hrnas demo                                   search, retrain, evaluate and export on the demo scenes
{demos}  hrnas zoo                                    list the zoo
  hrnas cost hrnas_cityscapes_supernet --input-size 512 1024 --no-transformer
  hrnas cost pointpillars_bev --input-size 496 432   a detector backbone: the whole detector, by part
  hrnas search demo_seg --set search.target_macs=20M
  hrnas latency-table hrnas_demo_supernet --input-size 128 128 -o demo_table.json
  hrnas search demo_seg --target-latency 2.5ms --latency-table demo_table.json
  hrnas retrain demo_seg --arch runs/demo_seg-search/arch.json
  hrnas evaluate runs/demo_seg-retrain/final.pt
  hrnas export runs/demo_seg-retrain/final.pt -o model.onnx

errors:
  a bad input (a spec, config, size, target, path or checkpoint) is reported as one line,
  `hrnas COMMAND: error: MESSAGE` naming the file/key/value, with exit status 2; pass --debug
  (before or after the command) or set HRNAS_DEBUG=1 to get the full traceback instead.

CPU threads and signals:
  training uses as many threads as other processes leave cores free, re-checked every 5 s
  (set OMP_NUM_THREADS to fix the count); SIGTERM or Ctrl-C finishes the current step, writes a
  resumable last.pt and exits 143 or 130 (continue with --resume); a second Ctrl-C stops at once.
"""

DEBUG_ENV = "HRNAS_DEBUG"
"""Set to 1 (anything but empty or 0) to re-raise errors with their traceback, as ``--debug`` does."""

USER_PATH_ERRORS: tuple[type[OSError], ...] = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
"""Errors about a path the user gave that are reported as one line, like the library's own errors."""


class CliParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr:
    ``hrnas cost: error: argument --input-size: invalid int value: 'x' (see hrnas cost --help)``, exit 2."""

    commands: dict[str, argparse.ArgumentParser]
    """The parser of each subcommand, by name (set by :func:`build_parser`)."""

    def error(self, message: str) -> NoReturn:
        first = message.splitlines()[0] if message else "bad arguments"
        self.exit(2, f"{self.prog}: error: {first} (see {self.prog} --help)\n")


def _load_spec(ref: str, transformer: bool = True) -> Any:
    from hrnas.space.zoo import resolve_spec

    return resolve_spec(ref, transformer=transformer, key="spec")


def _output_file(path: str | Path, flag: str) -> Path:
    """An output file the user named with ``flag``, checked before any work: not an existing folder."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{flag} {path}: is a folder; give the name of the file to write")
    return path


def _input_size(spec: Any, size: Sequence[int]) -> tuple[int, int]:
    """``--input-size H W`` checked against what ``spec`` can take (SpecError naming the value and the
    minimum)."""
    from hrnas.space.cost import check_input_size

    return check_input_size(spec, size, "--input-size " + " ".join(str(v) for v in size))


# --- zoo / cost / plot ------------------------------------------------------------------------------


def cmd_zoo(args: argparse.Namespace) -> int:
    from hrnas.space.zoo import list_specs

    for name, desc in list_specs().items():
        print(f"{name:28s} {desc}")
    return 0


def _claiming_task(spec: Any) -> Any:
    """The task class whose network is built around ``spec`` (None: the spec is the whole model)."""
    from hrnas.tasks.base import task_classes

    return next((cls for cls in task_classes() if cls.claims_spec(spec)), None)


def cmd_cost(args: argparse.Namespace) -> int:
    from hrnas.space.cost import format_macs
    from hrnas.tasks.base import Task

    spec = _load_spec(args.spec, transformer=not args.no_transformer)
    size = _input_size(spec, args.input_size)
    task = _claiming_task(spec) or Task
    options = {o.dest: getattr(args, o.dest) for o in task.cost_options}
    model_cost = task.model_cost(spec, size, **options)
    c = model_cost.whole
    if args.json:
        out = {
            "spec": spec.name or args.spec,
            "input_size": list(size),
            "macs": c.macs,
            "params": c.params,
            "groups": {k: {"macs": m, "params": p} for k, (m, p) in c.by_group().items()},
        }
        if model_cost.backbone is not None:
            out["backbone"] = {"macs": model_cost.backbone.macs, "params": model_cost.backbone.params}
        if args.per_module:
            out["modules"] = [{"path": i.path, "macs": i.macs, "params": i.params} for i in c.items]
        print(json.dumps(out, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{spec.name or args.spec} at {size[0]}×{size[1]}")
    table.add_column("part")
    table.add_column("MACs", justify="right")
    table.add_column("share", justify="right")
    table.add_column("params", justify="right")
    rows = c.items if args.per_module else [(k, m, p) for k, (m, p) in c.by_group().items()]
    for row in rows:
        path, m, p = (row.path, row.macs, row.params) if args.per_module else row
        table.add_row(path, format_macs(m), f"{100 * m / max(c.macs, 1):.1f}%", f"{p / 1e6:.4f} M")
    table.add_row("total", format_macs(c.macs), "100%", f"{c.params / 1e6:.4f} M", style="bold")
    Console().print(table)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from hrnas.space.plot import plot_architecture

    spec = _load_spec(args.spec)
    supernet = _load_spec(args.supernet) if args.supernet else None
    size = _input_size(supernet or spec, args.input_size)
    out = plot_architecture(spec, _output_file(args.output, "-o"), supernet=supernet, input_size=size)
    print(f"wrote {out}")
    return 0


# --- training commands ------------------------------------------------------------------------------


def _config(args: argparse.Namespace, extra: Sequence[str] = ()) -> Any:
    from hrnas.engine.config import load_config

    return load_config(args.config, [*(args.set or []), *extra])


def _run_dir(args: argparse.Namespace, suffix: str) -> Path:
    """The run folder, checked before any work: a folder holding a run needs ``--resume`` or ``--overwrite``,
    ``--resume`` needs a ``last.pt`` there."""
    if args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        run_dir = Path("runs") / f"{Path(args.config).stem}-{suffix}"
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"--run-dir {run_dir}: is a file, not a folder")
    last = run_dir / "last.pt"
    if args.resume and not last.is_file():
        raise FileNotFoundError(f"--resume: {last} not found, nothing to resume (drop --resume to start a run)")
    if not args.resume and last.exists() and not args.overwrite:
        raise FileExistsError(f"{run_dir}: holds a run already; pass --resume to continue it or --overwrite")
    return run_dir


def _preflight(cfg: Any, arch: Any = None, force: bool = False, arch_path: str = "") -> None:
    """Checks of a training run that need its network, made before any work (nothing is written): the
    head of ``--arch`` against the task, the input sizes against the spec (neither reads data), then a search
    target against the supernet's cost as the run will build it (``force`` allows a target at or above it)."""
    from hrnas.engine.config import check_input_sizes
    from hrnas.space.spec import NetSpec
    from hrnas.space.zoo import resolve_spec
    from hrnas.tasks.base import TaskError, get_task

    task = get_task(cfg)
    spec = resolve_spec(arch if arch is not None else cfg.model.spec, cfg.model.transformer)
    if arch is not None and isinstance(spec, NetSpec) and not task.claims_spec(spec):
        if spec.head.kind not in task.head_kinds:
            raise TaskError(
                f"--arch {arch_path}: {spec.name or 'the architecture'} has a {spec.head.kind} head; task "
                f"{task.name!r} needs {' or '.join(task.head_kinds)}"
            )
    check_input_sizes(cfg, spec)
    if cfg.search.enabled and cfg.search.target_macs is not None:
        from hrnas.search.budget import check_budget

        check_budget(
            task.build_spec(arch), cfg.penalty_input_size, cfg.search.target_macs, force=force,
            what="search.target_macs",
        )


def _report(result: Any, task_metric: str) -> None:
    from hrnas.engine.trainer import describe_result

    print(f"{result.run_dir}: {describe_result(result, task_metric)}")


def _latency_ms(text: str) -> float:
    """``8ms`` / ``8`` / ``7.5 ms`` → 8.0 (argparse type of ``--target-latency``)."""
    value = text.strip().lower().removesuffix("ms").strip()
    try:
        ms = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a latency in milliseconds (e.g. 8ms)") from None
    if not ms > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a latency budget must be positive")
    return ms


def cmd_latency_table(args: argparse.Namespace) -> int:
    import time

    from hrnas.export.latency import MeasurementCache, Protocol, build_latency_table
    from hrnas.space.latency import LatencyCost
    from hrnas.utils.threads import available_cores

    out = _output_file(args.output, "-o")
    spec = _load_spec(args.spec, transformer=not args.no_transformer)
    size = _input_size(spec, args.input_size)
    protocol = Protocol(runtime=args.runtime, threads=args.threads or available_cores(), rounds=args.rounds)
    cache = None if args.no_cache else MeasurementCache(protocol)
    start = time.perf_counter()
    table = build_latency_table(spec, size, protocol, spec_name=args.spec, cache=cache)
    table.save(out)
    cost = LatencyCost(table, source=str(out))
    calibration = table.meta["calibration"]
    print(
        f"{out}: {len(table.blocks)} block signatures of {spec.name or args.spec} at {size[0]}×{size[1]}, "
        f"{protocol.runtime} with {protocol.threads} threads on {table.meta['cpu']} "
        f"({time.perf_counter() - start:.0f} s)"
    )
    print(
        f"  predicted: {cost.deployed_total(spec, size):.3f} ms whole, {cost.fixed(spec, size):.3f} ms fixed; "
        f"calibration scale {calibration['scale']:.3f}, offset {calibration['offset_ms']:+.3f} ms"
    )
    if cache is not None:
        print(f"  measurements cached in {cache.path} (--no-cache to time everything afresh)")
    return 0


def cmd_train(args: argparse.Namespace, search: bool | None = None) -> int:
    from hrnas.engine.trainer import train
    from hrnas.tasks.base import get_task

    extra = [] if search is None else [f"search.enabled={'true' if search else 'false'}"]
    if getattr(args, "target_latency", None) is not None:
        extra += ["search.target_macs=null", f"search.target_latency_ms={args.target_latency}"]
    if getattr(args, "latency_table", None):
        extra.append(f"search.latency_table={args.latency_table}")
    cfg = _config(args, extra)
    run_dir = _run_dir(args, "search" if cfg.search.enabled else "train")
    if not args.resume:
        _preflight(cfg, force=args.force)
    result = train(cfg, run_dir, resume=args.resume)
    _report(result, get_task(cfg).metric)
    if cfg.search.enabled:
        print(f"searched architecture: {run_dir / 'arch.json'}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    return cmd_train(args, search=True)


def cmd_retrain(args: argparse.Namespace) -> int:
    from hrnas.engine.checkpoint import load_checkpoint
    from hrnas.engine.trainer import inference_state, train
    from hrnas.space.spec import NetSpec
    from hrnas.tasks.base import get_task

    cfg = _config(args, ["search.enabled=false"])
    arch = NetSpec.load(args.arch)
    init_state = None
    if args.init == "inherit":
        ckpt = Path(args.checkpoint) if args.checkpoint else Path(args.arch).with_name("final.pt")
        payload = load_checkpoint(ckpt, expect_task=cfg.task.name)
        if NetSpec.from_dict(payload["spec"]) != arch:
            from hrnas.tasks.base import TaskError

            raise TaskError(f"{ckpt}: its architecture differs from {args.arch}; pass the search's own checkpoint")
        init_state = inference_state(payload)
    run_dir = _run_dir(args, "retrain")
    if not args.resume:
        _preflight(cfg, arch, arch_path=args.arch)
    result = train(cfg, run_dir, resume=args.resume, arch=arch, init_state=init_state)
    _report(result, get_task(cfg).metric)
    return 0


def _checkpoint_config(payload: dict[str, Any], overrides: Sequence[str]) -> Any:
    from hrnas.engine.config import config_from_dict

    return config_from_dict(payload["run_config"], overrides=list(overrides))


def _checkpoint_task(args: argparse.Namespace, with_data: bool = True) -> tuple[Any, Any, Any, Any]:
    """The model, spec, run config and task of the checkpoint ``args.checkpoint`` (with ``--set`` and
    ``--data`` applied to its config when the command has them)."""
    from hrnas.engine.checkpoint import check_task_override
    from hrnas.engine.trainer import load_model_from_checkpoint
    from hrnas.tasks.base import get_task

    model, spec, payload = load_model_from_checkpoint(args.checkpoint)
    overrides = list(getattr(args, "set", None) or [])
    check_task_override(args.checkpoint, payload, overrides)
    if with_data and getattr(args, "data", None):
        overrides.append(f"data.root={args.data}")
    cfg = _checkpoint_config(payload, overrides)
    return model, spec, cfg, get_task(cfg)


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from hrnas.engine.data import eval_loader
    from hrnas.utils.atomic import atomic_write_text

    out = _output_file(args.out or Path(args.checkpoint).with_name("eval_metrics.json"), "--out")
    model, spec, cfg, task = _checkpoint_task(args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loader = eval_loader(task.val_dataset(), cfg.data.eval_batch_size, workers=cfg.data.workers, collate=task.collate)
    metrics = task.evaluate(model.to(device), loader, device, progress=True)
    c = task.model_cost(spec, tuple(cfg.penalty_input_size))
    metrics = {**metrics, "macs": c.whole.macs, "params": c.whole.params}
    if c.backbone is not None:
        metrics.update(backbone_macs=c.backbone.macs, backbone_params=c.backbone.params)
    metrics["checkpoint"] = str(args.checkpoint)
    if args.baselines:
        metrics["baselines"] = task.baseline_metrics()
    report = task.format_metrics(metrics)
    if report is not None:
        print(report)
    else:
        shown = {k: v for k, v in metrics.items() if not isinstance(v, list)}
        print(json.dumps(shown, indent=1))
    atomic_write_text(out, json.dumps(metrics, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    model, _, _, task = _checkpoint_task(args)
    written = task.predict(model, list(args.inputs), Path(args.out), split=args.split)
    print(f"wrote {len(written)} files to {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    output = _output_file(args.output, "-o")
    model, spec, _, task = _checkpoint_task(args, with_data=False)
    size = _input_size(spec, args.input_size) if args.input_size else None
    report = task.export(model, spec, output, input_size=size, merge_groups=args.merge_groups)
    print(f"wrote {report.path}; onnxruntime vs PyTorch max abs diff {report.max_abs_diff:.3g}")
    if not args.no_latency:
        from hrnas.export.latency import Protocol, measure_onnx_file
        from hrnas.utils.threads import available_cores

        protocol = Protocol(threads=args.threads or available_cores())
        optimized = Path(report.path).with_suffix(".optimized.onnx")
        ms = measure_onnx_file(report.path, protocol, optimized_path=optimized)
        if ms is not None:
            print(
                f"measured {ms:.2f} ms per image at batch 1 in onnxruntime ({protocol.threads} threads, median of "
                f"{protocol.runs} runs) on this machine; its optimised graph for this CPU: {optimized}"
            )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hrnas.demos import DEMOS

    demo = DEMOS[args.task]
    data = Path(args.data) if args.data else None
    demo.run(Path(args.out or demo.out), data, quick=args.quick, overrides=list(args.set or []))
    return 0


# --- parser -----------------------------------------------------------------------------------------


def _option_type(option: Any) -> Any:
    """The argparse ``type`` of a task's :class:`~hrnas.tasks.base.CostOption`: its ``parse``, named after its
    type so that a malformed value reads ``invalid int value: 'x'``."""

    def parse(text: str) -> Any:
        return option.parse(text)

    parse.__name__ = option.type.__name__
    return parse


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="a preset name (e.g. demo_seg, cityscapes) or a YAML file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")
    p.add_argument("--run-dir", help="output folder (default runs/<config>-<command>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last.pt")
    p.add_argument("--overwrite", action="store_true", help="start over in a folder that holds a run")


def build_parser() -> argparse.ArgumentParser:
    from hrnas.demos import DEFAULT_DEMO, DEMOS, demo_names
    from hrnas.tasks.base import task_classes

    others = "".join(f"  hrnas demo --task {name:<27s}{DEMOS[name].help}\n" for name in demo_names()[1:])
    parser = CliParser(
        prog="hrnas",
        description="Search efficient high-resolution networks (HR-NAS) for your task and compute budget.",
        epilog=EPILOG.format(demos=others),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    debug_help = f"show the full traceback of an error instead of one line (also: {DEBUG_ENV}=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="search, retrain, evaluate and export on generated demo data (CPU, minutes)")
    p.add_argument(
        "--task",
        choices=demo_names(),
        default=DEFAULT_DEMO,
        help="; ".join(f"{name}: {DEMOS[name].help}" for name in demo_names()) + f" (default {DEFAULT_DEMO})",
    )
    p.add_argument(
        "--out", help="output folder (default: " + ", ".join(f"{DEMOS[n].out} for {n}" for n in demo_names()) + ")"
    )
    p.add_argument(
        "--data",
        help="demo dataset folder, generated if missing (default: "
        + ", ".join(f"{DEMOS[n].data} for {n}" for n in demo_names())
        + ")",
    )
    p.add_argument("--quick", action="store_true", help="a much shorter run (a smoke test of the pipeline)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a demo config value")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("zoo", help="list the networks of the zoo")
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("cost", help="MACs and parameters of a spec (zoo name or JSON file)")
    p.add_argument("spec")
    p.add_argument("--input-size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-transformer", action="store_true", help="remove every transformer first")
    p.add_argument("--per-module", action="store_true", help="one row per block instead of per stage")
    flags: set[str] = set()
    for cls in task_classes():
        for o in cls.cost_options:
            if o.flag not in flags:
                flags.add(o.flag)
                p.add_argument(
                    o.flag, dest=o.dest, type=_option_type(o), default=o.default, metavar=o.metavar, help=o.help
                )
    p.set_defaults(func=cmd_cost)

    p = sub.add_parser("plot", help="draw an architecture (Fig. 4 style)")
    p.add_argument("spec")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--supernet", help="zoo name or JSON of the supernet, to show what was removed")
    p.add_argument("--input-size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    p.set_defaults(func=cmd_plot)

    force_help = (
        "search even when search.target_macs is at or above the supernet's own cost (nothing would be pruned; "
        "without --force that is an error)"
    )
    p = sub.add_parser("train", help="train a network (a zoo name or spec file) with a task config")
    _add_train_args(p)
    p.add_argument("--force", action="store_true", help="with search.enabled: " + force_help)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("search", help="search: train the supernet with the resource penalty, shrinking it")
    _add_train_args(p)
    p.add_argument("--force", action="store_true", help=force_help)
    p.add_argument(
        "--target-latency",
        type=_latency_ms,
        metavar="MS",
        help="search to a latency budget (e.g. 8ms: deployed, batch 1, at the search's input size) instead of "
        "search.target_macs; sets search.target_latency_ms",
    )
    p.add_argument(
        "--latency-table",
        metavar="JSON",
        help="the latency table to price units with (hrnas latency-table); default: build one for the supernet "
        "at the start and keep it in the run folder",
    )
    p.set_defaults(func=cmd_search)

    p = sub.add_parser(
        "latency-table", help="time a supernet's parts on this machine: the latency table a latency search uses"
    )
    p.add_argument("spec", help="zoo name or spec JSON of the supernet")
    p.add_argument("--input-size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    p.add_argument("--runtime", choices=("onnxruntime", "torch"), default="onnxruntime")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (default: the cores this process may use)")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="passes over all the parts; each part keeps its fastest median (of 50 runs), so a slow spell of "
        "the machine during one pass does not enter the table (default: 3)",
    )
    p.add_argument("--no-transformer", action="store_true", help="remove every transformer first")
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="time every part afresh; by default parts timed before on this machine with the same runtime, "
        "versions, threads and protocol are read from $HRNAS_CACHE_DIR (default ~/.cache/hrnas)",
    )
    p.add_argument("-o", "--output", required=True, help="the table file to write (JSON)")
    p.set_defaults(func=cmd_latency_table)

    p = sub.add_parser("retrain", help="train a searched architecture (arch.json)")
    _add_train_args(p)
    p.add_argument("--arch", required=True, help="arch.json written by `hrnas search`")
    p.add_argument("--init", choices=("scratch", "inherit"), default="scratch")
    p.add_argument("--checkpoint", help="with --init inherit: the search checkpoint (default: final.pt beside arch)")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint on its validation data")
    p.add_argument("checkpoint")
    p.add_argument("--data", help="dataset root (default: the one the checkpoint was trained on)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--out", help="metrics JSON (default: eval_metrics.json beside the checkpoint)")
    p.add_argument(
        "--baselines", action="store_true", help="also score the task's reference predictors (where it has some)"
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="run a checkpoint on files (or a dataset split) and write what it sees")
    p.add_argument("checkpoint")
    p.add_argument("inputs", nargs="*", metavar="FILE", help="input files (for tasks that predict files)")
    p.add_argument("--out", required=True)
    p.add_argument("--data", help="dataset root (default: the one the checkpoint was trained on)")
    p.add_argument("--split", help="for tasks that predict dataset frames: the split (default: the validation split)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "export", help="export the deployed network (BN folded, kernel groups padded to 8) to ONNX, check and time it"
    )
    p.add_argument("checkpoint")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="default: the training crop")
    p.add_argument("--threads", type=int, default=0, help="threads of the latency measurement (default: all cores)")
    p.add_argument("--no-latency", action="store_true", help="skip measuring the exported model's latency")
    p.add_argument(
        "--merge-groups",
        action="store_true",
        help="export each search block as one depthwise convolution of its largest kernel instead of one per "
        "kernel group (same outputs; faster for narrow searched networks, see benchmarks/deploy_latency.py)",
    )
    p.set_defaults(func=cmd_export)

    for cls in task_classes():
        for command in cls.cli_commands():
            p = sub.add_parser(command.name, help=command.help)
            command.add_arguments(p)
            p.set_defaults(func=command.run)
    parser.commands = dict(sub.choices)
    for p in sub.choices.values():  # --debug after the command too (SUPPRESS: keeps a --debug given before it)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    return parser


def _debug_requested(args: argparse.Namespace) -> bool:
    """``--debug`` or ``HRNAS_DEBUG`` set to anything but empty or 0."""
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def error_line(exc: BaseException) -> str:
    """The one-line message of a library error or of an error about a user's path (an ``OSError`` raised by
    Python names its file: ``PATH: No such file or directory``)."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``hrnas`` command; return its exit status.

    Every library error (:class:`~hrnas.utils.errors.HrnasError`) and every error about a path the user gave
    (:data:`USER_PATH_ERRORS`) is printed as one line, ``hrnas COMMAND: error: MESSAGE``, on stderr with exit
    status 2; with ``--debug`` or ``HRNAS_DEBUG=1`` it propagates with its traceback instead. Usage errors exit
    with status 2 (``SystemExit``) after one line; Ctrl-C exits with 130, a training stopped by a signal after
    writing its checkpoint with 128 + the signal's number.
    """
    import hrnas.demos  # noqa: F401  (registers the data generators the tasks' demo formats use)
    from hrnas.utils.errors import HrnasError

    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # blamed on the command, whose --help lists its arguments
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    debug = _debug_requested(args)
    from hrnas.engine.allocator import tune_heap

    tune_heap()
    try:
        return int(args.func(args) or 0)
    except (HrnasError, *USER_PATH_ERRORS) as exc:
        if debug:
            raise
        print(f"hrnas {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or a training stopped on a signal after its checkpoint
        print(f"hrnas {args.command}: {exc or 'interrupted'}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 130))


if __name__ == "__main__":
    sys.exit(main())
