"""Malformed data sets and checkpoints on the command line: one table, each row one bad input written in its
real format (segmentation folder, COCO keypoint JSON, Fashion-MNIST IDX, KITTI label files, hrnas
checkpoints). Each must end the command with one stderr line naming the file (and annotation, tensor or
line) and the value at fault, a non-zero exit, no traceback, and nothing that looks like a finished result
(``final.pt``, ``arch.json``, ``report.json``, metrics or prediction files)."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hrnas.data.fashion_mnist import SPLIT_FILES
from hrnas.engine.checkpoint import save_checkpoint

TINY_TRAIN = [
    "data.workers=0",
    "train.steps=1",
    "train.log_every=1",
    "train.eval_every=0",
    "train.checkpoint_every=0",
    "train.bn_calib_batches=1",
    "train.device=cpu",
    "schedule.warmup_steps=0",
    "search.enabled=false",
]
"""One training step on the CPU, nothing searched: every bad input below is found before it ends."""


RUN_RESULTS = ("final.pt", "best.pt", "last.pt", "arch.json", "report.json", "final_metrics.json")
"""What a finished (or checkpointed) run leaves in its folder; none of it may appear after a bad input. (A
bad sample is found once training has begun, after the trainer wrote ``config.yaml`` and its empty logs.)"""


def set_args(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


# --- segmentation folders (format: folder) ----------------------------------------------------------

SEG_CLASSES = ["sky", "road", "car"]


def write_pair(split_dir: Path, stem: str, seed: int, size: tuple[int, int] = (32, 32)) -> None:
    """``images/{stem}.png`` and ``masks/{stem}.png`` of ``size`` (height, width), labels 0-2."""
    rng = np.random.default_rng(seed)
    (split_dir / "images").mkdir(parents=True, exist_ok=True)
    (split_dir / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(split_dir / "images" / f"{stem}.png")
    Image.fromarray(rng.integers(0, 3, size, dtype=np.uint8)).save(split_dir / "masks" / f"{stem}.png")


def seg_root(tmp: Path) -> Path:
    root = tmp / "seg"
    for split, seed in (("train", 0), ("val", 10)):
        for index in range(2):
            write_pair(root / split, f"s{index}", seed + index)
    (root / "classes.json").write_text(json.dumps(SEG_CLASSES))
    return root


def seg_train(tmp: Path, root: Path, *extra: str) -> tuple[list[str], list[Path]]:
    run = tmp / "run"
    argv = ["train", "demo_seg", "--run-dir", run, *set_args(
        f"data.root={root}", "data.format=folder", "model.spec=test_seg", "model.transformer=false",
        "data.crop_size=[32, 32]", "data.batch_size=2", "data.eval_batch_size=2", *TINY_TRAIN, *extra,
    )]  # fmt: skip
    return argv, [run / name for name in RUN_RESULTS]


# --- COCO keypoints ---------------------------------------------------------------------------------

KPT_NAMES = ["top", "bottom", "left", "right", "centre"]


def coco_instance(ann_id: int, image_id: int, x: int, y: int, w: int, h: int) -> dict:
    pts = [(x + w // 2, y), (x + w // 2, y + h - 1), (x, y + h // 2), (x + w - 1, y + h // 2), (x + w // 2, y + h // 2)]
    flat = [float(v) for px, py in pts for v in (px, py, 2)]
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": [x, y, w, h], "area": w * h / 2,
            "iscrowd": 0, "num_keypoints": 5, "keypoints": flat}  # fmt: skip


def coco_data(first_id: int = 7) -> dict:
    """Two 64×64 images with two labelled instances each; annotation ids from ``first_id``."""
    annotations = [coco_instance(first_id + i, 1 + i // 2, 4 + 20 * (i % 2), 6, 24, 40) for i in range(4)]
    images = [{"id": i, "file_name": f"{i:04d}.png", "width": 64, "height": 64} for i in (1, 2)]
    category = {"id": 1, "name": "diamond", "keypoints": KPT_NAMES, "skeleton": [[1, 5], [2, 5], [3, 5], [4, 5]]}
    return {"images": images, "annotations": annotations, "categories": [category]}


def coco_root(tmp: Path, train: dict | str | None = None) -> Path:
    """``tmp/coco`` with ``train``/``val`` images and ``annotations/kp_{split}.json`` (``train`` replaces the
    training file's content: a dict is written as JSON, a string as it is)."""
    root = tmp / "coco"
    (root / "annotations").mkdir(parents=True)
    for split, seed in (("train", 0), ("val", 1)):
        (root / split).mkdir()
        for i in (1, 2):
            pixels = np.random.default_rng(seed * 10 + i).integers(0, 256, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / f"{i:04d}.png")
        content = train if split == "train" and train is not None else coco_data()
        text = content if isinstance(content, str) else json.dumps(content)
        (root / "annotations" / f"kp_{split}.json").write_text(text)
    return root


def coco_train(tmp: Path, root: Path, *extra: str) -> tuple[list[str], list[Path]]:
    run = tmp / "run"
    argv = ["train", "demo_pose", "--run-dir", run, *set_args(
        f"data.root={root}", "data.format=coco_keypoints", "task.ann_file=annotations/kp_{split}.json",
        "data.train_split=train", "data.val_split=val", "model.spec=test_kpt", "data.crop_size=[32, 24]",
        "data.batch_size=2", "data.eval_batch_size=2", *TINY_TRAIN, *extra,
    )]  # fmt: skip
    return argv, [run / name for name in RUN_RESULTS]


def coco_edit(tmp: Path, edit: Callable[[dict], None], *extra: str) -> tuple[list[str], list[Path]]:
    data = coco_data()
    edit(data)
    return coco_train(tmp, coco_root(tmp, data), *extra)


def annotation(data: dict, ann_id: int) -> dict:
    return next(a for a in data["annotations"] if a["id"] == ann_id)


# --- Fashion-MNIST ----------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, magic: bytes | None = None, dims: tuple[int, ...] | None = None) -> None:
    header = (magic or bytes([0, 0, 0x08, array.ndim])) + struct.pack(f">{array.ndim}I", *(dims or array.shape))
    with gzip.open(path, "wb") as stream:
        stream.write(header + array.tobytes())


def fashion_train(
    tmp: Path, magic: bytes | None = None, dims: tuple[int, ...] | None = None
) -> tuple[list[str], list[Path]]:
    """A 4-item Fashion-MNIST whose training images file has the given magic number or header dims."""
    root = tmp / "fashion"
    root.mkdir()
    for split in ("train", "test"):
        images_name, labels_name = SPLIT_FILES[split]
        images = np.zeros((4, 28, 28), np.uint8)
        bad = split == "train"
        write_idx(root / images_name, images, magic if bad else None, dims if bad else None)
        write_idx(root / labels_name, np.arange(4, dtype=np.uint8))
    run = tmp / "run"
    argv = ["train", "demo_cls", "--run-dir", run, *set_args(
        f"data.root={root}", "model.spec=test_cls", "data.crop_size=[32, 32]", "data.batch_size=2",
        "data.eval_batch_size=2", *TINY_TRAIN,
    )]  # fmt: skip
    return argv, [run / name for name in RUN_RESULTS]


# --- KITTI label files (hrnas kitti-eval) --------------------------------------------------------------

KITTI_CAR = "Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59"


def kitti_eval(tmp: Path, label_text: str) -> tuple[list[str], list[Path]]:
    labels, results = tmp / "label_2", tmp / "results"
    labels.mkdir()
    results.mkdir()
    (labels / "000000.txt").write_text(KITTI_CAR + "\n")
    (labels / "000001.txt").write_text(label_text)
    (results / "000000.txt").write_text(KITTI_CAR + " 0.9\n")
    return ["kitti-eval", labels, results, "--json"], [results / "000001.txt"]


CALIB = {
    "P0": "7.2e+02 0 6.0e+02 0 0 7.2e+02 1.7e+02 0 0 0 1 0",
    "P1": "7.2e+02 0 6.0e+02 -3.8e+02 0 7.2e+02 1.7e+02 0 0 0 1 0",
    "P2": "7.215377e+02 0 6.095593e+02 4.485728e+01 0 7.215377e+02 1.728540e+02 2.163791e-01 0 0 1 2.745884e-03",
    "P3": "7.2e+02 0 6.0e+02 -3.3e+02 0 7.2e+02 1.7e+02 2.3e+00 0 0 1 3.7e-03",
    "R0_rect": "9.999239e-01 9.837760e-03 -7.445048e-03 -9.869795e-03 9.999421e-01 -4.278459e-03 7.402527e-03 "
    "4.351614e-03 9.999631e-01",
    "Tr_velo_to_cam": "7.533745e-03 -9.999714e-01 -6.166020e-04 -4.069766e-03 1.480249e-02 7.280733e-04 "
    "-9.998902e-01 -7.631618e-02 9.998621e-01 7.523790e-03 1.480755e-02 -2.717806e-01",
}
"""The calibration of a KITTI frame, ``key -> values`` (the lines ``key: values`` of ``calib/ID.txt``)."""


def kitti_train(tmp: Path, calib_edit: Callable[[dict], None]) -> tuple[list[str], list[Path]]:
    """Two frames in the KITTI layout (point cloud, calibration, image size, label) with a tiny PointPillars
    backbone; frame 000001's calibration is edited by ``calib_edit``."""
    from hrnas.space.pointpillars import BEVBlockSpec, PointPillarsSpec

    root = tmp / "kitti"
    for sub in ("velodyne", "calib", "image_2", "label_2"):
        (root / "training" / sub).mkdir(parents=True)
    (root / "ImageSets").mkdir()
    rng = np.random.default_rng(0)
    for index in range(2):
        frame = f"{index:06d}"
        points = rng.uniform((1, -12, -2, 0), (25, 12, 0.5, 1), (500, 4)).astype(np.float32)
        points.tofile(root / "training" / "velodyne" / f"{frame}.bin")
        calib = dict(CALIB)
        if index == 1:
            calib_edit(calib)
        (root / "training" / "calib" / f"{frame}.txt").write_text("".join(f"{k}: {v}\n" for k, v in calib.items()))
        Image.fromarray(np.zeros((375, 1242), np.uint8)).save(root / "training" / "image_2" / f"{frame}.png")
        (root / "training" / "label_2" / f"{frame}.txt").write_text(KITTI_CAR + "\n")
    (root / "ImageSets" / "train.txt").write_text("000000\n000001\n")
    (root / "ImageSets" / "val.txt").write_text("000000\n")
    spec = PointPillarsSpec(blocks=(BEVBlockSpec(16, 2, 1, 32, 1), BEVBlockSpec(32, 2, 1, 32, 2)), in_channels=16)
    spec.save(tmp / "tiny_pp.json")
    run = tmp / "run"
    argv = ["train", "kitti", "--run-dir", run, *set_args(
        f"data.root={root}", f"model.spec={tmp / 'tiny_pp.json'}",
        "task.point_cloud_range=[0, -12.8, -3, 25.6, 12.8, 1]", "task.voxel_size=[0.4, 0.4, 4]",
        "data.crop_size=[64, 64]", "data.batch_size=2", "data.eval_batch_size=2",
        "task.gt_sampling=false", *TINY_TRAIN,
    )]  # fmt: skip
    return argv, [run / name for name in RUN_RESULTS]


def _calib(key: str, value: str) -> Callable[[Path, Path], tuple[list, list[Path]]]:
    return lambda tmp, _: kitti_train(tmp, lambda calib: calib.update({key: value}))


# --- checkpoints ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-step run of a tiny segmentation network (its ``final.pt`` and ``arch.json``)."""
    from hrnas.engine.config import load_config
    from hrnas.engine.trainer import train

    tmp = tmp_path_factory.mktemp("trained")
    root = seg_root(tmp)
    overrides = [f"data.root={root}", "data.format=folder", "model.spec=test_seg", "model.transformer=false",
                 "data.crop_size=[32, 32]", "data.batch_size=2", "data.eval_batch_size=2", *TINY_TRAIN]  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_config("demo_seg", overrides), tmp / "run", show_progress=False)
    finally:
        torch.set_num_threads(threads)
    return tmp / "run"


