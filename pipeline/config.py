"""The pipeline's typed configuration, loaded from YAML.

Unknown keys are errors (a typo must not silently fall back to a default). Every dataset
version stores its resolved config as `<dataset>/v<N>/config.yaml`; a run builds only into the
version with exactly its config (else a new version), so no version mixes two configurations.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from schemas.typed_config import ConfigError, TypedConfig, build, load_yaml, require

__all__ = ["ConfigError", "PipelineConfig", "from_dict", "load_config"]


@dataclass
class DecodeConfig:
    backend: str = "auto"            # auto (decord, PyAV fallback) | decord | pyav
    score_fps: float = 4.0           # sampling rate of the low-resolution scoring frames
    score_size: int = 128            # short side of scoring frames, pixels
    max_score_frames: int = 96       # at most this many scoring frames (half as many probes)
    timeout_s: float = 300.0         # per video, in the isolated decoder process
    max_bytes: int = 2 << 30         # remote inputs are copied locally up to this size


@dataclass
class FilterConfig:
    min_duration_s: float = 1.0      # shorter -> filtered:too-short
    min_frames: int = 8
    min_size: int = 64               # short side below -> filtered:too-small
    max_pixels: int = 3840 * 2160 * 2  # width*height above -> failed:VideoTooLarge
    cut_threshold: float = 0.45      # histogram distance (0..1) between scoring frames
    min_shot_s: float = 0.5          # shots shorter than this are not sampled
    segment_s: float = 10.0          # long shots are judged in segments of at most this
    static_threshold: float = 0.004  # object motion per second, fraction of frame diagonal
    camera_threshold: float = 0.006  # camera motion per second, fraction of frame diagonal


@dataclass
class SampleConfig:
    pairs_per_video: int = 2
    gap_s: tuple = (0.25, 1.0)       # t1 - t0, seconds
    crop_scale: tuple = (0.75, 1.0)  # square crop side as a fraction of the short side


@dataclass
class TrackConfig:
    backend: str = "builtin"         # builtin | cotracker
    checkpoint: Optional[str] = None  # CoTracker weights (local path or fsspec URI)
    device: str = "cpu"              # cpu | cuda
    grid_size: int = 24              # grid_size x grid_size query points at t0
    num_frames: int = 8              # frames from t0 to t1 (inclusive) fed to the tracker
    num_actors: int = 1              # tracker actors in the pool
    num_gpus: float = 0.0            # per actor; 0 on CPU-only clusters
    num_cpus: float = 0.5            # per actor; fractional so actors never starve tasks


@dataclass
class PointsConfig:
    max_points: int = 10             # 1..max_points pairs per sample
    min_motion_px: float = 2.0       # a track moving less (stored pixels) is not a handle
    min_visible: float = 0.2         # fraction of visible moving tracks needed for a pair
    mask_dilate_px: int = 8


@dataclass
class OutputConfig:
    resolution: int = 256            # stored images are resolution x resolution
    image_format: str = "jpg"        # jpg | png
    videos_per_unit: int = 8         # inputs per work unit (one output shard per unit)


@dataclass
class RayConfig:
    max_units_in_flight: int = 4     # bounds memory: units decoded but not yet written
    task_cpus: float = 1.0
    max_retries: int = 3             # per task, on worker death


@dataclass
class PipelineConfig(TypedConfig):
    seed: int = 0
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    points: PointsConfig = field(default_factory=PointsConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def validate(self) -> "PipelineConfig":
        checks = [
            (self.decode.backend in ("auto", "decord", "pyav"), "decode.backend: auto|decord|pyav"),
            (self.track.backend in ("builtin", "cotracker"), "track.backend: builtin|cotracker"),
            (self.track.device in ("cpu", "cuda"), "track.device: cpu|cuda"),
            (self.output.image_format in ("jpg", "png"), "output.image_format: jpg|png"),
            (16 <= self.output.resolution <= 4096, "output.resolution: 16..4096"),
            (self.output.videos_per_unit >= 1, "output.videos_per_unit >= 1"),
            (1 <= self.points.max_points <= 64, "points.max_points: 1..64"),
            (self.track.num_frames >= 2, "track.num_frames >= 2"),
            (self.track.grid_size >= 2, "track.grid_size >= 2"),
            (self.sample.pairs_per_video >= 1, "sample.pairs_per_video >= 1"),
            (len(self.sample.gap_s) == 2 and 0 < self.sample.gap_s[0] <= self.sample.gap_s[1],
             "sample.gap_s: [min, max] with 0 < min <= max"),
            (len(self.sample.crop_scale) == 2 and 0 < self.sample.crop_scale[0]
             <= self.sample.crop_scale[1] <= 1, "sample.crop_scale: [min, max] in (0, 1]"),
            (self.decode.score_fps > 0 and self.decode.score_size >= 16, "decode.score_*"),
            (self.filter.segment_s > 0, "filter.segment_s > 0"),
            (self.ray.max_units_in_flight >= 1, "ray.max_units_in_flight >= 1"),
        ]
        require(checks)
        return self


def from_dict(data: dict) -> PipelineConfig:
    return build(PipelineConfig, data or {}).validate()


def load_config(path: Optional[str] = None,
                overrides: Optional[list[str]] = None) -> PipelineConfig:
    """Config from a YAML file (or defaults) with `section.key=value` overrides applied."""
    return from_dict(load_yaml(path, overrides))
