"""Work planning: list inputs, assign them to units, skip units already written.

A unit is either one input tar shard of videos or up to `videos_per_unit` video files; each
unit becomes one output shard `pairs-NNNNNN` (tar + two parquet manifests). Assignments are
persisted in `<output>/_plan/units.jsonl`, append-only: a rerun keeps every input in the unit
it was first given (so an interrupted run resumes into exactly the same shards) and groups
only inputs never seen before into new units (incremental rebuilds).
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass

import fsspec

from schemas import storage

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts",
                    ".flv", ".wmv", ".3gp")
TAR_EXTENSIONS = (".tar",)
PLAN_FILE = "_plan/units.jsonl"


@dataclass(frozen=True)
class Unit:
    name: str                   # output shard name, e.g. pairs-000007
    kind: str                   # "files" or "tar"
    inputs: tuple[str, ...]     # URIs; for "tar", the one tar shard


def video_id(uri: str) -> str:
    """Stable id of an input: a hash of its URI, not of its position in a listing."""
    return hashlib.sha256(uri.encode()).hexdigest()[:16]


def member_uri(tar_uri: str, member: str) -> str:
    return f"{tar_uri}#{member}"


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def _canonical_local(path: str) -> str:
    return os.path.abspath(path[len("file://"):] if path.startswith("file://") else path)


def _is_input(name: str) -> bool:
    return name.lower().endswith(VIDEO_EXTENSIONS + TAR_EXTENSIONS)


def resolve_inputs(specs: list[str]) -> list[str]:
    """Expand directories (recursively), globs, files and fsspec URLs into sorted unique URIs.

    A plain file path is kept even if it does not exist or has an odd extension: the user
    named it, so it gets a manifest row (failed:FileNotFoundError at worst). Directories and
    globs contribute only files with video or tar extensions.
    """
    found: set[str] = set()
    for spec in specs:
        if is_remote(spec):
            fs, _, paths = fsspec.get_fs_token_paths(spec)
            protocol = spec.split("://", 1)[0]
            for p in paths:
                if fs.isdir(p):
                    found.update(f"{protocol}://{q}" for q in fs.find(p) if _is_input(q))
                else:
                    found.add(f"{protocol}://{p}")
            continue
        local = _canonical_local(spec)
        if os.path.isdir(local):
            for root, _, names in os.walk(local):
                found.update(os.path.join(root, n) for n in names if _is_input(n))
        elif glob.has_magic(local):
            found.update(p for p in glob.glob(local, recursive=True)
                         if os.path.isfile(p) and _is_input(p))
        else:
            found.add(local)
    return sorted(found)


def _plan_text(output_dir: str) -> str:
    try:
        return storage.read_text(storage.join(output_dir, PLAN_FILE))
    except FileNotFoundError:
        return ""


def _parse_plan(text: str) -> list[Unit]:
    return [Unit(d["name"], d["kind"], tuple(d["inputs"]))
            for d in map(json.loads, text.splitlines())]


def _plan_line(unit: Unit) -> str:
    return json.dumps({"name": unit.name, "kind": unit.kind, "inputs": list(unit.inputs)}) + "\n"


def read_plan(output_dir: str) -> list[Unit]:
    return _parse_plan(_plan_text(output_dir))


def update_plan(output_dir: str, inputs: list[str], videos_per_unit: int) -> list[Unit]:
    """All units of the output (old and new), with new inputs grouped into new units. The plan
    is rewritten whole (object stores cannot append) as its old text plus the new lines."""
    text = _plan_text(output_dir)
    units = _parse_plan(text)
    known = {uri for u in units for uri in u.inputs}
    new = [uri for uri in inputs if uri not in known]
    tars = [u for u in new if u.lower().endswith(TAR_EXTENSIONS)]
    files = [u for u in new if not u.lower().endswith(TAR_EXTENSIONS)]
    groups = [("tar", (t,)) for t in tars] + [
        ("files", tuple(files[i:i + videos_per_unit]))
        for i in range(0, len(files), videos_per_unit)]
    added = [Unit(f"pairs-{len(units) + k:06d}", kind, group)
             for k, (kind, group) in enumerate(groups)]
    if added:
        storage.publish_text(storage.join(output_dir, PLAN_FILE),
                             text + "".join(map(_plan_line, added)))
    return units + added