def copy_run(trained: Path, tmp: Path) -> Path:
    """A copy of the trained run's checkpoint and architecture in ``tmp/ckpt``; returns its final.pt."""
    folder = tmp / "ckpt"
    folder.mkdir()
    for name in ("final.pt", "arch.json"):
        shutil.copy(trained / name, folder / name)
    return folder / "final.pt"


def edited_checkpoint(trained: Path, tmp: Path, edit: Callable[[dict], None]) -> Path:
    path = copy_run(trained, tmp)
    payload = torch.load(path, weights_only=True)
    payload.pop("hrnas_checkpoint")
    edit(payload)
    save_checkpoint(path, payload)
    return path


def more_classes(payload: dict) -> None:
    payload["spec"]["head"]["num_outputs"] = 5


def drop_first_tensor(payload: dict) -> None:
    payload["model"].pop(next(iter(payload["model"])))


def evaluate_outputs(ckpt: Path) -> list[Path]:
    return [ckpt.with_name("eval_metrics.json")]


# --- the table --------------------------------------------------------------------------------------


@dataclass
class Bad:
    """One malformed input: ``make(tmp, trained_run) -> (argv, paths that must not exist afterwards)`` and the
    fragments the error line must name."""

    make: Callable[[Path, Path], tuple[list, list[Path]]]
    fragments: tuple[str, ...]
    needs_checkpoint: bool = field(default=False)


