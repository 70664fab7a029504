"""The Ray driver: plan, then stream units through prepare (CPU tasks) -> track (actor pool,
GPU when configured, batched per unit) -> finish+write (CPU tasks), with a bounded number of
units in flight.

Tasks retry on worker death (`ray.max_retries`) and actors restart; every stage is a
deterministic function of its unit, and shards are published atomically, so a retried or
resumed unit writes exactly the bytes an uninterrupted run would have.
"""
from __future__ import annotations

import os
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from pipeline import plan as planning
from pipeline.config import ConfigError, PipelineConfig, from_dict
from pipeline.report import status_reason
from pipeline.writer import unit_complete
from schemas import dataset


@dataclass
class RunStats:
    units_total: int = 0
    units_skipped: int = 0
    units_done: int = 0
    units_failed: list = field(default_factory=list)
    videos: int = 0
    pairs: int = 0
    decoded_frames: int = 0
    statuses: Counter = field(default_factory=Counter)
    wall_s: float = 0.0
    version_dir: str = ""        # the dataset version this run built into

    def as_dict(self) -> dict:
        rate = lambda n: round(n / self.wall_s, 3) if self.wall_s else None
        return dict(units_total=self.units_total, units_skipped=self.units_skipped,
                    units_done=self.units_done, units_failed=len(self.units_failed),
                    videos=self.videos, pairs=self.pairs, wall_s=round(self.wall_s, 2),
                    videos_per_s=rate(self.videos), pairs_per_s=rate(self.pairs),
                    decoded_frames=self.decoded_frames,
                    decoded_frames_per_pair=round(self.decoded_frames / self.pairs, 2)
                    if self.pairs else None,
                    driver_peak_rss_mb=round(
                        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))


def open_version(dataset_dir: str, cfg: PipelineConfig) -> tuple[str, str]:
    """The version of `dataset_dir` to build into, and why: the version built with exactly
    `cfg` (resumed or extended), else a new version after the latest (see schemas.dataset)."""
    dataset.check_dataset_dir(dataset_dir)
    wanted = cfg.to_dict()
    while True:
        versions = dataset.list_versions(dataset_dir)
        built_with = {v: _normalised_config(v) for v in versions}
        for version, config in built_with.items():
            if config == wanted:
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


def _normalised_config(version: str) -> dict:
    """A version's config with today's defaults filled in (a key added to the code since does
    not make an old config differ); as stored if today's code cannot read it."""
    stored = dataset.read_config(version)
    try:
        return from_dict(stored).to_dict()
    except ConfigError:
        return stored


# --- Ray remote functions (defined lazily so importing this module does not need Ray) -------

def _remote_stages(cfg: PipelineConfig):
    import ray

    @ray.remote(num_cpus=cfg.ray.task_cpus, max_retries=cfg.ray.max_retries, num_returns=2)
    def prepare(unit, cfg):
        """(prepared videos, pair count): the driver reads only the count, the clips go
        from this worker's object store straight to the tracker."""
        from pipeline.stages import prepare_unit
        prepared = prepare_unit(unit, cfg, _runner(cfg))
        return prepared, sum(len(v.pairs) for v in prepared)

    @ray.remote(num_cpus=cfg.ray.task_cpus, max_retries=cfg.ray.max_retries)
    def finish(unit, prepared, tracked, cfg, output_dir):
        from pipeline.stages import finish_unit
        return finish_unit(unit, prepared, tracked, cfg, output_dir)

    @ray.remote(num_cpus=cfg.track.num_cpus, num_gpus=cfg.track.num_gpus, max_restarts=-1,
                max_task_retries=cfg.ray.max_retries)
    class TrackerActor:
        def __init__(self, track_cfg):
            from pipeline.tracking import make_tracker
            self.tracker = make_tracker(track_cfg)
            self.grid_size = track_cfg.grid_size

        def track(self, prepared):
            from pipeline.stages import track_clips, unit_clips
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
        _RUNNER = IsolatedRunner(cfg.decode.timeout_s)
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


