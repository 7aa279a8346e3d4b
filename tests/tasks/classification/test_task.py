"""The classification task through the trainer: ImageNet-layout folders, Fashion-MNIST, the big zoo nets."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from hrnas.data.errors import DatasetError
from hrnas.engine.config import ConfigError, load_config
from hrnas.engine.data import eval_loader
from hrnas.engine.trainer import load_model_from_checkpoint, train
from hrnas.space.cost import cost
from hrnas.space.network import build_model
from hrnas.space.spec import NetSpec
from hrnas.tasks.base import TaskError, get_task
from hrnas.tasks.classification import datasets as cls_data
from hrnas.tasks.classification.task import ClassificationTask, RandomShiftFlip

CLASSES = ("ant", "bee", "cow")


pytestmark = pytest.mark.usefixtures("single_thread")


def write_image_folder(root: Path, per_class: dict[str, int] | None = None, classes=CLASSES) -> Path:
    """``root/{train,val}/{class}/*.png``: 40×36 noisy images, each class tinted its own colour."""
    rng = np.random.default_rng(0)
    counts = per_class or {"train": 4, "val": 2}
    for split, n in counts.items():
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 80, size=(36, 40, 3)).astype(np.uint8)
                pixels[..., c % 3] += 150
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("imagenet") / "data")


@pytest.fixture
def fake_fashion(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A 48-image training split and a 20-image test split of random items; records the splits read."""
    rng = np.random.default_rng(1)
    splits = {
        "train": (rng.integers(0, 256, (48, 28, 28), dtype=np.uint8), np.arange(48, dtype=np.int64) % 10),
        "test": (rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), np.arange(20, dtype=np.int64) % 10),
    }
    calls: list[str] = []

    def load(split, root=None):
        calls.append(split)
        return splits[split]

    monkeypatch.setattr(cls_data, "load_fashion_mnist", load)
    return calls


def _common(*extra: str) -> list[str]:
    return [
        "data.batch_size=8",
        "data.eval_batch_size=8",
        "data.workers=0",
        "train.log_every=2",
        "train.bn_calib_batches=1",
        "train.eval_every=0",
        "train.checkpoint_every=0",
        "train.device=cpu",
        "schedule.warmup_steps=1",
        *extra,
    ]


def _search(target: int) -> list[str]:
    return [
        "train.steps=4",
        "search.enabled=true",
        "search.shrink_every=2",
        "search.rho_free_steps=0",
        "search.rho_warmup_steps=1",
        f"search.target_macs={target}",
        "search.min_saving_macs=0",
        "search.penalty_input_size=null",
    ]


def _target(preset: str, overrides: list[str], size: tuple[int, int]) -> int:
    supernet = get_task(load_config(preset, overrides)).build_spec()
    return int(0.7 * cost(supernet, size).macs)


def test_cli_search_retrain_evaluate_predict_export(
    image_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The authors' flow on an ImageNet-layout tree: `hrnas search imagenet_search`, `hrnas retrain
    imagenet_retrain --arch` (Swish, dropout 0.28), then evaluate, predict and export the result."""
    import functools

    import onnxruntime as ort

    from hrnas.cli import main
    from hrnas.export import onnx as onnx_mod

    # the TorchScript exporter takes a second where the default one takes tens (tests/export covers both)
    monkeypatch.setattr(onnx_mod, "export_onnx", functools.partial(onnx_mod.export_onnx, dynamo=False))
    base = _common(
        f"data.root={image_root}",
        "model.spec=test_cls",
        "model.num_queries=0",
        "task.num_classes=0",
        "data.crop_size=[32, 32]",
        "data.base_size=36",
        "data.batch_size=6",
        "train.steps=4",
    )
    target = _target("imagenet_search", base, (32, 32))
    search, retrain = tmp_path / "search", tmp_path / "retrain"
    search_sets = [a for item in [*base, *_search(target)] for a in ("--set", item)]
    assert main(["search", "imagenet_search", "--run-dir", str(search), *search_sets]) == 0
    searched = json.loads((search / "final_metrics.json").read_text())
    arch = NetSpec.load(search / "arch.json")
    assert searched["macs"] == cost(arch, (32, 32)).macs <= target and arch.head.num_classes == len(CLASSES)
    m = searched
    assert m["num_samples"] == 6 and 0.0 <= m["top1"] <= m["top5"] <= 1.0
    assert m["top5"] == 1.0  # three classes: the top 5 always holds the label
    assert m["top1_error"] == pytest.approx(1.0 - m["top1"]) and m["loss"] > 0

    retrain_sets = [a for item in [*base, "search.penalty_input_size=null"] for a in ("--set", item)]
    assert main(["retrain", "imagenet_retrain", "--arch", str(search / "arch.json"), "--run-dir", str(retrain),
                 *retrain_sets]) == 0  # fmt: skip
    final = json.loads((retrain / "final_metrics.json").read_text())
    model, spec, payload = load_model_from_checkpoint(retrain / "final.pt", expect_task="classification")
    assert spec.activation == "swish" and spec.head.dropout == 0.28
    assert final["macs"] == searched["macs"] and payload["metrics"]["top1"] == final["top1"]

    assert main(["evaluate", str(retrain / "final.pt")]) == 0
    evaluated = json.loads((retrain / "eval_metrics.json").read_text())
    assert evaluated["top1"] == final["top1"] and evaluated["num_samples"] == 6

    image = image_root / "val" / "cow" / "1.png"
    assert main(["predict", str(retrain / "final.pt"), str(image), "--out", str(tmp_path / "pred")]) == 0
    (record,) = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert {r["class"] for r in record["top5"]} == set(CLASSES)

    onnx_path = tmp_path / "cls.onnx"
    assert main(["export", str(retrain / "final.pt"), "-o", str(onnx_path)]) == 0
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: np.zeros((2, 3, 32, 32), np.float32)})
    assert logits.shape == (2, 3)
    out = capsys.readouterr().out
    assert f"{image}: " in out and "searched architecture:" in out and "onnxruntime vs PyTorch" in out
    assert "ms per image at batch 1 in onnxruntime" in out and (tmp_path / "cls.optimized.onnx").is_file()

    merged_path = tmp_path / "cls_merged.onnx"  # one depthwise convolution per block: the same outputs
    assert main(["export", str(retrain / "final.pt"), "-o", str(merged_path), "--merge-groups", "--no-latency"]) == 0
    merged = ort.InferenceSession(str(merged_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    (a,) = session.run(None, {session.get_inputs()[0].name: x})
    (b,) = merged.run(None, {merged.get_inputs()[0].name: x})
    assert np.abs(a - b).max() <= 1e-4 * max(1.0, float(np.abs(a).max()))
    dw_ops = [n for n in onnx.load(str(merged_path)).graph.node if n.op_type == "Conv"]
    assert len(dw_ops) < len([n for n in onnx.load(str(onnx_path)).graph.node if n.op_type == "Conv"])


def test_fashion_mnist_search_uses_official_test_split(fake_fashion: list[str], tmp_path: Path) -> None:
    base = _common("model.spec=test_cls", "data.crop_size=[32, 32]")
    target = _target("demo_cls", base, (32, 32))
    cfg = load_config("demo_cls", [*base, *_search(target)])
    result = train(cfg, tmp_path / "run", show_progress=False)
    assert set(fake_fashion) == {"train", "test"}  # "val" reads the official 10k test split
    assert result.metrics["num_samples"] == 20 and 0.0 <= result.metrics["top1"] <= 1.0
    assert cost(result.spec, (32, 32)).macs <= target
    x, _ = get_task(cfg).train_dataset()[0]
    assert x.shape == (3, 32, 32)  # 28x28 zero-padded
    x, _ = get_task(load_config("demo_cls")).val_dataset()[0]
    assert x.shape == (3, 40, 40)  # the preset's size, resized


def test_label_smoothing_only_in_training_loss(fake_fashion: list[str]) -> None:
    task = get_task(load_config("demo_cls", ["task.label_smoothing=0.2"]))
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    labels = torch.tensor([0, 2])
    expected = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.2)
    assert torch.allclose(task.loss(logits, (None, labels)), expected)

    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return logits[: len(x)]

    loader = [(torch.zeros(2, 3, 4, 4), labels)]
    metrics = task.evaluate(Fixed(), loader, torch.device("cpu"))
    plain = torch.nn.functional.cross_entropy(logits, labels).item()
    assert metrics["loss"] == pytest.approx(plain) and metrics["top1"] == 0.5 and metrics["num_samples"] == 2


def test_random_shift_flip_keeps_background() -> None:
    torch.manual_seed(0)
    x = torch.full((3, 8, 8), -1.0)
    x[:, 3:5, 3:5] = 2.0
    for _ in range(10):
        y = RandomShiftFlip(2, fill=-1.0)(x)
        assert y.shape == x.shape and set(y.unique().tolist()) == {-1.0, 2.0} and (y == 2.0).sum() == 12


def test_imagefolder_augmentation_follows_the_torch_seed(image_root: Path) -> None:
    import random

    task = get_task(load_config("imagenet_search", [f"data.root={image_root}", "task.num_classes=0"]))
    ds = task.train_dataset()
    torch.manual_seed(3)
    random.seed(0)
    a = ds[0][0]
    torch.manual_seed(3)
    random.seed(1)
    assert torch.equal(a, ds[0][0]) and a.shape == (3, 224, 224)


def test_cls_supernet_trains_two_steps(image_root: Path, tmp_path: Path) -> None:
    cfg = load_config(
        "imagenet_search",
        _common(
            f"data.root={image_root}",
            "task.num_classes=0",
            "data.crop_size=[32, 32]",
            "data.batch_size=2",
            "data.eval_batch_size=6",
            "train.steps=2",
            "search.enabled=false",
            "model.num_queries=0",
        ),
    )
    result = train(cfg, tmp_path / "run", show_progress=False)
    assert result.steps == 2 and result.spec.name == "hrnas_cls_supernet"
    assert np.isfinite(result.metrics["loss"]) and result.metrics["num_samples"] == 6


def test_imagenet_reference_builds_and_evaluates(image_root: Path) -> None:
    cfg = load_config(
        "imagenet_retrain",
        _common(f"data.root={image_root}", "task.num_classes=0", "data.crop_size=[32, 32]", "data.base_size=36"),
    )
    task = get_task(cfg)
    spec = task.build_spec()
    assert spec.name == "hrnas_imagenet_ref" and spec.head.num_classes == 3
    assert spec.activation == "swish" and spec.head.dropout == 0.28
    model = build_model(spec, init=cfg.model.init).eval()
    loader = eval_loader(task.val_dataset(), 4, collate=task.collate)
    metrics = task.evaluate(model, loader, torch.device("cpu"))
    assert metrics["num_samples"] == 6 and 0.0 <= metrics["top1"] <= 1.0 and metrics["top5"] == 1.0


def test_predict_files_prints_top5(
    fake_fashion: list[str], image_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    torch.manual_seed(0)
    task = get_task(load_config("demo_cls", ["model.spec=test_cls"]))
    model = build_model(task.build_spec(), init="mnas").eval()
    image = tmp_path / "shoe.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 40, 3), dtype=np.uint8)).save(image)
    (out,) = task.predict(model, [image], tmp_path / "pred")
    records = json.loads(out.read_text())
    assert records[0]["image"] == str(image) and len(records[0]["top5"]) == 5
    probs = [r["probability"] for r in records[0]["top5"]]
    assert probs == sorted(probs, reverse=True) and all(r["class"] in task.class_names() for r in records[0]["top5"])
    assert capsys.readouterr().out.startswith(f"{image}: ")

    folder_task = get_task(
        load_config(
            "imagenet_search",
            [f"data.root={image_root}", "task.num_classes=0", "data.crop_size=[32, 32]", "data.base_size=36"],
        )
    )
    model = build_model(folder_task.build_spec(), init="mnas").eval()
    (out,) = folder_task.predict(model, [image_root / "val" / "bee" / "0.png"], tmp_path / "pred2")
    top = json.loads(out.read_text())[0]["top5"]
    assert len(top) == 3 and {r["class"] for r in top} == set(CLASSES)


def _cli_error(args: list[str], capsys: pytest.CaptureFixture) -> str:
    from hrnas.cli import main

    assert main(args) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_empty_class_folder_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = write_image_folder(tmp_path / "data", {"train": 2, "val": 1})
    (root / "train" / "dog").mkdir()
    (root / "val" / "dog").mkdir()
    line = _cli_error(
        [
            "train",
            "imagenet_search",
            "--run-dir",
            str(tmp_path / "run"),
            "--set",
            f"data.root={root}",
            "--set",
            "task.num_classes=0",
            "--set",
            "model.spec=test_cls",
            "--set",
            "data.crop_size=[32,32]",
        ],
        capsys,
    )
    assert "dog: class folder holds no images" in line
    assert not (tmp_path / "run" / "last.pt").exists()


def test_config_mismatches_are_errors(image_root: Path, tmp_path: Path) -> None:
    base = [f"data.root={image_root}", "data.crop_size=[32, 32]", "model.spec=test_cls"]
    with pytest.raises(TaskError, match="task.num_classes: 1000, but the imagefolder data has 3 classes"):
        get_task(load_config("imagenet_search", base)).build_spec()
    with pytest.raises(TaskError, match=r"data.crop_size: classification uses square inputs, got \[32, 24\]"):
        get_task(load_config("imagenet_search", [*base, "data.crop_size=[32, 24]"])).train_dataset()
    with pytest.raises(ConfigError, match="data.format: 'coco_keypoints' is not one of imagefolder, fashion_mnist"):
        load_config("imagenet_search", [*base, "data.format=coco_keypoints"])
    cfg = load_config("imagenet_search", base)
    wrong = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, format="coco_keypoints"))
    with pytest.raises(TaskError, match="data.format: 'coco_keypoints' is not a classification format"):
        ClassificationTask(wrong).num_outputs()
    root = write_image_folder(tmp_path / "other", {"train": 1})
    write_image_folder(root, {"val": 1}, classes=("ant", "bee", "cat"))
    task = get_task(load_config("imagenet_search", [f"data.root={root}", "task.num_classes=0"]))
    with pytest.raises(DatasetError, match=r"class folders differ .*extra: cat; missing: cow"):
        task.val_dataset()


@pytest.mark.slow
def test_fashion_mnist_search_and_retrain_reach_90_percent(tmp_path: Path) -> None:
    """The acceptance run on the real data: `hrnas search demo_cls`, then `hrnas retrain demo_cls --init
    inherit --set train.steps=3500` of the searched network (CPU, about 30 minutes on one thread)."""
    import subprocess
    import sys

    from hrnas.data.fashion_mnist import fashion_mnist_root

    fashion_mnist_root()  # fetch once, outside the timed runs
    search, retrain = tmp_path / "search", tmp_path / "retrain"
    cli = [sys.executable, "-m", "hrnas.cli"]
    subprocess.run([*cli, "search", "demo_cls", "--run-dir", str(search)], check=True)
    arch = search / "arch.json"
    retrain_cmd = [*cli, "retrain", "demo_cls", "--arch", str(arch), "--init", "inherit", "--run-dir", str(retrain)]
    subprocess.run([*retrain_cmd, "--set", "train.steps=3500"], check=True)
    metrics = json.loads((retrain / "final_metrics.json").read_text())
    assert metrics["num_samples"] == 10_000 and metrics["top1"] >= 0.90
    assert metrics["macs"] <= load_config("demo_cls").search.target_macs
