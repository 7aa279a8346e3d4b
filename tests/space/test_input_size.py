"""The smallest input a network can take: one pixel at its lowest resolution, checked where sizes enter."""

from __future__ import annotations

import pytest
import torch

from hrnas.space.cost import check_input_size, cost, min_input_size
from hrnas.space.network import build_model
from hrnas.space.spec import SpecError
from hrnas.space.zoo import get_spec


@pytest.mark.parametrize(
    ("name", "minimum"),
    [("hrnas_cls_supernet", 32), ("hrnas_cityscapes_supernet", 32), ("test_seg", 16), ("pointpillars_bev", 8),
     ("hrnas_kitti_supernet", 16)],
)
def test_minimum_is_the_largest_downsampling_factor(name: str, minimum: int) -> None:
    assert min_input_size(get_spec(name)) == minimum


def test_the_minimum_runs_and_one_less_is_refused() -> None:
    spec = get_spec("test_seg")
    with torch.no_grad():
        out = build_model(spec).eval()(torch.zeros(1, 3, 16, 17))
    assert out.shape[-2:] == (4, 5)  # branch 0 at 1/4, rounded up
    assert check_input_size(spec, (16, 17)) == (16, 17)
    with pytest.raises(SpecError, match=r"^input size 15×64: below the minimum 16×16 that test_seg can take"):
        cost(spec, (15, 64))


@pytest.mark.parametrize(
    ("size", "message"),
    [((0, 0), "must be positive"), ((-32, 64), "-32×64"), ((64,), "expected two integers"),
     ((32.5, 64), "expected two integers"), ((True, 64), "expected two integers")],
)
def test_malformed_sizes_name_the_value(size: tuple, message: str) -> None:
    with pytest.raises(SpecError, match=message) as err:
        check_input_size(get_spec("test_seg"), size, "--input-size")
    assert str(err.value).startswith("--input-size")
