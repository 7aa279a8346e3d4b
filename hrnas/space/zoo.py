"""The model zoo: named specs, a registry that fails loudly, and the supernet generator.

Supernets follow the authors' configs (spec §2.3, §2.8): stages ``[branches, blocks per branch,
channels per branch]`` = 1/[1]/[24], 2/[2,2]/[18,36], 3/[2,2,3]/[18,36,72], 4/[2,2,3,4]/[18,36,72,144]
twice, expansion ratio 4 for each of the kernels 3/5/7, transformers with 64 queries in the residual
blocks. ``hrnas_imagenet_ref`` is the searched ImageNet architecture of the authors' ``checkpoint.json``
(spec Appendix A). ``pointpillars_bev`` and ``hrnas_kitti_supernet`` are the KITTI 2D backbones on the
64-channel BEV pseudo-image (docs/kitti.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hrnas.space.pointpillars import POINTPILLARS_KIND, PointPillarsSpec, pointpillars_bev_spec
from hrnas.space.spec import (
    BlockSpec,
    ClassificationHeadSpec,
    DenseHeadSpec,
    FuseSpec,
    NetSpec,
    SpecError,
    StageSpec,
    StemSpec,
    read_json_file,
)
from hrnas.utils.errors import HrnasError

SUPERNET_STAGES: tuple[tuple[int, tuple[int, ...], tuple[int, ...]], ...] = (
    (1, (1,), (24,)),
    (2, (2, 2), (18, 36)),
    (3, (2, 2, 3), (18, 36, 72)),
    (4, (2, 2, 3, 4), (18, 36, 72, 144)),
    (4, (2, 2, 3, 4), (18, 36, 72, 144)),
)
TRANSFORMER_PLACEMENTS = ("none", "residual", "all")


class ZooError(HrnasError, KeyError):
    """Unknown or duplicate zoo name."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it a readable line
        return str(self.args[0])


def _supernet_block(
    cin: int,
    cout: int,
    stride: int,
    expand_ratio: float,
    kernel_sizes: Sequence[int],
    num_queries: int,
    placement: str,
) -> BlockSpec:
    hidden = int(round(expand_ratio * cin))
    residual = stride == 1 and cin == cout
    wants = placement == "all" or (placement == "residual" and residual)
    return BlockSpec(
        in_channels=cin,
        out_channels=cout,
        stride=stride,
        kernel_sizes=tuple(kernel_sizes),
        hidden=tuple(hidden for _ in kernel_sizes),
        num_queries=num_queries if wants else 0,
    )


