"""The task framework: registry (discovery, errors), options sections in run configs, default methods."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from hrnas.engine.config import ConfigError, config_from_dict, load_config
from hrnas.space.cost import cost
from hrnas.space.zoo import get_spec
from hrnas.tasks import base
from hrnas.tasks.base import DEFAULT_TASK, ModelCost, Task, TaskError, get_task, register_task, task_class, task_names
from hrnas.tasks.options import TaskOptions, option


def test_every_task_package_is_discovered() -> None:
    packages = sorted(p.name for p in Path(base.__file__).parent.iterdir() if (p / "__init__.py").is_file())
    assert set(packages) <= set(task_names())
    assert DEFAULT_TASK in task_names()
    for name in packages:
        cls = task_class(name)
        assert cls.name == name and issubclass(cls.options, TaskOptions)
        assert cls.data_formats and cls.head_kinds and cls.metric


def test_unknown_task_lists_the_known_ones() -> None:
    with pytest.raises(TaskError, match=r"task.name: 'nope' is not available \(known: .*segmentation"):
        task_class("nope")


def test_registration_errors() -> None:
    class Nameless(Task):
        pass

    class Impostor(Task):
        name = DEFAULT_TASK

    class BadOptions(Task):
        name = "bad_options_task"
        options = dict  # type: ignore[assignment]

    with pytest.raises(TaskError, match="has no name"):
        register_task(Nameless)
    with pytest.raises(TaskError, match=f"task '{DEFAULT_TASK}' is already registered"):
        register_task(Impostor)
    with pytest.raises(TaskError, match="not a TaskOptions dataclass"):
        register_task(BadOptions)
    with pytest.raises(TaskError, match="not a Task subclass"):
        register_task("name")  # type: ignore[arg-type]
    assert task_class(DEFAULT_TASK) is not Impostor
    assert register_task(task_class(DEFAULT_TASK)) is task_class(DEFAULT_TASK)  # the same class again: a no-op


@dataclass(frozen=True)
class CheckedOptions(TaskOptions):
    size: int = option(2, minimum=1)
    mode: str = option("a", choices=("a", "b"))

    legacy_keys = {"data.old_key": "moved to task.size"}

    def validate(self, cfg, fail) -> None:
        if self.mode == "b" and self.size < 3:
            raise fail("task.size", "must be >= 3 with mode 'b'")


@register_task
class CheckedTask(Task):
    name = "checked_options_task"
    options = CheckedOptions
    data_formats = ("only",)


def test_a_task_section_is_read_into_its_options() -> None:
    cfg = config_from_dict({"task": {"name": CheckedTask.name, "size": 5}, "data": {"format": "only"}})
    assert cfg.task == CheckedOptions(name=CheckedTask.name, size=5, mode="a")
    with pytest.raises(ConfigError, match=r"unknown key 'task.eval_mode' \(known: name, size, mode\)"):
        config_from_dict({"task": {"name": CheckedTask.name, "eval_mode": "whole"}, "data": {"format": "only"}})
    with pytest.raises(ConfigError, match=r"task.mode: 'c' is not one of a, b"):
        config_from_dict({"task": {"name": CheckedTask.name, "mode": "c"}, "data": {"format": "only"}})
    with pytest.raises(ConfigError, match=r"task.size: must be >= 3 with mode 'b'"):
        config_from_dict({"task": {"name": CheckedTask.name, "mode": "b"}, "data": {"format": "only"}})
    with pytest.raises(ConfigError, match=r"data.format: 'demo' is not one of only \(the formats of task"):
        config_from_dict({"task": {"name": CheckedTask.name}})


def test_old_keys_say_where_they_moved(tmp_path: Path) -> None:
    old = tmp_path / "old_key.yaml"
    old.write_text(f"task:\n  name: {CheckedTask.name}\ndata:\n  format: only\n  old_key: 1\n")
    with pytest.raises(ConfigError, match=rf"^{old}:5: data.old_key: moved to task.size$"):
        load_config(old)
    path = tmp_path / "old.yaml"
    path.write_text("base: demo_pose\ndata:\n  root: x\n  ann_file: a_{split}.json\n")
    with pytest.raises(ConfigError, match=rf"^{path}:4: data.ann_file: moved to task.ann_file"):
        load_config(path)
    cfg = load_config("demo_pose", ["task.ann_file=a_{split}.json", "task.det_file=d.json"])
    assert (cfg.task.ann_file, cfg.task.det_file) == ("a_{split}.json", "d.json")


def test_a_config_without_task_runs_the_default_task() -> None:
    cfg = config_from_dict({})
    assert cfg.task.name == DEFAULT_TASK and isinstance(cfg.task, task_class(DEFAULT_TASK).options)


def test_defaults_of_the_task_interface(tmp_path: Path) -> None:
    task = get_task(config_from_dict({"task": {"name": CheckedTask.name}, "data": {"format": "only"}}))
    spec = get_spec("test_seg")
    assert not Task.claims_spec(spec) and Task.cli_commands() == [] and Task.cost_options == ()
    assert Task.model_cost(spec, (32, 32)) == ModelCost(whole=cost(spec, (32, 32)))
    with pytest.raises(TaskError, match=f"predict: not available for task '{CheckedTask.name}'"):
        task.predict(None, ["x.png"], tmp_path)  # type: ignore[arg-type]
    with pytest.raises(TaskError, match=f"--baselines: task '{CheckedTask.name}' has no reference predictors"):
        task.baseline_metrics()


@pytest.mark.parametrize(
    ("preset", "inputs", "split", "message"),
    [
        ("demo_seg", ["a.png"], "val", "predicts the image files given, not --split"),
        ("demo_seg", [], None, "give the image files"),
        ("demo_cls", [], None, "give the image files"),
        ("demo_pose", ["a.png"], "val", "predicts the image files given, not --split"),
    ],
)
def test_image_tasks_check_their_prediction_arguments(
    preset: str, inputs: list[str], split: str | None, message: str, tmp_path: Path
) -> None:
    task = get_task(load_config(preset))
    with pytest.raises(TaskError, match=message):
        task.predict(None, inputs, tmp_path, split=split)  # type: ignore[arg-type]
