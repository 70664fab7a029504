"""The pipeline's typed configuration, loaded from YAML.

Unknown keys are errors (a typo must not silently fall back to a default). A config has two
parts:
- its content, every section but `execution` and `storage`: what can change the bytes of a
  dataset. A dataset version stores its content as `<dataset>/v<N>/config.yaml`, and a run
  builds only into the version with exactly its content (else a new version), so no version
  mixes two configurations;
- how a run executes (`execution`: Ray task CPUs, retries, units in flight, tracker actors and
  their CPUs/GPUs, the decode timeout) and reaches storage (`storage`): a resubmit may change
  them freely and still resumes its version, with byte-identical output.

Configs written before the split (`ray:`, `track.num_actors`/`num_cpus`/`num_gpus`,
`decode.timeout_s`) are read with those keys moved into `execution`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import yaml

from pipeline.tracking.registry import backend_problem, options_problem
from schemas.dataset import read_config
from schemas.storage import StorageSettings, settings_problem
from schemas.typed_config import ConfigError, TypedConfig, build, load_yaml, require

__all__ = ["ConfigError", "PipelineConfig", "from_dict", "load_config"]


@dataclass
class DecodeConfig:
    backend: str = "auto"            # auto (PyAV, decord fallback) | pyav | decord
    score_fps: float = 4.0           # motion probes in a pair window at most this often
    score_size: int = 128            # short side pair windows are judged at, pixels
    max_bytes: int = 2 << 30         # remote inputs are copied locally up to this size


@dataclass
class FilterConfig:
    min_duration_s: float = 1.0      # shorter -> filtered:too-short
    min_frames: int = 8
    min_size: int = 64               # short side below -> filtered:too-small
    max_pixels: int = 3840 * 2160 * 2  # width*height above -> failed:VideoTooLarge
    cut_threshold: float = 0.45      # histogram distance (0..1) between scoring frames
    min_shot_s: float = 0.5          # shots shorter than this are not sampled
    static_threshold: float = 0.004  # object motion per second, fraction of frame diagonal
    camera_threshold: float = 0.006  # camera motion per second, fraction of frame diagonal
    align_camera: bool = True        # align passing windows to their first frame where the
                                     # camera moved (false: camera above the threshold is
                                     # camera-motion)


@dataclass
class SampleConfig:
    pairs_per_video: int = 2
    gap_s: tuple = (0.25, 1.0)       # t1 - t0, seconds
    crop_scale: tuple = (0.75, 1.0)  # square crop side as a fraction of the short side


@dataclass
class TrackConfig:
    backend: str = "builtin"         # a name in pipeline.tracking.BACKENDS
    checkpoint: Optional[str] = None  # CoTracker weights (local path or fsspec URI)
    device: str = "cpu"              # cpu | cuda
    grid_size: int = 24              # grid_size x grid_size query points at t0
    num_frames: int = 8              # frames from t0 to t1 (inclusive) fed to the tracker
    options: dict = field(default_factory=dict)  # the backend's own settings (BACKENDS)


@dataclass
class PointsConfig:
    max_points: int = 10             # 1..max_points pairs per sample
    min_motion_px: float = 2.0       # a track moving less (stored pixels) is not a handle
    min_visible: float = 0.2         # fraction of visible moving tracks needed for a pair
    mask_dilate_px: int = 8
    min_change_covered: float = 0.5  # of the most-changed pixels, the mask must cover this
                                     # much (else the tracks missed what moved: no pair)


@dataclass
class OutputConfig:
    resolution: int = 256            # stored images are resolution x resolution
    image_format: str = "jpg"        # jpg | png
    videos_per_unit: int = 8         # inputs per work unit (one output shard per unit)


@dataclass
class ExecutionConfig:
    """How a build runs; not part of a version's identity (module doc)."""
    max_units_in_flight: int = 4     # bounds memory: units decoded but not yet written
    task_cpus: float = 1.0           # per prepare/finish task
    max_retries: int = 3             # per task, on worker death; then the unit is resubmitted
    unit_attempts: int = 3           # a unit lost with its node is resubmitted up to this often
    tracker_actors: int = 1          # tracker actors in the pool
    tracker_cpus: float = 0.5        # per actor; fractional so actors never starve tasks
    tracker_gpus: float = 0.0        # per actor; 0 on CPU-only clusters
    decode_timeout_s: float = 300.0  # per video, in the isolated decoder process