def supernet_spec(
    *,
    head: str,
    num_outputs: int,
    name: str = "",
    stages: Sequence[tuple[int, Sequence[int], Sequence[int]]] = SUPERNET_STAGES,
    stem: Sequence[int] = (24, 24),
    in_channels: int = 3,
    expand_ratio: float = 4.0,
    head_expand_ratio: float | None = None,
    kernel_sizes: Sequence[int] = (3, 5, 7),
    num_queries: int = 64,
    transformer: str = "residual",
    last_channels: int | None = None,
    cls_head_channels: Sequence[int] = (36, 72, 144, 320),
    dropout: float = 0.2,
    activation: str = "relu",
    bn_momentum: float = 0.01,
    bn_eps: float = 1e-3,
    token_grid: int = 8,
) -> NetSpec:
    """The HR-NAS supernet for a head (``classification``, ``segmentation``, ``keypoints`` or ``detection``;
    for ``detection``, ``num_outputs`` = ``last_channels`` = the BEV feature channels).

    ``transformer`` places transformers with ``num_queries`` queries in no block, in every residual
    block (the default) or in every block. ``last_channels`` is the width of the dense head's transform
    block (default 90) or of the classifier's last 1×1 conv (default 1600). ``head_expand_ratio``
    (default: ``expand_ratio``) sets the hidden width of the dense head's transform block.
    """
    if transformer not in TRANSFORMER_PLACEMENTS:
        raise SpecError(f"transformer: unknown placement {transformer!r} (known: {', '.join(TRANSFORMER_PLACEMENTS)})")

    def block(cin: int, cout: int, stride: int, ratio: float = expand_ratio) -> BlockSpec:
        return _supernet_block(cin, cout, stride, ratio, kernel_sizes, num_queries, transformer)

    prev = [stem[-1]]
    stage_specs = []
    for num_branches, depths, channels in stages:
        n_in = len(prev)
        fuse = []
        for dst in range(min(n_in, num_branches)):
            for src in (dst - 1, dst, dst + 1):
                if 0 <= src < n_in:
                    fuse.append(FuseSpec(src, dst, block(prev[src], channels[dst], 2 if src == dst - 1 else 1)))
        new_branch = None
        if num_branches == n_in + 1:
            new_branch = block(channels[n_in - 1], channels[n_in], 2)
        elif num_branches != n_in:
            raise SpecError(f"stages: a stage adds at most one branch ({n_in} → {num_branches})")
        parallel = tuple(tuple(block(c, c, 1) for _ in range(d)) for c, d in zip(channels, depths, strict=True))
        stage_specs.append(StageSpec(fuse=tuple(fuse), parallel=parallel, new_branch=new_branch))
        prev = list(channels)
    if head == "classification":
        hc = list(cls_head_channels)
        head_spec: ClassificationHeadSpec | DenseHeadSpec = ClassificationHeadSpec(
            num_classes=num_outputs,
            incre=tuple(block(c, h, 1) for c, h in zip(prev, hc, strict=True)),
            down=tuple(block(hc[i], hc[i + 1], 2) for i in range(len(hc) - 1)),
            last_channels=last_channels or 1600,
            dropout=dropout,
        )
    else:
        head_spec = DenseHeadSpec(
            num_outputs=num_outputs,
            transform=block(sum(prev), last_channels or 90, 1, head_expand_ratio or expand_ratio),
            kind=head,
        )
    return NetSpec(
        stem=StemSpec(in_channels=in_channels, channels=tuple(stem)),
        stages=tuple(stage_specs),
        head=head_spec,
        name=name,
        activation=activation,
        bn_momentum=bn_momentum,
        bn_eps=bn_eps,
        token_grid=token_grid,
    )


# --- the searched ImageNet architecture (spec Appendix A) ------------------------------------------


