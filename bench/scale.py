"""Benchmark: the data engine driver's cost as the input collection grows, with no decoding.

  python bench/scale.py [--sizes 10000,100000,1000000] [--units 200,1000,3000] [--quick]
                        [--plan-units 100000] [--rounds 3] [--ray-rounds 3] [--in-flight 16]
                        [--local-max 100000] [--only planning,planfile,ray]

Nothing is decoded and no video bytes exist: this measures what the driver of
`pipeline.run.build` does on its own as the collection grows. Every table compares against a
baseline measured in the same run (the machine is noisy); everything prints as markdown.

1. Planning N inputs, as `build` does before any Ray work: `resolve_inputs` on a listing,
   `update_plan` into an empty output directory (writes `_plan/units.jsonl`, 8 videos per
   unit, the default), `complete_units` (one listing of the output) and the `todo` filter.
   Two listings:
     local  a real temporary directory of N empty `.mp4` files (1000 per subdirectory), for N
            up to --local-max; resolve_inputs walks it with os.walk.
     synth  a fake fsspec filesystem registered as `synthbench://` whose `find` returns N
            synthetic names: resolve_inputs's URL code path (what an s3:// or gs:// bucket
            goes through), without a network. Used at every size, so one code path spans
            the whole range of sizes.
   Baseline: the bare listing of the same inputs (os.walk collecting the paths; fs.find).
   Each measurement runs in a fresh child process (`bench/scale.py --child SPEC`), so its
   peak memory is its own: VmHWM from /proc (the peak of the child's own address space),
   with ru_maxrss alongside. Both sides import the same modules first (`pipeline.writer`
   imports webdataset, which imports torch), so "over imports" is what planning itself holds.
   Rounds alternate which side goes first; tables give the median (min-max). A diagnostic
   in the same child, after planning, times resolve_inputs's dedupe (a set) and its sort (of
   URIs in hash order) apart, against a sort of the same URIs presorted per directory.
2. The plan file at --plan-units units (8 inputs each): `read_plan`, `update_plan` adding one
   new input (an incremental rebuild: it keeps the old file's text and appends the new
   unit's line), `update_plan` with nothing new (a resume), against reading the file with
   plain `json.loads` per line; plus, in the same rounds, one new input added the previous
   way (`previous_update_plan`: what update_plan did before the fix, re-serializing every
   unit with `dataclasses.asdict`; it publishes the same bytes, which is checked). Then a
   resume of a finished output (every unit's three files present, in one directory):
   `complete_units` + `todo` (one `storage.list_names`: locally an `os.scandir` with no stat
   per file), and the whole pre-Ray planning of a resume, against `os.listdir` of the
   output; plus the previous way, the names from `storage.list_files` (`fs.ls(detail=True)`,
   a stat per file; on URLs list_names still lists this way).
3. The Ray driver with no-op stages: `pipeline.run.run_stages` with a stage list shaped like
   `PAIR_STAGES` (prepare tasks -> a pool of one tracker actor -> finish tasks) whose stages
   do nothing, on a private local Ray (2 CPUs; every stage takes 0.25 CPU), against the
   same number of bare no-op round trips: per unit prepare -> track -> finish chained by object
   refs, the same bound on units in flight, and no driver logic. Both sides pass the same
   arguments, as `run_stages` does: the unit, earlier outputs by reference, and a reference to
   the run context (config and output directory) put in the object store once per run
   (`ray.put`). A third side, the same bare round trips with the run context
   pickled into every call (the previous way), shows what the reference saves. Reported: wall
   time and the driver process's CPU time per unit, the slope of a least-squares line through
   the median wall time per unit count (the per-unit cost, without the fixed cost of starting
   the tracker actor), and the marginal cost per unit between consecutive counts (flat if
   nothing grows with the number of units).
4. Growth: the exponent b of time ~ N^b (least squares on log-log) of each series, and a
   projection to 10M inputs (time: per-input cost at the largest size, and the fitted power;
   memory: the import floor plus the per-input memory at the largest size).

Goals (the issue): planning 1M inputs in under 60 s and 2 GiB of driver memory; driver
overhead under 5 ms per unit; nothing super-linear.

Temporary files go under one directory in $TMPDIR, removed at the end. Appends nothing to
RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import math
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
# Run as a script, this file's directory comes first on sys.path and bench/pipeline.py would
# shadow the `pipeline` package: put the repository root there instead.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import fsspec  # noqa: E402
from fsspec import AbstractFileSystem  # noqa: E402

VIDEOS_PER_UNIT = 8
PER_DIR = 1000
SYNTH = "synthbench"
SYNTH_ROOT = "bucket/videos"
PROJECT_TO = 10_000_000


# --------------------------------------------------------------------------------------
# Inputs


def clip_name(i: int) -> str:
    return f"shard-{i // PER_DIR:05d}/clip-{i:08d}.mp4"


class SynthFS(AbstractFileSystem):
    """A bucket of N video names and nothing else (N from $SCALE_SYNTH_N): `find` of any path
    lists them all under it, like an object store's recursive listing."""

    protocol = SYNTH
    root_marker = ""

    def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
        n = int(os.environ["SCALE_SYNTH_N"])
        root = self._strip_protocol(path).rstrip("/")
        names = [f"{root}/{clip_name(i)}" for i in range(n)]
        return {p: {"name": p, "size": 0, "type": "file"} for p in names} if detail else names

    def isdir(self, path):
        return True

    def ls(self, path, detail=True, **kwargs):
        return []


