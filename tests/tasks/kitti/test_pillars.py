"""Pillarization, PillarVFE and the BEV scatter against straightforward reference implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hrnas.tasks.kitti.cost import PillarVFESpec
from hrnas.tasks.kitti.pillars import PillarConfig, PillarVFE, pillarize, pillarize_batch, scatter_to_bev

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# A small range with the KITTI pillar size keeps the reference loop fast: 40 x 30 x 1 cells.
SMALL = PillarConfig(
    point_cloud_range=(0.0, -2.4, -3.0, 6.4, 2.4, 1.0),
    max_points_per_pillar=5,
    max_pillars_train=60,
    max_pillars_test=80,
)


def reference_pillarize(points: np.ndarray, config: PillarConfig, cap: int):
    """spconv's hard voxelization, one point at a time, in float32 arithmetic."""
    lo = np.asarray(config.point_cloud_range[:3], dtype=np.float32)
    size = np.asarray(config.voxel_size, dtype=np.float32)
    grid = config.grid_size
    m_max = config.max_points_per_pillar
    index: dict[tuple[int, int, int], int] = {}
    voxels, coords, counts = [], [], []
    for p in points:
        cell = [int(np.floor((np.float32(p[a]) - lo[a]) / size[a])) for a in range(3)]
        if not all(0 <= cell[a] < grid[a] for a in range(3)):
            continue
        zyx = (cell[2], cell[1], cell[0])
        if zyx not in index:
            if len(index) >= cap:
                continue
            index[zyx] = len(index)
            voxels.append(np.zeros((m_max, points.shape[1]), dtype=points.dtype))
            coords.append(zyx)
            counts.append(0)
        v = index[zyx]
        if counts[v] < m_max:
            voxels[v][counts[v]] = p
            counts[v] += 1
    return (
        np.asarray(voxels, dtype=points.dtype).reshape(-1, m_max, points.shape[1]),
        np.asarray(coords, dtype=np.int64).reshape(-1, 3),
        np.asarray(counts, dtype=np.int64),
    )


def random_cloud(seed: int, n: int, config: PillarConfig = SMALL, features: int = 4, dtype=np.float32) -> np.ndarray:
    """Points over the range plus a margin (some fall outside), clustered so that pillars overflow, with a
    share placed exactly on cell borders and at the range ends."""
    rng = np.random.default_rng(seed)
    r = np.asarray(config.point_cloud_range, dtype=np.float64)
    lo, hi = r[:3], r[3:]
    pts = rng.uniform(lo - 0.3, hi + 0.3, size=(n, 3))
    dense = rng.random(n) < 0.4  # a few crowded pillars
    centres = rng.uniform(lo, hi, size=(4, 3))
    pts[dense] = centres[rng.integers(0, 4, dense.sum())] + rng.normal(0, 0.05, size=(dense.sum(), 3))
    border = rng.random(n) < 0.15
    size = np.asarray(config.voxel_size)
    k = rng.integers(0, np.asarray(config.grid_size) + 1, size=(n, 3))
    pts[border] = (lo + k * size)[border]
    pts[rng.random(n) < 0.02, 0] = hi[0]
    extra = rng.uniform(0, 1, size=(n, features - 3))
    cloud = np.concatenate([pts, extra], axis=1).astype(dtype)
    nudge = rng.random(n) < 0.05  # one ulp either side of a border
    cloud[nudge, :3] = np.nextafter(cloud[nudge, :3], np.where(rng.random((nudge.sum(), 3)) < 0.5, -np.inf, np.inf))
    return cloud


def assert_bit_equal(got, ref) -> None:
    voxels, coords, counts = ref
    assert got.voxels.shape == voxels.shape
    as_int = {2: torch.int16, 4: torch.int32, 8: torch.int64}[got.voxels.element_size()]
    assert torch.equal(got.voxels.cpu().view(as_int), torch.from_numpy(voxels).view(as_int))  # -0.0 != 0.0 here
    assert torch.equal(got.coords.cpu(), torch.from_numpy(coords))
    assert torch.equal(got.num_points.cpu(), torch.from_numpy(counts))
    assert got.coords.dtype == got.num_points.dtype == torch.int64


