"""Detection-result files for keypoint evaluation: duplicate keys, boxes and scores are checked where they are
read, each error naming the file and the detection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hrnas.data.errors import DatasetError
from hrnas.tasks.keypoints.dataset import CocoKeypoints


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 40}],
        "annotations": [{"id": 3, "image_id": 1, "category_id": 1, "bbox": [2, 2, 20, 20], "area": 400,
                         "iscrowd": 0, "num_keypoints": 1, "keypoints": [5.0, 5.0, 2, 0, 0, 0]}],  # fmt: skip
        "categories": [{"id": 1, "name": "thing", "keypoints": ["a", "b"]}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    return tmp_path


def detections(root: Path, text: str) -> CocoKeypoints:
    (root / "dets.json").write_text(text)
    return CocoKeypoints(root, "ann.json", "images", split_is_train=False, input_size=(32, 32), boxes="dets.json")


def test_good_detections_are_records(root: Path) -> None:
    ds = detections(root, json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 12], "score": 0.8}]))
    assert len(ds) == 1 and ds.records[0]["score"] == pytest.approx(0.8)


BOX = '"bbox": [1, 1, 10, 12]'
BAD = [
    (f'[{{"image_id": 1, {BOX}, "score": 0.8, "score": 0.9}}]', r"dets\.json: key 'score' is given twice"),
    ('[{"image_id": 1, "bbox": [1, 1, -10, 12], "score": 0.8}]', r"detection 0 bbox \[1, 1, -10, 12\] has a negative"),
    ('[{"image_id": 1, "bbox": [1, 1, "w", 12], "score": 0.8}]', r"detection 0 bbox .* is not \[x, y, width, height\]"),
    (f'[{{"image_id": 1, {BOX}, "score": "high"}}]', r"dets\.json: detection 0 score 'high' is not a number"),
    ("", r"dets\.json: empty file"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_detections_name_file_and_detection(root: Path, text: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        detections(root, text)
