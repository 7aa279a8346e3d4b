"""Class weights of the segmentation loss: given, or balanced from the training labels' frequencies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hrnas.engine.config import ConfigError, load_config
from hrnas.tasks.base import TaskError, get_task
from hrnas.tasks.segmentation.task import balance_weights


def folder_data(root: Path) -> Path:
    """Two 8x8 training pairs, labels: 44 pixels of class 0, 12 of class 1, 4 of class 2, 68 ignored (255)."""
    masks = [np.zeros((8, 8), np.uint8), np.full((8, 8), 255, np.uint8)]
    masks[0][:2, :6] = 1
    masks[0][7, :4] = 2
    masks[0][4:6, 6:] = 255
    for split in ("train", "val"):
        for index, mask in enumerate(masks):
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            (root / split / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8, 3), 40 * index, np.uint8)).save(root / split / "images" / f"{index}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{index}.png")
    (root / "classes.json").write_text('["ground", "thing", "pole"]')
    return root


def config(root: Path, *overrides: str):  # noqa: ANN201
    return load_config("demo_seg", [f"data.root={root}", "data.format=folder", *overrides])


def test_balance_weights_formulas() -> None:
    p = torch.tensor([0.75, 0.2, 0.05, 0.0], dtype=torch.float64)
    median = torch.tensor([0.75, 0.2, 0.05]).median()
    expected = torch.tensor([median / 0.75, median / 0.2, median / 0.05, 1.0])
    assert torch.allclose(balance_weights(p, "median_frequency"), expected.float())
    assert torch.allclose(balance_weights(p, "enet"), (1.0 / torch.log(1.02 + p)).float())
    with pytest.raises(ValueError, match="class balance 'nope'"):
        balance_weights(p, "nope")


def test_frequencies_come_from_the_training_labels_ignoring_255(tmp_path: Path) -> None:
    task = get_task(config(folder_data(tmp_path), "task.class_balance=median_frequency"))
    assert task.label_frequencies().tolist() == pytest.approx([44 / 60, 12 / 60, 4 / 60])
    assert torch.allclose(task.class_weights, balance_weights(task.label_frequencies(), "median_frequency"))


def test_the_loss_uses_the_weights(tmp_path: Path) -> None:
    root = folder_data(tmp_path)
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 8, 8))
    upsampled = F.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False)
    plain = get_task(config(root))
    assert plain.class_weights is None
    assert plain.loss(logits, (None, target)).item() == pytest.approx(F.cross_entropy(upsampled, target).item())
    weighted = get_task(config(root, "task.class_weight=[0.1,1,5]"))
    want = F.cross_entropy(upsampled, target, weight=torch.tensor([0.1, 1.0, 5.0]))
    assert weighted.loss(logits, (None, target)).item() == pytest.approx(want.item())


def test_a_weight_list_of_the_wrong_length_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="task.class_weight"):
        config(tmp_path, "task.num_classes=3", "task.class_weight=[1,2]")
    with pytest.raises(ConfigError, match="task.class_weight.*must have a weight above 0"):
        config(tmp_path, "task.class_weight=[0,0,0]")
    task = get_task(config(folder_data(tmp_path), "task.class_weight=[1,2]"))  # classes from the data
    with pytest.raises(TaskError, match="task.class_weight: 2 weights for 3 classes"):
        task.train_dataset()  # checked when the training set is built, before the first step
