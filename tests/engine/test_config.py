"""Run configs: presets, strict keys, types, YAML errors, overrides, inheritance, round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hrnas.engine.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    check_input_sizes,
    config_from_dict,
    config_to_dict,
    list_presets,
    load_config,
    parse_macs,
    save_config,
    update_config,
)

PRESETS = ["cityscapes", "ade20k", "demo_seg", "imagenet_search", "imagenet_retrain", "coco_keypoints",
           "demo_cls", "demo_pose"]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_fits_its_network(name):
    """Sizes at least the network's minimum, and a search target between what pruning can reach and the
    supernet's own cost (``hrnas search`` refuses anything else before it starts)."""
    from hrnas.search.budget import check_budget
    from hrnas.space.zoo import resolve_spec

    cfg = load_config(name)
    spec = resolve_spec(cfg.model.spec, cfg.model.transformer)
    check_input_sizes(cfg, spec)
    if cfg.search.target_macs is not None:
        check_budget(spec, cfg.penalty_input_size, cfg.search.target_macs)


def test_sizes_below_the_network_minimum_name_key_value_and_minimum():
    from hrnas.space.zoo import get_spec

    spec = get_spec("hrnas_cls_supernet")  # a 1/4 stem and three new branches: 32 pixels at least
    check_input_sizes(load_config("imagenet_search", ["data.crop_size=[32, 64]"]), spec)
    with pytest.raises(ConfigError, match=r"data.crop_size \[31, 64\]: below the minimum 32×32"):
        check_input_sizes(load_config("imagenet_search", ["data.crop_size=[31, 64]"]), spec)
    with pytest.raises(ConfigError, match=r"search.penalty_input_size \[224, 16\]: below the minimum 32×32"):
        check_input_sizes(load_config("imagenet_search", ["search.penalty_input_size=[224, 16]"]), spec)


def test_set_blames_the_argument_for_an_unknown_key_it_introduces():
    with pytest.raises(ConfigError, match=r"^--set optimiser.lr=1: unknown key 'optimiser'"):
        load_config("demo_seg", ["optimiser.lr=1"])
    with pytest.raises(ConfigError, match=r"^--set optim.sched.x=1: unknown key 'optim.sched'"):
        load_config("demo_seg", ["optim.sched.x=1"])


def test_every_expected_preset_is_shipped():
    assert set(PRESETS) <= set(list_presets())


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_and_round_trips(name, tmp_path):
    cfg = load_config(name)
    assert isinstance(cfg, RunConfig)
    assert cfg.model.spec
    saved = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(saved) == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_paper_recipes():
    city = load_config("cityscapes")
    assert (city.data.batch_size, city.optim.lr, city.optim.eps) == (32, 0.04, 1e-3)
    assert city.schedule.name == "onecycle" and city.optim.wd_mode == "l2_conv_linear"
    assert city.search.rho == 1.4e-4 and city.train.seed == 1995
    ade = load_config("ade20k")  # inherits cityscapes
    assert (ade.data.batch_size, ade.task.num_classes, ade.data.crop_size) == (64, 150, (512, 512))
    assert ade.optim.name == "adamw" and ade.schedule.name == "onecycle"
    cls = load_config("imagenet_search")
    assert cls.optim.name == "rmsprop" and cls.optim.lr == pytest.approx(0.016 * 512 / 256)
    assert cls.schedule.warmup_start_factor == pytest.approx(256 / 512)
    retrain = load_config("imagenet_retrain")
    assert retrain.optim.lr == pytest.approx(0.016 * 1024 / 256) and not retrain.search.enabled
    assert (retrain.model.activation, retrain.model.dropout, retrain.optim.name) == ("swish", 0.28, "rmsprop")
    coco = load_config("coco_keypoints")
    assert (coco.optim.weight_decay, coco.search.rho, coco.schedule.name) == (1e-8, 1e-6, "step")
    demo = load_config("demo_seg")
    assert demo.data.format == "demo" and demo.data.crop_size == (128, 128) and demo.data.batch_size == 16
    assert demo.search.enabled and demo.search.target_macs == 15_000_000 and demo.optim.name == "adamw"
    assert load_config("demo_cls").data.format == "fashion_mnist"
    assert load_config("demo_pose").data.format == "coco_keypoints"


