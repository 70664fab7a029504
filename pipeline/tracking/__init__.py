"""Point-tracker backends behind one interface (see `base.Tracker`)."""
from pipeline.tracking.base import Tracker, TrackerError, grid_queries, make_tracker

__all__ = ["Tracker", "TrackerError", "grid_queries", "make_tracker"]
