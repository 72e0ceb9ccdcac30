"""The OpenAPI document of every Shoal service with a JSON API, by name: ``scripts/openapi`` writes each to
docs/openapi/<name>.json, and a test fails when a file differs from what the code describes now.

A service's document comes from its ``ROUTES`` (shoal.http.openapi), so it is registered here rather than
in shoal.http, which may import only the core. Each entry imports its service only when asked, so adding
one costs nothing to the others.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

import msgspec


def _tracker() -> dict[str, Any]:
    from shoal.tracker.app import openapi_document

    return openapi_document()


def _mirror_manager() -> dict[str, Any]:
    from shoal.mirror.manager_http import openapi_document

    return openapi_document()


def _daemon() -> dict[str, Any]:
    from shoal.daemon.control import openapi_document

    return openapi_document()


def _seeder() -> dict[str, Any]:
    from shoal.seeder.app import openapi_document

    return openapi_document()


def _peer() -> dict[str, Any]:
    from shoal.peer.piece_http import openapi_document

    return openapi_document()


DOCUMENTS: dict[str, Callable[[], dict[str, Any]]] = {
    "tracker": _tracker,
    "mirror-manager": _mirror_manager,
    "daemon": _daemon,
    "seeder": _seeder,
    "peer": _peer,
}
"""Service name -> its document (the tracker's holds its pool API: both are served on one port; the
daemon's is its control API, on its Unix socket; the seeder's is its own routes, which a seeder with an
embedded tracker serves combined with the tracker's; the peer's is every peer's piece server)."""

DIRECTORY = PurePosixPath("docs/openapi")
"""Where the documents live, from the repository's root."""


def render(document: dict[str, Any]) -> bytes:
    """A document as its file holds it: indented JSON, so a change to an API reads as a small diff."""
    return msgspec.json.format(msgspec.json.encode(document), indent=2) + b"\n"