def _seg(edit: Callable[[Path], None], *extra: str) -> Callable[[Path, Path], tuple[list, list[Path]]]:
    def make(tmp: Path, _: Path) -> tuple[list, list[Path]]:
        root = seg_root(tmp)
        edit(root)
        return seg_train(tmp, root, *extra)

    return make


def _rotated_photo_with_stored_size_mask(root: Path) -> None:
    """A phone JPEG stored 48 wide × 32 high with EXIF "rotate 90°" (shown 32 × 48), and a mask of the
    stored size: after the orientation the mask does not fit."""
    (root / "train" / "images" / "s0.png").unlink()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(root / "train" / "images" / "s0.jpg", exif=exif.tobytes())
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(root / "train" / "masks" / "s0.png")


def _write(path: str, content: bytes | str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        target = root / path
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)

    return edit


def _mask(values: np.ndarray, mode: str | None = None) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        Image.fromarray(values, mode=mode).save(root / "train" / "masks" / "s1.png")

    return edit


def _label_7(root: Path) -> None:
    values = np.zeros((32, 32), np.uint8)
    values[5, 9] = 7
    Image.fromarray(values).save(root / "train" / "masks" / "s1.png")


def _coco(edit: Callable[[dict], None], *extra: str) -> Callable[[Path, Path], tuple[list, list[Path]]]:
    return lambda tmp, _: coco_edit(tmp, edit, *extra)