def test_defaults_without_file():
    cfg = config_from_dict({})
    assert cfg == RunConfig()
    assert cfg.train.bn_calib_batches == 10 and cfg.search.threshold == 1e-3
    assert cfg.penalty_input_size == cfg.data.crop_size


def test_unknown_key_names_path_line_and_known_keys(tmp_path):
    path = write(tmp_path, "bad.yaml", "optim:\n  lr: 0.1\n  lrr: 0.2\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "unknown key 'optim.lrr'" in msg
    assert "(known: name, lr, momentum," in msg
    assert f"{path}:3" in msg


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'optm' \(known: task, model, data"):
        load_config(write(tmp_path, "bad.yaml", "optm: {lr: 0.1}\n"))


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("optim:\n  lr: fast\n", r"bad.yaml:2: optim.lr: expected float, got str 'fast'"),
        ("train:\n  steps: 1.5\n", r"train.steps: expected int, got float 1.5"),
        ("train:\n  compile: 1\n", r"train.compile: expected bool, got int 1"),
        ("data:\n  crop_size: [512]\n", r"data.crop_size: expected 2 entries, got 1"),
        ("data:\n  crop_size: [512, x]\n", r"data.crop_size\[1\]: expected int, got str 'x'"),
        ("task:\n  name: detection\n", r"task.name: 'detection' is not one of .*classification, .*segmentation"),
        ("train:\n  amp: off\n", r"train.amp: expected str .*got bool False.*quote"),
        ("search:\n  target_macs: 300MB\n", r"search.target_macs: expected MAC count"),
        ("optim:\n  lr: -1\n", r"optim.lr: -1.0 is below the minimum"),
        ("optim: 3\n", r"optim: expected a mapping"),
    ],
)
def test_bad_values(tmp_path, text, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(write(tmp_path, "bad.yaml", text))


def test_type_coercions(tmp_path):
    text = (
        "optim:\n  lr: 1e-3\n  weight_decay: 0\n"
        "train:\n  steps: 4e4\n"
        "search:\n  target_macs: 300M\n  min_saving_macs: 1.4G\n"
        "task:\n  eval_scales: [1, 1.5]\n"
    )
    cfg = load_config(write(tmp_path, "ok.yaml", text))
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.weight_decay, float)
    assert cfg.train.steps == 40000 and isinstance(cfg.train.steps, int)
    assert cfg.search.target_macs == 300_000_000 and cfg.search.min_saving_macs == 1_400_000_000
    assert cfg.task.eval_scales == (1.0, 1.5)


@pytest.mark.parametrize(
    ("text", "value"), [("300M", 300_000_000), ("1.4G", 1_400_000_000), ("2.5e8", 250_000_000), ("12k", 12_000),
                        (1000, 1000), (2.0e6, 2_000_000)],
)
def test_parse_macs(text, value):
    assert parse_macs(text) == value


@pytest.mark.parametrize("text", ["", "M", "-3M", "3 MB", True, None])
def test_parse_macs_rejects(text):
    with pytest.raises(ValueError):
        parse_macs(text)


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "broken.yaml", "optim:\n  lr: 0.1\n  betas: [0.9, 0.99\ntrain:\n  steps: 3\n")
    with pytest.raises(ConfigError, match=rf"{path}:\d+: malformed YAML"):
        load_config(path)
    tabbed = write(tmp_path, "tabs.yaml", "optim:\n\tlr: 0.1\n")
    with pytest.raises(ConfigError, match=rf"{tabbed}:2: malformed YAML"):
        load_config(tabbed)


