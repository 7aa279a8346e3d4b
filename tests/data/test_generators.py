"""The data-generator registry: tasks ask for generated data by name, the demos provide it."""

from __future__ import annotations

from pathlib import Path

import pytest

from hrnas.data import generators
from hrnas.data.errors import DatasetError


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict:
    """An empty registry for the test (the demos' generators are registered in the session)."""
    table: dict = {}
    monkeypatch.setattr(generators, "_GENERATORS", table)
    return table


def test_a_missing_generator_is_a_one_line_error(registry: dict, tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        generators.ensure_generated("scenes", tmp_path / "data")
    message = str(err.value)
    assert "\n" not in message and "run `hrnas demo` or `import hrnas.demos`" in message
    assert message.startswith(f"{tmp_path / 'data'}: the 'scenes' data") and "registered generators: none" in message


def test_ensure_generated_runs_the_registered_generator(registry: dict, tmp_path: Path) -> None:
    calls = []

    def make(root: Path, size: int = 1) -> Path:
        calls.append((root, size))
        return root

    assert generators.register_generator("scenes", make) is make
    generators.register_generator("scenes", make)  # the same function again: a no-op
    assert generators.ensure_generated("scenes", tmp_path, size=3) == tmp_path
    assert calls == [(tmp_path, 3)] and generators.generator_names() == ["scenes"]
    with pytest.raises(ValueError, match="'scenes' is already registered"):
        generators.register_generator("scenes", lambda root: root)


def test_the_demos_register_the_demo_scenes() -> None:
    import hrnas.demos

    assert generators._GENERATORS["demo_scenes"] is hrnas.demos.ensure_demo_scenes
