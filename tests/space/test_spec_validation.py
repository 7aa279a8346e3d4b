"""Bad specs (and JSON keys given twice) are rejected with the path of the bad value; the CLI turns that
into a one-line error; specs are saved atomically."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hrnas.space.spec import NetSpec, SpecError
from hrnas.space.zoo import ZooError, get_spec, load_spec_file


def _spec_dict() -> dict:
    return get_spec("test_seg").to_dict()


def _expect(d: dict, message: str) -> None:
    with pytest.raises(SpecError) as info:
        NetSpec.from_dict(d)
    assert message in str(info.value), str(info.value)


def test_unknown_key_is_named() -> None:
    d = _spec_dict()
    d["stages"][1]["parallel"][0][0]["expand"] = 4
    _expect(d, "stages[1].parallel[0][0].expand: unknown key")


def test_mismatched_lists() -> None:
    d = _spec_dict()
    d["stages"][2]["parallel"][1][0]["hidden"] = [4, 4]
    _expect(d, "stages[2].parallel[1][0].hidden: 2 entries but kernel_sizes has 3")


def test_negative_channels() -> None:
    d = _spec_dict()
    d["stages"][0]["fuse"][0]["block"]["hidden"][1] = -3
    _expect(d, "stages[0].fuse[0].block.hidden[1]: must be >= 0, got -3")


def test_inconsistent_wiring() -> None:
    d = _spec_dict()
    d["stages"][1]["parallel"][1][0]["in_channels"] = 7
    _expect(d, "stages[1].parallel[1][0].in_channels: 7 but its input has 16 channels")
    d = _spec_dict()
    d["stages"][1]["new_branch"]["stride"] = 1
    _expect(d, "stages[1].new_branch.stride: must be 2 here")
    d = _spec_dict()
    d["head"]["transform"]["in_channels"] = 10
    _expect(d, "head.transform.in_channels: 10 but its input has 48 channels")


def test_even_kernel_and_bad_head_kind() -> None:
    d = _spec_dict()
    d["stages"][0]["parallel"][0][0]["kernel_sizes"] = [3, 4, 7]
    _expect(d, "stages[0].parallel[0][0].kernel_sizes[1]: must be a positive odd integer")
    d = _spec_dict()
    d["head"]["kind"] = "tracking"
    _expect(d, "head.kind: unknown head kind 'tracking'")
    d["head"]["kind"] = "detection"  # a detection head has no classifier: num_outputs = the transform's width
    _expect(d, "head.num_outputs: 5 but a detection head outputs its transform's 12 channels")


def test_unknown_zoo_name_lists_known() -> None:
    with pytest.raises(ZooError, match="unknown zoo name 'nope'.*test_seg"):
        get_spec("nope")


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read spec file"):
        NetSpec.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match="bad.json: not valid JSON"):
        NetSpec.load(bad)


def _twice(key: str, text: str) -> str:
    """``text`` (a JSON object) with its first ``"key": value`` given a second time right after it."""
    start = text.index(f'"{key}":')
    end = text.index("\n", start)
    item = text[start:end].rstrip(",")
    return text[:start] + item + ",\n " + text[start:]


@pytest.mark.parametrize("kind", ["test_seg", "pointpillars_bev"])
def test_a_key_given_twice_is_rejected_with_the_file_and_the_key(tmp_path: Path, kind: str) -> None:
    spec = get_spec(kind)
    key = "bn_eps" if kind == "test_seg" else "up_stride"  # top level / inside a block
    text = _twice(key, spec.to_json())
    assert json.loads(text) == spec.to_dict()  # plain JSON would silently keep the last value
    path = tmp_path / "twice.json"
    path.write_text(text)
    for read in (type(spec).load, load_spec_file):
        with pytest.raises(SpecError, match=rf"twice\.json: key '{key}' is given twice"):
            read(path)
    with pytest.raises(SpecError, match=rf"<json>: key '{key}' is given twice"):
        type(spec).from_json(text)
    assert type(spec).from_json(spec.to_json()) == spec


def test_save_replaces_the_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "arch.json"
    path.write_text("previous")
    spec = get_spec("test_seg")
    spec.save(path)
    assert path.read_text() == spec.to_json() + "\n" and NetSpec.load(path) == spec
    assert [p.name for p in tmp_path.iterdir()] == ["arch.json"]  # no temporary file left beside it


def test_spec_kinds_share_one_json_implementation() -> None:
    from hrnas.space.pointpillars import PointPillarsSpec
    from hrnas.space.spec import SpecJson

    for cls in (NetSpec, PointPillarsSpec):
        assert issubclass(cls, SpecJson)
        for name in ("to_json", "from_dict", "from_json", "save", "load"):
            assert name not in vars(cls), (cls.__name__, name)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "no_such_net"),
        ("{broken", "not valid JSON"),
        (json.dumps({**_spec_dict(), "foo": 1}), "foo: unknown key"),
        (_twice("name", get_spec("test_seg").to_json()), "key 'name' is given twice"),
    ],
    ids=["unknown-name", "invalid-json", "unknown-key", "key-twice"],
)
def test_cli_cost_errors(tmp_path: Path, content: str | None, needle: str) -> None:
    target = "no_such_net"
    if content is not None:
        target = str(tmp_path / "spec.json")
        Path(target).write_text(content)
    proc = subprocess.run([sys.executable, "-m", "hrnas.cli", "cost", target], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_cli_cost_json_and_zoo(tmp_path: Path) -> None:
    spec_file = tmp_path / "arch.json"
    get_spec("hrnas_imagenet_ref").save(spec_file)
    proc = subprocess.run(
        [sys.executable, "-m", "hrnas.cli", "cost", str(spec_file), "--json"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["macs"] == 259232935 and out["params"] == 3893684
    proc = subprocess.run([sys.executable, "-m", "hrnas.cli", "zoo"], capture_output=True, text=True)
    assert "hrnas_cityscapes_supernet" in proc.stdout and "hrnas_imagenet_ref" in proc.stdout
