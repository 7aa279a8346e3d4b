"""Top-down COCO keypoint dataset: category metadata, boxes, crops, augmentation, errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hrnas.data.errors import DatasetError
from hrnas.tasks.keypoints.codec import decode_heatmaps, get_affine_transform, transform_preds
from hrnas.tasks.keypoints.dataset import (
    COCO_PERSON_KEYPOINTS,
    COCO_PERSON_SIGMAS,
    DEFAULT_OKS_SIGMA,
    CocoKeypoints,
    box_to_center_scale,
    derive_flip_pairs,
    keypoint_category,
    load_coco,
)

# Relative (x, y) of the 17 COCO joints inside a person box.
PERSON_TEMPLATE = np.array(
    [
        [0.50, 0.10], [0.54, 0.07], [0.46, 0.07], [0.58, 0.09], [0.42, 0.09],
        [0.68, 0.22], [0.32, 0.22], [0.78, 0.38], [0.22, 0.38], [0.82, 0.52], [0.18, 0.52],
        [0.62, 0.55], [0.38, 0.55], [0.64, 0.75], [0.36, 0.75], [0.65, 0.95], [0.35, 0.95],
    ]
)  # fmt: skip
IMAGE_W, IMAGE_H = 400, 320


def person(ann_id, image_id, box, invisible=(), category_id=1):
    x, y, w, h = box
    kps = np.zeros((17, 3))
    kps[:, 0] = np.round(x + PERSON_TEMPLATE[:, 0] * w)
    kps[:, 1] = np.round(y + PERSON_TEMPLATE[:, 1] * h)
    kps[:, 2] = 2
    kps[list(invisible)] = 0
    return {
        "id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": list(box),
        "area": 0.6 * w * h, "iscrowd": 0, "num_keypoints": int((kps[:, 2] > 0).sum()),
        "keypoints": kps.reshape(-1).astype(int).tolist(),
    }  # fmt: skip


def write_person_dataset(root: Path, annotations=None, categories=None, marker=False):
    """Two images: three labelled persons, a crowd region and a person with no labelled joints."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.jpg"):
        image = rng.integers(0, 60, size=(IMAGE_H, IMAGE_W, 3), dtype=np.uint8)
        if marker:  # a white square on the nose of annotation 1, to follow pixels through the crop
            image[50 - 4 : 50 + 5, 100 - 4 : 100 + 5] = 255
        cv2.imwrite(str(root / "images" / name), image)
    if annotations is None:
        annotations = [
            person(1, 1, (50, 30, 100, 200), invisible=(3, 4)),
            person(2, 1, (220, 40, 120, 260)),
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [160, 200, 80, 100], "area": 5000, "iscrowd": 1,
             "num_keypoints": 0, "keypoints": [0] * 51},
            person(4, 2, (100, 50, 150, 250), invisible=(15, 16)),
            {"id": 5, "image_id": 2, "category_id": 1, "bbox": [300, 100, 50, 90], "area": 3000, "iscrowd": 0,
             "num_keypoints": 0, "keypoints": [0] * 51},
        ]  # fmt: skip
    if categories is None:
        categories = [
            {"id": 1, "name": "person", "supercategory": "person", "keypoints": list(COCO_PERSON_KEYPOINTS),
             "skeleton": [[16, 14], [14, 12], [6, 8]]},
        ]  # fmt: skip
    data = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": IMAGE_W, "height": IMAGE_H},
            {"id": 2, "file_name": "b.jpg", "width": IMAGE_W, "height": IMAGE_H},
        ],
        "annotations": annotations,
        "categories": categories,
    }
    (root / "ann.json").write_text(json.dumps(data))
    return data


def dataset(root, train=False, **kwargs):
    fixed = dict(scale_factor=0.0, rotation_prob=0.0, flip_prob=0.0, half_body_prob=0.0) if train else {}
    fixed.update(kwargs)
    return CocoKeypoints(root, "ann.json", "images", split_is_train=train, **fixed)


def back_to_image(sample):
    """Decode a sample's target heatmaps to image pixels (of the possibly flipped image)."""
    coords, maxvals = decode_heatmaps(sample["target"][None])
    meta = sample["meta"]
    pts = transform_preds(coords[0], meta["center"].numpy(), meta["scale"].numpy(), (48, 64), meta["rotation"])
    return pts, maxvals[0, :, 0]


