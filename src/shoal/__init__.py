"""Shoal: peer-to-peer file distribution for fleets of machines.

The public Python API lives here: :func:`get` and its async twin :func:`aget` download a URL through the
swarm and return a :class:`GetResult`; :class:`Cache` is the node cache; :class:`Pool` pushes downloads to a
pool of daemons and watches them. They are imported on first use
(PEP 562), so ``import shoal.core...`` in a short-lived command does not pay for aiohttp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from shoal.core.errors import ShoalError

if TYPE_CHECKING:
    from shoal.daemon.api import Cache
    from shoal.peer.api import GetResult, aget, get
    from shoal.tracker.pool_client import Pool

__all__ = ["Cache", "GetResult", "Pool", "ShoalError", "aget", "get"]
__version__ = "0.1.0"

_LAZY = {
    "GetResult": "shoal.peer.api",
    "aget": "shoal.peer.api",
    "get": "shoal.peer.api",
    "Cache": "shoal.daemon.api",
    "Pool": "shoal.tracker.pool_client",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'shoal' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
