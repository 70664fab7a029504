"""Describe a pair dataset version by version.

  python -m jobs.dataset_info DIR [--json]

DIR is a dataset directory written by `python -m jobs.build_pairs --output DIR` (local path or
fsspec URL). For each version: creation time, config changes from the version before, shards,
pairs, videos by status and reason, bytes, incomplete units; and which version is the latest
(the one the trainer reads when given DIR). Exit status 2 if DIR is missing or no dataset
directory.
"""
from __future__ import annotations

import argparse
import json
import sys

from pipeline.dataset_info import describe_dataset, format_dataset
from schemas.dataset import DatasetError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.dataset_info", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", metavar="DIR", help="dataset directory (local path or URL)")
    ap.add_argument("--json", action="store_true", help="print the description as JSON")
    args = ap.parse_args(argv)
    try:
        info = describe_dataset(args.dataset)
    except (DatasetError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2) if args.json else format_dataset(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
