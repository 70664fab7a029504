"""The pipeline as a declared list of stages, and the local fold that runs such a list in one
process.

A stage is a small class (the Cosmos-Curate / NeMo Curator pattern) with
- a `name`, the unit data it `reads` and the name it `writes` its output under: the
  outputs of earlier stages, by name (a stage that writes a name an earlier one wrote
  replaces that data for the stages after it: a filter between prepare and track writes
  "videos");
- `resources(execution)`: CPUs and GPUs per worker and the kind of worker, stateless Ray
  tasks or a pool of `actors`;
- `setup(cfg)`, once per worker: the tracker model once per actor, the isolated decoder
  process once per worker process;
- `process(ctx, unit, *inputs)` on one work unit's data. It must be a deterministic function
  of the unit: a retried, resubmitted or resumed unit writes the same bytes;
- `count(output)`: the work items (pair clips) the unit has left, when the stage knows. A
  stage marked `skip_empty` is skipped for a unit with none left; what it writes stays as it
  was (None when no stage wrote it).

`PAIR_STAGES` is the pipeline, declared once; its last stage writes the unit's video manifest
rows. `pipeline.run.run_stages` drives any such list on Ray; `LocalRun` folds it over units in
this process (tests, benchmarks).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from pipeline.config import ExecutionConfig, PipelineConfig
from pipeline.isolate import IsolatedRunner
from pipeline.plan import Unit
from pipeline.tracking import make_tracker
from pipeline.unit import finish_unit, prepare_unit, track_clips, unit_clips


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage takes, and which kind of worker it is."""
    cpus: float
    gpus: float = 0.0
    actors: int = 0        # 0: stateless Ray tasks, retried on worker death; N: a pool of N
                           # actors, restarted on death, each set up once
    spread: bool = False   # tasks spread over the nodes rather than placed near their inputs


@dataclass(frozen=True)
class RunContext:
    """What every stage reads during one build: the config and the version directory."""
    cfg: PipelineConfig
    output_dir: str


class Stage:
    """One step of the pipeline (module docstring). Subclasses set the class attributes and
    implement `resources` and `process`; an instance is one set-up worker."""
    name: str = ""
    reads: tuple[str, ...] = ()   # data of earlier stages process() takes after the unit
    writes: str = ""              # the name later stages read this stage's output by
    skip_empty: bool = False      # skipped for a unit with no work items left
    worker_name: str = ""         # one worker, in progress lines (default: the stage name)

    @staticmethod
    def resources(execution: ExecutionConfig) -> Resources:
        raise NotImplementedError

    def setup(self, cfg: PipelineConfig) -> None:
        """Once per worker, before its first unit: what it keeps across units."""

    def process(self, ctx: RunContext, unit: Unit, *inputs):
        raise NotImplementedError

    def count(self, output) -> Optional[int]:
        """The work items left in `output`; None: this stage does not say."""
        return None

    def close(self) -> None:
        """Release what setup made."""


# --- the pair pipeline ---------------------------------------------------------------------


class PrepareStage(Stage):
    """Spool, probe, decode once, filter and sample each video: the unit's videos with their
    pair clips (`pipeline.video.prepare_video`, in an isolated decoder process)."""
    name, writes = "prepare", "videos"

    @staticmethod
    def resources(execution: ExecutionConfig) -> Resources:
        # Inputs are remote, so there is no locality to keep: decoding spreads over the nodes.
        return Resources(cpus=execution.task_cpus, spread=True)

    def setup(self, cfg: PipelineConfig) -> None:
        self.runner = IsolatedRunner(cfg.execution.decode_timeout_s)

    def process(self, ctx: RunContext, unit: Unit):
        return prepare_unit(unit, ctx.cfg, self.runner)

    def count(self, videos) -> int:
        return sum(len(v.pairs) for v in videos)

    def close(self) -> None:
        self.runner.close()


