"""One video through the pipeline's per-video stages with a given seed, for tests whose
outcome must not depend on where their files are (a unit run seeds each video from its URI:
a temporary directory or another checkout gives other pair windows)."""
from __future__ import annotations

import numpy as np

from pipeline.plan import video_id
from pipeline.tracking import grid_queries
from pipeline.video import finish_video, prepare_video


def through_the_stages(path: str, name: str, cfg, seed: int, tracker) -> tuple[dict, list]:
    """prepare -> track -> finish for the video at `path`, its id from `name`: (the video's
    row, its samples)."""
    video = prepare_video(path, path, video_id(name), cfg, seed)
    if not video.pairs:
        return video.row, []
    size = cfg.output.resolution
    queries = np.repeat(grid_queries(size, size, cfg.track.grid_size)[None], len(video.pairs),
                        axis=0)
    tracks, visible = tracker.track(np.stack([p.frames for p in video.pairs]), queries)
    return finish_video(video, tracks, visible, cfg, tracker.name, tracker.version)
