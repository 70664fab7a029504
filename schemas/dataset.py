"""The dataset layout: a dataset directory holds versions, each a complete pair dataset.

    DIR/v1/   config.yaml  version.json  _plan/units.jsonl  report/
              pairs-NNNNNN.tar  pairs-NNNNNN.pairs.parquet  pairs-NNNNNN.videos.parquet
    DIR/v2/   ... (another config)

A version is a directory `v<N>` (N = 1, 2, ...) holding `config.yaml`, the config every sample
in it was made with; `version.json` records its number, creation time and the config's hash.
The pipeline builds into the version whose config equals its own and creates the next version
otherwise, so one version never mixes samples of two configs and a build never touches a
version of another config. The trainer resolves a dataset directory to its latest version.

Creating a version is atomic on local disks: both files are written into a hidden temporary
directory that is then renamed to `v<N>`. A rename onto an existing non-empty directory fails,
so of two builders racing for `v<N>` one wins and the other gets VersionExists (and looks
again). Object stores have no directory rename: there the files are written in place,
config.yaml last, and a `v<N>` without config.yaml is not a version (numbering continues
after it); two builders must not create versions of one dataset on an object store at once.

Paths are local paths or fsspec URLs; the functions return paths in the form they were given.
"""
from __future__ import annotations

import datetime
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import uuid

import yaml
from fsspec.implementations.local import LocalFileSystem

from schemas.storage import join, publish, url_to_fs

CONFIG_FILE = "config.yaml"
VERSION_FILE = "version.json"
_VERSION_NAME = re.compile(r"^v([1-9][0-9]*)$")


class DatasetError(ValueError):
    """A path is not what the operation needs (not a dataset, the old flat layout, ...)."""


class VersionExists(DatasetError):
    """Another builder created the version this one was about to create."""


def version_name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _number(path: str) -> int | None:
    match = _VERSION_NAME.match(version_name(path))
    return int(match.group(1)) if match else None


def _numbered_dirs(root: str) -> list[tuple[int, str]]:
    """(N, path) of every `v<N>` directory in `root`, complete or not, by N."""
    fs, base = url_to_fs(root)
    if not fs.isdir(base):
        return []
    found = []
    for entry in fs.ls(base, detail=True):
        number = _number(entry["name"])
        if entry["type"] == "directory" and number is not None:
            found.append((number, join(root, version_name(entry["name"]))))
    return sorted(found)


def is_version(path: str) -> bool:
    """True if `path` is a version directory: named v<N> and holding config.yaml."""
    if _number(path) is None:
        return False
    fs, base = url_to_fs(path)
    return fs.isfile(join(base, CONFIG_FILE))


def list_versions(root: str) -> list[str]:
    """The versions of dataset directory `root`, oldest first ([] if it has none)."""
    return [path for _, path in _numbered_dirs(root) if is_version(path)]


def latest_version(root: str) -> str | None:
    versions = list_versions(root)
    return versions[-1] if versions else None


def is_flat_dataset(root: str) -> bool:
    """True for the flat layout of builds before versions: config.yaml directly in `root`,
    which is not itself a version."""
    fs, base = url_to_fs(root)
    return fs.isfile(join(base, CONFIG_FILE)) and not is_version(root)


def check_dataset_dir(root: str) -> None:
    """Raise DatasetError if `root` cannot be a dataset directory: a version directory, or a
    dataset in the flat layout (the message says how to move it into a version)."""
    d = root.rstrip("/")
    if is_version(root):
        raise DatasetError(f"{d} is one version of a dataset: pass the dataset directory "
                           f"{d.rsplit('/', 1)[0]}")
    if is_flat_dataset(root):
        raise DatasetError(
            f"{d} holds a dataset in the flat layout of earlier builds ({CONFIG_FILE} at its top "
            f"level); datasets are now versioned ({d}/v1, {d}/v2, ...). Move its files into "
            f"{d}/v1 (locally: mv {d} {d}.flat && mkdir {d} && mv {d}.flat {d}/v1) and rerun")


def resolve(path: str) -> str:
    """The data a user path means: a version directory is itself, a dataset directory is its
    latest version; anything else (a glob, a plain directory of shards, a file, a URL of
    either) is returned unchanged."""
    fs, base = url_to_fs(path)
    if glob.has_magic(base) or not fs.isdir(base) or is_version(path):
        return path
    return latest_version(path) or path


def read_config(version: str) -> dict:
    fs, base = url_to_fs(version)
    with fs.open(join(base, CONFIG_FILE), "r") as f:
        return yaml.safe_load(f) or {}


def read_version_info(version: str) -> dict:
    """version.json, or what can be known without it (a version moved in from the flat
    layout has none): {"version": N, "created": ISO time or None, "config_sha256": ...}."""
    fs, base = url_to_fs(version)
    path = join(base, VERSION_FILE)
    if not fs.isfile(path):
        return {"version": _number(version), "created": None,
                "config_sha256": config_sha256(read_config(version))}
    with fs.open(path, "r") as f:
        return json.load(f)


def config_sha256(config: dict) -> str:
    """A hash of a config mapping that does not depend on key order."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def create_version(root: str, config: dict) -> str:
    """Create the next version of dataset directory `root` (v1 for a new one), holding
    `config` as config.yaml and its version.json; return its path. Raises VersionExists if
    another builder created that version meanwhile (the caller looks again)."""
    fs, base = url_to_fs(root)
    fs.makedirs(base, exist_ok=True)
    # Incomplete v<N> directories count too, so a new version never lands in one.
    number = max((n for n, _ in _numbered_dirs(root)), default=0) + 1
    name = f"v{number}"
    info = {"version": number,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "config_sha256": config_sha256(config)}
    files = [(VERSION_FILE, (json.dumps(info, indent=2) + "\n").encode()),
             (CONFIG_FILE, yaml.safe_dump(config, sort_keys=True).encode())]  # marker last
    if isinstance(fs, LocalFileSystem):
        tmp = os.path.join(base, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
        os.makedirs(tmp)
        for file_name, data in files:
            with open(os.path.join(tmp, file_name), "wb") as f:
                f.write(data)
        try:
            os.rename(tmp, os.path.join(base, name))
        except OSError as e:
            shutil.rmtree(tmp)
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise VersionExists(f"{join(root, name)} was created by another builder") from e
            raise
    else:
        if fs.exists(join(base, name)):
            raise VersionExists(f"{join(root, name)} was created by another builder")
        for file_name, data in files:
            publish(join(root, f"{name}/{file_name}"), data)
    return join(root, name)


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_diff(old: dict, new: dict) -> list[dict]:
    """The dotted keys whose value differs between two configs, sorted:
    [{"key": "filter.static_threshold", "old": 0.004, "new": 0.05}, ...]; a key set on one
    side only has no "old" (or no "new")."""
    a, b = _flatten(old), _flatten(new)
    changes = []
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b or a[key] != b[key]:
            change = {"key": key}
            if key in a:
                change["old"] = a[key]
            if key in b:
                change["new"] = b[key]
            changes.append(change)
    return changes


def format_config_diff(changes: list[dict]) -> str:
    """'filter.static_threshold 0.004 -> 0.05, track.backend builtin -> cotracker'."""
    def show(change, side):
        if side not in change:
            return "(not set)"
        value = change[side]
        return value if isinstance(value, str) else json.dumps(value)
    return ", ".join(f"{c['key']} {show(c, 'old')} -> {show(c, 'new')}" for c in changes)