fsspec.register_implementation(SYNTH, SynthFS, clobber=True)


def make_local_tree(root: str, n: int) -> float:
    """n empty .mp4 files under root; returns the seconds it took."""
    t = time.perf_counter()
    for i in range(n):
        path = os.path.join(root, clip_name(i))
        if i % PER_DIR == 0:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
    return time.perf_counter() - t


# --------------------------------------------------------------------------------------
# Child processes: one measurement each, printed as one JSON line


def proc_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _memory() -> dict:
    return dict(vmhwm_kib=proc_kib("VmHWM"),
                ru_maxrss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def listing_groups(source: str, path: str | None) -> list[tuple[str, list[str]]]:
    """(prefix, names) per directory, in the order the listing yields them: os.walk's
    (root, names), or one group of fs.find's names under the protocol prefix."""
    if source == "local":
        return [(root, names) for root, _, names in os.walk(path)]
    return [(f"{SYNTH}://", fsspec.filesystem(SYNTH).find(SYNTH_ROOT))]


def dedupe_as_resolve(source, groups) -> set[str]:
    """The URIs deduped as resolve_inputs does: into a set (which it then sorts)."""
    join = os.path.join if source == "local" else str.__add__
    found = set()
    for root, names in groups:
        found.update(join(root, n) for n in names)
    return found


def dedupe_presorted(source, groups) -> dict:
    """The same, deduped in order (dict.fromkeys) after sorting each directory's names and the
    directories: what the final sort then sees is (nearly) sorted, which Timsort does in one
    pass."""
    join = os.path.join if source == "local" else str.__add__
    found: dict = {}
    for root, names in sorted(groups):
        found.update(dict.fromkeys(join(root, n) for n in sorted(names)))
    return found


def child_listing_or_planning(spec: dict) -> dict:
    from pipeline import plan
    from pipeline.writer import complete_units

    after_imports = proc_kib("VmRSS")
    n, source = spec["n"], spec["source"]
    os.environ["SCALE_SYNTH_N"] = str(n)
    out = {"after_imports_kib": after_imports}
    if spec["kind"] == "listing":
        t = time.perf_counter()
        if source == "local":
            found = []
            for root, _, names in os.walk(spec["path"]):
                found += [os.path.join(root, name) for name in names]
        else:
            found = fsspec.filesystem(SYNTH).find(SYNTH_ROOT)
        out.update(total_s=time.perf_counter() - t, inputs=len(found))
    else:
        target = spec["path"] if source == "local" else f"{SYNTH}://{SYNTH_ROOT}"
        output_dir = tempfile.mkdtemp(prefix="out-", dir=spec["tmp"])
        try:
            t0 = time.perf_counter()
            uris = plan.resolve_inputs([target])
            t1 = time.perf_counter()
            units = plan.update_plan(output_dir, uris, VIDEOS_PER_UNIT)
            t2 = time.perf_counter()
            complete = complete_units(output_dir)
            todo = [u for u in units if u.name not in complete]
            t3 = time.perf_counter()
            plan_bytes = os.path.getsize(os.path.join(output_dir, plan.PLAN_FILE))
            out_units, out_todo = len(units), len(todo)
        finally:
            shutil.rmtree(output_dir, ignore_errors=True)
        out.update(_memory())   # the peak of planning, before the diagnostic below
        # Diagnostic: resolve_inputs's dedupe and sort, timed apart, as it does them (a set;
        # the sort sees hash order) and presorted (see dedupe_presorted).
        del units, todo
        groups = listing_groups(source, spec["path"])
        diag = {}
        for key, dedupe in (("set", dedupe_as_resolve), ("presorted", dedupe_presorted)):
            t = time.perf_counter()
            found = dedupe(source, groups)
            deduped = time.perf_counter()
            ordered = sorted(found)
            diag[f"{key}_dedupe_s"] = deduped - t
            diag[f"{key}_sort_s"] = time.perf_counter() - deduped
            assert ordered == uris
            del found, ordered
        out.update(total_s=t3 - t0, resolve_s=t1 - t0, update_s=t2 - t1, complete_s=t3 - t2,
                   inputs=len(uris), units=out_units, todo=out_todo, plan_bytes=plan_bytes,
                   **diag)
        return out
    out.update(_memory())
    return out


def previous_update_plan(output_dir: str, inputs: list[str], videos_per_unit: int):
    """`plan.update_plan` as it was before the fix, kept here to show what the fix saved: it
    parsed the plan, then re-serialized every unit, old and new, with `dataclasses.asdict`
    (a deep copy of every field) and published the whole file. Same bytes as update_plan."""
    import dataclasses

    from pipeline import plan
    from schemas import storage

    units = plan.read_plan(output_dir)
    known = {uri for u in units for uri in u.inputs}
    new = [uri for uri in inputs if uri not in known]
    tars = [u for u in new if u.lower().endswith(plan.TAR_EXTENSIONS)]
    files = [u for u in new if not u.lower().endswith(plan.TAR_EXTENSIONS)]
    groups = [("tar", (t,)) for t in tars] + [
        ("files", tuple(files[i:i + videos_per_unit]))
        for i in range(0, len(files), videos_per_unit)]
    added = [plan.Unit(f"pairs-{len(units) + k:06d}", kind, group)
             for k, (kind, group) in enumerate(groups)]
    if added:
        lines = "".join(json.dumps(dataclasses.asdict(u)) + "\n" for u in units + added)
        storage.publish_text(storage.join(output_dir, plan.PLAN_FILE), lines)
    return units + added


def previous_complete_units(output_dir: str) -> set[str]:
    """`complete_units` as it was before the fix: the names of `storage.list_files`, which
    lists with `fs.ls(detail=True)` (a stat and an info dict per file)."""
    from pipeline.writer import VIDEO_MANIFEST
    from schemas import storage

    return {name[:-len(VIDEO_MANIFEST)] for name in storage.list_files(output_dir)
            if name.endswith(VIDEO_MANIFEST)}


def child_planfile(spec: dict) -> dict:
    """read_plan / update_plan on a plan of spec['units'] units, against plain json.loads."""
    from pipeline import plan
    from pipeline.writer import complete_units

    n_units, rounds = spec["units"], spec["rounds"]
    output_dir = tempfile.mkdtemp(prefix="planfile-", dir=spec["tmp"])
    path = os.path.join(output_dir, plan.PLAN_FILE)
    inputs = [f"/data/videos/{clip_name(i)}" for i in range(n_units * VIDEOS_PER_UNIT)]
    res = {k: [] for k in ("json_s", "read_s", "add1_s", "add1_previous_s", "add0_s")}

    def plan_text() -> str:
        with open(path) as f:
            return f.read()

    try:
        t = time.perf_counter()
        units = plan.update_plan(output_dir, inputs, VIDEOS_PER_UNIT)
        res["initial_s"] = time.perf_counter() - t
        res["units"], res["inputs"] = len(units), len(inputs)
        res["plan_bytes"] = os.path.getsize(path)
        for r in range(rounds):
            order = ("json", "read") if r % 2 == 0 else ("read", "json")
            for side in order:
                t = time.perf_counter()
                if side == "json":
                    with open(path) as f:
                        rows = [json.loads(line) for line in f]
                    assert len(rows) >= n_units
                    del rows
                else:
                    assert len(plan.read_plan(output_dir)) >= n_units
                res[f"{side}_s"].append(time.perf_counter() - t)
            # One new input each way (each a new unit): the fix appends its line to the old
            # text, the previous way re-serializes every unit. Both must publish old + 1 line.
            order = ("add1", "add1_previous") if r % 2 == 0 else ("add1_previous", "add1")
            for side in order:
                before = plan_text()
                inputs.append(f"/data/new/{side}-{r}.mp4")
                update = plan.update_plan if side == "add1" else previous_update_plan
                t = time.perf_counter()
                units = update(output_dir, inputs, VIDEOS_PER_UNIT)
                res[f"{side}_s"].append(time.perf_counter() - t)
                assert plan_text() == before + plan._plan_line(units[-1]), side
                del before
            t = time.perf_counter()
            assert len(plan.update_plan(output_dir, inputs, VIDEOS_PER_UNIT)) == len(units)
            res["add0_s"].append(time.perf_counter() - t)
        # A resume: every unit complete (tar, pair and video manifests, as write_unit leaves
        # them). complete_units lists the output once; baseline: the names alone (os.listdir).
        t = time.perf_counter()
        for u in units:
            for ext in (".tar", ".pairs.parquet", ".videos.parquet"):
                os.close(os.open(os.path.join(output_dir, u.name + ext),
                                 os.O_CREAT | os.O_WRONLY, 0o644))
        res["make_outputs_s"] = time.perf_counter() - t
        res["output_files"] = 3 * len(units)
        for key in ("listdir_s", "complete_s", "complete_previous_s", "resume_s"):
            res[key] = []
        for r in range(rounds):
            order = ("listdir", "complete", "complete_previous", "resume")
            for side in order if r % 2 == 0 else reversed(order):
                t = time.perf_counter()
                if side == "listdir":
                    assert len(os.listdir(output_dir)) > 3 * len(units)
                elif side in ("complete", "complete_previous"):
                    complete = (complete_units if side == "complete"
                                else previous_complete_units)(output_dir)
                    assert not [u for u in units if u.name not in complete]
                else:   # what build does before Ray on a finished output
                    resumed = plan.update_plan(output_dir, inputs, VIDEOS_PER_UNIT)
                    complete = complete_units(output_dir)
                    assert not [u for u in resumed if u.name not in complete]
                res[f"{side}_s"].append(time.perf_counter() - t)
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
    res.update(_memory())
    return res


def run_child(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------
# 1. Planning vs the bare listing


def bench_planning(sizes, local_max, rounds, tmp) -> list[dict]:
    rows = []
    for n in sizes:
        sources = (["local"] if n <= local_max else []) + ["synth"]
        for source in sources:
            path = None
            made_s = None
            if source == "local":
                path = tempfile.mkdtemp(prefix=f"inputs-{n}-", dir=tmp)
                made_s = make_local_tree(path, n)
                sum(len(names) for _, _, names in os.walk(path))   # warm the dentry cache
            try:
                res = {"listing": [], "planning": []}
                for r in range(rounds):
                    order = ("listing", "planning") if r % 2 == 0 else ("planning", "listing")
                    for kind in order:
                        res[kind].append(run_child(dict(kind=kind, source=source, n=n,
                                                        path=path, tmp=tmp)))
            finally:
                if path:
                    shutil.rmtree(path, ignore_errors=True)
            planning = res["planning"]
            assert all(p["inputs"] == n and p["todo"] == math.ceil(n / VIDEOS_PER_UNIT)
                       for p in planning), planning
            row = dict(n=n, source=source, made_s=made_s, units=planning[0]["units"],
                       plan_bytes=planning[0]["plan_bytes"],
                       listing_s=[x["total_s"] for x in res["listing"]],
                       planning_s=[x["total_s"] for x in planning],
                       resolve_s=[x["resolve_s"] for x in planning],
                       update_s=[x["update_s"] for x in planning],
                       complete_s=[x["complete_s"] for x in planning],
                       **{k: [x[k] for x in planning] for k in (
                           "set_dedupe_s", "set_sort_s", "presorted_dedupe_s",
                           "presorted_sort_s")},
                       imports_kib=med([x["after_imports_kib"] for x in planning]),
                       listing_hwm_kib=max(x["vmhwm_kib"] for x in res["listing"]),
                       planning_hwm_kib=max(x["vmhwm_kib"] for x in planning),
                       planning_maxrss_kib=max(x["ru_maxrss_kib"] for x in planning))
            rows.append(row)
            print(f"planning {source} {n}: listing {med(row['listing_s']):.3f} s, planning "
                  f"{med(row['planning_s']):.3f} s, peak {row['planning_hwm_kib'] / 1024:.0f} MiB",
                  file=sys.stderr, flush=True)
    return rows


# --------------------------------------------------------------------------------------
# 3. The Ray driver with no-op stages vs bare round trips


def noop_stages():
    """The driver's side: a stage list shaped like PAIR_STAGES (prepare tasks, a tracker actor
    pool, finish tasks; resources from the config's execution section) whose stages do
    nothing. Defined here, in a function, so Ray pickles them by value."""
    from pipeline.stages import Resources, Stage

    class NoopPrepare(Stage):
        name, writes = "prepare", "videos"

        @staticmethod
        def resources(execution):
            return Resources(cpus=execution.task_cpus)

        def process(self, ctx, unit):
            return [None] * len(unit.inputs)

        def count(self, videos):
            return 1

    class NoopTrack(Stage):
        name, reads, writes, skip_empty = "track", ("videos",), "tracks", True

        @staticmethod
        def resources(execution):
            return Resources(cpus=execution.tracker_cpus, actors=execution.tracker_actors)

        def process(self, ctx, unit, videos):
            return None, None, "noop", "0"

    class NoopFinish(Stage):
        name, reads, writes = "finish", ("videos", "tracks"), "rows"

        @staticmethod
        def resources(execution):
            return Resources(cpus=execution.task_cpus)

        def process(self, ctx, unit, videos, tracks):
            return noop_rows(unit)

    return NoopPrepare, NoopTrack, NoopFinish


def noop_rows(unit) -> list[dict]:
    return [dict(num_pairs=1 if i == 0 else 0, decoded_frames=0,
                 status="ok" if i == 0 else "filtered:static") for i in range(len(unit.inputs))]


def bare_remotes(cpus: float):
    """The bare side: plain Ray remote functions and an actor doing nothing, called with the
    arguments the driver passes (the run context, the unit, the refs of earlier outputs)."""
    import ray

    @ray.remote(num_cpus=cpus, num_returns=2)
    def prepare(ctx, unit):
        return [None] * len(unit.inputs), (1, ray.get_runtime_context().get_node_id())

    @ray.remote(num_cpus=cpus)
    def finish(ctx, unit, prepared, tracked):
        return noop_rows(unit)

    @ray.remote(num_cpus=cpus)
    class TrackerActor:
        def __init__(self, ctx):
            pass

        def track(self, ctx, unit, prepared):
            return None, None, "noop", "0"

    return prepare, finish, TrackerActor


def bare_round_trips(units, cfg, remotes, output_dir, in_flight: int, by_ref=True) -> int:
    """3 remote calls per unit chained by refs, at most in_flight units at once; no logic.
    The run context (config and output directory) goes as `run_stages` passes it, a
    reference put once per run (by_ref), or pickled into every call (the previous way)."""
    import ray

    from pipeline.stages import RunContext

    prepare, finish, TrackerActor = remotes
    ctx = RunContext(cfg, output_dir)
    ctx_arg = ray.put(ctx) if by_ref else ctx
    actor = TrackerActor.remote(ctx)   # by value, as run_stages creates its actors
    pending, inflight, done = list(reversed(units)), [], 0
    while pending or inflight:
        while pending and len(inflight) < in_flight:
            unit = pending.pop()
            prepared, _ = prepare.remote(ctx_arg, unit)
            tracked = actor.track.remote(ctx_arg, unit, prepared)
            inflight.append(finish.remote(ctx_arg, unit, prepared, tracked))
        [ref], inflight = ray.wait(inflight, num_returns=1)
        done += len(ray.get(ref)) > 0
    return done


def run_driver(units, cfg, stages, output_dir) -> int:
    from pipeline.run import RunStats, run_stages

    stats = RunStats(units_total=len(units))
    run_stages(stages, units, output_dir, cfg, stats, lambda msg: None)
    assert stats.units_done == len(units) and not stats.units_failed, stats
    assert stats.pairs == len(units) and stats.videos == len(units) * VIDEOS_PER_UNIT
    return stats.units_done


SIDES = ("bare", "driver", "bare_value")   # bare_value: the config pickled into every call


def bench_ray(unit_counts, rounds, in_flight, tmp) -> dict:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import pickle

    import ray

    from pipeline.config import from_dict
    from pipeline.plan import Unit
    from pipeline.stages import RunContext

    cpus = 0.25
    cfg = from_dict({"execution": {"max_units_in_flight": in_flight, "task_cpus": cpus,
                                   "tracker_cpus": cpus, "tracker_actors": 1}})
    output_dir = os.path.join(tmp, "ray-out")   # the no-op finish writes nothing

    def units_of(n):
        return [Unit(f"pairs-{i:06d}", "files",
                     tuple(f"/data/videos/{clip_name(i * VIDEOS_PER_UNIT + k)}"
                           for k in range(VIDEOS_PER_UNIT))) for i in range(n)]

    t = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    start_s = time.perf_counter() - t
    result = dict(ray_start_s=start_s, cpus=cpus, in_flight=in_flight,
                  cfg_pickle_bytes=len(pickle.dumps(RunContext(cfg, output_dir))),
                  unit_pickle_bytes=len(pickle.dumps(units_of(1)[0])), runs=[])
    def run_side(side, units):
        if side == "driver":
            return run_driver(units, cfg, stages, output_dir)
        return bare_round_trips(units, cfg, remotes, output_dir, in_flight,
                                by_ref=side == "bare")

    try:
        stages, remotes = noop_stages(), bare_remotes(cpus)
        warm = units_of(max(50, 4 * in_flight))
        for side in SIDES:  # untimed: starts the worker processes
            run_side(side, warm)
        for n in unit_counts:
            units = units_of(n)
            for r in range(rounds):
                for side in SIDES[r % 3:] + SIDES[:r % 3]:   # each side first in turn
                    c, t = time.process_time(), time.perf_counter()
                    done = run_side(side, units)
                    wall, cpu = time.perf_counter() - t, time.process_time() - c
                    assert done == n
                    result["runs"].append(dict(side=side, n=n, wall_s=wall, cpu_s=cpu))
                    print(f"ray {side} {n} units: {wall:.2f} s wall, {cpu:.2f} s driver CPU",
                          file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
    return result


# --------------------------------------------------------------------------------------
# Statistics and report


def med(values):
    return statistics.median(values) if values else float("nan")


def ms(values, digits=3) -> str:
    """median (min-max)"""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{med(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def power_fit(ns, ts) -> float:
    """b of t ~ a * N^b, least squares on log-log."""
    xs, ys = [math.log(n) for n in ns], [math.log(t) for t in ts]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return (sum((x - mx) * (y - my) for x, y in zip(xs, ys))
            / sum((x - mx) ** 2 for x in xs))


def line_fit(ns, ts) -> tuple[float, float]:
    """(slope, intercept) of t = slope * N + intercept, least squares."""
    mx, my = statistics.fmean(ns), statistics.fmean(ts)
    slope = (sum((x - mx) * (y - my) for x, y in zip(ns, ts))
             / sum((x - mx) ** 2 for x in ns))
    return slope, my - slope * mx


LINEAR_B = 1.1   # N log N over 10k-1M fits b = 1.09: below this is linear within a log factor


def linearity(b: float) -> str:
    return "linear" if b < LINEAR_B else "faster than N"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def report_planning(rows, rounds) -> list[str]:
    w = []
    w.append(f"### Planning N inputs ({rounds} rounds, fresh child process each, median (min-max))")
    w.append("")
    w.append("| inputs | listing | units | bare listing s | planning s | resolve_inputs s | "
             "update_plan s | complete_units + todo s | planning / listing | µs per input |")
    w.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        p, lst = med(r["planning_s"]), med(r["listing_s"])
        w.append(f"| {r['n']:,} | {r['source']} | {r['units']:,} | {ms(r['listing_s'])} | "
                 f"**{ms(r['planning_s'])}** | {ms(r['resolve_s'])} | {ms(r['update_s'])} | "
                 f"{ms(r['complete_s'], 4)} | {p / lst:.1f} | {p / r['n'] * 1e6:.2f} |")
    w.append("")
    w.append("| inputs | listing | after imports MiB | peak, bare listing MiB | peak, planning MiB "
             "| planning over imports MiB | bytes per input over imports | ru_maxrss MiB | "
             "units.jsonl MB |")
    w.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        over = (r["planning_hwm_kib"] - r["imports_kib"]) * 1024
        w.append(f"| {r['n']:,} | {r['source']} | {r['imports_kib'] / 1024:.0f} | "
                 f"{r['listing_hwm_kib'] / 1024:.0f} | **{r['planning_hwm_kib'] / 1024:.0f}** | "
                 f"{over / 2**20:.0f} | {over / r['n']:.0f} | "
                 f"{r['planning_maxrss_kib'] / 1024:.0f} | {r['plan_bytes'] / 1e6:.1f} |")
    w.append("")
    w.append("resolve_inputs's dedupe and sort, timed apart (diagnostic, same child, after "
             "planning): as resolve_inputs does them (the URIs into a set, then `sorted`, which "
             "sees them in hash order), and presorted (each directory's names sorted, "
             "directories in order, deduped in order with `dict.fromkeys`, then the same "
             "`sorted`).")
    w.append("")
    w.append("| inputs | listing | set s | sort of the set s | µs per input, sort of the set | "
             "presorted dedupe s | sort of the presorted s | µs per input, sort of the "
             "presorted |")
    w.append("|---|---|---|---|---|---|---|---|")
    for r in rows:
        a, b = med(r["set_sort_s"]), med(r["presorted_sort_s"])
        w.append(f"| {r['n']:,} | {r['source']} | {ms(r['set_dedupe_s'])} | "
                 f"**{ms(r['set_sort_s'])}** | {a / r['n'] * 1e6:.2f} | "
                 f"{ms(r['presorted_dedupe_s'])} | {ms(r['presorted_sort_s'])} | "
                 f"{b / r['n'] * 1e6:.3f} |")
    made = [r for r in rows if r["made_s"] is not None]
    if made:
        w.append("")
        w.append("Creating the local trees (not timed in the tables): " + ", ".join(
            f"{r['n']:,} empty files in {r['made_s']:.1f} s" for r in made) + ".")
    return w


def report_growth(rows) -> tuple[list[str], dict]:
    w = ["### Growth and projection to 10M inputs", ""]
    w.append("| series | sizes | exponent b of time ~ N^b | growth | µs per input, smallest "
             "-> largest |")
    w.append("|---|---|---|---|---|")
    fits = {}
    for source in ("synth", "local"):
        sel = [r for r in rows if r["source"] == source]
        if len(sel) < 2:
            continue
        ns = [r["n"] for r in sel]
        for key, label in (("listing_s", "bare listing"), ("planning_s", "planning"),
                           ("resolve_s", "- resolve_inputs"),
                           ("set_dedupe_s", "- - its set (timed apart)"),
                           ("set_sort_s", "- - its sort of the set (timed apart)"),
                           ("update_s", "- update_plan")):
            ts = [med(r[key]) for r in sel]
            b = power_fit(ns, ts)
            fits[(source, key)] = b
            w.append(f"| {source}: {label} | {ns[0]:,}-{ns[-1]:,} | {b:.2f} | {linearity(b)} | "
                     f"{ts[0] / ns[0] * 1e6:.2f} -> {ts[-1] / ns[-1] * 1e6:.2f} |")
        over = [(r["planning_hwm_kib"] - r["imports_kib"]) * 1024 for r in sel]
        b = power_fit(ns, [max(o, 1) for o in over])
        fits[(source, "memory")] = b
        w.append(f"| {source}: planning memory over imports | {ns[0]:,}-{ns[-1]:,} | {b:.2f} | "
                 f"{linearity(b)} | {over[0] / ns[0]:.0f} -> {over[-1] / ns[-1]:.0f} bytes |")
    proj = {}
    sel = [r for r in rows if r["source"] == "synth"]
    if sel:
        big = sel[-1]
        n, t = big["n"], med(big["planning_s"])
        scale = PROJECT_TO / n
        b = fits.get(("synth", "planning_s"), 1.0)
        over = (big["planning_hwm_kib"] - big["imports_kib"]) * 1024
        proj = dict(linear_s=t * scale, power_s=t * scale ** b, b=b,
                    memory_mib=(big["imports_kib"] * 1024 + over * scale) / 2**20,
                    plan_mb=big["plan_bytes"] * scale / 1e6)
        w.append("")
        w.append(f"Projection to {PROJECT_TO:,} inputs (synth listing, from {n:,}): planning "
                 f"{proj['linear_s']:.0f} s at the per-input cost of {n:,} "
                 f"({proj['power_s']:.0f} s with the fitted b = {b:.2f}); driver peak "
                 f"{proj['memory_mib']:,.0f} MiB (the import floor plus "
                 f"{over / n:.0f} bytes per input); units.jsonl {proj['plan_mb']:,.0f} MB.")
    return w, fits


def report_planfile(res, rounds) -> list[str]:
    w = [f"### `_plan/units.jsonl` at {res['units']:,} units ({res['inputs']:,} inputs, "
         f"{res['plan_bytes'] / 1e6:.1f} MB; {rounds} rounds, median (min-max))", ""]
    base = med(res["json_s"])
    w.append("| operation | s | / baseline |")
    w.append("|---|---|---|")
    w.append(f"| baseline: read the file, `json.loads` per line | {ms(res['json_s'])} | 1.00 |")
    for key, label in (("read_s", "`read_plan`"),
                       ("add0_s", "`update_plan`, nothing new (a resume)"),
                       ("add1_s", "`update_plan` + 1 new input (old text + the new line)"),
                       ("add1_previous_s", "- previous way, before the fix: + 1 new input, "
                                           "every unit re-serialized with `dataclasses.asdict` "
                                           "(same bytes)")):
        w.append(f"| {label} | {ms(res[key])} | {med(res[key]) / base:.2f} |")
    w.append("")
    w.append(f"Resume: the output holds all {res['units']:,} units complete "
             f"({res['output_files']:,} files in one directory, made in "
             f"{res['make_outputs_s']:.0f} s, not timed here).")
    w.append("")
    base = med(res["listdir_s"])
    w.append("| operation | s | / baseline |")
    w.append("|---|---|---|")
    w.append(f"| baseline: `os.listdir` of the output (names) | {ms(res['listdir_s'])} | 1.00 |")
    for key, label in (("complete_s", "`complete_units` (`storage.list_names`) + the `todo` "
                                      "filter"),
                       ("complete_previous_s", "- previous way, before the fix: the names of "
                                               "`storage.list_files` (`fs.ls(detail=True)`) "
                                               "+ `todo`"),
                       ("resume_s", "resume planning: `update_plan` (nothing new) + "
                                    "`complete_units` + `todo`")):
        w.append(f"| {label} | {ms(res[key])} | {med(res[key]) / base:.2f} |")
    w.append("")
    w.append(f"Writing the initial plan (`update_plan` into an empty output): "
             f"{res['initial_s']:.2f} s; child peak {res['vmhwm_kib'] / 1024:.0f} MiB.")
    return w


def report_ray(res, rounds) -> tuple[list[str], dict]:
    runs = res["runs"]
    counts = sorted({r["n"] for r in runs})
    w = [f"### Ray driver, no-op stages ({rounds} rounds per size, median (min-max); "
         f"{res['in_flight']} units in flight, every stage {res['cpus']} CPU, 1 tracker actor)",
         ""]
    w.append("| units | bare round trips s | bare ms / unit | `run_stages` s | "
             "`run_stages` units/s | `run_stages` ms / unit | driver overhead ms / unit | "
             "driver CPU ms / unit (bare -> `run_stages`) | previous way: bare, config by "
             "value, ms / unit (CPU) |")
    w.append("|---|---|---|---|---|---|---|---|---|")
    for n in counts:
        side = {s: [r for r in runs if r["n"] == n and r["side"] == s] for s in SIDES}
        wall = {s: [r["wall_s"] for r in side[s]] for s in SIDES}
        cpu = {s: med([r["cpu_s"] for r in side[s]]) / n * 1e3 for s in SIDES}
        bw, dw = wall["bare"], wall["driver"]
        w.append(f"| {n:,} | {ms(bw, 2)} | {med(bw) / n * 1e3:.2f} | {ms(dw, 2)} | "
                 f"{n / med(dw):.0f} | **{med(dw) / n * 1e3:.2f}** | "
                 f"{(med(dw) - med(bw)) / n * 1e3:.2f} | "
                 f"{cpu['bare']:.2f} -> {cpu['driver']:.2f} | "
                 f"{med(wall['bare_value']) / n * 1e3:.2f} ({cpu['bare_value']:.2f}) |")
    fit = {}
    for s in SIDES:
        sel = [r for r in runs if r["side"] == s]
        walls = [med([r["wall_s"] for r in sel if r["n"] == n]) for n in counts]
        slope, icpt = line_fit(counts, walls)
        marginal = [(walls[i + 1] - walls[i]) / (counts[i + 1] - counts[i]) * 1e3
                    for i in range(len(counts) - 1)]
        cpus = [med([r["cpu_s"] for r in sel if r["n"] == n]) for n in counts]
        fit[s] = dict(slope_ms=slope * 1e3, intercept_s=icpt, marginal_ms=marginal,
                      cpu_slope_ms=line_fit(counts, cpus)[0] * 1e3)
    w.append("")
    steps = [f"{counts[i]:,} -> {counts[i + 1]:,}" for i in range(len(counts) - 1)]
    w.append("| line through the median wall s per unit count | ms / unit (slope) | "
             "fixed s (intercept) | "
             + " | ".join(f"marginal ms / unit, {s}" for s in steps)
             + " | driver CPU ms / unit (slope) |")
    w.append("|---|---|---|" + "---|" * (len(steps) + 1))

    def row(label, f, bold=False):
        slope = f"**{f['slope_ms']:.2f}**" if bold else f"{f['slope_ms']:.2f}"
        return (f"| {label} | {slope} | {f['intercept_s']:.2f} | "
                + " | ".join(f"{m:.2f}" for m in f["marginal_ms"])
                + f" | {f['cpu_slope_ms']:.2f} |")

    def diff(a, b):
        return dict(slope_ms=a["slope_ms"] - b["slope_ms"],
                    intercept_s=a["intercept_s"] - b["intercept_s"],
                    marginal_ms=[x - y for x, y in zip(a["marginal_ms"], b["marginal_ms"])],
                    cpu_slope_ms=a["cpu_slope_ms"] - b["cpu_slope_ms"])

    w.append(row("bare round trips (config ref)", fit["bare"]))
    w.append(row("`run_stages`", fit["driver"]))
    w.append(row("**driver overhead** (difference)", diff(fit["driver"], fit["bare"]), True))
    w.append(row("previous way: bare round trips, config by value", fit["bare_value"]))
    w.append(row("config by value - by ref (> 0: what the ref saves per unit)",
                 diff(fit["bare_value"], fit["bare"])))
    w.append("")
    w.append(f"Ray start-up {res['ray_start_s']:.1f} s (not in the table). The run context "
             f"(config and output directory, {res['cfg_pickle_bytes']:,} bytes pickled) goes "
             "into the object store once per run and every call gets its reference, in the "
             "bare round trips as in `run_stages` (the previous-way side pickles it into every "
             "call); the "
             f"unit ({res['unit_pickle_bytes']:,} bytes) is pickled into every prepare and "
             "finish call.")
    return w, fit


def report_goals(rows, fits, fit) -> list[str]:
    """The issue's goals against what this run measured."""
    w = ["### Goals", "", "| goal | measured | met |", "|---|---|---|"]
    synth = [r for r in rows if r["source"] == "synth"]
    if synth:
        big = synth[-1]
        t, peak = med(big["planning_s"]), big["planning_hwm_kib"] / 2**20
        at = f"at {big['n']:,}" + ("" if big["n"] >= 1_000_000 else " (1M not measured)")
        w.append(f"| planning 1M inputs < 60 s | {t:.1f} s {at} | "
                 f"{'yes' if t < 60 else 'NO'} |")
        w.append(f"| planning 1M inputs < 2 GiB driver memory | {peak:.2f} GiB peak {at} | "
                 f"{'yes' if peak < 2 else 'NO'} |")
    if fit:
        slope = fit["driver"]["slope_ms"]
        over = slope - fit["bare"]["slope_ms"]
        w.append(f"| driver per-unit overhead < 5 ms | `run_stages` {slope:.2f} ms / unit of wall "
                 f"time, {over:.2f} ms over bare Ray round trips | "
                 f"{'yes' if slope < 5 else 'NO'} |")
    if fits:
        total = {k[0]: b for k, b in fits.items() if k[1] == "planning_s"}
        faster = sorted(((b, k) for k, b in fits.items() if b >= LINEAR_B), reverse=True)
        pieces = ("; pieces growing faster than N: " + ", ".join(
            f"{k[0]} {k[1].removesuffix('_s')} b = {b:.2f}" for b, k in faster)) if faster else ""
        w.append("| nothing super-linear | planning b = "
                 + ", ".join(f"{b:.2f} ({src})" for src, b in total.items()) + pieces
                 + f" | {'yes' if max(total.values()) < LINEAR_B else 'NO'} |")
    return w


# --------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000", help="inputs to plan")
    ap.add_argument("--units", default="200,1000,3000", help="no-op units through the driver")
    ap.add_argument("--plan-units", type=int, default=100_000, help="units in the plan file")
    ap.add_argument("--local-max", type=int, default=100_000,
                    help="largest size also planned from a real directory of empty files")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the planning measurements")
    ap.add_argument("--ray-rounds", type=int, default=3, help="rounds of the Ray measurements")
    ap.add_argument("--in-flight", type=int, default=16, help="execution.max_units_in_flight")
    ap.add_argument("--only", default="planning,planfile,ray", help="parts to run")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes, one round: a smoke check in under a minute")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        fn = child_planfile if spec["kind"] == "planfile" else child_listing_or_planning
        print(json.dumps(fn(spec)), flush=True)
        return 0
    if args.quick:
        args.sizes, args.units, args.plan_units = "1000,10000", "100,200,400", 10_000
        args.local_max, args.rounds, args.ray_rounds = 10_000, 1, 1
    sizes = sorted(int(s) for s in args.sizes.split(","))
    unit_counts = sorted(int(s) for s in args.units.split(","))
    parts = set(args.only.split(","))

    started = time.time()
    rows, fits, fit = [], {}, {}
    tmp = tempfile.mkdtemp(prefix="scale-bench-")
    lines = [f"## Driver scale ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"- machine: {cpu_name()}, os.cpu_count()={os.cpu_count()}, "
             f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
             f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
             "- command: " + " ".join(["python bench/scale.py",
                                        *(sys.argv[1:] if argv is None else argv)]),
             ""]
    try:
        if "planning" in parts:
            rows = bench_planning(sizes, args.local_max, args.rounds, tmp)
            lines += report_planning(rows, args.rounds) + [""]
            growth, fits = report_growth(rows)
            lines += growth + [""]
        if "planfile" in parts:
            res = run_child(dict(kind="planfile", units=args.plan_units, rounds=args.rounds,
                                 tmp=tmp))
            lines += report_planfile(res, args.rounds) + [""]
        if "ray" in parts:
            res = bench_ray(unit_counts, args.ray_rounds, args.in_flight, tmp)
            ray_lines, fit = report_ray(res, args.ray_rounds)
            lines += ray_lines + [""]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines += report_goals(rows, fits, fit) + [""]
    if args.quick:
        lines.append("--quick: a smoke check; its sizes are too small for the goals.")
    lines.append(f"Total wall time {time.time() - started:.0f} s.")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
