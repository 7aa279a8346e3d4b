"""Architecture pictures: every zoo spec, with and without its supernet, shrunk and emptied blocks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from hrnas.space.plot import plot_architecture
from hrnas.space.spec import ClassificationHeadSpec, NetSpec, SpecError
from hrnas.space.zoo import get_spec, list_specs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def supernet_of(spec: NetSpec) -> NetSpec:
    """The zoo supernet with the same block structure as ``spec`` (its own when it is one)."""
    if spec.name == "hrnas_imagenet_ref":
        return get_spec("hrnas_cls_supernet")
    return spec


def shrunk(spec: NetSpec) -> NetSpec:
    """``spec`` with shorter kernel lists, fewer queries and every third block emptied."""
    new = {}
    for i, (path, block) in enumerate(spec.blocks()):
        if i % 3 == 0:
            new[path] = replace(block, kernel_sizes=(3, 7), hidden=(0, 0), num_queries=0)
        elif i % 3 == 1:
            new[path] = replace(
                block, kernel_sizes=(3, 7), hidden=(max(1, block.hidden[0] // 2), 1), num_queries=block.num_queries // 2
            )
        else:
            new[path] = replace(block, kernel_sizes=(5,), hidden=(1,))
    return replace(spec.replace_blocks(new), name=f"{spec.name} shrunk")


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert list(path.parent.glob(".*tmp*")) == []


NET_SPECS = sorted(n for n in list_specs() if isinstance(get_spec(n), NetSpec))


@pytest.mark.parametrize("name", NET_SPECS)
@pytest.mark.parametrize("with_supernet", [False, True], ids=["alone", "supernet"])
def test_every_zoo_spec(tmp_path: Path, name: str, with_supernet: bool) -> None:
    spec = get_spec(name)
    supernet = supernet_of(spec) if with_supernet else None
    size = (224, 224) if isinstance(spec.head, ClassificationHeadSpec) else (512, 1024)
    out = plot_architecture(spec, tmp_path / "fig" / f"{name}.png", supernet=supernet, input_size=size)
    assert out == tmp_path / "fig" / f"{name}.png"
    assert_png(out)


def test_fixed_backbones_are_refused(tmp_path: Path) -> None:
    assert "pointpillars_bev" in list_specs() and "pointpillars_bev" not in NET_SPECS
    with pytest.raises(SpecError, match="spec: pointpillars_bev is a fixed PointPillarsSpec without search blocks"):
        plot_architecture(get_spec("pointpillars_bev"), tmp_path / "p.png")
    with pytest.raises(SpecError, match="supernet: pointpillars_bev"):
        plot_architecture(get_spec("test_seg"), tmp_path / "p.png", supernet=get_spec("pointpillars_bev"))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["test_seg", "test_cls", "hrnas_coco_supernet"])
def test_shrunk_spec_with_emptied_blocks(tmp_path: Path, name: str) -> None:
    supernet = get_spec(name)
    out = plot_architecture(shrunk(supernet), tmp_path / "shrunk.png", supernet=supernet, title="after a shrink")
    assert_png(out)


def test_other_formats_and_kernels(tmp_path: Path) -> None:
    spec = get_spec("test_cls")
    new = {p: replace(b, kernel_sizes=(1, 9), hidden=(2, 3)) for p, b in spec.blocks()}
    out = plot_architecture(spec.replace_blocks(new), tmp_path / "odd.svg", input_size=(35, 29))
    assert out.read_text().lstrip().startswith("<?xml")


def test_supernet_must_match(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="different block structure"):
        plot_architecture(get_spec("test_seg"), tmp_path / "x.png", supernet=get_spec("test_cls"))
    with pytest.raises(ValueError, match=r"head.transform is 270→90 stride 1, the supernet's is 270→180"):
        plot_architecture(
            get_spec("hrnas_cityscapes_supernet"), tmp_path / "x.png", supernet=get_spec("hrnas_ade20k_supernet")
        )
    with pytest.raises(ValueError, match="input_size"):
        plot_architecture(get_spec("test_seg"), tmp_path / "x.png", input_size=(0, 32))
    assert not (tmp_path / "x.png").exists()