def test_standard_person_category(tmp_path):
    write_person_dataset(tmp_path)
    cat = keypoint_category(load_coco(tmp_path / "ann.json"))
    assert cat.is_coco_person and cat.num_joints == 17
    assert cat.sigmas == COCO_PERSON_SIGMAS
    assert cat.flip_pairs == ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
    assert cat.skeleton == ((15, 13), (13, 11), (5, 7))
    assert cat.upper_body == tuple(range(11))


def test_custom_category_pairs_and_sigmas(tmp_path):
    names = ["top", "bottom", "left", "right", "center"]
    assert derive_flip_pairs(names) == ((2, 3),)
    assert derive_flip_pairs(["head", "tail", "fin"]) == ()
    assert derive_flip_pairs(["LeftHand", "RightHand", "nose"]) == ((0, 1),)
    cat_json = {"id": 7, "name": "widget", "keypoints": names}
    write_person_dataset(tmp_path, annotations=[], categories=[cat_json])
    cat = keypoint_category(load_coco(tmp_path / "ann.json"))
    assert cat.sigmas == (DEFAULT_OKS_SIGMA,) * 5 and cat.upper_body is None and not cat.is_coco_person
    explicit = keypoint_category(load_coco(tmp_path / "ann.json"), flip_pairs=[("top", "bottom")])
    assert explicit.flip_pairs == ((0, 1),)
    with pytest.raises(DatasetError, match="'elbow' is not one of"):
        keypoint_category(load_coco(tmp_path / "ann.json"), flip_pairs=[("top", "elbow")])
    write_person_dataset(tmp_path, annotations=[], categories=[{**cat_json, "sigmas": [0.1, 0.1, 0.2, 0.2, 0.3]}])
    assert keypoint_category(load_coco(tmp_path / "ann.json")).sigmas == (0.1, 0.1, 0.2, 0.2, 0.3)
    write_person_dataset(tmp_path, annotations=[], categories=[{**cat_json, "sigmas": [0.1, 0.1]}])
    with pytest.raises(DatasetError, match=r"ann\.json: category 'widget' 'sigmas' must be 5 positive numbers"):
        dataset(tmp_path)


def test_box_to_center_scale_matches_hrnet():
    center, scale = box_to_center_scale((10, 20, 96, 128), 0.75)
    np.testing.assert_allclose(center, [58, 84])
    np.testing.assert_allclose(scale, [120, 160])
    _, wide = box_to_center_scale((0, 0, 200, 100), 0.75)
    np.testing.assert_allclose(wide, np.array([200, 200 / 0.75]) * 1.25, rtol=1e-6)


def test_gt_instances_skip_crowd_and_unlabelled(tmp_path):
    write_person_dataset(tmp_path)
    ds = dataset(tmp_path)
    assert [r["ann_id"] for r in ds.records] == [1, 2, 4]
    sample = ds[0]
    assert sample["image"].shape == (3, 256, 192) and sample["image"].dtype == torch.float32
    assert sample["target"].shape == (17, 64, 48) and sample["target_weight"].shape == (17, 1)
    assert sample["target_weight"][:, 0].tolist() == [1, 1, 1, 0, 0] + [1] * 12
    assert sample["meta"]["score"] == 1.0 and sample["meta"]["ann_id"] == 1
    # joints on the crop are the affine image of the labelled joints
    ann = ds.coco.anns[1]
    kps = np.array(ann["keypoints"], dtype=np.float64).reshape(17, 3)
    trans = get_affine_transform(ds.records[0]["center"], ds.records[0]["scale"], 0, (192, 256))
    expected = kps[:, :2] @ trans[:, :2].T + trans[:, 2]
    np.testing.assert_allclose(sample["meta"]["joints"][:3, :2].numpy(), expected[:3], atol=1e-3)
    # and the heatmaps decode back to the annotation
    pts, conf = back_to_image(sample)
    labelled = kps[:, 2] > 0
    assert np.abs(pts[labelled] - kps[labelled, :2]).max() < 2.5
    assert np.all(conf[~labelled] == 0)


