"""schemas.dataset: the version layout (list, latest, resolve, create, races, the flat
layout), on local disk and an fsspec URL."""
from __future__ import annotations

import json
import os
import re

import fsspec
import pytest
import yaml

from schemas import dataset

CONFIG = {"seed": 0, "filter": {"static_threshold": 0.004, "min_size": 64},
          "sample": {"gap_s": [0.25, 1.0]}}


def make_version(root, name, config=CONFIG):
    os.makedirs(os.path.join(root, name))
    with open(os.path.join(root, name, "config.yaml"), "w") as f:
        yaml.safe_dump(config, f)
    return os.path.join(root, name)


def test_versions_are_listed_by_number_and_only_complete_ones(tmp_path):
    root = str(tmp_path / "ds")
    for name in ("v2", "v10", "v1"):
        make_version(root, name)
    os.makedirs(os.path.join(root, "v3"))                      # no config.yaml: not a version
    os.makedirs(os.path.join(root, ".v4.tmp-0123abcd"))        # an unfinished creation
    for name in ("v01", "vx", "report"):
        make_version(root, name)                               # not named v<N>
    open(os.path.join(root, "v5"), "w").close()                # a file
    assert dataset.list_versions(root) == [f"{root}/v1", f"{root}/v2", f"{root}/v10"]
    assert dataset.latest_version(root) == f"{root}/v10"
    assert dataset.list_versions(root + "/") == dataset.list_versions(root)
    assert dataset.list_versions(str(tmp_path / "missing")) == []
    assert dataset.latest_version(str(tmp_path)) is None
    assert dataset.is_version(f"{root}/v2") and not dataset.is_version(f"{root}/v3")
    assert not dataset.is_version(f"{root}/v01")


def test_resolve(tmp_path):
    root = str(tmp_path / "ds")
    make_version(root, "v1")
    make_version(root, "v2")
    shards = tmp_path / "plain"                               # shards without versions
    shards.mkdir()
    (shards / "pairs-000000.tar").write_bytes(b"")
    flat = str(tmp_path / "flat")
    make_version(str(tmp_path), "flat")                       # config.yaml at its top level
    assert dataset.resolve(root) == f"{root}/v2"              # dataset -> latest version
    assert dataset.resolve(root + "/") == f"{root}/v2"
    assert dataset.resolve(f"{root}/v1") == f"{root}/v1"      # a version is itself
    for same in (str(shards), str(shards / "*.tar"), str(shards / "pairs-000000.tar"),
                 str(tmp_path / "missing"), flat, f"{root}/v*/*.tar"):
        assert dataset.resolve(same) == same
    fs = fsspec.filesystem("memory")
    fs.pipe("/resolve-test/v1/config.yaml", b"seed: 0\n")
    fs.pipe("/resolve-test/v2/config.yaml", b"seed: 1\n")
    assert dataset.resolve("memory://resolve-test") == "memory://resolve-test/v2"
    assert dataset.resolve("memory://resolve-test/v1") == "memory://resolve-test/v1"


