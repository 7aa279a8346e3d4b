"""The ``task:`` section of a KITTI config: OpenPCDet defaults, strict keys, cross-field checks, the shipped
presets, and a one-line message for the older ``detection:`` section."""

from __future__ import annotations

from pathlib import Path

import pytest

from hrnas.engine.config import ConfigError, config_to_dict, load_config
from hrnas.tasks.base import task_class
from hrnas.tasks.kitti.options import KittiOptions
from hrnas.tasks.kitti.task import KittiTask


def test_the_task_owns_its_options_and_formats():
    assert task_class("kitti") is KittiTask
    assert KittiTask.options is KittiOptions and KittiTask.data_formats == ("kitti",)


def test_defaults_are_openpcdet_pointpillars():
    o = KittiOptions(name="kitti")
    assert o.point_cloud_range == (0.0, -39.68, -3.0, 69.12, 39.68, 1.0)
    assert o.voxel_size == (0.16, 0.16, 4.0)
    assert (o.max_points_per_pillar, o.max_pillars_train, o.max_pillars_test) == (32, 16000, 40000)
    assert o.gt_sampling and o.flip and o.sample_groups == (15, 15, 15)
    assert o.rotation == pytest.approx(0.78539816) and o.scaling_range == (0.95, 1.05)
    assert (o.score_threshold, o.nms_iou_threshold, o.nms_pre_max, o.nms_post_max) == (0.1, 0.01, 4096, 500)


def test_presets_load_into_the_task_section():
    cfg = load_config("kitti")
    assert isinstance(cfg.task, KittiOptions) and cfg.task.name == "kitti"
    assert cfg.task == KittiOptions(name="kitti")  # the preset spells out the defaults
    demo = load_config("demo_kitti")
    assert demo.task.point_cloud_range == (0.0, -25.6, -3.0, 51.2, 25.6, 1.0)
    assert demo.task.voxel_size == (0.32, 0.32, 4.0) and demo.task.nms_pre_max == 4096  # the rest inherited
    assert config_to_dict(demo)["task"]["voxel_size"] == [0.32, 0.32, 4.0]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("task.point_cloud_range=[0, 0, -3, 10, 0, 1]", r"task.point_cloud_range: .* needs min < max on x, y and z"),
        ("task.voxel_size=[0.16, 0, 4]", r"task.voxel_size: \[0.16, 0.0, 4.0\] must be > 0"),
        ("task.scaling_range=[0, 1]", r"task.scaling_range: \[0.0, 1.0\] must satisfy 0 < lo <= hi"),
        ("task.scaling_range=[1.1, 1.0]", r"task.scaling_range: \[1.1, 1.0\] must satisfy 0 < lo <= hi"),
        ("task.sample_groups=[1, 2]", r"task.sample_groups: expected 3 entries, got 2"),
        ("task.score_threshold=1.5", r"task.score_threshold: 1.5 is above the maximum 1.0"),
        ("task.flipp=true", r"unknown key 'task.flipp' \(known: .*point_cloud_range"),
        ("data.format=demo", r"data.format: .*kitti"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config("kitti", [override])
    assert "\n" not in str(err.value)


def test_an_old_detection_section_says_what_to_rename(tmp_path: Path):
    old = tmp_path / "old.yaml"
    old.write_text("task:\n  name: kitti\ndata:\n  format: kitti\n  crop_size: [496, 432]\ndetection:\n  flip: false\n")
    with pytest.raises(
        ConfigError,
        match=r"old.yaml:6: detection: moved into task: \(task.name: kitti\); "
        r"rename detection.X to task.X",
    ) as err:
        load_config(old)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="rename detection.X to task.X"):
        load_config("kitti", ["detection.flip=false"])
