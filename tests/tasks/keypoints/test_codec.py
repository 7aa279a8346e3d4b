"""Heatmap codec: affine crop geometry, Gaussian targets, decoding, flip test, loss."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from hrnas.tasks.keypoints.codec import (
    affine_points,
    decode_heatmaps,
    flip_heatmaps,
    get_affine_transform,
    keypoint_mse_loss,
    render_heatmaps,
    transform_preds,
)


def _three_point_affine(center, scale, rot, output_size, inv=False):
    """HRNet's construction: two points along the rotated vertical axis plus a perpendicular third."""

    def third(a, b):
        d = a - b
        return b + np.array([-d[1], d[0]], dtype=np.float32)

    src_w, dst_w, dst_h = scale[0], output_size[0], output_size[1]
    r = math.radians(rot)
    src_dir = np.array([0.5 * src_w * math.sin(r), -0.5 * src_w * math.cos(r)])
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = center
    src[1] = np.asarray(center) + src_dir
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = dst[0] + np.array([0, -0.5 * dst_w])
    src[2] = third(src[0], src[1])
    dst[2] = third(dst[0], dst[1])
    return cv2.getAffineTransform(dst, src) if inv else cv2.getAffineTransform(src, dst)


@pytest.mark.parametrize("rot", [0.0, 30.0, -75.0, 90.0])
@pytest.mark.parametrize("inv", [False, True])
def test_affine_matches_hrnet_three_point_construction(rot, inv):
    center, scale, size = np.array([210.5, 140.0]), np.array([150.0, 200.0]), (192, 256)
    ours = get_affine_transform(center, scale, rot, size, inv=inv)
    ref = _three_point_affine(center, scale, rot, size, inv=inv)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-3)


def test_affine_round_trip_and_conventions():
    center, scale, size = np.array([100.0, 80.0]), np.array([96.0, 128.0]), (48, 64)
    fwd = get_affine_transform(center, scale, 25.0, size)
    inv = get_affine_transform(center, scale, 25.0, size, inv=True)
    pts = np.random.default_rng(0).uniform(0, 200, size=(20, 2))
    np.testing.assert_allclose(affine_points(affine_points(pts, fwd), inv), pts, atol=1e-9)
    # the box centre lands on the crop centre, and with rot=0 the box width spans the crop width
    np.testing.assert_allclose(affine_points(center, fwd), [24.0, 32.0])
    flat = get_affine_transform(center, scale, 0.0, size)
    np.testing.assert_allclose(affine_points(np.array([[52.0, 16.0], [148.0, 144.0]]), flat), [[0, 0], [48, 64]])
    # positive rotation turns content counter-clockwise as displayed: "above" goes "left"
    up = affine_points(center + np.array([0.0, -10.0]), get_affine_transform(center, scale, 90.0, size))
    assert up[0] < 24.0 and abs(up[1] - 32.0) < 1e-9


def test_transform_preds_batched_matches_single():
    rng = np.random.default_rng(1)
    coords = rng.uniform(0, 48, size=(3, 5, 2))
    centers = rng.uniform(50, 150, size=(3, 2))
    scales = rng.uniform(80, 200, size=(3, 2))
    rots = np.array([0.0, 10.0, -40.0])
    batched = transform_preds(coords, centers, scales, (48, 64), rots)
    for i in range(3):
        single = transform_preds(coords[i], centers[i], scales[i], (48, 64), rots[i])
        np.testing.assert_allclose(batched[i], single)
        fwd = get_affine_transform(centers[i], scales[i], rots[i], (48, 64))
        np.testing.assert_allclose(affine_points(single, fwd), coords[i], atol=1e-9)


def test_render_heatmaps_peaks_weights_and_borders():
    joints = np.array(
        [
            [40.0, 24.0, 1.0],  # on the grid: peak at heatmap (10, 6)
            [41.9, 26.1, 2.0],  # rounds to (10, 7)
            [40.0, 24.0, 0.0],  # unlabelled
            [-30.0, 10.0, 1.0],  # window entirely left of the map
            [-10.0, 10.0, 1.0],  # window partly on the map
        ]
    )
    maps, weight = render_heatmaps(joints, (64, 48), stride=4, sigma=2.0)
    assert maps.shape == (5, 64, 48) and maps.dtype == np.float32
    assert weight.shape == (5, 1) and weight[:, 0].tolist() == [1, 1, 0, 0, 1]
    assert maps[0, 6, 10] == 1.0 and maps[0].argmax() == 6 * 48 + 10
    assert maps[1, 7, 10] == 1.0
    assert not maps[2].any() and not maps[3].any()
    assert maps[4].any() and maps[4].max() < 1.0
    # Gaussian value at one pixel from the peak, truncated at 3 sigma
    assert maps[0, 6, 11] == pytest.approx(math.exp(-1 / 8))
    assert maps[0, 6, 16] > 0 and maps[0, 6, 17] == 0