def test_config_defaults_are_kitti():
    cfg = PillarConfig()
    assert cfg.grid_size == (432, 496, 1)
    assert (cfg.max_pillars(True), cfg.max_pillars(False)) == (16000, 40000)
    assert SMALL.grid_size == (40, 30, 1)
    with pytest.raises(ValueError, match="voxel_size"):
        PillarConfig(voxel_size=(0.16, 0.0, 4.0))
    with pytest.raises(ValueError, match="max_points_per_pillar"):
        PillarConfig(max_points_per_pillar=0)
    with pytest.raises(ValueError, match="point_cloud_range"):
        PillarConfig(point_cloud_range=(0.0, 1.0, -3.0, 69.12, 1.0, 1.0))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("training", [True, False])
def test_pillarize_equals_reference_bit_for_bit(device, seed, training):
    cloud = random_cloud(seed, 3000)
    got = pillarize(torch.from_numpy(cloud).to(device), SMALL, training=training)
    ref = reference_pillarize(cloud, SMALL, SMALL.max_pillars(training))
    assert_bit_equal(got, ref)
    # The cloud overflows both caps, and has points outside the range.
    assert got.num_points.numel() == SMALL.max_pillars(training)
    assert int(got.num_points.max()) == SMALL.max_points_per_pillar
    assert int(got.num_points.sum()) < len(cloud)


def test_pillarize_equals_spconv_when_installed():
    """The reference itself (spconv's CPU voxelizer, as OpenPCDet calls it), where it is installed."""
    spconv_utils = pytest.importorskip("spconv.pytorch.utils")
    for seed in range(3):
        cloud = random_cloud(seed, 3000)
        for training in (True, False):
            gen = spconv_utils.PointToVoxel(
                vsize_xyz=list(SMALL.voxel_size),
                coors_range_xyz=list(SMALL.point_cloud_range),
                num_point_features=SMALL.num_point_features,
                max_num_voxels=SMALL.max_pillars(training),
                max_num_points_per_voxel=SMALL.max_points_per_pillar,
            )
            voxels, coords, counts = gen(torch.from_numpy(cloud))
            ref = (voxels.numpy(), coords.long().numpy(), counts.long().numpy())
            assert_bit_equal(pillarize(torch.from_numpy(cloud), SMALL, training=training), ref)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("features", "dtype"),
    [(3, np.float32), (5, np.float32), (4, np.float64), (5, np.float64), (4, np.float16)],
    ids=["xyz", "5-features", "float64", "float64-5", "float16"],
)
def test_pillarize_other_point_layouts(device, features, dtype):
    """Rows that are not 16 bytes take the generic copy path; float64 points are binned in float32."""
    cfg = PillarConfig(**{**SMALL.__dict__, "num_point_features": features})
    cloud = random_cloud(7, 2000, cfg, features=features, dtype=dtype)
    got = pillarize(torch.from_numpy(cloud).to(device), cfg)
    assert got.voxels.dtype == torch.from_numpy(cloud).dtype
    assert_bit_equal(got, reference_pillarize(cloud, cfg, cfg.max_pillars_test))


def test_uncapped_pillarization_without_caps_matches_and_keeps_every_point():
    cfg = PillarConfig(**{**SMALL.__dict__, "max_points_per_pillar": 4000, "max_pillars_test": 10_000})
    cloud = random_cloud(3, 2000)
    got = pillarize(torch.from_numpy(cloud), cfg)
    assert_bit_equal(got, reference_pillarize(cloud, cfg, cfg.max_pillars_test))
    lo = np.float32(cfg.point_cloud_range[:3])
    cells = np.floor((cloud[:, :3] - lo) / np.float32(cfg.voxel_size))
    assert int(got.num_points.sum()) == int(((cells >= 0) & (cells < cfg.grid_size)).all(axis=1).sum())


