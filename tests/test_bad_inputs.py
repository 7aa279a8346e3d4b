"""Every bad input to the command line gets one clear line: a table of malformed specs, sizes, configs,
overrides, search targets, architectures and run folders, each run through ``hrnas`` in this process.

Each case checks the contract of :class:`hrnas.utils.errors.HrnasError` as the user sees it: a non-zero
exit, exactly one line on stderr naming the file/key/value (the case's fragments), no traceback, and no
complete-looking output left behind (no ``final.pt``, ``last.pt``, ``arch.json``, ``report.json``,
``eval_metrics.json``, ONNX or picture). Every case fails before any training or data work: the configs are
the demo presets with ``task.num_classes`` set, so not even the class count is read from data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from hrnas.engine.checkpoint import save_checkpoint
from hrnas.engine.config import config_to_dict, load_config
from hrnas.space.network import build_model
from hrnas.space.zoo import ZooError, get_spec

SPEC = json.loads(get_spec("test_seg").to_json())
"""A valid spec (the tiny test segmentation net, 5 outputs, minimum input 16×16) to break in the cases."""

COMPLETE_OUTPUTS = ("final.pt", "best.pt", "last.pt", "arch.json", "report.json", "eval_metrics.json", "config.yaml")
"""Files whose presence would make a failed run look like a finished one."""

TRAIN = ["--set", "task.num_classes=5", "--set", "data.root=nodata", "--run-dir", "{tmp}/run"]
"""Arguments of every training case: the demo segmentation preset (test_seg), no data, a fresh run folder."""


def _spec_text(edit: Callable[[dict], object] | None = None) -> str:
    data = json.loads(json.dumps(SPEC))
    if edit is not None:
        edit(data)
    return json.dumps(data, indent=1)


def _twice(text: str, key: str) -> str:
    """JSON ``text`` with ``"key": 1`` inserted before the first ``"key"``: the object gives it twice."""
    start = text.index(f'"{key}":')
    return text[:start] + f'"{key}": 1,\n ' + text[start:]


@dataclass(frozen=True)
class Case:
    """One malformed input: ``files`` written under the test's folder first, then ``hrnas argv``; the error
    line must contain every fragment. ``{tmp}`` in any of them is the test's folder."""

    argv: list[str]
    fragments: tuple[str, ...]
    files: dict[str, str] = field(default_factory=dict)


