"""The JSON reader every hrnas JSON file goes through, and the error base's one-line contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hrnas.demos.scenes import GENERATOR_NAME, read_demo_meta
from hrnas.utils.errors import HrnasError, JsonError, parse_json_text, read_json


class MyError(HrnasError, ValueError):
    pass


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1, "a": 2}', "f.json: key 'a' is given twice"),
        ('{"a": {"b": 1, "b": 1}}', "f.json: key 'b' is given twice"),
        ('[{"x": 0}, {"x": 1, "y": 2, "x": 3}]', "f.json: key 'x' is given twice"),
        ("", "f.json: empty file"),
        ("  \n", "f.json: empty file"),
        ('{"a": 1,\n "b": }', r"f.json: not valid JSON \(Expecting value at line 2, column 7\)"),
    ],
)
def test_parse_rejects_what_json_would_accept_or_misreport(text: str, message: str) -> None:
    with pytest.raises(MyError, match=message):
        parse_json_text(text, "f.json", MyError)


def test_parse_returns_plain_data() -> None:
    assert parse_json_text('{"a": [1, {"b": null}]}', "f.json") == {"a": [1, {"b": None}]}


def test_read_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(JsonError, match=f"{tmp_path / 'none.json'}: cannot read result file"):
        read_json(tmp_path / "none.json", what="result file")
    (tmp_path / "bin.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(JsonError, match="bin.json: not a text JSON file"):
        read_json(tmp_path / "bin.json")
    with pytest.raises(JsonError, match="cannot read"):
        read_json(tmp_path)
    (tmp_path / "ok.json").write_text('{"a": 1}')
    assert read_json(tmp_path / "ok.json") == {"a": 1}


def test_a_demo_meta_with_a_key_given_twice_is_not_trusted(tmp_path: Path) -> None:
    meta = {"generator": GENERATOR_NAME, "size": 128}
    (tmp_path / "DONE").write_text("")
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    assert read_demo_meta(tmp_path) == meta
    (tmp_path / "meta.json").write_text(json.dumps(meta)[:-1] + ', "size": 64}')
    assert read_demo_meta(tmp_path) is None
