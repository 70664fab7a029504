"""The Ray driver: plan, check that every node reaches the output, then stream units through
prepare (CPU tasks) -> track (actor pool, GPU when configured, batched per unit) ->
finish+write (CPU tasks), with a bounded number of units in flight.

Tasks retry on worker death (`execution.max_retries`) and actors restart; a unit whose
objects were lost with a node is resubmitted whole (`execution.unit_attempts`). Every stage
is a deterministic function of its unit, and shards are published atomically, so a retried,
resubmitted or resumed unit writes exactly the bytes an uninterrupted run would have.
"""
from __future__ import annotations

import dataclasses
import os
import resource
import sys
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field

from pipeline import plan as planning
from pipeline.config import PipelineConfig, version_content
from pipeline.report import status_reason
from pipeline.writer import complete_units
from schemas import dataset, storage


class OutputNotShared(dataset.DatasetError):
    """Some Ray node cannot read what the driver wrote under the output."""


@dataclass
class RunStats:
    units_total: int = 0
    units_skipped: int = 0
    units_done: int = 0
    units_failed: list = field(default_factory=list)
    units_resubmitted: int = 0
    units_by_node: Counter = field(default_factory=Counter)   # node id -> units prepared there
    videos: int = 0
    pairs: int = 0
    decoded_frames: int = 0
    statuses: Counter = field(default_factory=Counter)
    wall_s: float = 0.0
    version_dir: str = ""        # the dataset version this run built into
    execution: dict = field(default_factory=dict)   # the run's execution settings

    def as_dict(self) -> dict:
        rate = lambda n: round(n / self.wall_s, 3) if self.wall_s else None
        return dict(units_total=self.units_total, units_skipped=self.units_skipped,
                    units_done=self.units_done, units_failed=len(self.units_failed),
                    units_resubmitted=self.units_resubmitted,
                    units_by_node=dict(sorted(self.units_by_node.items())),
                    videos=self.videos, pairs=self.pairs, wall_s=round(self.wall_s, 2),
                    videos_per_s=rate(self.videos), pairs_per_s=rate(self.pairs),
                    decoded_frames=self.decoded_frames,
                    decoded_frames_per_pair=round(self.decoded_frames / self.pairs, 2)
                    if self.pairs else None,
                    driver_peak_rss_mb=round(
                        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                    execution=self.execution)


def open_version(dataset_dir: str, cfg: PipelineConfig) -> tuple[str, str]:
    """The version of `dataset_dir` to build into, and why: the version built with exactly
    `cfg`'s content (resumed or extended, whatever the execution settings), else a new version
    after the latest (see schemas.dataset)."""
    dataset.check_dataset_dir(dataset_dir)
    wanted = cfg.content()
    while True:
        versions = dataset.list_versions(dataset_dir)
        built_with = {v: version_content(v) for v in versions}
        for version, content in built_with.items():
            if content == wanted:
                return version, "same config: resuming"
        try:
            created = dataset.create_version(dataset_dir, wanted)
        except dataset.VersionExists:
            continue  # another builder took that number meanwhile: its config may be ours
        if not versions:
            return created, "new dataset"
        previous = versions[-1]
        changes = dataset.format_config_diff(dataset.config_diff(built_with[previous], wanted))
        return created, (f"new version: config differs from {dataset.version_name(previous)} "
                         f"in {changes}")


# --- Ray remote functions (defined lazily so importing this module does not need Ray) -------

def _remote_stages(cfg: PipelineConfig):
    import ray

    ex = cfg.execution

    # Decoding is spread over the nodes (its inputs are remote, so there is no locality to
    # keep); finish runs where the prepared clips are, Ray's default.
    @ray.remote(num_cpus=ex.task_cpus, max_retries=ex.max_retries, num_returns=2,
                scheduling_strategy="SPREAD")
    def prepare(unit, cfg):
        """(prepared videos, (pair count, node id)): the driver reads only the second, the
        clips go from this worker's object store straight to the tracker."""
        from pipeline.unit import prepare_unit
        storage.configure(cfg.storage)
        prepared = prepare_unit(unit, cfg, _runner(cfg))
        return prepared, (sum(len(v.pairs) for v in prepared),
                          ray.get_runtime_context().get_node_id())

    @ray.remote(num_cpus=ex.task_cpus, max_retries=ex.max_retries)
    def finish(unit, prepared, tracked, cfg, output_dir):
        from pipeline.unit import finish_unit
        storage.configure(cfg.storage)
        return finish_unit(unit, prepared, tracked, cfg, output_dir)

    @ray.remote(num_cpus=ex.tracker_cpus, num_gpus=ex.tracker_gpus, max_restarts=-1,
                max_task_retries=ex.max_retries)
    class TrackerActor:
        def __init__(self, track_cfg, storage_settings):
            from pipeline.tracking import make_tracker
            storage.configure(storage_settings)  # the checkpoint may be a URL
            self.tracker = make_tracker(track_cfg)
            self.grid_size = track_cfg.grid_size

        def track(self, prepared):
            from pipeline.unit import track_clips, unit_clips
            clips = unit_clips(prepared)
            tracks, visible = track_clips(self.tracker, clips, self.grid_size)
            return tracks, visible, self.tracker.name, self.tracker.version

    return prepare, finish, TrackerActor


_RUNNER = None


def _runner(cfg):
    """One isolated decoder process per Ray worker process, reused across tasks."""
    global _RUNNER
    if _RUNNER is None:
        from pipeline.isolate import IsolatedRunner
        _RUNNER = IsolatedRunner(cfg.execution.decode_timeout_s)
    return _RUNNER


def init_ray(address: str | None) -> str:
    """Join `address` (or $RAY_ADDRESS, as `ray job submit` sets it), else start a private
    local Ray; never silently attach to some other local cluster. Returns what was used."""
    import ray

    import pipeline
    import schemas

    target = address or os.environ.get("RAY_ADDRESS") or "local"
    # Workers on any node import our packages from the runtime env, not from this checkout.
    # Paths, not module objects: inside `ray job submit` Ray merges (deep-copies) this with
    # the job's own runtime env, and modules cannot be copied.
    env = {"py_modules": [os.path.dirname(m.__file__) for m in (pipeline, schemas)]}
    if target == "local":
        ray.init(address="local", runtime_env=env, include_dashboard=False)
    else:
        ray.init(address=target, runtime_env=env)
    return target


PROBE_TIMEOUT_S = 120.0


def check_output_shared(output_dir: str, settings: storage.StorageSettings) -> int:
    """Refuse an output that some alive Ray node cannot reach: the driver publishes a probe
    file under `output_dir` and a task pinned to each node reads it back. Returns the number
    of nodes checked; raises OutputNotShared naming the first node that failed, and the fix."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0, max_retries=0)
    def read_probe(url, settings):
        storage.configure(settings)
        try:
            return storage.read_text(url)
        except Exception as e:  # noqa: BLE001 - what the node saw is the answer
            return f"{type(e).__name__}: {e}"

    token = uuid.uuid4().hex
    probe = storage.join(output_dir, f".probe-{token}")   # hidden: listings skip it
    storage.publish_text(probe, token)
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        refs = [(n, read_probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(probe, settings)) for n in nodes]
        for node, ref in refs:
            try:
                seen = ray.get(ref, timeout=PROBE_TIMEOUT_S)
            except Exception as e:  # noqa: BLE001 - a node that cannot answer fails the check
                seen = f"{type(e).__name__}: {e}"
            if seen != token:
                hint = (" (memory:// lives inside one process)"
                        if output_dir.startswith("memory://") else "")
                raise OutputNotShared(
                    f"--output {output_dir} is not reachable from every Ray node: node "
                    f"{node['NodeID']} ({node['NodeManagerAddress']}) could not read the probe "
                    f"file the driver wrote there{hint}: {seen}. Write the dataset where every "
                    "node reads and writes the same files: an object store URL (s3://bucket/"
                    "pairs, gs://...) or a filesystem mounted at the same path on every node")
    finally:
        storage.remove(probe)
    return len(nodes)


def build(inputs: list[str], dataset_dir: str, cfg: PipelineConfig,
          ray_address: str | None = None, progress=None) -> RunStats:
    """Build into the version of `dataset_dir` that `cfg` selects (`open_version`); returns the
    run's statistics. Starts or joins Ray."""
    import ray

    progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    start = time.time()
    storage.configure(cfg.storage)
    uris = planning.resolve_inputs(inputs)
    if not uris:
        raise FileNotFoundError(f"no inputs found in {inputs}")
    version_dir, why = open_version(dataset_dir, cfg)
    progress(f"dataset: {version_dir} ({why})")
    units = planning.update_plan(version_dir, uris, cfg.output.videos_per_unit)
    complete = complete_units(version_dir)
    todo = [u for u in units if u.name not in complete]
    stats = RunStats(units_total=len(units), units_skipped=len(units) - len(todo),
                     version_dir=version_dir, execution=dataclasses.asdict(cfg.execution))
    progress(f"plan: {len(uris)} inputs in {len(units)} units; {stats.units_skipped} already "
             f"complete, {len(todo)} to do")
    if todo:
        if not ray.is_initialized():
            used = init_ray(ray_address)
            progress(f"ray: {'started a local cluster' if used == 'local' else 'joined ' + used}"
                     f" with {ray.cluster_resources().get('CPU', 0):g} CPUs")
        nodes = check_output_shared(dataset_dir, cfg.storage)
        progress(f"output: reachable from all {nodes} Ray node(s)")
        _drive(todo, version_dir, cfg, stats, progress)
    stats.wall_s = time.time() - start
    return stats


def _drive(todo, output_dir, cfg, stats, progress, stages=None) -> None:
    """Run the units of `todo` to completion. `stages` replaces the (prepare, finish,
    TrackerActor) of `_remote_stages` (the driver benchmark runs no-op stages)."""
    import ray

    ex = cfg.execution
    prepare, finish, TrackerActor = stages or _remote_stages(cfg)
    actors = [TrackerActor.remote(cfg.track, cfg.storage) for _ in range(ex.tracker_actors)]
    busy = {i: 0 for i in range(len(actors))}
    pending = deque(todo)
    cfg_ref = ray.put(cfg)  # one copy in the object store for every task of the run
    attempts: Counter = Counter()
    inflight: dict = {}   # ref -> (stage, unit, prepared ref, actor index, node)
    start = time.time()
    while pending or inflight:
        while pending and len(inflight) < ex.max_units_in_flight:
            unit = pending.popleft()
            attempts[unit.name] += 1
            prepared_ref, info_ref = prepare.remote(unit, cfg_ref)
            inflight[info_ref] = ("prepare", unit, prepared_ref, None, None)
        [ref], _ = ray.wait(list(inflight), num_returns=1)
        stage, unit, prepared_ref, actor, node = inflight.pop(ref)
        try:
            result = ray.get(ref)  # raises here, with the unit named, if a stage failed
            if stage == "prepare":
                count, node = result
            if stage == "prepare" and count > 0:
                actor = min(busy, key=busy.get)
                busy[actor] += 1
                inflight[actors[actor].track.remote(prepared_ref)] = (
                    "track", unit, prepared_ref, actor, node)
            elif stage in ("prepare", "track"):
                if stage == "track":
                    busy[actor] -= 1
                tracked = ref if stage == "track" else None
                inflight[finish.remote(unit, prepared_ref, tracked, cfg_ref, output_dir)] = (
                    "finish", unit, prepared_ref, None, node)
            else:
                _account(stats, result, node)
                progress(f"[{stats.units_done}/{len(todo)} units] {unit.name} done; so far "
                         f"{stats.videos} videos, {stats.pairs} pairs, "
                         f"{stats.videos / (time.time() - start):.2f} videos/s, "
                         + ", ".join(f"{k} {v}" for k, v in sorted(stats.statuses.items())))
        except Exception as e:  # noqa: BLE001 - a lost or failed unit is resubmitted, then reported
            why = f"{type(e).__name__}: {e}"
            if stage == "track":
                busy[actor] -= 1
                if isinstance(e, (ray.exceptions.ActorDiedError,
                                  ray.exceptions.ActorUnavailableError)):
                    # Its node is gone (or going): a fresh actor where resources are, rather
                    # than retries against one that Ray may take long to restart.
                    ray.kill(actors[actor], no_restart=True)
                    actors[actor] = TrackerActor.remote(cfg.track, cfg.storage)
                    progress(f"tracker actor {actor} lost ({why.splitlines()[0]}); replaced")
            if attempts[unit.name] < ex.unit_attempts:
                stats.units_resubmitted += 1
                delay = min(2.0 ** (attempts[unit.name] - 1), 30.0)
                progress(f"unit {unit.name} lost in {stage} ({why.splitlines()[0]}); "
                         f"resubmitting it in {delay:g} s (attempt {attempts[unit.name] + 1} of "
                         f"{ex.unit_attempts})")
                time.sleep(delay)  # a lost node takes the cluster a moment to notice
                pending.appendleft(unit)
                continue
            stats.units_failed.append(unit.name)
            progress(f"ERROR: unit {unit.name} failed in {stage} after retries: {why}")


def _account(stats: RunStats, rows: list[dict], node: str) -> None:
    stats.units_done += 1
    stats.units_by_node[node] += 1
    for r in rows:
        stats.videos += 1
        stats.pairs += r["num_pairs"]
        stats.decoded_frames += r["decoded_frames"] or 0
        stats.statuses[status_reason(r["status"])] += 1
