"""ConfusionMatrix against a per-pixel Python reference, and its edge cases."""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hrnas.tasks.segmentation.metrics import ConfusionMatrix


def reference_metrics(pairs: list[tuple[torch.Tensor, torch.Tensor]], num_classes: int, ignore: int) -> dict:
    """Per-pixel loops, mmseg's definitions: IoU over classes with a non-empty union."""
    tp = [0] * num_classes
    in_target = [0] * num_classes
    in_pred = [0] * num_classes
    counted = 0
    for pred, target in pairs:
        for p, t in zip(pred.flatten().tolist(), target.flatten().tolist(), strict=True):
            if t == ignore:
                continue
            counted += 1
            in_target[t] += 1
            in_pred[p] += 1
            tp[t] += p == t
    iou = [
        tp[c] / (in_target[c] + in_pred[c] - tp[c]) if in_target[c] + in_pred[c] else math.nan
        for c in range(num_classes)
    ]
    acc = [tp[c] / in_target[c] if in_target[c] else math.nan for c in range(num_classes)]
    present = [v for v in iou if not math.isnan(v)]
    recalls = [v for v in acc if not math.isnan(v)]
    return {
        "iou": iou,
        "acc": acc,
        "miou": sum(present) / len(present) if present else math.nan,
        "pixel_acc": sum(tp) / counted if counted else math.nan,
        "mean_acc": sum(recalls) / len(recalls) if recalls else math.nan,
    }


def assert_close(actual: float, expected: float) -> None:
    assert (math.isnan(actual) and math.isnan(expected)) or actual == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_matches_per_pixel_reference(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    num_classes = 2 + seed  # some classes end up absent in small batches
    metric = ConfusionMatrix(num_classes, ignore_index=255)
    pairs = []
    for _ in range(3):
        shape = (2, 5, 7)
        # Draw from a subset of classes so some are absent from target, prediction or both.
        target = torch.randint(0, max(1, num_classes - 1), shape, generator=generator)
        target[torch.rand(shape, generator=generator) < 0.2] = 255
        guess = torch.randint(0, num_classes, shape, generator=generator)
        correct = (torch.rand(shape, generator=generator) < 0.4) & (target != 255)
        pred = torch.where(correct, target, guess)  # enough hits for non-trivial IoUs
        metric.update(pred, target)
        pairs.append((pred, target))
    expected = reference_metrics(pairs, num_classes, 255)
    result = metric.compute()
    for key in ("miou", "pixel_acc", "mean_acc"):
        assert_close(result[key], expected[key])
    for actual, wanted in zip(result["iou"] + result["acc"], expected["iou"] + expected["acc"], strict=True):
        assert_close(actual, wanted)


def test_absent_and_false_positive_classes() -> None:
    metric = ConfusionMatrix(4)
    target = torch.tensor([[[0, 0, 1, 255]]])
    pred = torch.tensor([[[0, 2, 1, 3]]])  # class 2 predicted but absent; class 3 only on an ignored pixel
    metric.update(pred, target)
    result = metric.compute()
    assert result["iou"][:3] == [0.5, 1.0, 0.0] and math.isnan(result["iou"][3])
    assert result["miou"] == pytest.approx(0.5)
    assert result["pixel_acc"] == pytest.approx(2 / 3)
    assert result["mean_acc"] == pytest.approx(0.75) and math.isnan(result["acc"][2])


def test_empty_and_reset() -> None:
    metric = ConfusionMatrix(3)
    metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 255))
    assert all(math.isnan(metric.compute()[k]) for k in ("miou", "pixel_acc", "mean_acc"))
    metric.update(torch.ones(1, 2, 2, dtype=torch.long), torch.ones(1, 2, 2, dtype=torch.long))
    assert metric.compute()["miou"] == 1.0
    metric.reset()
    assert int(metric.counts.sum()) == 0


def test_rejects_bad_inputs() -> None:
    metric = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="differ in shape"):
        metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="target holds 3"):
        metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 3))
    with pytest.raises(ValueError, match="pred holds -1"):
        metric.update(torch.full((1, 2, 2), -1), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer class indices"):
        metric.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


def test_all_reduce_without_distributed_is_a_no_op() -> None:
    metric = ConfusionMatrix(2)
    metric.update(torch.tensor([[0, 1]]), torch.tensor([[0, 0]]))
    before = metric.counts.clone()
    metric.all_reduce()
    assert torch.equal(metric.counts, before)


def _rank_main(rank: int, port: int, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        metric = ConfusionMatrix(3)
        metric.update(torch.tensor([[rank, 2]]), torch.tensor([[rank, 1]]))
        metric.all_reduce()
        results[rank] = metric.counts.tolist()
    finally:
        dist.destroy_process_group()


def test_all_reduce_sums_over_two_ranks() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank_main, args=(port, results), nprocs=2, join=True)
        # Rank r adds (target r -> pred r) and (target 1 -> pred 2).
        assert results[0] == results[1] == [[1, 0, 0], [0, 1, 2], [0, 0, 0]]
