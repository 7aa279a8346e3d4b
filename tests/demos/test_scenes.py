"""The demo scene generator: layout, exact labels, COCO keypoints, determinism, atomic writes.

Items come from a small synthetic Fashion-MNIST (ellipses, ``fashion_root`` in tests/conftest.py) so the
tests need no downloaded data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hrnas.data.errors import DatasetError
from hrnas.data.fashion_mnist import load_fashion_mnist
from hrnas.demos import scenes as ds
from hrnas.tasks.segmentation.datasets import CityscapesSegmentation

# pycocotools 2.x decoding under numpy 2 warns about __array__; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, fashion_root: Path) -> Path:
    root = tmp_path_factory.mktemp("demo") / "scenes"
    return ds.generate_demo_scenes(
        root, num_train=6, num_val=3, size=64, seed=3, progress=False, fashion_root=fashion_root
    )


def all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_meta(demo: Path) -> None:
    files = all_files(demo)
    assert "leftImg8bit/train/atelier/atelier_000000_000005_leftImg8bit.png" in files
    assert "gtFine/val/boutique/boutique_000000_000002_gtFine_labelTrainIds.png" in files
    assert sum(name.startswith("leftImg8bit/train/") for name in files) == 6
    assert sum(name.startswith("gtFine/val/") for name in files) == 3
    assert json.loads(files["classes.json"]) == list(ds.DEMO_CLASSES)
    assert len(ds.DEMO_CLASSES) == 11 and ds.DEMO_CLASSES[0] == "background"
    meta = json.loads(files["meta.json"])
    assert meta["version"] == ds.GENERATOR_VERSION and meta["seed"] == 3 and meta["size"] == 64
    assert (demo / "DONE").is_file()
    assert not [p for p in demo.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_cityscapes_loader_reads_it(demo: Path) -> None:
    for split, count in (("train", 6), ("val", 3)):
        dataset = CityscapesSegmentation(demo, split)
        assert len(dataset) == count and dataset.classes == list(ds.DEMO_CLASSES)
        assert dataset.label_type == "trainIds"
        image, mask = dataset[0]
        assert image.shape == (3, 64, 64) and mask.shape == (64, 64)
        assert int(mask.max()) < 11


def test_labels_match_visible_instances(demo: Path) -> None:
    for split in ("train", "val"):
        coco = json.loads((demo / "annotations" / f"demo_keypoints_{split}.json").read_text())
        assert coco["categories"][0]["keypoints"] == ["top", "bottom", "left", "right", "center"]
        by_image: dict[int, list[dict]] = {}
        for annotation in coco["annotations"]:
            by_image.setdefault(annotation["image_id"], []).append(annotation)
        for entry in coco["images"]:
            image_path = demo / entry["file_name"]
            label_path = Path(
                str(image_path).replace("leftImg8bit/", "gtFine/").replace("_leftImg8bit", "_gtFine_labelTrainIds")
            )
            label = np.asarray(Image.open(label_path))
            assert label.dtype == np.uint8 and (entry["width"], entry["height"]) == label.shape[::-1]
            rebuilt = np.zeros_like(label)
            for annotation in by_image.get(entry["id"], []):
                visible = mask_utils.decode(annotation["segmentation"]).astype(bool)
                assert visible.sum() == annotation["area"] > 0
                assert not rebuilt[visible].any(), "visible masks overlap"
                rebuilt[visible] = annotation["fashion_class"] + 1
                x, y, w, h = annotation["bbox"]
                rows, cols = np.nonzero(visible)
                assert (x, y, w, h) == (
                    cols.min(),
                    rows.min(),
                    cols.max() - cols.min() + 1,
                    rows.max() - rows.min() + 1,
                )
                assert annotation["iscrowd"] == 0 and annotation["num_keypoints"] == 5
            np.testing.assert_array_equal(rebuilt, label)


def test_keypoint_visibility_against_occlusion(fashion_root: Path) -> None:
    items, classes = load_fashion_mnist("train", fashion_root, fetch=False)
    checked_hidden = 0
    for index in range(60):
        _, label, instances = ds.render_scene(np.random.default_rng([9, index]), items, classes, 64)
        for order, instance in enumerate(instances):
            for number, (x, y, v) in enumerate(instance["keypoints"]):
                if number == 4:  # the centroid need not lie on the item
                    continue
                point = (int(y), int(x))
                if v == 2:
                    assert instance["visible"][point]
                    assert label[point] == instance["fashion_class"] + 1
                else:
                    assert v == 1 and not instance["visible"][point]
                    assert any(other["visible"][point] for other in instances[order + 1 :])
                    checked_hidden += 1
    assert checked_hidden > 0, "no occluded keypoint in 60 scenes; the test saw nothing"


def test_silhouette_keypoints_on_a_known_shape() -> None:
    mask = np.zeros((7, 9), bool)
    mask[1, 3:6] = True  # top row, three pixels: the middle one is x=4
    mask[2:5, 1:8] = True
    mask[5, 2:4] = True  # bottom row: x in {2, 3} -> lower-index middle x=2
    top, bottom, left, right, center = ds.silhouette_keypoints(mask)
    assert top == (4.0, 1.0) and bottom == (2.0, 5.0)
    assert left == (1.0, 3.0) and right == (7.0, 3.0)
    ys, xs = np.nonzero(mask)
    assert center == (round(xs.mean(), 2), round(ys.mean(), 2))


def test_coco_file_scores_perfectly_against_itself(demo: Path) -> None:
    annotations = demo / "annotations" / "demo_keypoints_train.json"
    ground_truth = COCO(str(annotations))
    results = [
        {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
        for a in ground_truth.dataset["annotations"]
    ]
    evaluation = COCOeval(ground_truth, ground_truth.loadRes(results), "keypoints")
    evaluation.params.kpt_oks_sigmas = np.full(5, 0.05)
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


def test_same_seed_gives_identical_bytes(tmp_path: Path, demo: Path, fashion_root: Path) -> None:
    again = ds.generate_demo_scenes(
        tmp_path / "again", num_train=6, num_val=3, size=64, seed=3, progress=False, fashion_root=fashion_root
    )
    assert all_files(again) == all_files(demo)
    other = ds.generate_demo_scenes(
        tmp_path / "other", num_train=6, num_val=3, size=64, seed=4, progress=False, fashion_root=fashion_root
    )
    first = "leftImg8bit/train/atelier/atelier_000000_000000_leftImg8bit.png"
    assert all_files(other)[first] != all_files(demo)[first]


def test_failed_generation_leaves_nothing(tmp_path: Path, fashion_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing(*args: object) -> object:
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("interrupted")
        return real(*args)

    real = ds.render_scene
    monkeypatch.setattr(ds, "render_scene", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        ds.generate_demo_scenes(
            tmp_path / "scenes", num_train=4, num_val=1, size=64, progress=False, fashion_root=fashion_root
        )
    assert list(tmp_path.iterdir()) == []


def test_ensure_regenerates_only_when_needed(
    tmp_path: Path, fashion_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = dict(num_train=2, num_val=1, size=48, seed=0, progress=False, fashion_root=fashion_root)
    root = ds.ensure_demo_scenes(tmp_path / "scenes", **options)
    generated = []
    real = ds.generate_demo_scenes
    monkeypatch.setattr(ds, "generate_demo_scenes", lambda *a, **k: generated.append(a) or real(*a, **k))
    assert ds.ensure_demo_scenes(root, **options) == root
    assert generated == []
    ds.ensure_demo_scenes(root, **{**options, "seed": 1})
    assert len(generated) == 1 and json.loads((root / "meta.json").read_text())["seed"] == 1
    (root / "DONE").unlink()
    ds.ensure_demo_scenes(root, **{**options, "seed": 1})
    assert len(generated) == 2 and (root / "DONE").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["scenes"]


def test_refuses_to_replace_other_folders(tmp_path: Path, fashion_root: Path) -> None:
    root = tmp_path / "precious"
    root.mkdir()
    (root / "thesis.tex").write_text("...")
    with pytest.raises(DatasetError, match="not an hrnas demo dataset"):
        ds.generate_demo_scenes(root, num_train=1, num_val=1, size=48, progress=False, fashion_root=fashion_root)
    assert (root / "thesis.tex").is_file()


def test_scene_statistics(fashion_root: Path) -> None:
    items, classes = load_fashion_mnist("train", fashion_root, fetch=False)
    counts = []
    for index in range(40):
        image, label, instances = ds.render_scene(np.random.default_rng([1, index]), items, classes, 128)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        assert label.shape == (128, 128) and label.max() <= 10
        counts.append(len(instances))
    assert 1 <= min(counts) and max(counts) <= ds.MAX_ITEMS
    assert len(set(counts)) > 1