def _groups(text: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``"3/7:1/1"`` → kernels (3, 7), hidden (1, 1); ``"31/29/30"`` → 3/5/7; ``"none"`` → no channels."""
    if text == "none":
        return (3, 5, 7), (0, 0, 0)
    if ":" in text:
        ks, hs = text.split(":")
        return tuple(int(k) for k in ks.split("/")), tuple(int(h) for h in hs.split("/"))
    return (3, 5, 7), tuple(int(h) for h in text.split("/"))


def _ref_block(cin: int, cout: int, stride: int, text: str) -> BlockSpec:
    kernels, hidden = _groups(text)
    return BlockSpec(cin, cout, stride, kernels, hidden, 0)


_REF_FUSE = (
    # (src, dst, cin, cout, groups) per stage, ordered by (dst, src); new branch separately
    ((0, 0, 24, 24, "32/12/1"),),
    ((0, 0, 24, 18, "28/8/1"),),
    ((0, 0, 18, 18, "3/5:8/1"), (1, 0, 36, 18, "3/7:3/1"), (0, 1, 18, 36, "15/17/17"), (1, 1, 36, 36, "24/19/8")),
    (
        (0, 0, 18, 18, "3:1"),
        (1, 0, 36, 18, "3/7:1/1"),
        (0, 1, 18, 36, "3/6/2"),
        (1, 1, 36, 36, "8/2/2"),
        (2, 1, 72, 36, "20/9/19"),
        (1, 2, 36, 72, "62/65/42"),
        (2, 2, 72, 72, "71/52/45"),
    ),
    (
        (0, 0, 18, 18, "none"),
        (1, 0, 36, 18, "7:1"),
        (0, 1, 18, 36, "5:1"),
        (1, 1, 36, 36, "7:1"),
        (2, 1, 72, 36, "8/3/5"),
        (1, 2, 36, 72, "17/23/20"),
        (2, 2, 72, 72, "39/9/9"),
        (3, 2, 144, 72, "92/33/105"),
        (2, 3, 72, 144, "145/142/153"),
        (3, 3, 144, 144, "147/75/82"),
    ),
)
_REF_NEW = (None, (18, 36, "31/29/30"), (36, 72, "62/82/86"), (72, 144, "180/142/158"), None)
_REF_PARALLEL = (
    ((24, ("28/7/5",)),),
    ((18, ("3/5:11/4", "3:1")), (36, ("14/19/17", "18/12/7"))),
    ((18, ("none", "none")), (36, ("14/15/6", "14/8/3")), (72, ("39/42/58", "53/21/30", "66/49/52"))),
    (
        (18, ("none", "none")),
        (36, ("2/1/3", "1/4/1")),
        (72, ("36/26/17", "21/22/7", "20/16/15")),
        (144, ("66/48/124", "74/61/136", "76/48/123", "128/59/128")),
    ),
    (
        (18, ("none", "none")),
        (36, ("5/7:1/3", "3/7:1/1")),
        (72, ("27/13/15", "18/6/22", "22/10/19")),
        (144, ("158/83/98", "178/110/124", "175/122/158", "127/96/143")),
    ),
)
_REF_INCRE = ((18, 36, "none"), (36, 72, "5/7:2/7"), (72, 144, "25/40/20"), (144, 320, "45/44/170"))
_REF_DOWN = ((36, 72, "none"), (72, 144, "3/14/11"), (144, 320, "29/22/108"))


def imagenet_reference_spec(num_classes: int = 1000, dropout: float = 0.2) -> NetSpec:
    """The published searched ImageNet architecture (259.2 M MACs, 3.89 M params at 224²)."""
    stages = []
    for fuse_rows, new, par_rows in zip(_REF_FUSE, _REF_NEW, _REF_PARALLEL, strict=True):
        fuse = tuple(
            FuseSpec(src, dst, _ref_block(cin, cout, 2 if dst == src + 1 else 1, g))
            for src, dst, cin, cout, g in fuse_rows
        )
        new_branch = None if new is None else _ref_block(new[0], new[1], 2, new[2])
        parallel = tuple(tuple(_ref_block(c, c, 1, g) for g in groups) for c, groups in par_rows)
        stages.append(StageSpec(fuse=fuse, parallel=parallel, new_branch=new_branch))
    head = ClassificationHeadSpec(
        num_classes=num_classes,
        incre=tuple(_ref_block(cin, cout, 1, g) for cin, cout, g in _REF_INCRE),
        down=tuple(_ref_block(cin, cout, 2, g) for cin, cout, g in _REF_DOWN),
        last_channels=1600,
        dropout=dropout,
    )
    return NetSpec(stem=StemSpec(3, (24, 24)), stages=tuple(stages), head=head, name="hrnas_imagenet_ref")


# --- registry ---------------------------------------------------------------------------------------

AnySpec = NetSpec | PointPillarsSpec
_REGISTRY: dict[str, tuple[Callable[..., AnySpec], str]] = {}


def register(name: str, description: str) -> Callable[[Callable[..., AnySpec]], Callable[..., AnySpec]]:
    """Register a spec factory ``fn() -> NetSpec | PointPillarsSpec`` under ``name``."""

    def deco(fn: Callable[..., AnySpec]) -> Callable[..., AnySpec]:
        if name in _REGISTRY:
            raise ZooError(f"zoo name {name!r} is already registered")
        _REGISTRY[name] = (fn, description)
        return fn

    return deco


def list_specs() -> dict[str, str]:
    """Zoo names and their one-line descriptions."""
    return {name: desc for name, (_, desc) in sorted(_REGISTRY.items())}


def get_spec(name: str, transformer: bool = True) -> AnySpec:
    """The zoo spec ``name``; ``transformer=False`` removes every transformer (a PointPillarsSpec has none)."""
    if name not in _REGISTRY:
        raise ZooError(f"unknown zoo name {name!r} (known: {', '.join(sorted(_REGISTRY))})")
    spec = _REGISTRY[name][0]()
    if not transformer and isinstance(spec, NetSpec):
        spec = spec.without_transformers()
    return spec


def resolve_spec(ref: str | AnySpec, transformer: bool = True, key: str = "model.spec") -> AnySpec:
    """The one way a spec reference is read: a spec object as it is, a zoo name, or a spec JSON file.

    ``transformer=False`` removes every transformer. Errors are :class:`ZooError` / :class:`SpecError`
    lines that start with ``key`` (the config key or argument the reference came from).
    """
    if isinstance(ref, NetSpec | PointPillarsSpec):
        spec = ref
    elif not ref:
        raise ZooError(f"{key}: empty; give a zoo name (see `hrnas zoo`) or a spec JSON file")
    elif ref in _REGISTRY:
        spec = _REGISTRY[ref][0]()
    elif Path(ref).suffix == ".json" or Path(ref).exists():
        spec = load_spec_file(ref)
    else:
        raise ZooError(f"{key}: {ref!r} is neither a zoo name (known: {', '.join(sorted(_REGISTRY))}) nor a file")
    if not transformer and isinstance(spec, NetSpec):
        spec = spec.without_transformers()
    return spec


def spec_from_dict(data: Any, source: str = "<json>") -> AnySpec:
    """A NetSpec, or a PointPillarsSpec when ``data["kind"] == "pointpillars"``; errors start with ``source``."""
    kind = PointPillarsSpec if isinstance(data, dict) and data.get("kind") == POINTPILLARS_KIND else NetSpec
    return kind.from_dict(data, source)


def load_spec_file(path: str | Path) -> AnySpec:
    """Read a spec JSON file of either kind (see :func:`spec_from_dict`); errors name the file."""
    return spec_from_dict(read_json_file(path), source=str(path))


def _supernet(name: str, head: str, num_outputs: int, **kw: object) -> Callable[[], NetSpec]:
    return lambda: supernet_spec(name=name, head=head, num_outputs=num_outputs, **kw)  # type: ignore[arg-type]


register("hrnas_cls_supernet", "ImageNet classification supernet (67 blocks), 224²")(
    _supernet("hrnas_cls_supernet", "classification", 1000)
)
register("hrnas_cityscapes_supernet", "Cityscapes segmentation supernet (61 blocks, 19 classes), 512×1024")(
    _supernet("hrnas_cityscapes_supernet", "segmentation", 19, last_channels=90)
)
register("hrnas_ade20k_supernet", "ADE20K segmentation supernet (61 blocks, 150 classes), 512²")(
    _supernet("hrnas_ade20k_supernet", "segmentation", 150, last_channels=180)
)
register("hrnas_coco_supernet", "COCO keypoint supernet (61 blocks, 17 heatmaps), 256×192")(
    _supernet("hrnas_coco_supernet", "keypoints", 17, last_channels=90)
)
register("hrnas_imagenet_ref", "published searched ImageNet architecture (259 M MACs), 224²")(imagenet_reference_spec)

_DEMO_KW: dict[str, object] = dict(
    stages=((1, (1,), (16,)), (2, (1, 1), (16, 32)), (3, (1, 1, 1), (16, 32, 64))),
    stem=(16, 16),
    expand_ratio=2.0,
    head_expand_ratio=1.0,
    num_queries=16,
)
register("hrnas_demo_supernet", "small segmentation supernet for the demo scenes (11 classes), 128²")(
    _supernet("hrnas_demo_supernet", "segmentation", 11, last_channels=32, **_DEMO_KW)
)
register("hrnas_demo_kpt_supernet", "small keypoint supernet for the demo scenes (5 heatmaps), 128²")(
    _supernet("hrnas_demo_kpt_supernet", "keypoints", 5, last_channels=32, **_DEMO_KW)
)
register("hrnas_demo_cls_supernet", "small classification supernet for Fashion-MNIST (10 classes), 32²")(
    _supernet(
        "hrnas_demo_cls_supernet",
        "classification",
        10,
        last_channels=256,
        cls_head_channels=(32, 64, 128),
        stem=(16, 16),
        stages=((1, (1,), (16,)), (2, (1, 1), (16, 32)), (3, (1, 1, 1), (16, 32, 64))),
        expand_ratio=2.0,
        num_queries=16,
    )
)

_TEST_STAGES = ((1, (1,), (8,)), (2, (1, 1), (8, 16)), (3, (1, 1, 1), (8, 16, 24)))
_TEST_KW: dict[str, object] = dict(
    stages=_TEST_STAGES, stem=(8, 8), expand_ratio=1.0, num_queries=4, token_grid=4, transformer="residual"
)
register("test_seg", "tiny segmentation net for tests (5 classes)")(
    _supernet("test_seg", "segmentation", 5, last_channels=12, **_TEST_KW)
)
register("test_kpt", "tiny keypoint net for tests (5 heatmaps)")(
    _supernet("test_kpt", "keypoints", 5, last_channels=12, **_TEST_KW)
)
register("test_cls", "tiny classification net for tests (10 classes)")(
    _supernet("test_cls", "classification", 10, last_channels=32, cls_head_channels=(12, 16, 24), **_TEST_KW)
)
register("test_cls_all", "tiny classification net with transformers in every block")(
    _supernet(
        "test_cls_all",
        "classification",
        10,
        last_channels=32,
        cls_head_channels=(12, 16, 24),
        **{**_TEST_KW, "transformer": "all"},
    )
)

# --- KITTI 3D detection (docs/kitti.md) -------------------------------------------------------------

KITTI_EXPAND_RATIO = 2.0
KITTI_HEAD_EXPAND_RATIO = 1 / 3


def kitti_supernet_spec(name: str = "hrnas_kitti_supernet", **kw: Any) -> NetSpec:
    """The HR-NAS supernet on the (64, 496, 432) BEV pseudo-image with (384, 248, 216) BEV features out.

    The authors' stage layout (4 branches of 18/36/72/144 channels, 61 blocks, 3/5/7 kernels, 64-query
    transformers in the residual blocks) one octave higher: a single stride-2 stem conv 64→24, so the
    branches run at 1/2, 1/4, 1/8 and 1/16 of the grid and branch 0 is the anchor grid. Expansion ratio
    2 and a transform 270→384 with 90 hidden channels per kernel keep it under pointpillars_bev's MACs.
    ``kw`` overrides :func:`supernet_spec` arguments.
    """
    args: dict[str, Any] = dict(
        head="detection",
        num_outputs=384,
        last_channels=384,
        in_channels=64,
        stem=(24,),
        expand_ratio=KITTI_EXPAND_RATIO,
        head_expand_ratio=KITTI_HEAD_EXPAND_RATIO,
        name=name,
    )
    args.update(kw)
    return supernet_spec(**args)


register("pointpillars_bev", "PointPillars 2D backbone (OpenPCDet BaseBEVBackbone), 64×496×432 → 384×248×216")(
    pointpillars_bev_spec
)
register("hrnas_kitti_supernet", "KITTI BEV supernet (61 blocks), 64×496×432 → 384×248×216 for the anchor head")(
    kitti_supernet_spec
)
register(
    "hrnas_demo_kitti_supernet",
    "small KITTI BEV supernet for CPU runs on simulated frames (15 blocks), 32×160×160 → 48×80×80",
)(
    lambda: kitti_supernet_spec(
        name="hrnas_demo_kitti_supernet",
        stages=((1, (1,), (8,)), (2, (1, 1), (8, 16)), (3, (1, 1, 1), (8, 16, 24))),
        stem=(16,),
        in_channels=32,
        num_outputs=48,
        last_channels=48,
        expand_ratio=1.0,
        head_expand_ratio=1.0,
        num_queries=8,
        token_grid=4,
    )
)
