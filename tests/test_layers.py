"""The package's imports go one way: utils <- space <- search / export <- data <- tasks <- engine <- demos <- cli.

Every ``hrnas`` import of every module (top level or inside a function) is read from the source with
``ast``; an import of a module in a higher layer fails the test. ``python tests/test_layers.py`` prints the
layer of every module.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "hrnas"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("hrnas.utils",),
    ("hrnas.space",),
    ("hrnas.search", "hrnas.export"),
    ("hrnas.data",),
    ("hrnas.tasks",),
    ("hrnas.engine",),
    ("hrnas.demos",),
    ("hrnas.cli", "hrnas.__main__"),
)
"""Layers from the bottom up. A module may import its own layer's package and any lower layer; packages
that share a layer (search and export) may not import each other."""

ROOT_MODULE = "hrnas"
"""``hrnas/__init__.py``: the library's front door; it may import space only (checked below)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_of(module: str) -> str:
    """The layer package a module belongs to (``hrnas.tasks.kitti.iou`` -> ``hrnas.tasks``)."""
    for layer in LAYERS:
        for package in layer:
            if module == package or module.startswith(package + "."):
                return package
    return module


def layer_of(module: str) -> int | None:
    package = package_of(module)
    for index, layer in enumerate(LAYERS):
        if package in layer:
            return index
    return None


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every absolute ``hrnas`` import in the file, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == ROOT_MODULE]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == ROOT_MODULE:
                # `from hrnas.space import zoo` imports hrnas.space.zoo: judge by the package either way
                found.append((node.lineno, node.module))
    return found


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_ROOT.rglob("*.py"))}


def violations() -> list[str]:
    out = []
    for module, path in all_modules().items():
        rel = path.relative_to(PACKAGE_ROOT.parent)
        if module == ROOT_MODULE:
            for line, target in imports_of(path):
                if package_of(target) != "hrnas.space":
                    out.append(f"{rel}:{line}: the package root imports {target}; it may import hrnas.space only")
            continue
        mine = layer_of(module)
        if mine is None:
            out.append(f"{rel}: module {module} is in no layer; add its package to LAYERS")
            continue
        for line, target in imports_of(path):
            theirs = layer_of(target)
            if theirs is None:
                if target != ROOT_MODULE:
                    out.append(f"{rel}:{line}: imports {target}, which is in no layer")
                continue
            if theirs > mine:
                out.append(f"{rel}:{line}: {module} (layer {mine}, {package_of(module)}) imports {target} "
                           f"(layer {theirs}, {package_of(target)}): imports must go down")
            elif theirs == mine and package_of(target) != package_of(module):
                out.append(f"{rel}:{line}: {module} imports {target}: {package_of(module)} and "
                           f"{package_of(target)} share a layer and stay independent")
            elif task_package(module) and task_package(target) and task_package(module) != task_package(target):
                out.append(f"{rel}:{line}: task package {task_package(module)} imports task package "
                           f"{task_package(target)}: tasks share only hrnas.tasks.base and lower layers")
    return out


def task_package(module: str) -> str | None:
    """``hrnas.tasks.kitti`` for ``hrnas.tasks.kitti.iou``; None outside a task package (and for the
    shared ``hrnas.tasks.base`` and ``hrnas.tasks`` itself)."""
    parts = module.split(".")
    if len(parts) < 3 or parts[:2] != ["hrnas", "tasks"] or parts[2] in ("base", "options"):
        return None
    return ".".join(parts[:3])


def layer_table() -> str:
    """One line per module: its layer number, its layer's packages and the module name."""
    lines = []
    for module in all_modules():
        index = layer_of(module)
        label = "root" if module == ROOT_MODULE else (f"{index}" if index is not None else "?")
        lines.append(f"{label:>4}  {package_of(module):14s} {module}")
    return "\n".join(sorted(lines))


def test_imports_go_down_the_layers() -> None:
    found = violations()
    assert not found, "imports against the layer order:\n" + "\n".join(found)


def test_every_module_has_a_layer() -> None:
    assert all(layer_of(m) is not None for m in all_modules() if m != ROOT_MODULE)


def test_the_checker_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from hrnas.engine.trainer import train\n")
    assert imports_of(bad) == [(2, "hrnas.engine.trainer")]
    assert layer_of("hrnas.engine.trainer") > layer_of("hrnas.search.units")
    assert layer_of("hrnas.tasks.kitti.iou") == layer_of("hrnas.tasks")
    assert task_package("hrnas.tasks.kitti.iou") == "hrnas.tasks.kitti"
    assert task_package("hrnas.tasks.base") is None


if __name__ == "__main__":
    print(layer_table())
    problems = violations()
    print("\n".join(problems) if problems else "no import goes against the layer order")
    sys.exit(1 if problems else 0)