def test_create_version_writes_config_and_version_json_atomically(tmp_path):
    root = str(tmp_path / "new" / "ds")                      # parents are created
    v1 = dataset.create_version(root, CONFIG)
    assert v1 == f"{root}/v1"
    assert sorted(os.listdir(v1)) == ["config.yaml", "version.json"]
    assert dataset.read_config(v1) == CONFIG
    info = json.load(open(os.path.join(v1, "version.json")))
    assert set(info) == {"version", "created", "config_sha256"}
    assert info["version"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", info["created"])
    assert info["config_sha256"] == dataset.config_sha256(CONFIG)
    assert dataset.read_version_info(v1) == info
    os.makedirs(os.path.join(root, "v2"))     # a directory someone left without config.yaml
    assert dataset.create_version(root, {"seed": 1}) == f"{root}/v3"   # never lands in it
    assert sorted(os.listdir(root)) == ["v1", "v2", "v3"]    # no temporary directory left


def test_a_builder_losing_the_race_for_a_version_gets_version_exists(tmp_path, monkeypatch):
    root = str(tmp_path / "ds")
    v1 = make_version(root, "v1")
    before = open(os.path.join(v1, "config.yaml")).read()
    # This builder's view of the directory predates the other builder's v1.
    monkeypatch.setattr(dataset, "_numbered_dirs", lambda root: [])
    with pytest.raises(dataset.VersionExists, match=f"^{root}/v1 was created by another"):
        dataset.create_version(root, {"seed": 1})
    assert os.listdir(root) == ["v1"] and os.listdir(v1) == ["config.yaml"]
    assert open(os.path.join(v1, "config.yaml")).read() == before


def test_create_version_on_an_fsspec_url():
    fs = fsspec.filesystem("memory")
    if fs.exists("/create-test"):          # the memory filesystem lives as long as the process
        fs.rm("/create-test", recursive=True)
    assert dataset.create_version("memory://create-test", CONFIG) == "memory://create-test/v1"
    assert dataset.create_version("memory://create-test", {"seed": 1}) == \
        "memory://create-test/v2"
    assert dataset.list_versions("memory://create-test") == [
        "memory://create-test/v1", "memory://create-test/v2"]
    assert dataset.read_config("memory://create-test/v2") == {"seed": 1}
    assert json.loads(fs.cat("/create-test/v2/version.json"))["version"] == 2


def test_version_without_version_json_still_describes_itself(tmp_path):
    """A flat dataset moved into v1 by hand has no version.json."""
    v1 = make_version(str(tmp_path), "v1")
    assert dataset.read_version_info(v1) == {
        "version": 1, "created": None, "config_sha256": dataset.config_sha256(CONFIG)}


def test_config_sha256_ignores_key_order():
    shuffled = {"sample": {"gap_s": [0.25, 1.0]}, "filter": {"min_size": 64,
                "static_threshold": 0.004}, "seed": 0}
    assert dataset.config_sha256(shuffled) == dataset.config_sha256(CONFIG)
    assert dataset.config_sha256({**CONFIG, "seed": 1}) != dataset.config_sha256(CONFIG)


def test_flat_layout_and_version_dirs_are_no_dataset_dirs(tmp_path):
    flat = make_version(str(tmp_path), "pairs")
    assert dataset.is_flat_dataset(flat)
    with pytest.raises(dataset.DatasetError) as e:
        dataset.check_dataset_dir(flat + "/")
    assert str(e.value) == (
        f"{flat} holds a dataset in the flat layout of earlier builds (config.yaml at its top "
        f"level); datasets are now versioned ({flat}/v1, {flat}/v2, ...). Move its files into "
        f"{flat}/v1 (locally: mv {flat} {flat}.flat && mkdir {flat} && mv {flat}.flat "
        f"{flat}/v1) and rerun")
    v1 = make_version(str(tmp_path / "ds"), "v1")
    assert not dataset.is_flat_dataset(v1)
    with pytest.raises(dataset.DatasetError) as e:
        dataset.check_dataset_dir(v1)
    assert str(e.value) == f"{v1} is one version of a dataset: pass the dataset directory " \
        f"{tmp_path / 'ds'}"
    for fine in (str(tmp_path / "missing"), str(tmp_path), str(tmp_path / "ds")):
        dataset.check_dataset_dir(fine)


def test_config_diff():
    new = {"seed": 0, "filter": {"static_threshold": 0.05, "max_pixels": 10},
           "sample": {"gap_s": [0.5, 1.0]}, "track": {"backend": "cotracker"}}
    changes = dataset.config_diff(CONFIG, new)
    assert changes == [
        {"key": "filter.max_pixels", "new": 10},
        {"key": "filter.min_size", "old": 64},
        {"key": "filter.static_threshold", "old": 0.004, "new": 0.05},
        {"key": "sample.gap_s", "old": [0.25, 1.0], "new": [0.5, 1.0]},
        {"key": "track.backend", "new": "cotracker"},
    ]
    assert dataset.format_config_diff(changes) == (
        "filter.max_pixels (not set) -> 10, filter.min_size 64 -> (not set), "
        "filter.static_threshold 0.004 -> 0.05, sample.gap_s [0.25, 1.0] -> [0.5, 1.0], "
        "track.backend (not set) -> cotracker")
    assert dataset.config_diff(CONFIG, json.loads(json.dumps(CONFIG))) == []