class TrackStage(Stage):
    """Every pair clip of the unit tracked in one batch: (tracks, visible, tracker name,
    tracker version). An actor pool, on GPUs when `execution.tracker_gpus` > 0."""
    name, reads, writes, skip_empty, worker_name = "track", ("videos",), "tracks", True, "tracker"

    @staticmethod
    def resources(execution: ExecutionConfig) -> Resources:
        return Resources(cpus=execution.tracker_cpus, gpus=execution.tracker_gpus,
                         actors=execution.tracker_actors)

    def setup(self, cfg: PipelineConfig) -> None:
        self.tracker = make_tracker(cfg.track)

    def process(self, ctx: RunContext, unit: Unit, videos):
        tracks, visible = track_clips(self.tracker, unit_clips(videos), ctx.cfg.track.grid_size)
        return tracks, visible, self.tracker.name, self.tracker.version


class FinishStage(Stage):
    """Points, masks and samples; the unit's shard and manifests published: its video rows.
    Ray places these tasks where the prepared clips are."""
    name, reads, writes = "finish", ("videos", "tracks"), "rows"

    @staticmethod
    def resources(execution: ExecutionConfig) -> Resources:
        return Resources(cpus=execution.task_cpus)

    def process(self, ctx: RunContext, unit: Unit, videos, tracks):
        return finish_unit(unit, videos, tracks, ctx.cfg, ctx.output_dir)


PAIR_STAGES = (PrepareStage, TrackStage, FinishStage)


# --- what every driver of a stage list shares ----------------------------------------------


def check_stages(stages: Sequence[type[Stage]]) -> None:
    """Refuse a list no driver can run: a name used twice, a read of data that no earlier
    stage writes, a last stage that may be skipped (the last one writes the unit's rows)."""
    names, written = set(), set()
    for stage in stages:
        if stage.name in names:
            raise ValueError(f"stage name {stage.name!r} used twice")
        missing = [r for r in stage.reads if r not in written]
        if missing:
            raise ValueError(f"stage {stage.name!r} reads {', '.join(missing)}, which no "
                             "earlier stage writes")
        names.add(stage.name)
        written.add(stage.writes)
    if not stages or stages[-1].skip_empty:
        raise ValueError("a stage list needs a last stage that always runs: it writes the "
                         "unit's video rows")


def next_stage(stages: Sequence[type[Stage]], after: int, items: Optional[int]) -> int:
    """The index of the stage a unit goes to after stage `after` (-1: none yet) with `items`
    work items left (None: unknown), past the `skip_empty` stages while it has none;
    len(stages) when the unit is done."""
    i = after + 1
    while i < len(stages) and stages[i].skip_empty and items == 0:
        i += 1
    return i


class LocalRun:
    """A stage list folded over units in this process, without Ray: each stage set up once,
    every unit chained through the stages as `pipeline.run.run_stages` chains it."""

    def __init__(self, cfg: PipelineConfig, stages: Sequence[type[Stage]] = PAIR_STAGES):
        check_stages(stages)
        self.cfg, self.stages, self.workers = cfg, tuple(stages), []
        try:
            for stage in self.stages:
                worker = stage()
                worker.setup(cfg)
                self.workers.append(worker)
        except BaseException:
            self.close()
            raise

    def run(self, unit: Unit, output_dir: str) -> list[dict]:
        """The unit through every stage, its shard written under `output_dir`; returns the
        last stage's output, the unit's video rows."""
        ctx = RunContext(self.cfg, output_dir)
        data, items = {}, None
        i = next_stage(self.stages, -1, items)
        while i < len(self.workers):
            worker = self.workers[i]
            output = worker.process(ctx, unit, *(data.get(name) for name in worker.reads))
            data[worker.writes] = output
            count = worker.count(output)
            items = items if count is None else count
            i = next_stage(self.stages, i, items)
        return data[self.stages[-1].writes]

    def close(self) -> None:
        for worker in self.workers:
            worker.close()

    def __enter__(self) -> "LocalRun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
