"""What a dataset directory holds, version by version (`python -m jobs.dataset_info`).

    describe_dataset(dataset_dir) -> dict     # JSON-serialisable
    format_dataset(info) -> str               # the same for a person

Counts come from the manifests (`*.pairs.parquet` rows, `*.videos.parquet` rows and their
status column), sizes from the file listing; nothing reads the shards. Local paths and fsspec
URLs.
"""
from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq

from pipeline.config import version_content
from pipeline.plan import read_plan
from pipeline.report import STATUS_KINDS, status_reason
from schemas import dataset, storage
from schemas.manifest import status_kind


def describe_version(version: str) -> dict:
    # Hidden files (the temporary files of unfinished writes) are not listed.
    top = storage.list_files(version)
    fs, base = storage.url_to_fs(version)
    shards = sorted(n for n in top if n.endswith(".tar"))
    pairs = 0
    for name in sorted(n for n in top if n.endswith(".pairs.parquet")):
        with fs.open(f"{base}/{name}", "rb") as f:
            pairs += pq.read_metadata(f).num_rows
    statuses = []
    for name in sorted(n for n in top if n.endswith(".videos.parquet")):
        with fs.open(f"{base}/{name}", "rb") as f:
            statuses += pq.read_table(f, columns=["status"]).column("status").to_pylist()
    kinds = Counter(map(status_kind, statuses))
    # A unit is complete once its video manifest exists (pipeline.writer writes it last).
    units = read_plan(version)
    incomplete = [u.name for u in units if f"{u.name}.videos.parquet" not in top]
    info = dataset.read_version_info(version)
    return {
        "name": dataset.version_name(version),
        "path": version,
        "created": info.get("created"),
        "config_sha256": info.get("config_sha256"),
        "shards": len(shards),
        "pairs": pairs,
        "videos": len(statuses),
        "status_kinds": {k: kinds[k] for k in STATUS_KINDS},
        "status_reasons": dict(sorted(Counter(map(status_reason, statuses)).items())),
        "shard_bytes": sum(top[n] for n in shards),
        "total_bytes": fs.du(base, total=True),
        "units": len(units),
        "incomplete_units": incomplete,
    }


def describe_dataset(dataset_dir: str) -> dict:
    """Every version of `dataset_dir`, oldest first, with its config changes from the version
    before. FileNotFoundError if the directory is missing, DatasetError if it is no dataset
    directory (the flat layout, a version directory, a directory without versions)."""
    if not storage.isdir(dataset_dir):
        raise FileNotFoundError(f"{dataset_dir} does not exist")
    dataset.check_dataset_dir(dataset_dir)
    versions = dataset.list_versions(dataset_dir)
    if not versions:
        raise dataset.DatasetError(f"{dataset_dir} is not a dataset directory: it holds no "
                                   f"versions (v1/{dataset.CONFIG_FILE}, ...)")
    described, previous = [], None
    for version in versions:
        config = version_content(version)
        entry = describe_version(version)
        entry["config_changes"] = (None if previous is None
                                   else dataset.config_diff(previous, config))
        described.append(entry)
        previous = config
    return {"dataset": dataset_dir, "latest": described[-1]["name"], "versions": described}


def format_dataset(info: dict) -> str:
    lines = [f"dataset {info['dataset']}: {len(info['versions'])} version(s), "
             f"latest {info['latest']}"]
    previous = None
    for v in info["versions"]:
        latest = " (latest)" if v["name"] == info["latest"] else ""
        if v["config_changes"] is None:
            config = "first version"
        elif v["config_changes"]:
            config = (f"differs from {previous} in "
                      + dataset.format_config_diff(v["config_changes"]))
        else:
            config = f"same as {previous}"
        incomplete = v["incomplete_units"]
        lines += [
            f"{v['name']}{latest}: created {v['created'] or 'unknown'}",
            f"  config: {config}",
            f"  {v['shards']} shards ({v['shard_bytes']} bytes), {v['pairs']} pairs, "
            f"{v['videos']} videos; {v['total_bytes']} bytes in all",
            "  videos: " + (", ".join(f"{r} {n}" for r, n in v["status_reasons"].items())
                            or "none"),
            f"  units: {v['units']}, incomplete: "
            + (f"{len(incomplete)} ({', '.join(incomplete)})" if incomplete else "none"),
        ]
        previous = v["name"]
    return "\n".join(lines)
