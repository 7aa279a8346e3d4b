"""Top-down pose geometry: crop affine, Gaussian heatmap targets, decoding, flip test and loss.

Implements the HRNet / SimpleBaseline heatmap codec used by HR-NAS for COCO keypoints
(spec §5, "COCO keypoints"): a person box is warped to the network input by a similarity
transform, every joint becomes a Gaussian (σ = 2 heatmap pixels) on a map 4× smaller than the
input, predictions are the heatmap argmax moved a quarter pixel toward the larger neighbour and
mapped back through the inverse transform.

Conventions used throughout this module:

* Points are ``(x, y)`` in pixels, x to the right, y down; a pixel's integer coordinate is its
  centre (``x = 0`` is the centre of the first column).
* ``center`` is the box centre in original-image pixels, ``scale`` is the ``(width, height)`` of the
  source region in original-image pixels.  HRNet stores ``scale / 200`` ("pixel_std"); hrnas keeps
  plain pixels.
* ``output_size`` of the affine functions is ``(width, height)`` — OpenCV ``dsize`` order, matching
  ``(x, y)`` points.  Array shapes such as ``heatmap_size`` are ``(height, width)``.
* ``rot`` is in degrees with HRNet's sign: a positive angle turns the crop content counter-clockwise
  as displayed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "affine_points",
    "decode_heatmaps",
    "flip_heatmaps",
    "get_affine_transform",
    "keypoint_mse_loss",
    "render_heatmaps",
    "transform_preds",
]


def get_affine_transform(
    center: Sequence[float] | np.ndarray,
    scale: Sequence[float] | np.ndarray,
    rot: float,
    output_size: Sequence[int],
    inv: bool = False,
) -> np.ndarray:
    """The ``(2, 3)`` float64 matrix that maps the source region onto an output crop.

    The source region is centred on ``center``, ``scale[0]`` pixels wide and rotated by ``rot``
    degrees; it is mapped onto an ``output_size = (width, height)`` crop whose centre
    ``(width / 2, height / 2)`` receives ``center``.  The zoom is isotropic, set by the widths
    (``output_size[0] / scale[0]``), exactly as HRNet's ``get_affine_transform`` (which builds the same
    similarity from three point pairs); boxes are expected to already have the crop's aspect ratio.

    Args:
        center: ``(x, y)`` of the box centre, original-image pixels.
        scale: ``(width, height)`` of the source region, original-image pixels (> 0).
        rot: rotation in degrees (see the module docstring for the sign).
        output_size: ``(width, height)`` of the crop in pixels.
        inv: return the inverse map (crop pixels → original-image pixels) instead.

    Returns:
        ``M`` with ``[x', y'] = M @ [x, y, 1]``, usable directly by ``cv2.warpAffine``.
    """
    cx, cy = float(center[0]), float(center[1])
    src_w = float(scale[0])
    dst_w, dst_h = float(output_size[0]), float(output_size[1])
    if src_w <= 0:
        raise ValueError(f"scale width must be positive, got {src_w}")
    theta = math.radians(rot)
    cos, sin = math.cos(theta), math.sin(theta)
    if inv:
        k = src_w / dst_w
        # crop -> image: rotate by +rot around the crop centre, zoom, move onto the box centre.
        lin = k * np.array([[cos, -sin], [sin, cos]])
        src_center = np.array([dst_w * 0.5, dst_h * 0.5])
        dst_center = np.array([cx, cy])
    else:
        k = dst_w / src_w
        lin = k * np.array([[cos, sin], [-sin, cos]])
        src_center = np.array([cx, cy])
        dst_center = np.array([dst_w * 0.5, dst_h * 0.5])
    shift = dst_center - lin @ src_center
    return np.concatenate([lin, shift[:, None]], axis=1)


def affine_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine ``matrix`` to ``points`` of shape ``(..., 2)``; returns float64 ``(..., 2)``."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def render_heatmaps(
    joints: np.ndarray,
    heatmap_size: Sequence[int],
    stride: float,
    sigma: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian heatmap targets for one crop (HRNet ``generate_target``, Gaussian kind).

    Joint ``j`` at input-crop pixel ``(x, y)`` becomes an unnormalised Gaussian (peak 1, standard
    deviation ``sigma`` heatmap pixels) centred on the heatmap pixel ``round(x / stride),
    round(y / stride)`` and truncated to a ``(2r + 1)²`` window with ``r = floor(3 sigma)``.

    Args:
        joints: ``(K, 3)`` rows ``(x, y, visible)`` in input-crop pixels; ``visible > 0`` marks a
            labelled joint (COCO ``v`` of 1 or 2).
        heatmap_size: ``(height, width)`` of the heatmaps.
        stride: input pixels per heatmap pixel (4 for a 256×192 input and 64×48 maps).
        sigma: Gaussian standard deviation in heatmap pixels.

    Returns:
        ``(heatmaps, weight)``: float32 ``(K, height, width)`` and float32 ``(K, 1)``.  ``weight`` is 1
        for a visible joint whose truncated Gaussian window overlaps the map, else 0 (and that joint's
        heatmap is all zeros).
    """
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 2 or joints.shape[1] < 3:
        raise ValueError(f"joints must be (K, 3) rows (x, y, visible), got shape {joints.shape}")
    height, width = int(heatmap_size[0]), int(heatmap_size[1])
    num_joints = joints.shape[0]
    heatmaps = np.zeros((num_joints, height, width), dtype=np.float32)
    weight = (joints[:, 2] > 0).astype(np.float32)[:, None]
    radius = int(math.floor(3 * sigma))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    window = np.exp(-(offsets[None, :] ** 2 + offsets[:, None] ** 2) / (2 * sigma**2)).astype(np.float32)
    for j in range(num_joints):
        if weight[j, 0] == 0:
            continue
        mu_x = int(math.floor(joints[j, 0] / stride + 0.5))
        mu_y = int(math.floor(joints[j, 1] / stride + 0.5))
        x0, x1 = mu_x - radius, mu_x + radius + 1  # window columns [x0, x1)
        y0, y1 = mu_y - radius, mu_y + radius + 1
        if x0 >= width or y0 >= height or x1 <= 0 or y1 <= 0:
            weight[j, 0] = 0
            continue
        hx0, hx1 = max(0, x0), min(width, x1)
        hy0, hy1 = max(0, y0), min(height, y1)
        heatmaps[j, hy0:hy1, hx0:hx1] = window[hy0 - y0 : hy1 - y0, hx0 - x0 : hx1 - x0]
    return heatmaps, weight