def build(inputs: list[str], dataset_dir: str, cfg: PipelineConfig,
          ray_address: str | None = None, progress=None) -> RunStats:
    """Build into the version of `dataset_dir` that `cfg` selects (`open_version`); returns the
    run's statistics. Starts or joins Ray."""
    import ray

    progress = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    start = time.time()
    uris = planning.resolve_inputs(inputs)
    if not uris:
        raise FileNotFoundError(f"no inputs found in {inputs}")
    version_dir, why = open_version(dataset_dir, cfg)
    progress(f"dataset: {version_dir} ({why})")
    units = planning.update_plan(version_dir, uris, cfg.output.videos_per_unit)
    todo = [u for u in units if not unit_complete(version_dir, u.name)]
    stats = RunStats(units_total=len(units), units_skipped=len(units) - len(todo),
                     version_dir=version_dir)
    progress(f"plan: {len(uris)} inputs in {len(units)} units; {stats.units_skipped} already "
             f"complete, {len(todo)} to do")
    if todo:
        if not ray.is_initialized():
            used = init_ray(ray_address)
            progress(f"ray: {'started a local cluster' if used == 'local' else 'joined ' + used}"
                     f" with {ray.cluster_resources().get('CPU', 0):g} CPUs")
        _drive(todo, version_dir, cfg, stats, progress)
    stats.wall_s = time.time() - start
    return stats


def _drive(todo, output_dir, cfg, stats, progress) -> None:
    import ray

    prepare, finish, TrackerActor = _remote_stages(cfg)
    actors = [TrackerActor.remote(cfg.track) for _ in range(cfg.track.num_actors)]
    busy = {i: 0 for i in range(len(actors))}
    pending = list(todo)
    inflight: dict = {}   # ref -> (stage, unit, prepared ref, actor index)
    start = time.time()
    while pending or inflight:
        while pending and len(inflight) < cfg.ray.max_units_in_flight:
            unit = pending.pop(0)
            prepared_ref, count_ref = prepare.remote(unit, cfg)
            inflight[count_ref] = ("prepare", unit, prepared_ref, None)
        [ref], _ = ray.wait(list(inflight), num_returns=1)
        stage, unit, prepared_ref, actor = inflight.pop(ref)
        try:
            result = ray.get(ref)  # raises here, with the unit named, if a stage failed
            if stage == "prepare" and result > 0:
                actor = min(busy, key=busy.get)
                busy[actor] += 1
                inflight[actors[actor].track.remote(prepared_ref)] = (
                    "track", unit, prepared_ref, actor)
            elif stage in ("prepare", "track"):
                if stage == "track":
                    busy[actor] -= 1
                tracked = ref if stage == "track" else None
                inflight[finish.remote(unit, prepared_ref, tracked, cfg, output_dir)] = (
                    "finish", unit, prepared_ref, None)
            else:
                _account(stats, result)
                progress(f"[{stats.units_done}/{len(todo)} units] {unit.name} done; so far "
                         f"{stats.videos} videos, {stats.pairs} pairs, "
                         f"{stats.videos / (time.time() - start):.2f} videos/s, "
                         + ", ".join(f"{k} {v}" for k, v in sorted(stats.statuses.items())))
        except Exception as e:  # noqa: BLE001 - a unit that fails after retries is reported
            if stage == "track":
                busy[actor] -= 1
            stats.units_failed.append(unit.name)
            progress(f"ERROR: unit {unit.name} failed in {stage} after retries: "
                     f"{type(e).__name__}: {e}")


def _account(stats: RunStats, rows: list[dict]) -> None:
    stats.units_done += 1
    for r in rows:
        stats.videos += 1
        stats.pairs += r["num_pairs"]
        stats.decoded_frames += r["decoded_frames"] or 0
        stats.statuses[status_reason(r["status"])] += 1