def _set(ann_id: int, key: str, value: object) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        annotation(data, ann_id)[key] = value

    return edit


def _bbox(ann_id: int, index: int, value: float) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        annotation(data, ann_id)["bbox"][index] = value

    return edit


def _unlabel_three(data: dict) -> None:
    """Three of the four instances lose every labelled joint: one instance is left for a batch of two."""
    for ann in data["annotations"][1:]:
        ann["keypoints"] = [0.0] * 15
        ann["num_keypoints"] = 0


def _one_joint_unlabelled(data: dict) -> None:
    annotation(data, 7)["keypoints"][2] = 0.0  # joint 0 not labelled, num_keypoints still says 5


def _visibility_3(data: dict) -> None:
    annotation(data, 8)["keypoints"][5] = 3.0


def _duplicate_id(data: dict) -> None:
    annotation(data, 8)["id"] = 7


def _image_width_0(data: dict) -> None:
    data["images"][0]["width"] = 0


def _duplicate_key(tmp: Path, _: Path) -> tuple[list, list[Path]]:
    text = json.dumps(coco_data())
    text = text.replace('"bbox": [4, 6, 24, 40]', '"bbox": [4, 6, 24, 40], "bbox": [4, 6, 24, -40]', 1)
    return coco_train(tmp, coco_root(tmp, text))


def _evaluate(edit: Callable[[dict], None]) -> Callable[[Path, Path], tuple[list, list[Path]]]:
    def make(tmp: Path, trained: Path) -> tuple[list, list[Path]]:
        ckpt = edited_checkpoint(trained, tmp, edit)
        return ["evaluate", ckpt], evaluate_outputs(ckpt)

    return make