def test_shuffle_decides_what_is_dropped():
    cloud = random_cloud(11, 3000)
    perm = np.random.default_rng(0).permutation(len(cloud))
    a = pillarize(torch.from_numpy(cloud), SMALL, training=True)
    b = pillarize(torch.from_numpy(cloud[perm]), SMALL, training=True)
    assert_bit_equal(b, reference_pillarize(cloud[perm], SMALL, SMALL.max_pillars_train))
    assert not torch.equal(a.coords, b.coords)  # other pillars survive the cap, in another order
    # Without caps in the way, a shuffle only reorders pillars and the points inside them.
    big = PillarConfig(**{**SMALL.__dict__, "max_points_per_pillar": 4000, "max_pillars_test": 10_000})
    a, b = pillarize(torch.from_numpy(cloud), big), pillarize(torch.from_numpy(cloud[perm]), big)

    def as_sets(p):
        return {
            tuple(c.tolist()): sorted(map(tuple, v[:n].tolist()))
            for c, v, n in zip(p.coords, p.voxels, p.num_points, strict=True)
        }

    assert as_sets(a) == as_sets(b)


def test_range_is_half_open_on_all_axes():
    cfg = PillarConfig()
    x0, y0, z0, x1, y1, z1 = cfg.point_cloud_range
    pts = torch.tensor(
        [
            [x0, y0, z0, 0.1],  # the low corner is inside
            [x1, 0.0, 0.0, 0.2],  # x at its maximum: outside
            [10.0, y1, 0.0, 0.3],  # y at its maximum: outside
            [10.0, 0.0, z1, 0.4],  # z at its maximum: outside (the voxelizer filters z)
            [10.0, 0.0, -3.5, 0.5],  # below the range
            [-0.01, 0.0, 0.0, 0.6],  # behind the sensor
            [float(np.nextafter(np.float32(x1), 0)), 0.0, 0.0, 0.7],  # last cell
        ]
    )
    got = pillarize(pts, cfg)
    assert got.num_points.tolist() == [1, 1]
    assert got.coords.tolist() == [[0, 0, 0], [0, 248, 431]]
    assert got.voxels[:, 0, 3].tolist() == pytest.approx([0.1, 0.7])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_points_are_rejected_with_their_row(bad):
    pts = torch.zeros(5, 4)
    pts[:, 0] = 1.0
    pts[3, 2] = bad
    with pytest.raises(ValueError, match=r"^frame 000042: point 3 is not finite"):
        pillarize(pts, PillarConfig(), name="frame 000042")
    with pytest.raises(ValueError, match=r"^clouds\[1\]: point 3 is not finite"):
        pillarize_batch([torch.ones(2, 4), pts], PillarConfig(), name="clouds")


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"points: expected points of shape \(N, 4\), got \(5, 3\)"):
        pillarize(torch.zeros(5, 3), PillarConfig())
    with pytest.raises(ValueError, match="floating-point"):
        pillarize(torch.zeros(5, 4, dtype=torch.int32), PillarConfig())
    with pytest.raises(ValueError, match="at least one"):
        pillarize_batch([], PillarConfig())


