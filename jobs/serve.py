"""Serve drag editing over HTTP on Ray Serve, with a browser UI (serve/app.py has the API).

  python -m jobs.serve [--checkpoints ROOT | --model-dir D --base D --ip-adapter D]
                       [--lcm | --lcm-lora FILE] [--vae D] [--fusion F]
                       [--ray-address ADDR] [--num-replicas N | --autoscaling MIN-MAX]
                       [--gpus-per-replica G]
                       [--cpus-per-replica C] [--host 127.0.0.1] [--port 8000]
                       [--device cpu|cuda] [--dtype fp32|fp16|bf16]
                       [--max-batch-size 8] [--batch-wait-ms 20]
                       [--max-upload-mb 16] [--max-pixels N]

Without checkpoints it serves a tiny random model (model.tiny, written to a temporary
directory): for trying the service and its UI, not for images. Ray: joins --ray-address or
$RAY_ADDRESS (which `ray job submit` sets), else starts a local one. The service binds to
127.0.0.1 unless --host says otherwise. Prints `serving http://HOST:PORT/` and runs until
interrupted (Ctrl-C, SIGTERM, `ray job stop`), then removes its application (and stops the Ray
it started). Under `ray job submit`, give the job time to do so:
`--runtime-env-json '{"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": "60"}}'` (Ray's default, 3 s,
may kill it first and leave the application serving).
Exit status: 0 stopped, 1 failure, 2 bad usage.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading

from jobs.edit import UsageError, add_checkpoint_arguments, positive_int
from model.options import DTYPE_NAMES

APP_NAME = "dragvid-edit"


def replica_range(text: str) -> tuple[int, int]:
    """"1-4" -> (1, 4)."""
    low, _, high = text.partition("-")
    try:
        low, high = int(low), int(high)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX, got {text!r}") from None
    if not 0 <= low <= high or high < 1:
        raise argparse.ArgumentTypeError(f"expected 0 <= MIN <= MAX and MAX >= 1, got {text!r}")
    return low, high


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m jobs.serve", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_checkpoint_arguments(ap)
    ap.add_argument("--lcm", action="store_true",
                    help="fuse the checkpoints root's LCM-LoRA (LCM sampling, 8 steps)")
    run = ap.add_argument_group("where it runs")
    run.add_argument("--ray-address", help="join this cluster (default: $RAY_ADDRESS, else a "
                                           "local Ray)")
    run.add_argument("--num-replicas", type=positive_int, help="replicas (default 1)")
    run.add_argument("--autoscaling", type=replica_range, metavar="MIN-MAX",
                     help="scale between MIN and MAX replicas by the requests in flight "
                          "(a replica's target: --max-batch-size)")
    run.add_argument("--gpus-per-replica", type=float, default=0.0)
    run.add_argument("--cpus-per-replica", type=float, default=1.0)
    run.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--device", choices=("cpu", "cuda"),
                     help="default: cuda with --gpus-per-replica, else cpu")
    run.add_argument("--dtype", choices=DTYPE_NAMES,
                     help="default: fp16 on cuda, fp32 on cpu")
    lim = ap.add_argument_group("batching and limits")
    lim.add_argument("--max-batch-size", type=positive_int, default=8,
                     help="edits batched on a replica at most (default 8)")
    lim.add_argument("--batch-wait-ms", type=float, default=20.0,
                     help="how long a replica waits to fill a batch (default 20)")
    lim.add_argument("--max-upload-mb", type=float, default=16.0,
                     help="largest image or mask upload (default 16)")
    lim.add_argument("--max-pixels", type=positive_int, default=4096 * 4096,
                     help="largest image, width x height (default 4096x4096)")
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        with tempfile.TemporaryDirectory(prefix="serve-") as scratch:
            return run(args, scratch)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def model_paths(args, scratch: str) -> dict:
    """The checkpoints to serve, or a tiny random model's written into `scratch`."""
    from jobs.edit import checkpoint_paths

    given = (args.checkpoints, args.model_dir, args.base, args.ip_adapter)
    if not any(given):
        from model.layout import resolve_paths
        from model.tiny import save_tiny_checkpoints

        save_tiny_checkpoints(scratch, seed=0)
        print(f"no checkpoints given: serving a tiny random model ({scratch})", file=sys.stderr)
        return resolve_paths(scratch, lcm=args.lcm, lcm_lora=args.lcm_lora)
    args.scheduler = "lcm" if args.lcm else None   # what checkpoint_paths reads
    return checkpoint_paths(args)


def run(args, scratch: str) -> int:
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: expected 1..65535")
    if args.gpus_per_replica < 0 or args.cpus_per_replica < 0:
        raise UsageError("--gpus-per-replica and --cpus-per-replica must be >= 0")
    if args.num_replicas and args.autoscaling:
        raise UsageError("--num-replicas and --autoscaling: give one")
    if args.device == "cuda" and args.gpus_per_replica == 0:
        raise UsageError("--device cuda needs --gpus-per-replica > 0 (the replicas' GPUs)")
    paths = model_paths(args, scratch)
    device = args.device or ("cuda" if args.gpus_per_replica > 0 else "cpu")
    dtype = args.dtype or ("fp16" if device == "cuda" else "fp32")

    import ray
    from ray import serve as ray_serve

    import model
    import schemas
    import serve
    from schemas.ray_runtime import init_ray
    from serve.app import build_app

    started_ray = not (args.ray_address or os.environ.get("RAY_ADDRESS"))
    logging.getLogger("jobs.serve").info("ray: %s", init_ray(args.ray_address,
                                                            (serve, model, schemas)))
    ray_serve.start(http_options={"host": args.host, "port": args.port})
    autoscaling = None if not args.autoscaling else {
        "min_replicas": args.autoscaling[0], "max_replicas": args.autoscaling[1],
        "target_ongoing_requests": args.max_batch_size}
    limits = {"max_upload_bytes": int(args.max_upload_mb * (1 << 20)),
              "max_pixels": args.max_pixels}
    ray_serve.run(build_app(paths, device=device, dtype=dtype, fusion=args.fusion,
                            limits=limits, max_batch_size=args.max_batch_size,
                            batch_wait_s=args.batch_wait_ms / 1000,
                            num_replicas=args.num_replicas or 1, autoscaling=autoscaling,
                            gpus_per_replica=args.gpus_per_replica,
                            cpus_per_replica=args.cpus_per_replica),
                  name=APP_NAME, route_prefix="/")
    replicas = "{}-{} replicas".format(*args.autoscaling) if args.autoscaling else \
        f"{args.num_replicas or 1} replica(s)"
    print(f"serving http://{args.host}:{args.port}/ (API docs: /docs; {replicas}, {device} "
          f"{dtype})", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    ray_serve.delete(APP_NAME)
    if started_ray:
        ray_serve.shutdown()
        ray.shutdown()
    print("stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