def test_duplicate_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match=r"dup.yaml:3: duplicate key 'optim.lr'"):
        load_config(write(tmp_path, "dup.yaml", "optim:\n  lr: 0.1\n  lr: 0.2\n"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(write(tmp_path, "list.yaml", "- 1\n- 2\n"))
    assert load_config(write(tmp_path, "braces.yaml", "{}\n")) == RunConfig()


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing but a comment\n"])
def test_empty_file_is_named_as_such(tmp_path, text):
    with pytest.raises(ConfigError, match=r"empty.yaml: empty file") as err:
        load_config(write(tmp_path, "empty.yaml", text))
    assert "model.spec" not in str(err.value)


def test_missing_file_and_unknown_preset(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"unknown preset 'citiscapes' \(known: .*cityscapes"):
        load_config("citiscapes")


def test_overrides():
    cfg = load_config("demo_seg", ["optim.lr=0.5", "data.crop_size=[64, 96]", "search.target_macs=1.4G",
                                   "model.dropout=null", "train.amp=bf16", "optim.eps=1e-4"])
    assert cfg.optim.lr == 0.5 and cfg.data.crop_size == (64, 96)
    assert cfg.search.target_macs == 1_400_000_000 and cfg.model.dropout is None
    assert cfg.train.amp == "bf16" and cfg.optim.eps == 1e-4
    with pytest.raises(ConfigError, match=r"--set optim.lrr=1: unknown key 'optim.lrr'"):
        load_config("demo_seg", ["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"--set train.steps=many: train.steps: expected int"):
        load_config("demo_seg", ["train.steps=many"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config("demo_seg", ["optim.lr"])
    with pytest.raises(ConfigError, match="is not a section"):
        load_config("demo_seg", ["optim.lr.x=1"])


def test_apply_and_update_config():
    cfg = load_config("demo_seg")
    assert apply_overrides(cfg, ["train.steps=7"]).train.steps == 7
    updated = update_config(cfg, {"task.num_classes": 19, "data.crop_size": [32, 32]})
    assert updated.task.num_classes == 19 and updated.data.crop_size == (32, 32)
    assert cfg.task.num_classes == 0  # the original is untouched
    with pytest.raises(ConfigError, match="task.num_classes: expected int"):
        update_config(cfg, {"task.num_classes": "many"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.lr = 1.0  # type: ignore[misc]


def test_base_inheritance_merges_sections(tmp_path):
    write(tmp_path, "parent.yaml", "optim:\n  name: sgd\n  lr: 0.1\n  momentum: 0.5\ntrain:\n  steps: 10\n")
    child = write(tmp_path, "child.yaml", "base: parent.yaml\noptim:\n  lr: 0.2\n")
    cfg = load_config(child)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.train.steps) == ("sgd", 0.2, 0.5, 10)
    preset_child = write(tmp_path, "p.yaml", "base: demo_seg\ntrain:\n  steps: 5\n")
    cfg = load_config(preset_child)
    assert cfg.train.steps == 5 and cfg.data.format == "demo"
    write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    bad_parent = write(tmp_path, "bad_parent.yaml", "optim:\n  typo: 1\n")
    with pytest.raises(ConfigError, match=rf"{bad_parent}:2: unknown key 'optim.typo'"):
        load_config(write(tmp_path, "c.yaml", "base: bad_parent.yaml\n"))


def test_cross_field_checks(tmp_path):
    with pytest.raises(ConfigError, match="onecycle"):
        config_from_dict({"schedule": {"name": "onecycle", "warmup_steps": 10}})
    with pytest.raises(ConfigError, match="decay_every"):
        config_from_dict({"schedule": {"name": "exp_staircase"}})
    with pytest.raises(ConfigError, match="milestones"):
        config_from_dict({"schedule": {"name": "step"}})
    with pytest.raises(ConfigError, match="rho_warmup_steps"):
        config_from_dict({"search": {"rho_free_steps": 10, "rho_warmup_steps": 5}})
    with pytest.raises(ConfigError, match="eval_crop"):
        config_from_dict({"task": {"eval_mode": "slide"}})


def test_checkpoint_dict_round_trip():
    cfg = load_config("coco_keypoints")
    raw = config_to_dict(cfg)
    assert raw["data"]["crop_size"] == [256, 192] and raw["search"]["min_saving_macs"] == 1_000_000
    assert config_from_dict(raw) == cfg
    with pytest.raises(ConfigError, match="only allowed in config files"):
        config_from_dict({"base": "demo_seg"})
