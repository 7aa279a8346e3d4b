"""The ρ schedule of the search penalty: 0, then a linear ramp, then full."""

from __future__ import annotations

import pytest

from hrnas.search.schedule import rho_at


def test_rho_schedule():
    assert [rho_at(t, 1.0, 2, 6) for t in range(8)] == pytest.approx([0, 0, 0, 0.25, 0.5, 0.75, 1, 1])
    assert rho_at(0, 1.4e-4, 0, 0) == 1.4e-4  # no ramp
    assert rho_at(5, 2.0, 5, 5) == 2.0
    assert rho_at(4, 2.0, 5, 5) == 0.0
    assert rho_at(1162, 1.4e-4, 0, 2325) == pytest.approx(1.4e-4 * 1162 / 2325)
    with pytest.raises(ValueError):
        rho_at(0, 1.0, 5, 2)
