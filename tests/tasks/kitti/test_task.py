"""The ``kitti`` task end to end through the CLI on a tiny simulated dataset and a tiny pillar grid:
train, search, retrain, evaluate (official table), predict (result files and pictures), export (ONNX
checked in ONNX Runtime); configuration errors and checkpoints of other tasks as one-line errors; an
empty frame gives no detections."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hrnas.cli import main
from hrnas.engine.checkpoint import save_checkpoint
from hrnas.engine.config import config_to_dict, load_config
from hrnas.engine.trainer import load_model_from_checkpoint
from hrnas.space.network import build_model
from hrnas.space.spec import NetSpec
from hrnas.space.zoo import get_spec
from hrnas.tasks.base import TaskError, get_task
from hrnas.tasks.kitti.eval import evaluate_kitti
from hrnas.tasks.kitti.formats import read_ids, read_label
from hrnas.tasks.kitti.postprocess import Detections
from hrnas.tasks.kitti.task import CLASSES, summary_metrics


@pytest.fixture
def root(kitti_root: Path) -> Path:
    return kitti_root


@pytest.fixture
def specs(kitti_specs: dict[str, Path]) -> dict[str, Path]:
    return kitti_specs


@pytest.fixture
def sets(kitti_overrides):
    """``(root, spec, *extra)`` -> the ``--set KEY=VALUE`` arguments of a tiny KITTI run."""

    def make(root: Path, spec: Path, *extra: str) -> list[str]:
        return [arg for v in kitti_overrides(root, spec, *extra) for arg in ("--set", v)]

    return make


def test_train_evaluate_predict_export_through_the_cli(root, specs, sets, tmp_path, capsys):
    run = tmp_path / "train"
    assert main(["train", "kitti", "--run-dir", str(run), *sets(root, specs["pp"], "train.steps=3")]) == 0
    assert (root / "gt_database" / "kitti_dbinfos_train.npz").is_file()  # built once from the train split
    metrics = json.loads((run / "final_metrics.json").read_text())
    assert metrics["num_frames"] == 1 and 0.0 <= metrics["car_3d_moderate_r40"] <= 100.0
    assert set(metrics["kitti"]) == {"Car", "Pedestrian", "Cyclist"}
    capsys.readouterr()

    assert main(["evaluate", str(run / "final.pt")]) == 0
    out = capsys.readouterr().out
    assert "Car AP_R40@0.70, 0.70, 0.70:" in out and "3d   AP:" in out and "moderate AP_R40 3D / BEV" in out
    evaluated = json.loads((run / "eval_metrics.json").read_text())
    assert evaluated["kitti"]["Car"]["3d"]["iou"] == 0.7
    assert "backbone_macs: " in out
    capsys.readouterr()
    # `hrnas evaluate` and `hrnas cost` report the same whole detector, and the backbone beside it
    assert main(["cost", str(specs["pp"]), "--input-size", "64", "64", "--json"]) == 0
    costed = json.loads(capsys.readouterr().out)
    assert (evaluated["macs"], evaluated["params"]) == (costed["macs"], costed["params"])
    assert evaluated["backbone_macs"] == costed["backbone"]["macs"] == costed["groups"]["backbone"]["macs"]
    assert evaluated["macs"] > evaluated["backbone_macs"]

    pred = tmp_path / "pred"
    assert main(["predict", str(run / "final.pt"), "--data", str(root), "--split", "val", "--out", str(pred)]) == 0
    (frame,) = read_ids(root / "ImageSets" / "val.txt")
    result = read_label(pred / f"{frame}.txt", require_score=True)  # official format with the score column
    assert result.score is not None and len(result) == len(result.score)
    image = np.asarray(Image.open(pred / f"{frame}_image.png"))
    camera = np.asarray(Image.open(root / "training" / "image_2" / f"{frame}.png").convert("RGB"))
    assert image.shape == camera.shape and not np.array_equal(image, camera)  # ground-truth boxes drawn
    assert np.asarray(Image.open(pred / f"{frame}_bev.png")).shape == (256, 256, 3)  # 25.6 m at 0.1 m per pixel
    capsys.readouterr()

    assert main(["export", str(run / "final.pt"), "-o", str(tmp_path / "det.onnx")]) == 0
    assert "max abs diff" in capsys.readouterr().out and (tmp_path / "det.onnx").is_file()


def test_search_then_retrain_through_the_cli(root, specs, sets, tmp_path):
    from hrnas.space.cost import cost

    supernet = NetSpec.load(specs["hr"])
    target = int(0.7 * cost(supernet, (64, 64)).macs)
    search = tmp_path / "search"
    args = sets(
        root,
        specs["hr"],
        "train.steps=4",
        "search.rho=1e-2",
        "search.shrink_every=2",
        "search.min_saving_macs=0",
        f"search.target_macs={target}",
    )
    assert main(["search", "kitti", "--run-dir", str(search), *args]) == 0
    arch = NetSpec.load(search / "arch.json")
    assert cost(arch, (64, 64)).macs <= target
    log = [json.loads(line) for line in (search / "search_log.jsonl").read_text().splitlines()]
    assert log[-1]["final"] and log[-1]["shrunk"]
    model, spec, _ = load_model_from_checkpoint(search / "final.pt", expect_task="kitti")
    assert spec == arch and model.hrnet.spec == arch  # the detector around the searched backbone

    retrain = tmp_path / "retrain"
    inherit = ["--arch", str(search / "arch.json"), "--init", "inherit"]
    assert (
        main(["retrain", "kitti", "--run-dir", str(retrain), *inherit, *sets(root, specs["hr"], "train.steps=2")]) == 0
    )
    assert NetSpec.load(retrain / "arch.json") == arch
    assert "car_bev_moderate_r40" in json.loads((retrain / "final_metrics.json").read_text())


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_configurations_and_foreign_checkpoints_are_one_line_errors(root, specs, sets, tmp_path, capsys):
    run = ["train", "kitti", "--run-dir", str(tmp_path / "bad")]
    err = one_line_error(capsys, [*run, *sets(root, specs["pp"], "data.crop_size=[64, 32]")])
    assert "data.crop_size: [64, 32], but the pillar grid" in err and "set data.crop_size=[64, 64]" in err
    err = one_line_error(capsys, [*run, *sets(root, specs["pp"], "model.spec=test_seg")])
    assert "test_seg has a segmentation head; task 'kitti' needs a detection backbone" in err
    err = one_line_error(capsys, ["search", "kitti", "--run-dir", str(tmp_path / "bad"), *sets(root, specs["pp"])])
    assert "search.enabled: tiny_pp is a fixed PointPillars backbone" in err

    seg_cfg = load_config("demo_seg", ["model.spec=test_seg", "data.crop_size=[64, 64]"])
    seg_spec = get_spec("test_seg")
    seg = tmp_path / "seg.pt"
    payload = {
        "kind": "inference",
        "task": "segmentation",
        "spec": seg_spec.to_dict(),
        "model": build_model(seg_spec).state_dict(),
        "run_config": config_to_dict(seg_cfg),
    }
    save_checkpoint(seg, payload)
    supernet = tmp_path / "arch.json"
    NetSpec.load(specs["hr"]).save(supernet)
    retrain = ["retrain", "kitti", "--run-dir", str(tmp_path / "r"), "--arch", str(supernet), "--init", "inherit"]
    err = one_line_error(capsys, [*retrain, "--checkpoint", str(seg), *sets(root, specs["hr"])])
    assert "checkpoint is for task 'segmentation', not 'kitti'" in err
    err = one_line_error(capsys, ["predict", str(seg), "--data", str(root), "--split", "val", "--out", str(tmp_path)])
    assert "predicts the image files given, not --split" in err


def test_empty_frame_gives_no_detections(root, specs, sets):
    cfg = load_config("kitti", [a for a in sets(root, specs["pp"]) if a != "--set"])
    task = get_task(cfg)
    model = task.build_model(task.build_spec()).eval()
    with torch.no_grad():
        model.head.conv_cls.bias.fill_(5.0)  # every anchor scores ~0.99: only the frame's emptiness can stop it
    sample = task.dataset("val", training=False)[0]
    empty = {**sample, "points": sample["points"][:0]}
    outside = {**sample, "points": sample["points"] + torch.tensor([100.0, 0.0, 0.0, 0.0])}
    full, none, far = task.detect(model, task.collate([sample, empty, outside]))
    assert len(full.scores) > 0
    assert len(none.scores) == len(far.scores) == 0
    objects = task.to_kitti(none, sample["calib"], sample["image_shape"])
    assert len(objects) == 0 and objects.score is not None


def test_ground_truth_through_the_detection_path_scores_as_the_labels_themselves(root):
    """LiDAR boxes → camera boxes, projected 2D boxes and alphas (what the network's detections go
    through) lose nothing the evaluation looks at: they score exactly as the label lines they came from."""
    cfg = load_config("kitti", [f"data.root={root}"])
    task = get_task(cfg)
    dataset = task.dataset("train", training=False)
    gts, converted, labels = [], [], []
    for i in range(len(dataset)):
        s = dataset[i]
        scores = torch.linspace(0.9, 0.5, len(s["gt_labels"]))
        det = Detections(s["gt_boxes"], scores, s["gt_labels"])
        gts.append(s["annos"])
        converted.append(task.to_kitti(det, s["calib"], s["image_shape"]))
        own = s["annos"].select(np.isin(s["annos"].name, CLASSES))
        own.score = scores.double().numpy()
        labels.append(own)
    got = summary_metrics(evaluate_kitti(gts, converted))
    assert got == summary_metrics(evaluate_kitti(gts, labels))
    assert got["car_3d_moderate_r40"] > 0


def test_a_network_that_predicts_another_grid_is_rejected(root, specs, sets):
    cfg = load_config("kitti", [a for a in sets(root, specs["pp"]) if a != "--set"])
    task = get_task(cfg)
    with pytest.raises(TaskError, match="no stride of the 64×64 grid"):
        task.anchors(1000, torch.device("cpu"))
    assert task.anchors(32 * 32 * 6, torch.device("cpu")).shape == (32, 32, 3, 2, 7)


def test_predict_export_and_kitti_eval_are_the_tasks_own(root, specs, sets, tmp_path):
    cfg = load_config("kitti", [a for a in sets(root, specs["pp"]) if a != "--set"])
    task = get_task(cfg)
    spec = task.build_spec()
    model = task.build_model(spec).eval()
    with pytest.raises(TaskError, match="reads dataset frames; give --split NAME, not files"):
        task.predict(model, ["frame.png"], tmp_path)
    with pytest.raises(TaskError, match=r"--input-size \[32, 32\]: a KITTI detector reads its 64×64 pillar grid"):
        task.export(model, spec, tmp_path / "det.onnx", input_size=(32, 32))
    assert not (tmp_path / "det.onnx").exists()
    assert [c.name for c in task.cli_commands()] == ["kitti-eval"]
