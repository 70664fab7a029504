"""pipeline.dataset_info and `python -m jobs.dataset_info` on a hand-built dataset of two
versions with known contents (no Ray); bad directories with their exact outcome."""
from __future__ import annotations

import json
import os
import shutil

import fsspec
import pytest

from jobs.dataset_info import main as dataset_info_main
from pipeline.dataset_info import describe_dataset, format_dataset
from pipeline.plan import update_plan
from schemas import dataset
from tests.pipeline.test_report import UNITS, build_dataset

CONFIG_1 = {"seed": 0, "filter": {"static_threshold": 0.004}, "output": {"resolution": 64}}
CONFIG_2 = {"seed": 0, "filter": {"static_threshold": 0.05}, "output": {"resolution": 64}}


def file_sizes(directory, top_only=False):
    sizes = {}
    for root, _, names in os.walk(directory):
        for n in names:
            sizes[os.path.relpath(os.path.join(root, n), directory)] = \
                os.path.getsize(os.path.join(root, n))
        if top_only:
            break
    return sizes


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    """v1: UNITS (2 units, 8 videos, 6 pairs) planned as 3 units, the third not written yet;
    v2 (filter.static_threshold changed): the first unit of UNITS only."""
    root = str(tmp_path_factory.mktemp("info") / "ds")
    v1 = dataset.create_version(root, CONFIG_1)
    build_dataset(v1, units=UNITS)
    update_plan(v1, [f"/videos/{i}.mp4" for i in range(10)], videos_per_unit=4)
    v2 = dataset.create_version(root, CONFIG_2)
    build_dataset(v2, units=UNITS[:1])
    update_plan(v2, [f"/videos/{i}.mp4" for i in range(4)], videos_per_unit=4)
    return root


def test_describe_dataset(dataset_dir):
    info = describe_dataset(dataset_dir)
    assert info["dataset"] == dataset_dir and info["latest"] == "v2"
    v1, v2 = info["versions"]
    sizes_1, sizes_2 = file_sizes(f"{dataset_dir}/v1"), file_sizes(f"{dataset_dir}/v2")
    created = [dataset.read_version_info(f"{dataset_dir}/{v}")["created"] for v in ("v1", "v2")]
    assert v1 == {
        "name": "v1", "path": f"{dataset_dir}/v1", "created": created[0],
        "config_sha256": dataset.config_sha256(CONFIG_1),
        "shards": 2, "pairs": 6, "videos": 8,
        "status_kinds": {"ok": 3, "filtered": 3, "failed": 2},
        "status_reasons": {"failed:DecodeError": 1, "failed:EmptyFile": 1,
                           "filtered:camera-motion": 1, "filtered:static": 2, "ok": 3},
        "shard_bytes": sizes_1["pairs-000000.tar"] + sizes_1["pairs-000001.tar"],
        "total_bytes": sum(sizes_1.values()),
        "units": 3, "incomplete_units": ["pairs-000002"],
        "config_changes": None,
    }
    assert v2 == {
        "name": "v2", "path": f"{dataset_dir}/v2", "created": created[1],
        "config_sha256": dataset.config_sha256(CONFIG_2),
        "shards": 1, "pairs": 4, "videos": 4,
        "status_kinds": {"ok": 2, "filtered": 1, "failed": 1},
        "status_reasons": {"failed:DecodeError": 1, "filtered:static": 1, "ok": 2},
        "shard_bytes": sizes_2["pairs-000000.tar"], "total_bytes": sum(sizes_2.values()),
        "units": 1, "incomplete_units": [],
        "config_changes": [{"key": "filter.static_threshold", "old": 0.004, "new": 0.05}],
    }
    assert format_dataset(info).splitlines() == [
        f"dataset {dataset_dir}: 2 version(s), latest v2",
        f"v1: created {created[0]}",
        "  config: first version",
        f"  2 shards ({v1['shard_bytes']} bytes), 6 pairs, 8 videos; "
        f"{v1['total_bytes']} bytes in all",
        "  videos: failed:DecodeError 1, failed:EmptyFile 1, filtered:camera-motion 1, "
        "filtered:static 2, ok 3",
        "  units: 3, incomplete: 1 (pairs-000002)",
        f"v2 (latest): created {created[1]}",
        "  config: differs from v1 in filter.static_threshold 0.004 -> 0.05",
        f"  1 shards ({v2['shard_bytes']} bytes), 4 pairs, 4 videos; "
        f"{v2['total_bytes']} bytes in all",
        "  videos: failed:DecodeError 1, filtered:static 1, ok 2",
        "  units: 1, incomplete: none",
    ]


def test_temporary_files_of_unfinished_writes_are_not_counted(dataset_dir, tmp_path):
    copy = str(tmp_path / "ds")
    shutil.copytree(dataset_dir, copy)
    with open(f"{copy}/v2/.pairs-000001.tar.tmp-0123abcd", "wb") as f:
        f.write(b"x" * 1000)
    v2 = describe_dataset(copy)["versions"][1]
    assert (v2["shards"], v2["shard_bytes"]) == (1, describe_dataset(dataset_dir)[
        "versions"][1]["shard_bytes"])


def test_describe_an_fsspec_url(dataset_dir):
    fs = fsspec.filesystem("memory")
    if fs.exists("/info-test"):
        fs.rm("/info-test", recursive=True)
    fs.put(dataset_dir, "/info-test", recursive=True)
    local, remote = describe_dataset(dataset_dir), describe_dataset("memory://info-test")
    assert remote["latest"] == "v2"
    for a, b in zip(local["versions"], remote["versions"]):
        assert b["path"] == f"memory://info-test/{a['name']}"
        assert {k: v for k, v in a.items() if k != "path"} == \
            {k: v for k, v in b.items() if k != "path"}


def test_job_prints_text_and_json(dataset_dir, capsys):
    assert dataset_info_main([dataset_dir]) == 0
    assert capsys.readouterr().out == format_dataset(describe_dataset(dataset_dir)) + "\n"
    assert dataset_info_main([dataset_dir, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == describe_dataset(dataset_dir)


def test_job_refuses_what_is_no_dataset_directory(dataset_dir, tmp_path, capsys):
    missing = str(tmp_path / "missing")
    assert dataset_info_main([missing]) == 2
    assert capsys.readouterr().err == f"error: {missing} does not exist\n"
    assert dataset_info_main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path} is not a dataset directory: it "
                                       "holds no versions (v1/config.yaml, ...)\n")
    assert dataset_info_main([f"{dataset_dir}/v1"]) == 2
    assert capsys.readouterr().err == (f"error: {dataset_dir}/v1 is one version of a dataset: "
                                       f"pass the dataset directory {dataset_dir}\n")
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "config.yaml").write_text("seed: 0\n")
    assert dataset_info_main([str(flat)]) == 2
    assert "holds a dataset in the flat layout of earlier builds" in capsys.readouterr().err
