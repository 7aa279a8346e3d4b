"""The demos registry behind ``hrnas demo --task NAME``: every entry imports and is offered by the command."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from hrnas.cli import build_parser
from hrnas.demos import DEFAULT_DEMO, DEMOS, demo_names, ensure_demo_scenes
from hrnas.demos import scenes as demo_scenes


@pytest.mark.parametrize("name", sorted(DEMOS))
def test_every_demo_runner_exists(name: str) -> None:
    module, _, function = DEMOS[name].runner.partition(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_the_command_offers_every_demo_default_first() -> None:
    assert demo_names()[0] == DEFAULT_DEMO and sorted(demo_names()) == sorted(DEMOS)
    args = build_parser().parse_args(["demo"])
    assert args.task == DEFAULT_DEMO
    for name in DEMOS:
        assert build_parser().parse_args(["demo", "--task", name]).task == name


def test_demo_scenes_of_any_size_are_kept_when_asked(tmp_path: Path, fashion_root: Path) -> None:
    root = demo_scenes.generate_demo_scenes(
        tmp_path / "scenes", num_train=1, num_val=1, size=32, progress=False, fashion_root=fashion_root
    )
    before = (root / "meta.json").read_text()
    assert ensure_demo_scenes(root, any_size=True) == root
    assert (root / "meta.json").read_text() == before
