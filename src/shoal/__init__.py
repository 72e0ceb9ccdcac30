"""Shoal: peer-to-peer file distribution for fleets of machines.

The public Python API lives here: :func:`get` and its async twin :func:`aget` download a URL through the
swarm and return a :class:`GetResult`.
"""

from shoal.core.errors import ShoalError
from shoal.peer.api import GetResult, aget, get

__all__ = ["GetResult", "ShoalError", "aget", "get"]
__version__ = "0.1.0"