# Where keys of the execution section lived before the split: old configs (files users keep,
# and every version's config.yaml written before) are read through this map.
LEGACY_EXECUTION_KEYS = {
    ("ray", "max_units_in_flight"): "max_units_in_flight",
    ("ray", "task_cpus"): "task_cpus",
    ("ray", "max_retries"): "max_retries",
    ("track", "num_actors"): "tracker_actors",
    ("track", "num_cpus"): "tracker_cpus",
    ("track", "num_gpus"): "tracker_gpus",
    ("decode", "timeout_s"): "decode_timeout_s",
}
RUN_SECTIONS = ("execution", "storage")   # everything else is content


@dataclass
class PipelineConfig(TypedConfig):
    seed: int = 0
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    points: PointsConfig = field(default_factory=PointsConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    storage: StorageSettings = field(default_factory=StorageSettings)

    def validate(self) -> "PipelineConfig":
        checks = [
            (self.decode.backend in ("auto", "decord", "pyav"), "decode.backend: auto|decord|pyav"),
            (backend_problem(self.track.backend) is None, backend_problem(self.track.backend)),
            (options_problem(self.track.backend, self.track.options) is None,
             options_problem(self.track.backend, self.track.options)),
            (self.track.device in ("cpu", "cuda"), "track.device: cpu|cuda"),
            (self.output.image_format in ("jpg", "png"), "output.image_format: jpg|png"),
            (16 <= self.output.resolution <= 4096, "output.resolution: 16..4096"),
            (self.output.videos_per_unit >= 1, "output.videos_per_unit >= 1"),
            (1 <= self.points.max_points <= 64, "points.max_points: 1..64"),
            (0 <= self.points.min_change_covered <= 1, "points.min_change_covered: 0..1"),
            (self.track.num_frames >= 2, "track.num_frames >= 2"),
            (self.track.grid_size >= 2, "track.grid_size >= 2"),
            (self.sample.pairs_per_video >= 1, "sample.pairs_per_video >= 1"),
            (len(self.sample.gap_s) == 2 and 0 < self.sample.gap_s[0] <= self.sample.gap_s[1],
             "sample.gap_s: [min, max] with 0 < min <= max"),
            (len(self.sample.crop_scale) == 2 and 0 < self.sample.crop_scale[0]
             <= self.sample.crop_scale[1] <= 1, "sample.crop_scale: [min, max] in (0, 1]"),
            (self.decode.score_fps > 0 and self.decode.score_size >= 16, "decode.score_*"),
            (self.execution.max_units_in_flight >= 1, "execution.max_units_in_flight >= 1"),
            (self.execution.tracker_actors >= 1, "execution.tracker_actors >= 1"),
            (self.execution.unit_attempts >= 1, "execution.unit_attempts >= 1"),
            (self.execution.max_retries >= 0, "execution.max_retries >= 0"),
            (self.execution.decode_timeout_s > 0, "execution.decode_timeout_s > 0"),
            (min(self.execution.task_cpus, self.execution.tracker_cpus,
                 self.execution.tracker_gpus) >= 0, "execution: resources >= 0"),
            (settings_problem(self.storage) is None, settings_problem(self.storage)),
        ]
        require(checks)
        return self

    def content(self) -> dict:
        """What the dataset's bytes depend on: the identity of a dataset version."""
        return {k: v for k, v in self.to_dict().items() if k not in RUN_SECTIONS}

    def content_yaml(self) -> str:
        return yaml.safe_dump(self.content(), sort_keys=True)


def _moved_legacy_keys(data: dict) -> dict:
    """`data` with the keys of LEGACY_EXECUTION_KEYS moved into `execution` (a copy)."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for (section, key), new in LEGACY_EXECUTION_KEYS.items():
        if isinstance(data.get(section), dict) and key in data[section]:
            execution = data.setdefault("execution", {})
            if not isinstance(execution, dict):
                raise ConfigError(f"execution.: expected a mapping, got "
                                  f"{type(execution).__name__}")
            if new in execution:
                raise ConfigError(f"{section}.{key} and execution.{new} both set: keep "
                                  f"execution.{new}")
            execution[new] = data[section].pop(key)
    if data.get("ray") == {}:
        del data["ray"]
    return data


def from_dict(data: dict) -> PipelineConfig:
    return build(PipelineConfig, _moved_legacy_keys(data or {})).validate()


def version_content(version: str) -> dict:
    """The content of the config a dataset version was built with, with today's defaults
    filled in (a key added to the code since does not make an old config differ) and the
    execution settings of configs written before the split left out; as stored if today's
    code cannot read it."""
    stored = read_config(version)
    try:
        return from_dict(stored).content()
    except ConfigError:
        return stored


def load_config(path: Optional[str] = None,
                overrides: Optional[list[str]] = None) -> PipelineConfig:
    """Config from a YAML file (or defaults) with `section.key=value` overrides applied."""
    return from_dict(load_yaml(path, overrides))