def test_batches_collate_with_default_collate(tmp_path):
    write_person_dataset(tmp_path)
    batch = next(iter(DataLoader(dataset(tmp_path), batch_size=3)))
    assert batch["image"].shape == (3, 3, 256, 192)
    assert batch["target_weight"].shape == (3, 17, 1)
    assert batch["meta"]["center"].shape == (3, 2) and batch["meta"]["image_id"].tolist() == [1, 1, 2]
    assert batch["meta"]["joints"].shape == (3, 17, 3)


def test_crop_pixels_follow_joints_under_flip_and_rotation(tmp_path):
    write_person_dataset(tmp_path, marker=True)
    for rotation_prob, flip_prob in ((0.0, 1.0), (1.0, 0.0), (1.0, 1.0)):
        ds = dataset(tmp_path, train=True, rotation_prob=rotation_prob, flip_prob=flip_prob,
                     generator=torch.Generator().manual_seed(3))  # fmt: skip
        sample = ds[0]
        assert sample["meta"]["flipped"] == (flip_prob == 1.0)
        x, y = sample["meta"]["joints"][0, :2].round().long().tolist()  # the nose carries the marker
        assert sample["image"][:, y, x].min() > 1.5  # normalised white
        assert sample["image"][:, 5, 5].max() < 0.5


def test_flip_mirrors_keypoints_and_swaps_pairs(tmp_path):
    write_person_dataset(tmp_path)
    ds = dataset(tmp_path, train=True, flip_prob=1.0)
    plain = dataset(tmp_path)
    for i in range(len(ds)):
        flipped = ds[i]
        assert flipped["meta"]["flipped"]
        kps = np.array(plain.coco.anns[plain.records[i]["ann_id"]]["keypoints"], dtype=np.float64).reshape(17, 3)
        perm = list(range(17))
        for a, b in ds.category.flip_pairs:
            perm[a], perm[b] = b, a
        expected = kps[perm]
        expected[:, 0] = IMAGE_W - 1 - expected[:, 0]
        pts, conf = back_to_image(flipped)
        labelled = expected[:, 2] > 0
        assert np.abs(pts[labelled] - expected[labelled, :2]).max() < 2.5
        np.testing.assert_array_equal(flipped["target_weight"][:, 0].numpy(), labelled.astype(np.float32))
        # mirrored back, the left eye is where the annotation's left eye is
        back = pts.copy()
        back[:, 0] = IMAGE_W - 1 - back[:, 0]
        back = back[perm]
        assert np.abs(back[kps[:, 2] > 0] - kps[kps[:, 2] > 0, :2]).max() < 2.5


def test_rotation_round_trips_to_annotation(tmp_path):
    write_person_dataset(tmp_path)
    ds = dataset(tmp_path, train=True, rotation_prob=1.0, generator=torch.Generator().manual_seed(0))
    kps = np.array(ds.coco.anns[2]["keypoints"], dtype=np.float64).reshape(17, 3)
    sample = ds[1]
    assert sample["meta"]["rotation"] != 0.0
    pts, _ = back_to_image(sample)
    in_map = sample["target_weight"][:, 0].numpy() > 0
    assert in_map.sum() > 10
    assert np.abs(pts[in_map] - kps[in_map, :2]).max() < 3.0


def test_training_augmentation_is_seeded_and_half_body_only_for_person(tmp_path):
    write_person_dataset(tmp_path)
    a = CocoKeypoints(tmp_path, "ann.json", "images", True, generator=torch.Generator().manual_seed(5))
    b = CocoKeypoints(tmp_path, "ann.json", "images", True, generator=torch.Generator().manual_seed(5))
    for i in range(len(a)):
        sa, sb = a[i], b[i]
        assert torch.equal(sa["image"], sb["image"]) and torch.equal(sa["target"], sb["target"])
        assert torch.isfinite(sa["image"]).all()
        assert (sa["target_weight"] <= torch.from_numpy(a.records[i]["joints"][:, 2:])).all()
    half = dataset(tmp_path, train=True, half_body_prob=1.0, generator=torch.Generator().manual_seed(0))
    box_scale = half.records[1]["scale"]
    assert not np.allclose(half[1]["meta"]["scale"].numpy(), box_scale)  # 17 labelled joints > 8

    names = ["top", "bottom", "left", "right", "center"]
    widget = {"id": 1, "name": "widget", "keypoints": names}
    kps = [100, 60, 2, 100, 200, 2, 60, 130, 2, 140, 130, 2, 100, 130, 2]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [60, 60, 80, 140], "area": 8000,
             "iscrowd": 0, "keypoints": kps}]  # fmt: skip
    write_person_dataset(tmp_path, annotations=anns, categories=[widget])
    custom = dataset(tmp_path, train=True, half_body_prob=1.0, half_body_min_joints=0)
    np.testing.assert_allclose(custom[0]["meta"]["scale"].numpy(), custom.records[0]["scale"])


