"""One suite over every registered task, like the zoo suite over every spec.

For each task, from its preset on a tiny data set (the ``NAME_tiny_config`` fixtures of conftest.py): build
the model, train one step, evaluate (the library path of ``hrnas evaluate``, and the command itself, whose
whole-model MACs must be those of ``hrnas cost``), predict, export to ONNX (checked in ONNX Runtime) and
round-trip a checkpoint (the reloaded network gives the same outputs).

A toy task defined in this file — a data set of random tensors, a classification head from a test spec, a
loss and a metric — registers itself with the decorator and runs through ``train`` and ``hrnas evaluate``:
a new task is one package (here: one file), nothing under ``hrnas/`` is touched.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from hrnas.cli import main
from hrnas.engine.checkpoint import load_checkpoint, save_checkpoint
from hrnas.engine.config import config_from_dict
from hrnas.engine.data import eval_loader
from hrnas.engine.trainer import load_model_from_checkpoint, train
from hrnas.export import onnx as onnx_mod
from hrnas.space.cost import cost
from hrnas.tasks.base import Task, get_task, register_task, task_class, task_names
from hrnas.tasks.options import TaskOptions, option

REGISTERED = [name for name in task_names() if task_class(name).__module__.startswith("hrnas.tasks.")]
"""The tasks shipped in hrnas (not those that tests, like this file's toy task, register)."""


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def torchscript_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every export through the shared pipeline uses the TorchScript exporter: a second where the default one
    takes tens (tests/export covers both exporters)."""
    export = onnx_mod._export

    def fast(module: nn.Module, example: Any, path: Path, *args: Any) -> None:
        export(module, example, path, *args[:-1], False)

    monkeypatch.setattr(onnx_mod, "_export", fast)


def tensors(value: Any) -> list[Tensor]:
    """Every tensor in a network output (a tensor, a tuple, a dict or a dataclass of them), in order."""
    if isinstance(value, Tensor):
        return [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [t for f in dataclasses.fields(value) for t in tensors(getattr(value, f.name))]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in tensors(v)]
    return []


def predict_inputs(request: pytest.FixtureRequest, name: str) -> list[str]:
    """The files a task predicts (``NAME_predict_inputs``); none for a task that predicts dataset frames."""
    try:
        return request.getfixturevalue(f"{name}_predict_inputs")
    except pytest.FixtureLookupError:
        return []


@pytest.mark.parametrize("name", REGISTERED)
def test_every_task_trains_evaluates_predicts_exports_and_reloads(
    name: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    torchscript_export: None,
) -> None:
    cfg = request.getfixturevalue(f"{name}_tiny_config")
    task = get_task(cfg)
    assert cfg.task.name == name and isinstance(cfg.task, task_class(name).options)
    assert cfg.data.format in task.data_formats

    # build the model from the preset
    spec = task.build_spec()
    assert task.claims_spec(spec) or spec.head.kind in task.head_kinds
    assert isinstance(task.build_model(spec, init=cfg.model.init), nn.Module)

    # one training step, evaluated at the end
    run = tmp_path / "run"
    result = train(cfg, run, show_progress=False)
    assert result.steps == 1 and task.metric in result.metrics

    # evaluate the checkpoint: the library path of `hrnas evaluate`, then the command
    model, loaded_spec, payload = load_model_from_checkpoint(run / "final.pt", expect_task=name)
    assert loaded_spec == result.spec
    loader = eval_loader(task.val_dataset(), cfg.data.eval_batch_size, collate=task.collate)
    metrics = task.evaluate(model, loader, torch.device("cpu"))
    assert metrics[task.metric] == pytest.approx(result.metrics[task.metric], nan_ok=True)
    assert main(["evaluate", str(run / "final.pt"), "--out", str(tmp_path / "eval.json")]) == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    model_cost = task.model_cost(loaded_spec, cfg.penalty_input_size)
    assert evaluated["macs"] == model_cost.whole.macs > 0
    if model_cost.backbone is not None:
        assert evaluated["backbone_macs"] == model_cost.backbone.macs <= model_cost.whole.macs
    loaded_spec.save(tmp_path / "arch.json")
    h, w = cfg.penalty_input_size
    capsys.readouterr()
    assert main(["cost", str(tmp_path / "arch.json"), "--input-size", str(h), str(w), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["macs"] == evaluated["macs"]  # `hrnas cost` agrees

    # predict
    written = task.predict(model, predict_inputs(request, name), tmp_path / "predictions")
    assert written and all(Path(p).is_file() for p in written)

    # export, checked in ONNX Runtime
    report = task.export(model, loaded_spec, tmp_path / "model.onnx")
    assert report.path.is_file() and report.max_abs_diff is not None

    # checkpoint round trip: the network saved and loaded again gives the same outputs
    batch = task.to_device(next(iter(loader)), torch.device("cpu"), channels_last=False)
    with torch.no_grad():
        expected = tensors(task.forward(model, batch))
    save_checkpoint(tmp_path / "copy.pt", {**payload, "model": model.state_dict()})
    again, again_spec, _ = load_model_from_checkpoint(tmp_path / "copy.pt")
    assert again_spec == loaded_spec
    with torch.no_grad():
        got = tensors(task.forward(again, batch))
    assert expected and len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", REGISTERED)
def test_every_task_searches_to_a_latency_target(
    name: str, request: pytest.FixtureRequest, tmp_path: Path, linear_latency_table: Any
) -> None:
    """The latency budget goes through the same cost seam for every task, the KITTI detector's HR-NAS
    backbone included (a synthetic table: no timing)."""
    from hrnas.engine.config import apply_overrides
    from hrnas.space.latency import LatencyCost

    cfg = request.getfixturevalue(f"{name}_tiny_config")
    if name == "kitti":  # the tiny config's backbone is PointPillars' own; search the HR-NAS one
        cfg = apply_overrides(cfg, [f"model.spec={request.getfixturevalue('kitti_specs')['hr']}"])
    size = tuple(cfg.penalty_input_size)
    supernet = get_task(cfg).build_spec()
    table = linear_latency_table(supernet, size)
    table.save(tmp_path / "table.json")
    target = 0.7 * LatencyCost(table).total(supernet, size)
    cfg = apply_overrides(
        cfg,
        [
            "search.enabled=true",
            "train.steps=4",
            "search.shrink_every=2",
            "search.rho_free_steps=0",
            "search.rho_warmup_steps=1",
            "search.target_macs=null",
            f"search.target_latency_ms={target}",
            f"search.latency_table={tmp_path / 'table.json'}",
        ],
    )
    result = train(cfg, tmp_path / "run", show_progress=False)
    assert LatencyCost(table).total(result.spec, size) <= target
    record = json.loads((tmp_path / "run" / "latency.json").read_text())
    assert record["target_ms"] == target and record["measured_ms"] > 0


# ----------------------------------------------------------------------------------------------------
# A new task in a few lines, outside the package


@dataclass(frozen=True)
class ToyOptions(TaskOptions):
    """The toy task's config section: how many classes the random images fall into."""

    num_classes: int = option(3, minimum=2)


class RandomImages(Dataset):
    """``count`` images ``(3, 16, 16)``; the label of image ``i`` is ``i mod classes``, and class ``c`` adds
    ``c`` to the red channel, so there is something to learn."""

    def __init__(self, count: int, classes: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(count) % classes
        self.images = torch.randn(count, 3, 16, 16, generator=g)
        self.images[:, 0] += self.labels[:, None, None].float()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]


@register_task
class ToyTask(Task):
    name = "toy_random_images"
    options = ToyOptions
    data_formats = ("random",)
    head_kinds = ("classification",)
    metric = "accuracy"

    def train_dataset(self) -> Dataset:
        return RandomImages(16, self.cfg.task.num_classes, seed=0)

    def val_dataset(self) -> Dataset:
        return RandomImages(8, self.cfg.task.num_classes, seed=1)

    def num_outputs(self) -> int:
        return self.cfg.task.num_classes

    def inputs(self, batch: Any) -> Tensor:
        return batch[0]

    def loss(self, output: Tensor, batch: Any) -> Tensor:
        return F.cross_entropy(output, batch[1])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device, progress: bool = False) -> dict[str, Any]:
        model.eval()
        hits = total = 0
        for images, labels in loader:
            hits += int((model(images.to(device)).argmax(1) == labels.to(device)).sum())
            total += len(labels)
        return {"accuracy": hits / total}