CASES: dict[str, Case] = {
    # --- spec JSON files (hrnas cost FILE) ---------------------------------------------------------
    "spec-key-given-twice": Case(
        ["cost", "{tmp}/spec.json"], ("spec.json", "'stem' is given twice"),
        {"spec.json": _twice(_spec_text(), "stem")},
    ),
    "spec-nested-key-given-twice": Case(
        ["cost", "{tmp}/spec.json"], ("spec.json", "'out_channels' is given twice"),
        {"spec.json": _twice(_spec_text(), "out_channels")},
    ),
    "spec-missing-key": Case(
        ["cost", "{tmp}/spec.json"], ("spec.json", "head: missing"),
        {"spec.json": _spec_text(lambda d: d.pop("head"))},
    ),
    "spec-unknown-key": Case(
        ["cost", "{tmp}/spec.json"], ("spec.json", "stem.chanels: unknown key"),
        {"spec.json": _spec_text(lambda d: d["stem"].update(chanels=[8]))},
    ),
    "spec-wrong-type": Case(
        ["cost", "{tmp}/spec.json"], ("spec.json", "stem.channels[0]", "'eight'"),
        {"spec.json": _spec_text(lambda d: d["stem"].update(channels=["eight", 8]))},
    ),
    "spec-negative-channels": Case(
        ["cost", "{tmp}/spec.json"], ("spec.json", "stem.channels[1]", "-8"),
        {"spec.json": _spec_text(lambda d: d["stem"].update(channels=[8, -8]))},
    ),
    "spec-not-json": Case(
        ["cost", "{tmp}/spec.json"], ("spec.json", "not valid JSON", "line 1"), {"spec.json": "{stem: [8, 8]"},
    ),
    "spec-empty-file": Case(["cost", "{tmp}/spec.json"], ("spec.json", "empty file"), {"spec.json": "\n"}),
    "spec-not-an-object": Case(
        ["cost", "{tmp}/spec.json"], ("spec.json", "expected an object, got list"), {"spec.json": "[1, 2]"},
    ),
    "spec-missing-file": Case(["cost", "{tmp}/nowhere.json"], ("nowhere.json", "No such file")),
    "zoo-unknown-name": Case(["cost", "hrnas_no_such_net"], ("hrnas_no_such_net", "neither a zoo name")),
    # --- sizes -------------------------------------------------------------------------------------
    "cost-input-size-zero": Case(
        ["cost", "test_seg", "--input-size", "0", "0"], ("--input-size 0 0", "must be positive"),
    ),
    "cost-input-size-negative": Case(
        ["cost", "test_seg", "--input-size", "-4", "64"], ("--input-size -4 64", "must be positive"),
    ),
    "cost-input-size-below-lowest-branch": Case(
        ["cost", "test_seg", "--input-size", "8", "64"], ("--input-size 8 64", "minimum 16×16", "test_seg"),
    ),
    "cost-input-size-not-an-int": Case(
        ["cost", "test_seg", "--input-size", "big", "64"], ("--input-size", "'big'", "hrnas cost --help"),
    ),
    "plot-input-size-too-small": Case(
        ["plot", "test_seg", "-o", "{tmp}/arch.png", "--input-size", "4", "4"], ("--input-size 4 4", "16×16"),
    ),
    "plot-supernet-unknown": Case(
        ["plot", "test_seg", "-o", "{tmp}/arch.png", "--supernet", "nope_net"], ("nope_net",),
    ),
    "plot-supernet-of-another-structure": Case(
        ["plot", "test_seg", "-o", "{tmp}/arch.png", "--supernet", "test_cls"],
        ("supernet", "test_cls", "different block structure", "test_seg"),
    ),
    "cost-option-below-its-minimum": Case(
        ["cost", "pointpillars_bev", "--input-size", "496", "432", "--pillars", "-5"],
        ("--pillars", "-5", "minimum 0", "hrnas cost --help"),
    ),
    "export-input-size-too-small": Case(
        ["export", "{ckpt}", "-o", "{tmp}/model.onnx", "--input-size", "8", "8"], ("--input-size 8 8", "16×16"),
    ),
    "export-input-size-zero": Case(
        ["export", "{ckpt}", "-o", "{tmp}/model.onnx", "--input-size", "0", "32"], ("--input-size 0 32",),
    ),
    "export-output-is-a-folder": Case(
        ["export", "{ckpt}", "-o", "{tmp}/models"], ("-o", "models: is a folder"), {"models/keep": ""},
    ),
    "evaluate-output-is-a-folder": Case(
        ["evaluate", "{ckpt}", "--out", "{tmp}/metrics"], ("--out", "metrics: is a folder"), {"metrics/keep": ""},
    ),
    "export-missing-checkpoint": Case(["export", "{tmp}/nope.pt", "-o", "{tmp}/model.onnx"], ("nope.pt",)),
    "kitti-eval-unknown-class": Case(
        ["kitti-eval", "{tmp}", "{tmp}", "--classes", "Car,Bus"], ("--classes Car,Bus", "'Bus'", "known: Car"),
    ),
    "unknown-argument": Case(["cost", "test_seg", "--bogus"], ("--bogus", "hrnas cost --help")),
    # --- YAML configs ------------------------------------------------------------------------------
    "yaml-empty-file": Case(["train", "{tmp}/my.yaml", *TRAIN], ("my.yaml: empty file",), {"my.yaml": ""}),
    "yaml-syntax-error": Case(
        ["train", "{tmp}/my.yaml", *TRAIN], ("my.yaml:2", "malformed YAML"),
        {"my.yaml": "base: demo_seg\noptim: lr: 0.1\n"},
    ),
    "yaml-unknown-key": Case(
        ["train", "{tmp}/my.yaml", *TRAIN], ("my.yaml:3", "unknown key 'optim.lrr'"),
        {"my.yaml": "base: demo_seg\noptim:\n  lrr: 0.1\n"},
    ),
    "yaml-wrong-type": Case(
        ["train", "{tmp}/my.yaml", *TRAIN], ("my.yaml:3", "train.steps", "expected int", "'many'"),
        {"my.yaml": "base: demo_seg\ntrain:\n  steps: many\n"},
    ),
    "yaml-unknown-preset": Case(["train", "demo_sgm", *TRAIN], ("unknown preset 'demo_sgm'",)),
    "yaml-crop-size-too-small": Case(
        ["train", "{tmp}/my.yaml", *TRAIN], ("data.crop_size [8, 8]", "16×16", "test_seg"),
        {"my.yaml": "base: demo_seg\ndata:\n  crop_size: [8, 8]\n"},
    ),
    # --- --set overrides ---------------------------------------------------------------------------
    "set-unknown-key": Case(
        ["train", "demo_seg", *TRAIN, "--set", "optim.lrr=0.1"], ("--set optim.lrr=0.1", "unknown key 'optim.lrr'"),
    ),
    "set-unknown-section": Case(
        ["train", "demo_seg", *TRAIN, "--set", "optimizer.lr=0.1"], ("--set optimizer.lr=0.1", "'optimizer'"),
    ),
    "set-bad-value": Case(
        ["train", "demo_seg", *TRAIN, "--set", "optim.lr=fast"], ("--set optim.lr=fast", "expected float", "'fast'"),
    ),
    "set-without-equals": Case(["train", "demo_seg", *TRAIN, "--set", "optim.lr"], ("--set optim.lr", "KEY=VALUE")),
    "set-crop-size-negative": Case(
        ["train", "demo_seg", *TRAIN, "--set", "data.crop_size=[-8, 64]"], ("data.crop_size", "-8", "minimum 1"),
    ),
    "set-penalty-size-too-small": Case(
        ["search", "demo_seg", *TRAIN, "--set", "search.penalty_input_size=[12, 12]"],
        ("search.penalty_input_size [12, 12]", "16×16"),
    ),
    # --- search targets ----------------------------------------------------------------------------
    "search-target-above-supernet": Case(
        ["search", "demo_seg", *TRAIN, "--set", "search.target_macs=1G"],
        ("search.target_macs", "1G MACs", "nothing would be pruned", "--force"),
    ),
    "search-target-zero": Case(
        ["search", "demo_seg", *TRAIN, "--set", "search.target_macs=0"], ("search.target_macs", "0"),
    ),
    "search-target-negative": Case(
        ["search", "demo_seg", *TRAIN, "--set", "search.target_macs=-20M"], ("search.target_macs", "-20M"),
    ),
    "search-target-unreachable": Case(
        ["search", "demo_seg", *TRAIN, "--set", "search.target_macs=1K"], ("search.target_macs", "1K", "minimum"),
    ),
    # --- retrain architectures and run folders ----------------------------------------------------
    "retrain-arch-missing": Case(["retrain", "demo_seg", *TRAIN, "--arch", "{tmp}/arch.json"], ("arch.json",)),
    "retrain-arch-malformed": Case(
        ["retrain", "demo_seg", *TRAIN, "--arch", "{tmp}/searched.json"], ("searched.json", "'stages' is given twice"),
        {"searched.json": _twice(_spec_text(), "stages")},
    ),
    "retrain-arch-too-small-for-crop": Case(
        ["retrain", "demo_seg", *TRAIN, "--arch", "{tmp}/searched.json", "--set", "data.crop_size=[8, 8]"],
        ("data.crop_size [8, 8]", "16×16"),
        {"searched.json": _spec_text()},
    ),
    "retrain-arch-of-another-task": Case(
        ["retrain", "demo_seg", *TRAIN, "--arch", "{tmp}/searched.json"],
        ("--arch", "searched.json", "classification head", "segmentation"),
        {"searched.json": get_spec("test_cls").to_json()},
    ),
    "run-dir-holds-a-run": Case(
        ["train", "demo_seg", *TRAIN], ("run", "holds a run already", "--resume", "--overwrite"),
        {"run/last.pt": "not really a checkpoint"},
    ),
    "resume-without-last-pt": Case(["train", "demo_seg", *TRAIN, "--resume"], ("--resume", "last.pt not found")),
    "run-dir-is-a-file": Case(["train", "demo_seg", *TRAIN], ("run", "is a file"), {"run": "a file"}),
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An inference checkpoint of the tiny test segmentation net (random weights), as a run writes it."""
    spec = get_spec("test_seg")
    cfg = load_config("demo_seg", ["task.num_classes=5"])
    path = tmp_path_factory.mktemp("ckpt") / "final.pt"
    torch.manual_seed(0)
    save_checkpoint(
        path,
        {
            "kind": "inference",
            "task": cfg.task.name,
            "spec": spec.to_dict(),
            "model": build_model(spec).state_dict(),
            "metrics": {},
            "step": 0,
            "run_config": config_to_dict(cfg),
        },
    )
    return path


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input_gets_one_line(
    case: Case, run_cli, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a default runs/ or data/ folder would land here

    def fill(text: str) -> str:
        return text.replace("{tmp}", str(tmp_path)).replace("{ckpt}", str(checkpoint))

    for name, content in case.files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    before = {p for p in tmp_path.rglob("*")}
    result = run_cli([fill(arg) for arg in case.argv])
    result.assert_one_line_error(*(fill(f) for f in case.fragments))
    assert result.code == 2
    left = {p for p in tmp_path.rglob("*")} - before
    complete = [p for p in left if p.name in COMPLETE_OUTPUTS or p.suffix in (".onnx", ".png", ".pt")]
    assert not complete, f"a failed command left {complete}"
    assert not (tmp_path / "run").is_dir() or set((tmp_path / "run").iterdir()) <= before


def test_at_least_the_promised_number_of_cases() -> None:
    assert len(CASES) >= 28


class _Started(Exception):
    """Raised by the stand-in for ``train``: the command got past every check."""


def test_force_lets_a_target_above_the_supernet_through(run_cli, tmp_path: Path, monkeypatch) -> None:
    import hrnas.engine.trainer

    def fake_train(cfg, run_dir, **kwargs):
        raise _Started(cfg.search.target_macs)

    monkeypatch.setattr(hrnas.engine.trainer, "train", fake_train)
    monkeypatch.chdir(tmp_path)
    argv = ["search", "demo_seg", *(a.replace("{tmp}", str(tmp_path)) for a in TRAIN), "--set", "search.target_macs=1G"]
    run_cli(argv).assert_one_line_error("nothing would be pruned")
    with pytest.raises(_Started, match="1000000000"):
        run_cli([*argv, "--force"])


def test_debug_flag_shows_the_traceback(run_cli, tmp_path: Path) -> None:
    from hrnas.tasks.base import TaskError

    with pytest.raises(ZooError, match="hrnas_no_such_net"):
        run_cli(["--debug", "cost", "hrnas_no_such_net"])
    with pytest.raises(ZooError, match="hrnas_no_such_net"):
        run_cli(["cost", "hrnas_no_such_net", "--debug"])
    with pytest.raises(TaskError, match="Bus"):  # a task's own command too
        run_cli(["kitti-eval", str(tmp_path), str(tmp_path), "--classes", "Bus", "--debug"])


@pytest.mark.parametrize("value", ["1", "yes"])
def test_debug_environment_variable_shows_the_traceback(run_cli, monkeypatch, value: str) -> None:
    monkeypatch.setenv("HRNAS_DEBUG", value)
    with pytest.raises(ZooError, match="hrnas_no_such_net"):
        run_cli(["cost", "hrnas_no_such_net"])


def test_debug_environment_variable_zero_keeps_one_line(run_cli, monkeypatch) -> None:
    monkeypatch.setenv("HRNAS_DEBUG", "0")
    run_cli(["cost", "hrnas_no_such_net"]).assert_one_line_error("hrnas_no_such_net")


def test_every_library_error_is_an_hrnas_error() -> None:
    from hrnas.data.errors import DatasetError
    from hrnas.engine.checkpoint import CheckpointError
    from hrnas.engine.config import ConfigError
    from hrnas.engine.trainer import TrainingDiverged
    from hrnas.export.onnx import ExportError
    from hrnas.search.budget import BudgetError
    from hrnas.space.latency import LatencyTableError
    from hrnas.space.spec import SpecError
    from hrnas.tasks.base import TaskError
    from hrnas.utils.errors import HrnasError

    library_errors = (DatasetError, CheckpointError, ConfigError, ExportError, BudgetError, SpecError, TaskError)
    for cls in (*library_errors, ZooError, TrainingDiverged, LatencyTableError):
        assert issubclass(cls, HrnasError), cls
    assert str(ZooError("unknown zoo name 'x'")) == "unknown zoo name 'x'"  # no KeyError quotes
