"""The tracker: knows tasks, peers and their pieces; hands out peers and origin leases.

Its names load on first use (PEP 562): ``shoal tracker --help`` reads TrackerConfig's defaults without
importing the application (aiohttp, SQLAlchemy), which would cost a help text most of a second.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shoal.tracker.app import build_app
    from shoal.tracker.config import TrackerConfig
    from shoal.tracker.service import TrackerService

__all__ = ["TrackerConfig", "TrackerService", "build_app"]

_MODULES = {
    "TrackerConfig": "shoal.tracker.config",
    "TrackerService": "shoal.tracker.service",
    "build_app": "shoal.tracker.app",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
