"""The keypoint task through the trainer: COCO-format files, OKS AP evaluation, flip test, ranks, predict."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from hrnas.data.errors import DatasetError
from hrnas.engine.config import ConfigError, load_config
from hrnas.engine.data import eval_loader
from hrnas.engine.trainer import load_model_from_checkpoint, train
from hrnas.space.cost import cost
from hrnas.space.network import build_model
from hrnas.space.spec import NetSpec
from hrnas.tasks.base import TaskError, get_task
from hrnas.tasks.keypoints import KeypointsTask, box_center_results, mean_pose_results

NAMES = ["top", "bottom", "left_tip", "right_tip", "center"]
SIZE = 128


pytestmark = pytest.mark.usefixtures("single_thread")


def write_coco(root: Path, split: str, num_images: int, seed: int, keypoints: bool = True) -> None:
    """``root/{split}/*.png`` with 1–2 diamonds each, and ``root/annotations/kp_{split}.json``.

    As in COCO, the first image also holds a crowd region and the second an instance without any
    labelled keypoint; neither is an item of the dataset.
    """
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        image = rng.integers(0, 60, (SIZE, SIZE, 3), dtype=np.uint8)
        for _ in range(int(rng.integers(1, 3))):
            w, h = (int(v) for v in rng.integers(36, 64, 2))
            x, y = int(rng.integers(0, SIZE - w)), int(rng.integers(0, SIZE - h))
            cx, cy = x + w // 2, y + h // 2
            pts = [(cx, y), (cx, y + h - 1), (x, cy), (x + w - 1, cy), (cx, cy)]
            colour = tuple(int(c) for c in rng.integers(120, 255, 3))
            cv2.fillPoly(image, [np.array([pts[0], pts[3], pts[1], pts[2]], np.int32)], colour)
            flat = [float(v) for px, py in pts for v in (px, py, 2)]
            ann = {"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1, "bbox": [x, y, w, h],
                   "area": w * h / 2, "iscrowd": 0, "num_keypoints": 5}  # fmt: skip
            if keypoints:
                ann["keypoints"] = flat
            annotations.append(ann)
        if keypoints and i < 2:
            unlabelled = {"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1, "bbox": [2, 2, 30, 30],
                          "area": 600.0, "iscrowd": int(i == 0), "num_keypoints": 0, "keypoints": [0] * 15}  # fmt: skip
            annotations.append(unlabelled)
        cv2.imwrite(str(root / split / f"{i:04d}.png"), image)
        images.append({"id": i + 1, "file_name": f"{i:04d}.png", "width": SIZE, "height": SIZE})
    category = {"id": 1, "name": "diamond", "supercategory": "shape", "skeleton": [[1, 5], [2, 5], [3, 5], [4, 5]]}
    if keypoints:
        category["keypoints"] = NAMES
    data = {"images": images, "annotations": annotations, "categories": [category]}
    (root / "annotations" / f"kp_{split}.json").write_text(json.dumps(data))


def labelled(root: Path, split: str) -> list[dict]:
    """The annotations of a split that are dataset items (not crowd, some keypoint labelled)."""
    data = json.loads((root / "annotations" / f"kp_{split}.json").read_text())
    return [a for a in data["annotations"] if not a["iscrowd"] and max(a["keypoints"][2::3]) > 0]


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco") / "data"
    write_coco(root, "train", 10, seed=0)
    write_coco(root, "val", 6, seed=1)
    return root


SEARCH_NOW = ["search.rho_free_steps=0", "search.rho_warmup_steps=1", "search.min_saving_macs=0"]
"""Search settings that let a few steps shrink the network."""


def _overrides(root: Path, *extra: str) -> list[str]:
    return [
        f"data.root={root}",
        "task.ann_file=annotations/kp_{split}.json",
        "data.train_split=train",
        "data.val_split=val",
        "model.spec=test_kpt",
        "data.crop_size=[64, 48]",
        "data.batch_size=4",
        "data.eval_batch_size=4",
        "data.workers=0",
        "train.log_every=2",
        "train.bn_calib_batches=1",
        "train.eval_every=0",
        "train.checkpoint_every=0",
        "train.device=cpu",
        "schedule.warmup_steps=1",
        *extra,
    ]


class TargetOracle(nn.Module):
    """Returns the target heatmaps of the images it is shown (looked up by the image's bytes)."""

    def __init__(self, dataset) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.table = {}
        for i in range(len(dataset)):
            item = dataset[i]
            self.table[item["image"].numpy().tobytes()] = item["target"]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.table[x.numpy().tobytes()] for x in images])


def _task(root: Path, *extra: str) -> KeypointsTask:
    return get_task(load_config("demo_pose", _overrides(root, "data.crop_size=[128, 96]", *extra)))


def test_ground_truth_heatmaps_through_the_task_score_ap_above_095(coco_root: Path) -> None:
    """The encode → decode → evaluate chain of the task: heatmaps rendered from the ground truth, decoded
    with the quarter-pixel shift, mapped back to the image, rescored, OKS-NMS'd and scored by COCOeval."""
    task = _task(coco_root, "task.flip_test=false")
    dataset = task.val_dataset()
    assert dataset.image_dir == coco_root / "val"
    assert len(dataset) == len(labelled(coco_root, "val"))  # crowd and unlabelled instances are no items
    loader = eval_loader(dataset, 3, collate=task.collate)
    metrics = task.evaluate(TargetOracle(dataset), loader, torch.device("cpu"))
    assert metrics["AP"] >= 0.95 and metrics["AP50"] == 1.0, metrics
    assert metrics["num_instances"] == len(dataset)


def test_reference_predictors_score_far_below_the_ground_truth(coco_root: Path) -> None:
    task = _task(coco_root)
    dataset = task.val_dataset()
    centre = box_center_results(dataset)
    assert len(centre) == len(dataset)
    for result, record in zip(centre, dataset.records, strict=True):
        assert np.allclose(np.asarray(result["keypoints"]).reshape(5, 3)[:, :2], record["center"])
    # a diamond's joints sit at fixed places of its box: the mean pose finds them (in units of the crop region)
    record = dataset.records[0]
    pose = mean_pose_results(task.train_dataset(), dataset)[0]
    top, bottom, left, right, centre = (np.asarray(pose["keypoints"]).reshape(5, 3)[:, :2] - record["center"]) / record[
        "scale"
    ]
    assert top[1] < -0.2 and bottom[1] > 0.2 and left[0] < -0.2 and right[0] > 0.2 and np.abs(centre).max() < 0.02
    assert np.abs([top[0], bottom[0], left[1], right[1]]).max() < 0.02
    baselines = task.baseline_metrics()
    assert set(baselines) == {"box_centre", "mean_pose"}
    assert baselines["box_centre"]["AP"] < 0.2 < baselines["mean_pose"]["AP"] < 0.95


def test_detections_replace_ground_truth_boxes_for_evaluation(coco_root: Path, tmp_path: Path) -> None:
    gt = json.loads((coco_root / "annotations" / "kp_val.json").read_text())
    dets = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.5} for a in gt["annotations"]]
    dets.append({"image_id": 1, "category_id": 1, "bbox": [0, 0, 30, 30], "score": 0.9})
    det_file = tmp_path / "dets.json"
    det_file.write_text(json.dumps(dets))
    task = _task(coco_root, f"task.det_file={det_file}", "data.crop_size=[64, 48]")
    dataset = task.val_dataset()
    assert len(dataset) == len(dets) and {r["ann_id"] for r in dataset.records} == {-1}
    assert all(r["ann_id"] > 0 for r in task.train_dataset().records)  # training keeps the labelled boxes
    torch.manual_seed(0)
    model = build_model(task.build_spec(), init="default").eval()
    metrics = task.evaluate(model, eval_loader(dataset, 4, collate=task.collate), torch.device("cpu"))
    assert metrics["num_instances"] == len(dets) and 0.0 <= metrics["AP"] <= 1.0


def test_flip_test_averages_the_mirrored_prediction(coco_root: Path) -> None:
    task = _task(coco_root)
    images = torch.randn(2, 3, 128, 96)

    class Net(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :1].repeat(1, 5, 1, 1)[..., ::4, ::4]

    heat = task.predict_heatmaps(Net(), images, [(2, 3)])
    plain = Net()(images)
    flipped = Net()(images.flip(3)).flip(3)
    flipped[..., 1:] = flipped[..., :-1].clone()
    assert torch.allclose(heat, 0.5 * (plain + flipped))
    assert torch.equal(task.predict_heatmaps(Net(), images, None), plain)


def _rank_main(rank: int, world: int, port: int, root: str, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        task = _task(Path(root), "task.flip_test=false")
        dataset = task.val_dataset()
        loader = eval_loader(dataset, 2, rank=rank, world_size=world, collate=task.collate)
        metrics = task.evaluate(TargetOracle(dataset), loader, torch.device("cpu"))
        Path(out, f"rank{rank}.json").write_text(json.dumps(metrics))
    finally:
        dist.destroy_process_group()


def test_two_ranks_gather_every_result(coco_root: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the children inherit the imported modules (no CUDA here), which keeps the test fast
    mp.start_processes(_rank_main, args=(2, port, str(coco_root), str(tmp_path)), nprocs=2, start_method="fork")
    a = json.loads((tmp_path / "rank0.json").read_text())
    b = json.loads((tmp_path / "rank1.json").read_text())
    assert a == b and a["AP"] > 0.9 and a["num_instances"] == len(_task(coco_root).val_dataset())


def test_coco_supernet_trains_two_steps(coco_root: Path, tmp_path: Path) -> None:
    cfg = load_config(
        "coco_keypoints",
        [
            *_overrides(coco_root),
            "model.spec=hrnas_coco_supernet",
            "task.num_classes=0",
            "data.batch_size=2",
            "train.steps=2",
            "search.enabled=false",
            "schedule.milestones=[1]",
        ],
    )
    result = train(cfg, tmp_path / "run", show_progress=False)
    assert result.steps == 2 and result.spec.name == "hrnas_coco_supernet" and result.spec.head.num_outputs == 5
    assert 0.0 <= result.metrics["AP"] <= 1.0


def test_demo_scenes_are_generated_when_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hrnas.demos import scenes as demo_scenes

    made = []

    def small(root, **kwargs):
        made.append(root)
        return demo_scenes.generate_demo_scenes(root, num_train=6, num_val=3, size=64, seed=0, progress=False)

    monkeypatch.setattr(demo_scenes, "ensure_demo_scenes", small)
    root = tmp_path / "demo"
    cfg = load_config("demo_pose", [f"data.root={root}", "data.crop_size=[64, 48]"])
    task = get_task(cfg)
    assert task.num_outputs() == 5 and made == [root]
    assert task.category().flip_pairs == ((2, 3),)
    item = task.train_dataset()[0]
    assert item["image"].shape == (3, 64, 48) and item["target"].shape == (5, 16, 12)
    get_task(cfg).val_dataset()
    assert made == [root]  # a complete demo dataset is used as it is


def test_predict_draws_keypoints(coco_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    task = _task(coco_root, "data.crop_size=[64, 48]")
    model = build_model(task.build_spec(), init="default").eval()
    annotated = coco_root / "val" / "0001.png"
    other = tmp_path / "elsewhere.png"
    cv2.imwrite(str(other), np.zeros((50, 70, 3), np.uint8))
    written = task.predict(model, [annotated, other], tmp_path / "pred")
    assert [p.name for p in written] == ["0001_keypoints.png", "elsewhere_keypoints.png", "keypoints.json"]
    assert cv2.imread(str(written[1])).shape == (50, 70, 3)
    records = json.loads(written[-1].read_text())
    n_boxes = sum(1 for a in labelled(coco_root, "val") if a["image_id"] == 2)
    assert len(records[0]["instances"]) == n_boxes
    assert records[1]["instances"][0]["box"] == [0.0, 0.0, 70.0, 50.0]
    assert all(len(inst["keypoints"]) == 5 for r in records for inst in r["instances"])
    assert "instance(s)" in capsys.readouterr().out


def _cli_error(args: list[str], capsys: pytest.CaptureFixture) -> str:
    from hrnas.cli import main

    assert main(args) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def _no_keypoints(root: Path) -> str:
    write_coco(root, "val", 1, seed=1, keypoints=False)
    return "kp_val.json: no category defines 'keypoints', so it is not a keypoint annotation file"


def _keypoint_count(root: Path) -> str:
    path = root / "annotations" / "kp_val.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["keypoints"] = data["annotations"][0]["keypoints"][:12]
    path.write_text(json.dumps(data))
    return "kp_val.json: annotation 1 has 4 keypoints, category 'diamond' defines 5"


def _box_outside(root: Path) -> str:
    path = root / "annotations" / "kp_val.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["bbox"] = [300, 20, 40, 40]
    path.write_text(json.dumps(data))
    return f"kp_val.json: annotation 1 box [300, 20, 40, 40] lies entirely outside its {SIZE}x{SIZE} image 1"


def _detection_outside(root: Path) -> str:
    detection = {"image_id": 1, "category_id": 1, "bbox": [5, -90, 20, 40], "score": 1}
    (root / "dets.json").write_text(json.dumps([detection]))
    return f"dets.json: detection 0 box [5, -90, 20, 40] lies entirely outside its {SIZE}x{SIZE} image 1"


@pytest.mark.parametrize("corrupt", [_no_keypoints, _keypoint_count, _box_outside, _detection_outside])
def test_bad_annotations_are_one_line_errors(corrupt, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "data"
    write_coco(root, "train", 2, seed=0)
    write_coco(root, "val", 2, seed=1)
    expected = corrupt(root)
    args = ["train", "demo_pose", "--run-dir", str(tmp_path / "run")]
    extra = ["task.det_file=dets.json"] if corrupt is _detection_outside else []
    for item in _overrides(root, *extra):
        args += ["--set", item]
    line = _cli_error(args, capsys)
    assert line.startswith("hrnas train: error: ") and line.endswith(expected), line
    assert not (tmp_path / "run" / "last.pt").exists()


def test_one_pixel_boxes_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for split, n in (("train", 3), ("val", 1)):
        write_coco(root, split, n, seed=0)
    path = root / "annotations" / "kp_train.json"
    data = json.loads(path.read_text())
    dot = {**data["annotations"][0], "id": 99, "bbox": [5, 5, 1, 1], "keypoints": [5.0, 5.0, 2.0] * 5}
    path.write_text(json.dumps({**data, "annotations": [*data["annotations"], dot]}))
    dataset = _task(root, "data.crop_size=[64, 48]").train_dataset()
    assert len(dataset) == len(labelled(root, "train")) - 1 and 99 not in {r["ann_id"] for r in dataset.records}
    assert all(dataset[i]["image"].shape == (3, 64, 48) for i in range(len(dataset)))


def test_config_errors(coco_root: Path) -> None:
    with pytest.raises(TaskError, match=r"task.num_classes: 17, but the annotations define 5 keypoints"):
        get_task(load_config("coco_keypoints", _overrides(coco_root))).build_spec()
    with pytest.raises(TaskError, match=r"data.crop_size: \[66, 48\] must be divisible by 4"):
        _task(coco_root, "data.crop_size=[66, 48]").train_dataset()
    with pytest.raises(TaskError, match="may only contain the placeholder"):
        _task(coco_root, "task.ann_file=annotations/{name}.json").val_dataset()
    with pytest.raises(DatasetError, match="kp_nope.json: annotation file not found"):
        _task(coco_root, "data.val_split=nope").val_dataset()
    with pytest.raises(ConfigError, match="'fashion_mnist' is not one of coco_keypoints, demo"):
        _task(coco_root, "data.format=fashion_mnist").val_dataset()


@pytest.mark.slow
def test_demo_pose_search_and_retrain_beat_the_references(tmp_path: Path) -> None:
    """The acceptance run on the demo scenes: `hrnas search demo_pose`, `hrnas retrain demo_pose --init inherit
    --set train.steps=4000` and `hrnas evaluate --baselines`, which scores every joint at its box centre and at
    its mean place in the box with the same evaluator (CPU, about 30 minutes on one thread)."""
    import subprocess
    import sys

    data = tmp_path / "demo"
    cli = [sys.executable, "-m", "hrnas.cli"]
    search, retrain = tmp_path / "search", tmp_path / "retrain"
    subprocess.run([*cli, "search", "demo_pose", "--run-dir", str(search), "--set", f"data.root={data}"], check=True)
    retrain_cmd = [*cli, "retrain", "demo_pose", "--arch", str(search / "arch.json"), "--init", "inherit"]
    retrain_cmd += ["--run-dir", str(retrain), "--set", f"data.root={data}", "--set", "train.steps=4000"]
    subprocess.run(retrain_cmd, check=True)
    subprocess.run([*cli, "evaluate", str(retrain / "final.pt"), "--baselines"], check=True)
    metrics = json.loads((retrain / "eval_metrics.json").read_text())
    assert metrics["macs"] <= load_config("demo_pose").search.target_macs
    assert metrics["AP"] > 0.3 > 0.1 > max(b["AP"] for b in metrics["baselines"].values())


def test_cli_search_retrain_evaluate_predict_export(
    coco_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import functools

    import onnxruntime as ort

    from hrnas.cli import main
    from hrnas.export import onnx as onnx_mod

    # the TorchScript exporter takes a second where the default one takes tens (tests/export covers both)
    monkeypatch.setattr(onnx_mod, "export_onnx", functools.partial(onnx_mod.export_onnx, dynamo=False))
    search, retrain = tmp_path / "search", tmp_path / "retrain"
    overrides = _overrides(coco_root, "data.crop_size=[64, 48]", "train.steps=4", "search.shrink_every=2")
    target = int(0.7 * cost(get_task(load_config("demo_pose", overrides)).build_spec(), (64, 48)).macs)
    sets = [a for item in overrides for a in ("--set", item)]
    search_sets = [*sets, *(a for item in SEARCH_NOW for a in ("--set", item)), "--set", f"search.target_macs={target}"]
    assert main(["search", "demo_pose", "--run-dir", str(search), *search_sets]) == 0
    searched = json.loads((search / "final_metrics.json").read_text())
    assert searched["macs"] <= target and 0.0 <= searched["AP"] <= 1.0
    assert searched["num_instances"] == len(labelled(coco_root, "val"))
    assert main(["retrain", "demo_pose", "--arch", str(search / "arch.json"), "--run-dir", str(retrain), *sets]) == 0
    final = json.loads((retrain / "final_metrics.json").read_text())
    assert final["macs"] == searched["macs"]
    model, spec, _ = load_model_from_checkpoint(retrain / "final.pt", expect_task="keypoints")
    assert spec == NetSpec.load(search / "arch.json")

    assert main(["evaluate", str(retrain / "final.pt"), "--baselines"]) == 0
    evaluated = json.loads((retrain / "eval_metrics.json").read_text())
    assert evaluated["AP"] == pytest.approx(final["AP"]) and evaluated["num_instances"] == final["num_instances"]
    assert set(evaluated["baselines"]) == {"box_centre", "mean_pose"}

    image = coco_root / "val" / "0002.png"
    assert main(["predict", str(retrain / "final.pt"), str(image), "--out", str(tmp_path / "pred")]) == 0
    assert cv2.imread(str(tmp_path / "pred" / "0002_keypoints.png")).shape == (SIZE, SIZE, 3)
    (record,) = json.loads((tmp_path / "pred" / "keypoints.json").read_text())
    assert len(record["instances"]) == sum(1 for a in labelled(coco_root, "val") if a["image_id"] == 3)

    onnx_path = tmp_path / "pose.onnx"
    assert main(["export", str(retrain / "final.pt"), "-o", str(onnx_path)]) == 0
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (heatmaps,) = session.run(None, {session.get_inputs()[0].name: np.zeros((2, 3, 64, 48), np.float32)})
    assert heatmaps.shape == (2, 5, 16, 12)
    out = capsys.readouterr().out
    assert "searched architecture:" in out and "box_centre" in out and "onnxruntime vs PyTorch" in out