@pytest.mark.parametrize("device", DEVICES)
def test_empty_and_out_of_range_clouds_give_zero_pillars(device):
    cfg = PillarConfig()
    for pts in (torch.zeros(0, 4), torch.full((10, 4), -5.0)):
        got = pillarize(pts.to(device), cfg)
        assert got.voxels.shape == (0, 32, 4) and got.coords.shape == (0, 3) and got.num_points.shape == (0,)
        vfe = PillarVFE(cfg).to(device)
        feats = vfe(got.voxels, got.num_points, got.coords)  # training mode: no BN on an empty batch
        assert feats.shape == (0, 64)
        bev = scatter_to_bev(feats, got.coords, 1, cfg.grid_size)
        assert bev.shape == (1, 64, 496, 432) and not bev.any()
    got = pillarize_batch([torch.zeros(0, 4, device=device)] * 2, cfg)
    assert got.coords.shape == (0, 4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("training", [True, False])
def test_batch_equals_per_cloud_pillarization(device, training):
    clouds = [random_cloud(20, 1500), np.zeros((0, 4), np.float32), random_cloud(21, 800), random_cloud(22, 3000)]
    got = pillarize_batch([torch.from_numpy(c).to(device) for c in clouds], SMALL, training=training)
    cap = SMALL.max_pillars(training)
    refs = [reference_pillarize(c, SMALL, cap) for c in clouds]
    voxels = np.concatenate([r[0] for r in refs])
    coords = np.concatenate([np.pad(r[1], ((0, 0), (1, 0)), constant_values=b) for b, r in enumerate(refs)])
    assert_bit_equal(got, (voxels, coords, np.concatenate([r[2] for r in refs])))
    per_cloud = torch.bincount(got.coords[:, 0].cpu(), minlength=4).tolist()
    assert per_cloud[1] == 0 and max(per_cloud) == cap  # each cloud capped on its own


def reference_vfe(vfe: PillarVFE, voxels, num_points, coords):
    """OpenPCDet PillarVFE.forward + PFNLayer, transcribed (zero-padded input)."""
    (x0, y0, z0, *_), (vx, vy, vz) = vfe.config.point_cloud_range, vfe.config.voxel_size
    mean = voxels[:, :, :3].sum(dim=1, keepdim=True) / num_points.type_as(voxels).view(-1, 1, 1)
    f_cluster = voxels[:, :, :3] - mean
    f_center = torch.zeros_like(voxels[:, :, :3])
    f_center[:, :, 0] = voxels[:, :, 0] - (coords[:, 3].to(voxels.dtype).unsqueeze(1) * vx + (vx / 2 + x0))
    f_center[:, :, 1] = voxels[:, :, 1] - (coords[:, 2].to(voxels.dtype).unsqueeze(1) * vy + (vy / 2 + y0))
    f_center[:, :, 2] = voxels[:, :, 2] - (coords[:, 1].to(voxels.dtype).unsqueeze(1) * vz + (vz / 2 + z0))
    features = torch.cat([voxels, f_cluster, f_center], dim=-1)
    mask = (torch.arange(voxels.shape[1]) < num_points.unsqueeze(1)).unsqueeze(-1).type_as(voxels)
    features = features * mask
    x = vfe.linear(features)
    x = vfe.norm(x.permute(0, 2, 1)).permute(0, 2, 1)
    return torch.relu(x).max(dim=1)[0]


def test_vfe_parameters_and_layers():
    vfe = PillarVFE(PillarConfig())
    assert sum(p.numel() for p in vfe.parameters()) == 768  # 10*64 weights + 64 BN scales + 64 BN shifts
    assert PillarVFESpec().params == 768  # the cost model agrees
    assert vfe.linear.bias is None and vfe.linear.in_features == 10
    assert (vfe.norm.eps, vfe.norm.momentum) == (1e-3, 0.01)


@pytest.mark.parametrize("training", [True, False])
def test_vfe_matches_reference_and_ignores_padding(training):
    torch.manual_seed(0)
    cfg = SMALL
    p = pillarize_batch([torch.from_numpy(random_cloud(5, 3000))], cfg)  # (b, z, y, x) as OpenPCDet
    vfe, ref = PillarVFE(cfg), PillarVFE(cfg)
    with torch.no_grad():
        vfe.norm.weight.uniform_(0.5, 1.5)
        vfe.norm.bias.uniform_(-0.5, 0.5)
    ref.load_state_dict(vfe.state_dict())
    vfe.train(training)
    ref.train(training)
    out = vfe(p.voxels, p.num_points, p.coords)
    expected = reference_vfe(ref, p.voxels, p.num_points, p.coords)
    assert out.shape == (p.voxels.shape[0], 64)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(vfe.norm.running_mean, ref.norm.running_mean)
    torch.testing.assert_close(vfe.norm.running_var, ref.norm.running_var)
    # Garbage (even NaN) in the padded slots changes nothing.
    pad = torch.arange(cfg.max_points_per_pillar) >= p.num_points.unsqueeze(1)
    assert pad.any()
    noisy = p.voxels.clone()
    noisy[pad] = torch.randn(int(pad.sum()), 4) * 100
    noisy[pad.nonzero()[0, 0], pad.nonzero()[0, 1]] = float("nan")
    vfe.load_state_dict(ref.state_dict())  # undo the running-stat update of the first call
    torch.testing.assert_close(vfe(noisy, p.num_points, p.coords), out, rtol=0, atol=0)


def test_vfe_gradients_match_reference():
    torch.manual_seed(1)
    p = pillarize_batch([torch.from_numpy(random_cloud(6, 1000))], SMALL)
    vfe, ref = PillarVFE(SMALL), PillarVFE(SMALL)
    with torch.no_grad():
        vfe.norm.bias.uniform_(-0.5, 0.5)
    ref.load_state_dict(vfe.state_dict())
    weights = torch.randn(p.voxels.shape[0], 64)
    (vfe(p.voxels, p.num_points, p.coords) * weights).sum().backward()
    (reference_vfe(ref, p.voxels, p.num_points, p.coords) * weights).sum().backward()
    for (name, got), want in zip(vfe.named_parameters(), ref.parameters(), strict=True):
        assert got.grad is not None and got.grad.abs().sum() > 0, name
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize("device", DEVICES)
def test_scatter_places_features_at_their_cells(device):
    nx, ny, nz = SMALL.grid_size  # 40 x 30 cells
    coords = torch.tensor([[0, 0, 0, 0], [0, 0, ny - 1, nx - 1], [2, 0, 10, 3], [0, 0, 10, 3]], device=device)
    feats = torch.arange(4 * 64, dtype=torch.float32, device=device).view(4, 64).add_(1).requires_grad_()
    bev = scatter_to_bev(feats, coords, 4, SMALL.grid_size)
    assert bev.shape == (4, 64, ny, nx) and bev.is_contiguous()
    for (b, _, y, x), f in zip(coords.tolist(), feats, strict=True):
        assert torch.equal(bev[b, :, y, x], f)
    assert int((bev != 0).sum()) == 4 * 64  # nothing else written; batch 3 (no pillars) stays empty
    bev.sum().backward()
    assert torch.equal(feats.grad, torch.ones_like(feats))
    first = coords[:, 0] == 0
    single = scatter_to_bev(feats[first].detach(), coords[first, 1:], 1, SMALL.grid_size)
    assert torch.equal(single[0], bev[0].detach())
    with pytest.raises(ValueError, match="batch index"):
        scatter_to_bev(feats, coords[:, 1:], 2, SMALL.grid_size)


def test_pipeline_batch_shapes_and_device_follow_the_input():
    cfg = PillarConfig()
    clouds = [torch.from_numpy(random_cloud(s, 2000, cfg)) for s in (30, 31)]
    p = pillarize_batch(clouds, cfg, training=True)
    feats = PillarVFE(cfg)(p.voxels, p.num_points, p.coords)
    bev = scatter_to_bev(feats, p.coords, len(clouds), cfg.grid_size)
    assert bev.shape == (2, 64, 496, 432)
    for b in range(2):
        single = pillarize(clouds[b], cfg, training=True)
        assert int((p.coords[:, 0] == b).sum()) == single.coords.shape[0]
        occupied = bev[b].abs().sum(0) > 0
        cells = torch.zeros(496, 432, dtype=torch.bool)
        cells[single.coords[:, 1], single.coords[:, 2]] = True
        assert not (occupied & ~cells).any()  # features only where that cloud has pillars


def test_collated_points_split_per_cloud_pillarize_like_the_clouds():
    """The KITTI collate layout ``(sum N_b, 1 + C)`` with the batch index in column 0, split back into
    (non-contiguous) clouds, gives the same pillars as the original clouds."""
    clouds = [torch.from_numpy(random_cloud(s, 1200)) for s in (40, 41)]
    index = torch.cat([torch.full((len(c), 1), float(b)) for b, c in enumerate(clouds)])
    collated = torch.cat([index, torch.cat(clouds)], dim=1)
    views = collated[:, 1:].split([len(c) for c in clouds])
    assert not views[0].is_contiguous()
    got, want = pillarize_batch(list(views), SMALL), pillarize_batch(clouds, SMALL)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(pillarize(views[1], SMALL).voxels, pillarize(clouds[1], SMALL).voxels)