def test_a_task_defined_outside_the_package_trains_and_evaluates(tmp_path: Path) -> None:
    assert ToyTask.name in task_names() and ToyTask.name not in REGISTERED
    cfg = config_from_dict(
        {
            "task": {"name": ToyTask.name, "num_classes": 4},
            "model": {"spec": "test_cls", "transformer": False},
            "data": {"format": "random", "crop_size": [16, 16], "batch_size": 4, "eval_batch_size": 4, "workers": 0},
            "train": {"steps": 2, "eval_every": 0, "checkpoint_every": 0, "bn_calib_batches": 1, "device": "cpu"},
        }
    )
    assert isinstance(cfg.task, ToyOptions) and cfg.task.num_classes == 4
    result = train(cfg, tmp_path / "run", show_progress=False)
    assert result.spec.head.num_classes == 4 and 0.0 <= result.metrics["accuracy"] <= 1.0

    assert main(["evaluate", str(tmp_path / "run" / "final.pt")]) == 0
    evaluated = json.loads((tmp_path / "run" / "eval_metrics.json").read_text())
    assert evaluated["accuracy"] == pytest.approx(result.metrics["accuracy"])
    assert evaluated["macs"] == cost(result.spec, (16, 16)).macs
    payload = load_checkpoint(tmp_path / "run" / "final.pt", expect_task=ToyTask.name)
    assert payload["run_config"]["task"] == {"name": ToyTask.name, "num_classes": 4}