def _truncated(tmp: Path, trained: Path) -> tuple[list, list[Path]]:
    ckpt = copy_run(trained, tmp)
    cut = ckpt.with_name("cut.pt")
    cut.write_bytes(ckpt.read_bytes()[:2000])
    return ["evaluate", cut], evaluate_outputs(cut)


def _text_predict(tmp: Path, _: Path) -> tuple[list, list[Path]]:
    notes = tmp / "notes.pt"
    notes.write_text("these are my notes\n")
    image = tmp / "photo.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    return ["predict", notes, image, "--out", tmp / "pred"], [tmp / "pred"]


def _missing_export(tmp: Path, _: Path) -> tuple[list, list[Path]]:
    return ["export", tmp / "missing.pt", "-o", tmp / "model.onnx"], [tmp / "model.onnx"]


def _evaluate_as_keypoints(tmp: Path, trained: Path) -> tuple[list, list[Path]]:
    ckpt = copy_run(trained, tmp)
    return ["evaluate", ckpt, "--set", "task.name=keypoints"], evaluate_outputs(ckpt)


def _predict_missing_tensor(tmp: Path, trained: Path) -> tuple[list, list[Path]]:
    ckpt = edited_checkpoint(trained, tmp, drop_first_tensor)
    image = tmp / "photo.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    return ["predict", ckpt, image, "--out", tmp / "pred"], [tmp / "pred"]


def _inherit_mismatch(tmp: Path, trained: Path) -> tuple[list, list[Path]]:
    ckpt = edited_checkpoint(trained, tmp, lambda p: p["model"].update(
        {name: torch.zeros(2, *t.shape[1:]) for name, t in p["model"].items() if name == "head.classifier.weight"}))
    root = seg_root(tmp)
    argv, outputs = seg_train(tmp, root)
    argv[0] = "retrain"
    return [*argv, "--arch", ckpt.with_name("arch.json"), "--init", "inherit"], outputs


