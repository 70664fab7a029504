"""The Ray driver: open the dataset version, plan, check that every node reaches the output,
then stream the units through the declared stages (`pipeline.stages.PAIR_STAGES`: prepare as
CPU tasks spread over the nodes -> track in an actor pool, GPU when configured, one batch per
unit -> finish+write as CPU tasks) with a bounded number of units in flight. `run_stages`
drives any such stage list.

Tasks retry on worker death (`execution.max_retries`) and actors restart; a unit whose
objects were lost with a node is resubmitted whole (`execution.unit_attempts`). Every stage
is a deterministic function of its unit, and shards are published atomically, so a retried,
resubmitted or resumed unit writes exactly the bytes an uninterrupted run would have.
"""
from __future__ import annotations

import dataclasses
import resource
import sys
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Optional, Sequence

from pipeline import plan as planning
from pipeline.config import PipelineConfig, version_content
from pipeline.report import status_reason
from pipeline.stages import PAIR_STAGES, RunContext, Stage, check_stages, next_stage
from pipeline.writer import complete_units
from schemas import dataset, storage
from schemas.ray_runtime import init_ray


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
            import pipeline
            import schemas
            progress(f"ray: {init_ray(ray_address, (pipeline, schemas))}")
        nodes = check_output_shared(dataset_dir, cfg.storage)
        progress(f"output: reachable from all {nodes} Ray node(s)")
        run_stages(PAIR_STAGES, todo, version_dir, cfg, stats, progress)
    stats.wall_s = time.time() - start
    return stats


# --- Ray: any stage list of pipeline.stages, unit by unit --------------------------------------

_TASK_WORKERS: dict = {}   # stage class -> (config, its set-up instance) in this worker process


def _task_worker(stage: type[Stage], cfg: PipelineConfig) -> Stage:
    """This worker process's set-up instance of a task stage: set up on the first unit and kept
    for the next ones (the isolated decoder process lives as long as the worker); set up anew
    for a unit of another config."""
    held = _TASK_WORKERS.get(stage)
    if held is None or held[0] != cfg:
        if held is not None:
            held[1].close()
        worker = stage()
        worker.setup(cfg)
        held = _TASK_WORKERS[stage] = (cfg, worker)
    return held[1]


def _process(worker: Stage, ctx: RunContext, unit, inputs):
    """(the stage's output, (work items left, node id)): the driver reads only the second; the
    output goes from this worker's object store straight to the stages that read it."""
    import ray

    output = worker.process(ctx, unit, *inputs)
    return output, (worker.count(output), ray.get_runtime_context().get_node_id())


def _ray_stage(stage: type[Stage], ex):
    """The Ray form of a stage, as its resources say: a remote function (stateless tasks) or an
    actor class (a pool). Every call returns two objects (`_process`)."""
    import ray

    res = stage.resources(ex)
    if res.actors:
        class StageActor:
            def __init__(self, ctx):
                storage.configure(ctx.cfg.storage)  # setup may read storage (a checkpoint URL)
                self.worker = stage()
                self.worker.setup(ctx.cfg)

            @ray.method(num_returns=2)
            def process(self, ctx, unit, *inputs):
                return _process(self.worker, ctx, unit, inputs)

        # Ray names the actors (dashboard, process titles: ray::TrackStage.process) after it.
        StageActor.__name__ = StageActor.__qualname__ = stage.__name__
        return ray.remote(num_cpus=res.cpus, num_gpus=res.gpus, max_restarts=-1,
                          max_task_retries=ex.max_retries)(StageActor)

    # Named after the stage: the dashboard and the workers' process titles say ray::prepare.
    @ray.remote(num_cpus=res.cpus, num_gpus=res.gpus, max_retries=ex.max_retries, num_returns=2,
                scheduling_strategy="SPREAD" if res.spread else "DEFAULT", name=stage.name)
    def stage_task(ctx, unit, *inputs):
        storage.configure(ctx.cfg.storage)
        return _process(_task_worker(stage, ctx.cfg), ctx, unit, inputs)

    return stage_task


class _ActorPool:
    """The actors of one stage: the least busy takes the next unit; a lost one is replaced."""

    def __init__(self, actor_class, size: int, ctx: RunContext):
        # The context goes by value: Ray restarts an actor with its constructor's arguments,
        # and one that lives in the object store could be gone by then.
        self.new = lambda: actor_class.remote(ctx)
        self.actors = [self.new() for _ in range(size)]
        self.busy = {i: 0 for i in range(size)}
        self.generation = {i: 0 for i in range(size)}   # replacements of each slot so far

    def take(self) -> tuple[int, int]:
        """(slot, its generation) of the actor that takes the next unit."""
        i = min(self.busy, key=self.busy.get)
        self.busy[i] += 1
        return i, self.generation[i]

    def release(self, i: int) -> None:
        self.busy[i] -= 1

    def replace(self, i: int, generation: int) -> bool:
        """A fresh actor where resources are, rather than retries against one whose node is
        gone (or going) and that Ray may take long to restart. Only once per lost actor:
        every unit queued on it fails, and the later failures must not kill its replacement.
        Returns whether it replaced one."""
        import ray

        if self.generation[i] != generation:
            return False
        ray.kill(self.actors[i], no_restart=True)
        self.actors[i] = self.new()
        self.generation[i] += 1
        return True


