"""The tracker: knows tasks, peers and their pieces; hands out peers and origin leases."""

from shoal.tracker.app import TrackerService, build_app
from shoal.tracker.config import TrackerConfig

__all__ = ["TrackerConfig", "TrackerService", "build_app"]
