"""Read shards back and check every sample (and its manifest) against the contract of its
schema version.

    python -m schemas.validate DATASET_DIR_OR_SHARD_DIR_OR_TAR [...]

A dataset directory (versions v1, v2, ...; see schemas.dataset) is checked version by version,
all of them; a version directory or any other directory is checked for its `*.tar`. Paths are
local paths or fsspec URLs (s3://bucket/pairs).
"""
from __future__ import annotations

import argparse
import io
import sys
import tarfile

import pyarrow.parquet as pq

from schemas import storage
from schemas.dataset import list_versions, version_name
from schemas.sample import SampleError
from schemas.shard import read_shard


def validate_shard(path: str) -> int:
    """Validate a shard and, if present, its pair manifest; return the sample count."""
    samples = read_shard(path)
    keys = [s.key for s in samples]
    if len(set(keys)) != len(keys):
        raise SampleError(f"{path}: duplicate keys")
    manifest = path[: -len(".tar")] + ".pairs.parquet"
    if storage.exists(manifest):
        table = pq.read_table(io.BytesIO(storage.read_bytes(manifest)))
        rows = {r["key"]: r for r in table.to_pylist()}
        if set(rows) != set(keys):
            raise SampleError(f"{path}: manifest keys differ from shard keys")
        for s in samples:
            row = rows[s.key]
            diff = [k for k, v in s.meta.items() if row.get(k) != v]
            if diff:
                raise SampleError(f"{s.key}: meta.json differs from manifest in {diff}")
    return len(samples)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("paths", nargs="+",
                    help="dataset directories, shard .tar files or directories holding them")
    args = ap.parse_args(argv)
    shards = []
    for p in args.paths:
        if not storage.isdir(p):
            shards.append(p)
            continue
        versions = list_versions(p)
        if versions:
            print(f"{p}: dataset of {len(versions)} version(s): "
                  + ", ".join(version_name(v) for v in versions))
        for d in versions or [p]:
            shards += [storage.join(d, n) for n in sorted(storage.list_files(d))
                       if n.endswith(".tar")]
    total, bad = 0, 0
    for shard in shards:
        try:
            n = validate_shard(shard)
            total += n
        except (SampleError, OSError, tarfile.TarError) as e:
            bad += 1
            print(f"INVALID {shard}: {e}", file=sys.stderr)
    print(f"{len(shards)} shards, {total} samples valid, {bad} shards invalid")
    return 1 if bad or not shards else 0


if __name__ == "__main__":
    sys.exit(main())