CASES: dict[str, Bad] = {
    # segmentation folders
    "seg-missing-mask": Bad(_seg(lambda r: (r / "train" / "masks" / "s1.png").unlink()), ("s1.png", "no mask")),
    "seg-mask-size": Bad(_seg(_mask(np.zeros((16, 32), np.uint8))), ("masks/s1.png", "mask is 32x16", "is 32x32")),
    "seg-label-range": Bad(_seg(_label_7), ("masks/s1.png", "mask label 7", "outside the 3 classes", "255")),
    "seg-rgb-mask": Bad(_seg(_mask(np.zeros((32, 32, 3), np.uint8))), ("masks/s1.png", "single-channel", "RGB")),
    "seg-corrupt-image": Bad(_seg(_write("train/images/s1.png", b"\x89PNG\r\n\x1a\n broken")),
                             ("images/s1.png", "cannot decode image")),
    "seg-classes-twice": Bad(_seg(_write("classes.json", '["sky", "road", "sky"]')),
                             ("classes.json", "'sky'", "twice")),
    "seg-rotated-jpeg-stored-size-mask": Bad(_seg(_rotated_photo_with_stored_size_mask),
                                             ("masks/s0.png", "mask is 48x32", "s0.jpg is 32x48", "EXIF")),
    "seg-fewer-than-a-batch": Bad(_seg(lambda r: None, "data.batch_size=4"),
                                  ("2 training samples", "data.batch_size=4")),
    # COCO keypoints
    "coco-negative-width": Bad(_coco(_bbox(7, 2, -5)), ("kp_train.json", "annotation 7", "bbox width -5")),
    "coco-zero-height": Bad(_coco(_bbox(8, 3, 0)), ("kp_train.json", "annotation 8", "bbox height 0")),
    "coco-num-keypoints": Bad(_coco(_one_joint_unlabelled),
                              ("kp_train.json", "annotation 7", "num_keypoints 5", "4 labelled joints")),
    "coco-keypoints-length": Bad(_coco(_set(9, "keypoints", [1.0, 2.0, 2.0] * 4)),
                                 ("kp_train.json", "annotation 9", "has 4 keypoints", "defines 5")),
    "coco-keypoint-not-number": Bad(_coco(_set(9, "keypoints", ["x", 2.0, 2.0] * 5)),
                                    ("annotation 9", "keypoints[0]", "'x'")),
    "coco-visibility": Bad(_coco(_visibility_3), ("kp_train.json", "annotation 8", "visibility 3")),
    "coco-duplicate-id": Bad(_coco(_duplicate_id), ("kp_train.json", "annotation id 7 is given twice")),
    "coco-duplicate-key": Bad(_duplicate_key, ("kp_train.json", "'bbox'", "given twice")),
    "coco-image-width": Bad(_coco(_image_width_0), ("kp_train.json", "image 1", "width 0")),
    "coco-not-json": Bad(lambda tmp, _: coco_train(tmp, coco_root(tmp, '{"images": [')),
                         ("kp_train.json", "not valid JSON")),
    "coco-fewer-than-a-batch": Bad(_coco(_unlabel_three), ("kp_train.json", "1 training samples", "dropping 3",
                                                          "data.batch_size=2")),
    # Fashion-MNIST
    "idx-bad-magic": Bad(lambda tmp, _: fashion_train(tmp, magic=bytes([0, 0, 0x07, 3])),
                         ("train-images-idx3-ubyte.gz", "magic number 0x00000703", "0x00000803")),
    "idx-header-dims": Bad(lambda tmp, _: fashion_train(tmp, dims=(5, 28, 28)),
                           ("train-images-idx3-ubyte.gz", "(5, 28, 28)")),
    # KITTI label files
    "kitti-columns": Bad(lambda tmp, _: kitti_eval(tmp, KITTI_CAR + "\n" + KITTI_CAR.rsplit(" ", 1)[0] + "\n"),
                         ("000001.txt:2", "expected 15 or 16 fields, got 14")),
    "kitti-not-number": Bad(lambda tmp, _: kitti_eval(tmp, KITTI_CAR.replace(" 1.65 ", " tall ") + "\n"),
                            ("000001.txt:1", "field 'h'", "'tall'")),
    "kitti-negative-size": Bad(lambda tmp, _: kitti_eval(tmp, KITTI_CAR.replace(" 3.64 ", " -3.64 ") + "\n"),
                               ("000001.txt:1", "field 'l' is -3.64", "positive size")),
    "kitti-calib-values": Bad(_calib("P2", CALIB["P2"].rsplit(" ", 1)[0]),
                              ("calib/000001.txt:3", "P2 needs 12 values, got 11")),
    "kitti-calib-not-number": Bad(_calib("R0_rect", CALIB["R0_rect"].replace("9.999421e-01", "one")),
                                  ("calib/000001.txt:5", "'R0_rect'", "'one'")),
    # checkpoints
    "ckpt-truncated": Bad(_truncated, ("cut.pt", "not a checkpoint"), needs_checkpoint=True),
    "ckpt-not-torch": Bad(_text_predict, ("notes.pt", "not a checkpoint")),
    "ckpt-missing": Bad(_missing_export, ("missing.pt", "no such checkpoint")),
    "ckpt-spec-vs-weights": Bad(_evaluate(more_classes),
                                ("final.pt", "tensor 'head.classifier.weight'", "is [3, ", "builds [5, "),
                                needs_checkpoint=True),
    "ckpt-missing-tensor": Bad(_predict_missing_tensor, ("final.pt", "missing from the file"), needs_checkpoint=True),
    "ckpt-other-task": Bad(_evaluate_as_keypoints, ("final.pt", "checkpoint is for task 'segmentation'",
                                                    "task.name=keypoints"), needs_checkpoint=True),
    "ckpt-inherit-resized": Bad(_inherit_mismatch, ("final.pt", "tensor 'head.classifier.weight' is [2, "),
                                needs_checkpoint=True),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line(name: str, tmp_path: Path, run_cli, request: pytest.FixtureRequest) -> None:
    case = CASES[name]
    trained_run = request.getfixturevalue("trained") if case.needs_checkpoint else tmp_path
    argv, outputs = case.make(tmp_path, trained_run)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_cli(argv)
    finally:
        torch.set_num_threads(threads)
    result.assert_one_line_error(*case.fragments)
    left = [str(p) for p in outputs if p.exists() and (p.is_file() or any(p.iterdir()))]
    assert not left, f"complete-looking output left behind: {left}"


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 16
