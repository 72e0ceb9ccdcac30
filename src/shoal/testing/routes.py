"""What an aiohttp application serves and what an OpenAPI document describes, as comparable sets, for the
tests that keep each service's ``ROUTES`` complete."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from shoal.http import openapi


def served(app: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of every route ``app`` serves, but HEAD (aiohttp's add_get adds one beside
    each GET) and the OpenAPI document's own route."""
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None and route.resource.canonical != openapi.PATH
    }


def described(document: dict[str, Any]) -> set[tuple[str, str]]:
    """(method, path template) of every operation of an OpenAPI ``document``."""
    return {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}
