"""Load test of the drag-editing service: N edits sent by M concurrent clients over loopback,
against the same N edits sent one at a time, in the same run.

  python bench/serve.py [--url URL] [--checkpoints ROOT] [--requests 16] [--clients 4]
                        [--steps 4] [--candidates 1] [--max-batch-size 8] [--batch-wait-ms 20]
                        [--timeout-s 600]

Without --url it starts `python -m jobs.serve` on a free port (a local Ray; the tiny random
model unless --checkpoints) and stops it at the end. Each edit has its own seed and guidance.
Prints p50/p95 latency and edits/s for both modes and the batch sizes the replicas formed, and
checks that no request was lost and that every concurrent answer is the same request's answer
alone (to one level: a batch sums in another order). Exit status 1 when a check fails.
"""
from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from serve.client import edit  # noqa: E402

PHOTO = os.path.join(REPO, "tests", "fixtures", "dragbench", "animals",
                     "JH_2023-09-14-1823-59", "original_image.png")


def start_service(args) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "jobs.serve", "--port", str(port),
               "--max-batch-size", str(args.max_batch_size),
               "--batch-wait-ms", str(args.batch_wait_ms)]
    if args.checkpoints:
        command += ["--checkpoints", args.checkpoints]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            if requests.get(f"{url}/v1/health", timeout=2).status_code == 200:
                return proc, url
        except requests.RequestException:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("error: the service did not start (run python -m jobs.serve to see why)")


def percentile(values, q) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running service (default: start one)")
    ap.add_argument("--checkpoints", help="checkpoints root for the service it starts")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--candidates", type=int, default=1)
    ap.add_argument("--max-batch-size", type=int, default=8)
    ap.add_argument("--batch-wait-ms", type=float, default=20.0)
    ap.add_argument("--timeout-s", type=float, default=600.0, help="per request")
    args = ap.parse_args(argv)
    if args.requests < 1 or args.clients < 1:
        ap.error("--requests and --clients must be at least 1")

    proc, url = (None, args.url) if args.url else start_service(args)
    try:
        photo = np.asarray(Image.open(PHOTO).convert("RGB"))
        buf = io.BytesIO()
        Image.fromarray(photo).save(buf, format="PNG")
        image = buf.getvalue()
        asks = [dict(seed=i, guidance=2.0 + (i % 4), steps=args.steps,
                     candidates=args.candidates) for i in range(args.requests)]
        handles, targets = [[200.0, 220.0], [330.0, 260.0]], [[240.0, 230.0], [330.0, 220.0]]

        def one(i):
            started = time.perf_counter()
            answer = edit(url, image, handles, targets, timeout=args.timeout_s, **asks[i])
            return time.perf_counter() - started, answer

        one(0)   # warm-up: the first edit builds caches
        started = time.perf_counter()
        alone = [one(i) for i in range(args.requests)]
        alone_wall = time.perf_counter() - started
        formed_before = requests.get(f"{url}/v1/model", timeout=30).json()["batches_formed"]
        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            together = list(pool.map(one, range(args.requests)))
        together_wall = time.perf_counter() - started
        info = requests.get(f"{url}/v1/model", timeout=30).json()
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=120)

    formed = {int(k): v - formed_before.get(k, 0) for k, v in info["batches_formed"].items()}
    formed = {k: v for k, v in sorted(formed.items()) if v}
    problems = []
    for i, ((_, a), (_, b)) in enumerate(zip(alone, together)):
        if len(a["images"]) != args.candidates or len(b["images"]) != args.candidates:
            problems.append(f"request {i}: {len(b['images'])} images")
            continue
        for x, y in zip(a["images"], b["images"]):
            diff = np.abs(np.asarray(Image.open(io.BytesIO(x))).astype(int)
                          - np.asarray(Image.open(io.BytesIO(y))).astype(int)).max()
            if diff > 1:
                problems.append(f"request {i}: concurrent answer differs by {diff} levels")
    print(f"## Drag-editing service under load ({info['device']}, {info['dtype']}, model "
          f"resolution {info['resolution'][0]}, {args.steps} steps, {args.candidates} "
          f"candidate(s), batches of up to {info['batching']['max_batch_size']} waiting "
          f"{info['batching']['batch_wait_s'] * 1000:g} ms)\n")
    print("| mode | requests | p50 latency (s) | p95 latency (s) | edits/s |")
    print("| --- | --- | --- | --- | --- |")
    for name, rows, wall in (("one at a time", alone, alone_wall),
                             (f"{args.clients} concurrent clients", together, together_wall)):
        latencies = [t for t, _ in rows]
        print(f"| {name} | {len(rows)} | {percentile(latencies, 50):.3f} | "
              f"{percentile(latencies, 95):.3f} | {len(rows) / wall:.2f} |")
    print(f"\nbatches formed under load (size: count): {formed}")
    print(f"answers: {len(together)} of {args.requests}, "
          f"{'all equal to the requests alone' if not problems else '; '.join(problems)}")
    return 1 if problems or len(together) != args.requests else 0


if __name__ == "__main__":
    sys.exit(main())