@dataclass
class _Unit:
    """One unit in flight: the stage it is in and the object refs of what its stages wrote."""
    unit: planning.Unit
    stage: int = -1
    data: dict = field(default_factory=dict)   # name a stage writes -> object ref
    items: Optional[int] = None                # work items left, as last counted
    actor: Optional[tuple] = None              # (slot, generation) of the pool actor running
                                               # its stage
    node: Optional[str] = None                 # where its first stage ran


def run_stages(stages: Sequence[type[Stage]], todo: list, output_dir: str, cfg: PipelineConfig,
               stats: RunStats, progress) -> None:
    """Run the units of `todo` through `stages` on Ray to completion, writing into
    `output_dir`: at most `execution.max_units_in_flight` units at once; task stages retry
    (`execution.max_retries`), actor pools restart and replace lost actors, a lost or failed
    unit is resubmitted whole (`execution.unit_attempts`) and then recorded as failed."""
    import ray

    check_stages(stages)
    ex = cfg.execution
    ctx = RunContext(cfg, output_dir)
    ctx_ref = ray.put(ctx)  # one copy in the object store for every call of the run
    remote = [_ray_stage(stage, ex) for stage in stages]
    pools = {i: _ActorPool(remote[i], stage.resources(ex).actors, ctx)
             for i, stage in enumerate(stages) if stage.resources(ex).actors}
    pending = deque(todo)
    attempts: Counter = Counter()
    inflight: dict = {}   # ref of the (items, node) of the stage a unit is in -> its _Unit
    start = time.time()

    def submit(flow: _Unit, i: int) -> None:
        stage = stages[i]
        args = (ctx_ref, flow.unit, *(flow.data.get(name) for name in stage.reads))
        flow.stage, flow.actor = i, None
        if i in pools:
            flow.actor = pools[i].take()
            output, info = pools[i].actors[flow.actor[0]].process.remote(*args)
        else:
            output, info = remote[i].remote(*args)
        flow.data[stage.writes] = output
        inflight[info] = flow

    while pending or inflight:
        while pending and len(inflight) < ex.max_units_in_flight:
            unit = pending.popleft()
            attempts[unit.name] += 1
            submit(_Unit(unit), next_stage(stages, -1, None))
        [ref], _ = ray.wait(list(inflight), num_returns=1)
        flow = inflight.pop(ref)
        stage, unit = stages[flow.stage], flow.unit
        if flow.actor is not None:
            pools[flow.stage].release(flow.actor[0])
        try:
            items, node = ray.get(ref)  # raises here, with the unit named, if the stage failed
            flow.node = flow.node or node
            flow.items = flow.items if items is None else items
            following = next_stage(stages, flow.stage, flow.items)
            if following < len(stages):
                submit(flow, following)
                continue
            _account(stats, ray.get(flow.data[stage.writes]), flow.node)
            progress(f"[{stats.units_done}/{len(todo)} units] {unit.name} done; so far "
                     f"{stats.videos} videos, {stats.pairs} pairs, "
                     f"{stats.videos / (time.time() - start):.2f} videos/s, "
                     + ", ".join(f"{k} {v}" for k, v in sorted(stats.statuses.items())))
        except Exception as e:  # noqa: BLE001 - a lost or failed unit is resubmitted, then reported
            why = f"{type(e).__name__}: {e}"
            if flow.actor is not None and isinstance(e, (ray.exceptions.ActorDiedError,
                                                         ray.exceptions.ActorUnavailableError)):
                if pools[flow.stage].replace(*flow.actor):
                    progress(f"{stage.worker_name or stage.name} actor {flow.actor[0]} lost "
                             f"({why.splitlines()[0]}); replaced")
            if attempts[unit.name] < ex.unit_attempts:
                stats.units_resubmitted += 1
                delay = min(2.0 ** (attempts[unit.name] - 1), 30.0)
                progress(f"unit {unit.name} lost in {stage.name} ({why.splitlines()[0]}); "
                         f"resubmitting it in {delay:g} s (attempt {attempts[unit.name] + 1} of "
                         f"{ex.unit_attempts})")
                time.sleep(delay)  # a lost node takes the cluster a moment to notice
                pending.appendleft(unit)
                continue
            stats.units_failed.append(unit.name)
            progress(f"ERROR: unit {unit.name} failed in {stage.name} after retries: {why}")


def _account(stats: RunStats, rows: list[dict], node: str) -> None:
    stats.units_done += 1
    stats.units_by_node[node] += 1
    for r in rows:
        stats.videos += 1
        stats.pairs += r["num_pairs"]
        stats.decoded_frames += r["decoded_frames"] or 0
        stats.statuses[status_reason(r["status"])] += 1