def test_detection_boxes(tmp_path):
    write_person_dataset(tmp_path)
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [50, 30, 100, 200], "score": 0.95},
        {"image_id": 1, "category_id": 1, "bbox": [200, 40, 120, 260], "score": 0.3},
        {"image_id": 2, "category_id": 1, "bbox": [100, 50, 150, 250], "score": 0.7},
        {"image_id": 2, "category_id": 2, "bbox": [10, 10, 50, 50], "score": 0.99},
    ]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    ds = dataset(tmp_path, boxes="dets.json", det_score_thresh=0.5)
    assert len(ds) == 2
    sample = ds[0]
    assert sample["meta"]["score"] == pytest.approx(0.95) and sample["meta"]["ann_id"] == -1
    assert sample["target_weight"].sum() == 0 and sample["target"].abs().sum() == 0
    center, scale = box_to_center_scale([50, 30, 100, 200], 0.75)
    np.testing.assert_allclose(sample["meta"]["center"].numpy(), center)
    np.testing.assert_allclose(sample["meta"]["scale"].numpy(), scale)
    assert len(dataset(tmp_path, boxes=str(tmp_path / "dets.json"))) == 3  # absolute path, threshold 0
    with pytest.raises(ValueError, match="detection boxes are for evaluation"):
        dataset(tmp_path, train=True, boxes="dets.json")
    (tmp_path / "bad.json").write_text(json.dumps(dets + [{"image_id": 9, "bbox": [0, 0, 5, 5], "score": 1.0}]))
    with pytest.raises(DatasetError, match=r"bad\.json: detection 4 names image 9"):
        dataset(tmp_path, boxes="bad.json")
    (tmp_path / "far.json").write_text(json.dumps([{"image_id": 1, "bbox": [900, 0, 5, 5], "score": 1.0}]))
    with pytest.raises(DatasetError, match=r"far\.json: detection 0 box .* lies entirely outside"):
        dataset(tmp_path, boxes="far.json")


def test_error_no_keypoint_category(tmp_path):
    write_person_dataset(tmp_path, annotations=[], categories=[{"id": 1, "name": "person"}])
    with pytest.raises(DatasetError, match=r"ann\.json: no category defines 'keypoints'"):
        dataset(tmp_path)


def test_error_keypoint_count_mismatch(tmp_path):
    bad = person(123, 1, (50, 30, 100, 200))
    bad["keypoints"] = bad["keypoints"][:45]
    write_person_dataset(tmp_path, annotations=[bad])
    with pytest.raises(DatasetError) as err:
        dataset(tmp_path)
    assert str(err.value) == f"{tmp_path / 'ann.json'}: annotation 123 has 15 keypoints, category 'person' defines 17"


def test_error_box_outside_image(tmp_path):
    write_person_dataset(tmp_path, annotations=[person(42, 1, (500, 30, 100, 200))])
    with pytest.raises(
        DatasetError, match=r"ann\.json: annotation 42 box .* lies entirely outside its 400x320 image 1"
    ):
        dataset(tmp_path)


def test_error_missing_image_and_files(tmp_path):
    write_person_dataset(tmp_path)
    (tmp_path / "images" / "b.jpg").unlink()
    ds = dataset(tmp_path)
    ds[0]
    with pytest.raises(DatasetError, match=r"b\.jpg: image file not found \(image 2, annotation 4\)"):
        ds[2]
    (tmp_path / "images" / "b.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=r"b\.jpg: cannot decode image \(.*\) \(image 2, annotation 4\)"):
        ds[2]
    with pytest.raises(DatasetError, match=r"missing\.json: annotation file not found"):
        CocoKeypoints(tmp_path, "missing.json", "images", False)
    with pytest.raises(DatasetError, match="dataset folder not found"):
        CocoKeypoints(tmp_path / "nowhere", "ann.json", "images", False)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DatasetError, match=r"broken\.json: not valid JSON"):
        CocoKeypoints(tmp_path, "broken.json", "images", False)