def _as_numpy(array: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(array, Tensor):
        return array.detach().to("cpu", torch.float32).numpy()
    return np.asarray(array, dtype=np.float32)


def decode_heatmaps(heatmaps: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Heatmap peaks with HRNet's quarter-pixel refinement (``get_final_preds`` without DARK).

    Each joint's coordinate is its heatmap argmax, then moved by ``0.25 * sign(neighbour
    difference)`` along x and y toward the larger of the two neighbours.  The shift is applied where
    both neighbours exist (``1 <= x <= w - 2``, likewise y); HRNet's ``1 < x < w - 1`` also skips
    column 1, an off-by-one this implementation does not copy.  A joint whose maximum is ``<= 0``
    gets coordinate ``(0, 0)``, as in HRNet.

    Args:
        heatmaps: ``(N, K, h, w)`` tensor or array.

    Returns:
        ``(coords, maxvals)``: float32 ``(N, K, 2)`` ``(x, y)`` in heatmap pixels and float32
        ``(N, K, 1)`` peak values (the joint confidence).
    """
    maps = _as_numpy(heatmaps)
    if maps.ndim != 4:
        raise ValueError(f"heatmaps must be (N, K, h, w), got shape {maps.shape}")
    n, k, h, w = maps.shape
    flat = maps.reshape(n, k, h * w)
    idx = flat.argmax(axis=2)
    maxvals = np.take_along_axis(flat, idx[..., None], axis=2)
    px = idx % w
    py = idx // w
    coords = np.stack([px, py], axis=-1).astype(np.float32)

    inner_x = (px >= 1) & (px <= w - 2)
    inner_y = (py >= 1) & (py <= h - 2)
    pxc = np.clip(px, 1, max(w - 2, 1))
    pyc = np.clip(py, 1, max(h - 2, 1))

    def at(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return np.take_along_axis(flat, (yy * w + xx)[..., None], axis=2)[..., 0]

    if w >= 3:
        dx = at(py, np.minimum(pxc + 1, w - 1)) - at(py, np.maximum(pxc - 1, 0))
        coords[..., 0] += np.where(inner_x, np.sign(dx) * 0.25, 0.0).astype(np.float32)
    if h >= 3:
        dy = at(np.minimum(pyc + 1, h - 1), px) - at(np.maximum(pyc - 1, 0), px)
        coords[..., 1] += np.where(inner_y, np.sign(dy) * 0.25, 0.0).astype(np.float32)
    coords *= (maxvals > 0).astype(np.float32)
    return coords, maxvals.astype(np.float32)


def _flip_permutation(num_joints: int, flip_pairs: Sequence[Sequence[int]]) -> list[int]:
    perm = list(range(num_joints))
    for a, b in flip_pairs:
        if not (0 <= a < num_joints and 0 <= b < num_joints):
            raise ValueError(f"flip pair ({a}, {b}) is outside the {num_joints} joints")
        perm[a], perm[b] = b, a
    return perm


def flip_heatmaps(
    heatmaps: Tensor | np.ndarray,
    flip_pairs: Sequence[Sequence[int]],
    shift: bool = True,
) -> Tensor | np.ndarray:
    """Map heatmaps predicted on a horizontally flipped input back onto the unflipped input.

    Mirrors the maps left-right, swaps each ``(left, right)`` joint pair and, with ``shift``, moves
    every map one pixel to the right (column 0 keeps its value), as HRNet's flip test does to undo
    the pixel-grid offset between an image and its mirror.  Average the result with the unflipped
    prediction for flip testing.

    Args:
        heatmaps: ``(N, K, h, w)`` tensor or array (of the flipped input).
        flip_pairs: ``(a, b)`` joint index pairs swapped by a horizontal flip.
        shift: apply the one-pixel shift.

    Returns:
        ``(N, K, h, w)`` of the same type, device and dtype as ``heatmaps`` (a new object).
    """
    perm = _flip_permutation(heatmaps.shape[1], flip_pairs)
    if isinstance(heatmaps, Tensor):
        out = heatmaps.flip(3)[:, perm]
        if shift:
            out[..., 1:] = out[..., :-1].clone()
        return out
    out = np.ascontiguousarray(np.asarray(heatmaps)[..., ::-1][:, perm])
    if shift:
        out[..., 1:] = out[..., :-1].copy()
    return out


def transform_preds(
    coords: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    output_size: Sequence[int],
    rot: float | np.ndarray = 0.0,
) -> np.ndarray:
    """Map points on a crop (or heatmap) of ``output_size`` back to original-image pixels.

    The inverse of :func:`get_affine_transform` with the same ``center``/``scale``/``rot``; with the
    heatmap size as ``output_size`` it maps decoded heatmap coordinates to the image (HRNet
    ``transform_preds``, which has no rotation).

    Args:
        coords: ``(K, 2)`` or batched ``(N, K, 2)`` ``(x, y)`` on the crop.
        center: ``(2,)`` or ``(N, 2)`` box centres, image pixels.
        scale: ``(2,)`` or ``(N, 2)`` source-region ``(width, height)``, image pixels.
        output_size: ``(width, height)`` of the crop the coordinates live on.
        rot: rotation in degrees, scalar or ``(N,)``.

    Returns:
        float64 array shaped like ``coords``, in original-image pixels.
    """
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim == 2:
        matrix = get_affine_transform(center, scale, float(np.asarray(rot)), output_size, inv=True)
        return affine_points(coords, matrix)
    if coords.ndim != 3:
        raise ValueError(f"coords must be (K, 2) or (N, K, 2), got shape {coords.shape}")
    n = coords.shape[0]
    center = np.broadcast_to(np.asarray(center, dtype=np.float64), (n, 2))
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (n, 2))
    rots = np.broadcast_to(np.asarray(rot, dtype=np.float64), (n,))
    out = np.empty_like(coords)
    for i in range(n):
        matrix = get_affine_transform(center[i], scale[i], float(rots[i]), output_size, inv=True)
        out[i] = affine_points(coords[i], matrix)
    return out


def keypoint_mse_loss(pred: Tensor, target: Tensor, target_weight: Tensor) -> Tensor:
    """HRNet ``JointsMSELoss`` with target weights: ``Σ_j 0.5 · MSE(w_j · pred_j, w_j · target_j) / K``.

    Each joint's MSE is a mean over the batch and the heatmap pixels, so the whole loss equals
    ``0.5 · mean((w · (pred − target))²)`` over all ``N·K·h·w`` entries.

    Args:
        pred: ``(N, K, h, w)`` predicted heatmaps.
        target: ``(N, K, h, w)`` target heatmaps.
        target_weight: ``(N, K, 1)`` (or ``(N, K)``) per-joint weights, 0 for unlabelled joints.

    Returns:
        Scalar tensor.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    n, k = pred.shape[:2]
    weight = target_weight.reshape(n, k, 1).to(pred.dtype)
    diff = (pred.reshape(n, k, -1) - target.reshape(n, k, -1).to(pred.dtype)) * weight
    return 0.5 * diff.pow(2).mean()
