"""Point-tracker backends behind one interface (`base.Tracker`), by name in `BACKENDS`."""
from pipeline.tracking.base import Tracker, TrackerError, grid_queries
from pipeline.tracking.registry import BACKENDS, make_tracker

__all__ = ["BACKENDS", "Tracker", "TrackerError", "grid_queries", "make_tracker"]