def test_decode_quarter_pixel_shift_and_empty_maps():
    maps = np.zeros((1, 3, 16, 12), dtype=np.float32)
    maps[0, 0, 5, 4] = 1.0
    maps[0, 0, 5, 5] = 0.6  # right neighbour larger -> +0.25 x
    maps[0, 0, 4, 4] = 0.3  # upper neighbour larger -> -0.25 y
    maps[0, 1, 0, 11] = 0.8  # corner: no neighbours on both sides, no shift
    maps[0, 1, 1, 11] = 0.5
    maps[0, 2] = -1.0  # no positive response -> (0, 0)
    coords, maxvals = decode_heatmaps(maps)
    assert coords.shape == (1, 3, 2) and maxvals.shape == (1, 3, 1)
    np.testing.assert_allclose(coords[0], [[4.25, 4.75], [11.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(maxvals[0, :, 0], [1.0, 0.8, -1.0])
    coords_t, maxvals_t = decode_heatmaps(torch.from_numpy(maps))
    np.testing.assert_array_equal(coords_t, coords)
    np.testing.assert_array_equal(maxvals_t, maxvals)


def test_render_then_decode_recovers_joints_to_rounding():
    rng = np.random.default_rng(2)
    joints = np.concatenate([rng.uniform(8, 184, size=(17, 1)), rng.uniform(8, 248, size=(17, 1)), np.ones((17, 1))], 1)
    maps, _ = render_heatmaps(joints, (64, 48), 4, 2.0)
    coords, maxvals = decode_heatmaps(maps[None])
    assert np.all(maxvals == 1.0)
    err = np.abs(coords[0] * 4 - joints[:, :2])
    assert err.max() <= 2.0 + 1e-6


def test_flip_heatmaps_undoes_a_mirrored_input():
    width, stride = 192, 4
    joints = np.array([[40.0, 60.0, 1], [120.0, 60.0, 1], [80.0, 100.0, 1]])
    pairs = [(0, 1)]
    mirrored = joints.copy()
    mirrored[:, 0] = width - 1 - mirrored[:, 0]
    mirrored[[0, 1]] = mirrored[[1, 0]]
    maps, _ = render_heatmaps(joints, (64, 48), stride)
    maps_flip, _ = render_heatmaps(mirrored, (64, 48), stride)
    back = flip_heatmaps(maps_flip[None], pairs)
    np.testing.assert_allclose(decode_heatmaps(back)[0], decode_heatmaps(maps[None])[0])
    back_t = flip_heatmaps(torch.from_numpy(maps_flip[None]), pairs)
    assert isinstance(back_t, torch.Tensor)
    np.testing.assert_array_equal(back_t.numpy(), back)
    # without the shift the result is one heatmap pixel to the left
    unshifted = decode_heatmaps(flip_heatmaps(maps_flip[None], pairs, shift=False))[0]
    np.testing.assert_allclose(unshifted[..., 0], decode_heatmaps(maps[None])[0][..., 0] - 1)
    with pytest.raises(ValueError, match="outside the 3 joints"):
        flip_heatmaps(maps[None], [(0, 5)])


def test_keypoint_mse_loss_matches_per_joint_definition():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 4, 8, 6, generator=g)
    target = torch.rand(2, 4, 8, 6, generator=g)
    weight = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0]]).view(2, 4, 1)
    expected = 0.0
    for j in range(4):
        w = weight[:, j]
        expected += 0.5 * torch.nn.functional.mse_loss(pred[:, j].flatten(1) * w, target[:, j].flatten(1) * w)
    expected /= 4
    assert keypoint_mse_loss(pred, target, weight).item() == pytest.approx(expected.item(), rel=1e-6)
    assert keypoint_mse_loss(pred, target, torch.zeros(2, 4, 1)).item() == 0.0
    pred.requires_grad_(True)
    keypoint_mse_loss(pred, target, weight).backward()
    assert pred.grad is not None and pred.grad[0, 1].abs().sum() == 0
