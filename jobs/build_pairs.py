"""Build a WebDataset of drag-editing pairs from videos, on Ray.

  python -m jobs.build_pairs --input VIDEOS [VIDEOS ...] --output DIR [--config YAML]
                             [--set section.key=value ...] [--ray-address ADDR]

DIR is a local path every Ray node shares or an fsspec URL (s3://bucket/pairs, gs://...); the
job refuses, before any work, an output some node cannot read back (memory://, a node-local
path on a multi-node cluster). Credentials come from the usual places (AWS_* variables,
~/.aws, GOOGLE_APPLICATION_CREDENTIALS) or the config's `storage` section.

VIDEOS are directories (searched recursively), globs, files or .tar shards of videos, local or
fsspec URLs. Without --ray-address (and without RAY_ADDRESS set) a local Ray is started.
The output DIR holds versions DIR/v1, DIR/v2, ...: a run builds into the version made with
exactly its config, resuming it (finished shards are kept, new inputs are added as new
shards), or else creates the next version; other versions are never touched. Exit status: 0
when every unit was written (inputs that fail or are filtered get manifest rows, they do not
fail the job), 1 when a unit failed after retries (or the report could not be written), 2 on
bad usage (a flat output directory of earlier builds, or an output not every node reaches,
included). The config's `execution` and `storage` sections may change between resubmits: a
dataset version is selected by the rest (its content).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from jobs import private_ray_on_loopback
from pipeline.config import ConfigError, load_config
from schemas.dataset import DatasetError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.build_pairs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", nargs="+", required=True, metavar="VIDEOS")
    ap.add_argument("--output", required=True,
                    help="dataset directory holding the versions (local path or URL)")
    ap.add_argument("--config", help="YAML config (see configs/pairs-default.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override one config value, e.g. --set output.resolution=512")
    ap.add_argument("--ray-address", help="join this Ray cluster instead of starting one")
    ap.add_argument("--no-report", action="store_true", help="skip the report")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    private_ray_on_loopback(args.ray_address)
    from pipeline.report import format_counts, write_report
    from pipeline.run import build

    try:
        cfg = load_config(args.config, args.set)
        stats = build(args.input, args.output, cfg, ray_address=args.ray_address)
    except (ConfigError, DatasetError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_stats = stats.as_dict()
    print("run: " + json.dumps(run_stats), file=sys.stderr)
    if not args.no_report:
        try:
            report = write_report(stats.version_dir, run_stats)
        except Exception as e:  # noqa: BLE001 - the shards are written; say what failed
            print(f"error: the dataset is written, but its report could not be: "
                  f"{type(e).__name__}: {e}; rerun the same command to write it", file=sys.stderr)
            return 1
        print(format_counts(report))
    if stats.units_failed:
        print(f"error: {len(stats.units_failed)} unit(s) failed: {stats.units_failed}; "
              "rerun the same command to retry them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
