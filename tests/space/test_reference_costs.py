"""The zoo reproduces the authors' published/measured costs (spec §2.8, Appendix A)."""

from __future__ import annotations

import pytest

from hrnas.space import cost
from hrnas.space.zoo import get_spec

REFERENCE = [
    # name, input size, MACs, params (transformers off)
    ("hrnas_cls_supernet", (224, 224), 2.4228e9, 13.244e6),
    ("hrnas_cityscapes_supernet", (512, 1024), 61.8366e9, 10.110e6),
    ("hrnas_ade20k_supernet", (512, 512), 36.1147e9, 10.428e6),
    ("hrnas_coco_supernet", (256, 192), 5.7966e9, 10.110e6),
    ("hrnas_imagenet_ref", (224, 224), 259.23e6, 3.894e6),
]


@pytest.mark.parametrize(("name", "size", "macs", "params"), REFERENCE)
def test_reference_cost(name: str, size: tuple[int, int], macs: float, params: float) -> None:
    c = cost(get_spec(name, transformer=False), size)
    assert c.macs == pytest.approx(macs, rel=1e-4)
    assert c.params == pytest.approx(params, rel=1e-3)


def test_block_counts_and_transformers() -> None:
    assert len(get_spec("hrnas_cls_supernet").blocks()) == 67
    seg = get_spec("hrnas_cityscapes_supernet")
    assert len(seg.blocks()) == 61
    with_t = [b for _, b in seg.blocks() if b.num_queries]
    assert len(with_t) == 44 and all(b.residual and b.num_queries == 64 for b in with_t)
    assert not any(b.num_queries for _, b in get_spec("hrnas_cityscapes_supernet", transformer=False).blocks())


def test_transformer_cost_formula() -> None:
    # spec §3.4-3.5: n = 64, C = C_out = 18 → 56 356 params and 64n(C+2+C_out) + 256n² + 49 152n MACs
    from hrnas.space.cost import transformer_macs, transformer_params

    assert transformer_params(18, 18, 64) == 56356
    assert transformer_macs(18, 18, 64) == 64 * 64 * 38 + 256 * 64 * 64 + 49152 * 64
