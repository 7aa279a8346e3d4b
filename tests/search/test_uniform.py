from __future__ import annotations

import pytest

from hrnas.search.budget import BudgetError
from hrnas.search.uniform import uniformly_thinned
from hrnas.space.cost import cost
from hrnas.space.zoo import get_spec


@pytest.mark.parametrize("name", ["test_seg", "hrnas_demo_supernet"])
@pytest.mark.parametrize("fraction", [0.3, 0.6])
def test_uniform_thinning_fits_budget(name: str, fraction: float) -> None:
    spec = get_spec(name)
    size = (64, 64)
    target = int(fraction * cost(spec, size).macs)
    thin = uniformly_thinned(spec, target, size)
    macs = cost(thin, size).macs
    assert 0.9 * target <= macs <= target
    ratios = {
        round(t.hidden[0] / s.hidden[0], 1)
        for (_, s), (_, t) in zip(spec.blocks(), thin.blocks(), strict=True)
        if s.hidden[0] >= 20
    }
    assert len(ratios) <= 2  # one factor everywhere, up to rounding


def test_uniform_thinning_rejects_unreachable_target() -> None:
    with pytest.raises(BudgetError, match="below"):
        uniformly_thinned(get_spec("test_seg"), 10, (64, 64))
