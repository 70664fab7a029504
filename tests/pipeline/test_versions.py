"""pipeline.run.open_version: which dataset version a build writes, and why (no Ray)."""
from __future__ import annotations

import os

import pytest
import yaml

from pipeline.config import from_dict
from pipeline.run import open_version
from schemas import dataset

DEFAULT = from_dict({})
STRICTER = from_dict({"filter": {"static_threshold": 0.05}, "output": {"resolution": 128}})


def test_same_config_resumes_and_another_makes_the_next_version(tmp_path):
    root = str(tmp_path / "ds")
    assert open_version(root, DEFAULT) == (f"{root}/v1", "new dataset")
    assert dataset.read_config(f"{root}/v1") == DEFAULT.content()
    with open(f"{root}/v1/config.yaml") as f:
        assert f.read() == DEFAULT.content_yaml()     # what a version is: its content only
    assert open_version(root, DEFAULT) == (f"{root}/v1", "same config: resuming")
    assert open_version(root, STRICTER) == (
        f"{root}/v2", "new version: config differs from v1 in filter.static_threshold "
        "0.004 -> 0.05, output.resolution 256 -> 128")
    assert open_version(root, DEFAULT) == (f"{root}/v1", "same config: resuming")
    assert open_version(root, STRICTER) == (f"{root}/v2", "same config: resuming")
    third = from_dict({"seed": 3})
    assert open_version(root, third) == (
        f"{root}/v3", "new version: config differs from v2 in filter.static_threshold "
        "0.05 -> 0.004, output.resolution 128 -> 256, seed 0 -> 3")
    assert sorted(os.listdir(root)) == ["v1", "v2", "v3"]


def test_other_execution_and_storage_settings_resume_the_same_version(tmp_path):
    root = str(tmp_path / "ds")
    open_version(root, DEFAULT)
    resourced = from_dict({"execution": {"tracker_actors": 4, "tracker_gpus": 1.0,
                                         "task_cpus": 0.25, "max_retries": 0,
                                         "unit_attempts": 1, "max_units_in_flight": 16,
                                         "decode_timeout_s": 30},
                           "storage": {"endpoint_url": "http://127.0.0.1:1"}})
    assert open_version(root, resourced) == (f"{root}/v1", "same config: resuming")
    assert os.listdir(root) == ["v1"]


def test_a_version_written_before_the_split_resumes(tmp_path):
    """A v1 of the code before `execution` existed stored ray:, track.num_* and
    decode.timeout_s in its config: it resumes whatever today's execution settings are."""
    root = str(tmp_path / "ds")
    old = DEFAULT.content()
    old["decode"]["timeout_s"] = 300.0
    old["track"].update(num_actors=1, num_gpus=0.0, num_cpus=0.5)
    old["ray"] = {"max_units_in_flight": 4, "task_cpus": 1.0, "max_retries": 3}
    dataset.create_version(root, old)
    more = from_dict({"execution": {"tracker_actors": 4, "max_units_in_flight": 16}})
    assert open_version(root, more) == (f"{root}/v1", "same config: resuming")
    assert open_version(root, STRICTER) == (
        f"{root}/v2", "new version: config differs from v1 in filter.static_threshold "
        "0.004 -> 0.05, output.resolution 256 -> 128")


def test_a_config_written_before_a_key_existed_still_matches(tmp_path):
    """A key added to the code since (with its default) does not make a new version."""
    root = str(tmp_path / "ds")
    old = DEFAULT.content()
    del old["decode"]["max_bytes"]
    dataset.create_version(root, old)
    assert open_version(root, DEFAULT) == (f"{root}/v1", "same config: resuming")


def test_tracker_options_are_content_and_a_version_without_them_still_matches(tmp_path):
    """`track.options` came after versions were written: one without it is the same config
    as today's default ({}); other options make a new version."""
    root = str(tmp_path / "ds")
    old = DEFAULT.content()
    del old["track"]["options"]
    dataset.create_version(root, old)
    assert open_version(root, DEFAULT) == (f"{root}/v1", "same config: resuming")
    wider = from_dict({"track": {"options": {"window": 15}}})
    assert open_version(root, wider) == (
        f"{root}/v2", "new version: config differs from v1 in track.options.window "
        "(not set) -> 15")


def test_a_config_todays_code_cannot_read_differs(tmp_path):
    root = str(tmp_path / "ds")
    dataset.create_version(root, {**DEFAULT.content(), "retired": 1})
    assert open_version(root, DEFAULT) == (
        f"{root}/v2", "new version: config differs from v1 in retired 1 -> (not set)")


def test_losing_the_race_to_a_builder_with_the_same_config_joins_its_version(tmp_path,
                                                                              monkeypatch):
    root = str(tmp_path / "ds")
    create = dataset.create_version

    def other_builder_first(root_, config):
        monkeypatch.setattr(dataset, "create_version", create)
        create(root_, config)                              # the other builder's v1
        raise dataset.VersionExists("taken")

    monkeypatch.setattr(dataset, "create_version", other_builder_first)
    assert open_version(root, DEFAULT) == (f"{root}/v1", "same config: resuming")
    assert os.listdir(root) == ["v1"]


def test_losing_the_race_to_a_builder_with_another_config_takes_the_next_number(
        tmp_path, monkeypatch):
    root = str(tmp_path / "ds")
    create = dataset.create_version

    def other_builder_first(root_, config):
        monkeypatch.setattr(dataset, "create_version", create)
        create(root_, STRICTER.content())
        raise dataset.VersionExists("taken")

    monkeypatch.setattr(dataset, "create_version", other_builder_first)
    path, why = open_version(root, DEFAULT)
    assert path == f"{root}/v2" and why.startswith("new version: config differs from v1 in ")
    assert dataset.read_config(f"{root}/v2") == DEFAULT.content()


def test_flat_layout_and_version_dirs_are_refused(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "config.yaml").write_text(yaml.safe_dump(DEFAULT.content()))
    with pytest.raises(dataset.DatasetError, match="flat layout of earlier builds"):
        open_version(str(flat), DEFAULT)
    assert os.listdir(flat) == ["config.yaml"]
    open_version(str(tmp_path / "ds"), DEFAULT)
    with pytest.raises(dataset.DatasetError, match="is one version of a dataset"):
        open_version(str(tmp_path / "ds" / "v1"), DEFAULT)
