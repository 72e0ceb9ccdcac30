"""OpenAPI 3.1 descriptions of Shoal's JSON APIs, generated from the msgspec structs that define them.

Each service lists its routes once, as ``Route`` values naming the struct a request carries and the struct
a reply carries; the same structs decode and validate the bodies, so the document cannot drift from what
the service accepts. ``document`` builds the description; ``serve`` answers it at ``/v1/openapi.json``;
``scripts/openapi`` writes each service's document to docs/openapi/, and a test keeps those files current.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from aiohttp import web

from shoal.core.structs import ErrorBody

__all__ = ["PATH", "ErrorBody", "Query", "Route", "combine", "document", "serve"]

PATH = "/v1/openapi.json"
_PARAMETER = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)}")
_REF = "#/components/schemas/{name}"


# Structs rather than dataclasses: every peer's piece server imports this as it starts serving, when its
# CPU time counts (peers start together), and a Struct class is far cheaper to create than a dataclass.
class Query(msgspec.Struct, frozen=True):
    """One query-string parameter of a route."""

    name: str
    description: str
    kind: type = str
    required: bool = False


class Route(msgspec.Struct, frozen=True):
    """One operation of a JSON API. ``request`` and ``response`` are msgspec types (a Struct, or a list
    or dict of them); None means no body. ``auth`` marks operations that take a bearer token. ``media`` is
    the reply's type: ``application/x-ndjson`` for a stream of lines, each a ``response``; a body that is
    not JSON (a file's bytes, a .torrent) is its media type with no ``response``."""

    method: str
    path: str
    summary: str
    request: Any = None
    response: Any = None
    status: int = 200
    query: tuple[Query, ...] = ()
    auth: bool = False
    media: str = "application/json"


def _parameters(route: Route) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PARAMETER.findall(route.path)
    ]
    for q in route.query:
        (schema,), _ = msgspec.json.schema_components([q.kind], ref_template=_REF)
        params.append(
            {"name": q.name, "in": "query", "required": q.required, "description": q.description, "schema": schema}
        )
    return params


def _json(schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {"content": {media: {"schema": schema}}}


_PLAIN_ERROR = {
    "description": "an error: its status, with its reason in the status line and as the text body",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}


def document(
    title: str, version: str, routes: Sequence[Route], *, description: str = "", plain_errors: bool = False
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of one API. Its errors are ErrorBody replies, or with ``plain_errors``
    aiohttp's own text ones (a server whose clients read the status only, and keeps no error middleware)."""
    types = [ErrorBody]
    for route in routes:
        types.extend(t for t in (route.request, route.response) if t is not None)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = dict(zip(map(id, types), schemas, strict=True))
    error = (
        _PLAIN_ERROR
        if plain_errors
        else {"description": "an error, with its reason", **_json(schema_of[id(ErrorBody)])}
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {"summary": route.summary, "responses": {}}
        if params := _parameters(route):
            operation["parameters"] = params
        if route.request is not None:
            operation["requestBody"] = {"required": True, **_json(schema_of[id(route.request)])}
        reply: dict[str, Any] = {"description": "success"}
        if route.response is not None:
            reply.update(_json(schema_of[id(route.response)], route.media))
        elif route.media != "application/json":
            reply["content"] = {route.media: {}}  # bytes: OpenAPI 3.1 leaves out their schema
        operation["responses"][str(route.status)] = reply
        operation["responses"]["default"] = error
        if route.auth:
            operation["security"] = [{"bearer": []}]
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    info = {"title": title, "version": version, **({"description": description} if description else {})}
    doc: dict[str, Any] = {"openapi": "3.1.0", "info": info, "paths": paths, "components": {"schemas": components}}
    if any(route.auth for route in routes):
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    if plain_errors:
        del doc["components"]["schemas"]["ErrorBody"]  # no reply is one
    return doc


def combine(docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One document of several APIs served on one port: their paths and schemas together. A path or a
    schema name two of them define differently is a ValueError: the combined document would lie about one."""
    first, *rest = docs
    combined: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(first))  # a copy: the parts stay as they were
    info, components = combined["info"], combined["components"]
    for doc in rest:
        info["title"] += f"; {doc['info']['title']}"
        info["description"] = "\n\n".join(filter(None, (info.get("description"), doc["info"].get("description"))))
        for what, ours, theirs in (
            ("paths", combined["paths"], doc["paths"]),
            ("schemas", components["schemas"], doc["components"]["schemas"]),
        ):
            clash = sorted(name for name in theirs.keys() & ours.keys() if theirs[name] != ours[name])
            if clash:
                raise ValueError(f"two APIs on one port define the {what} {', '.join(clash)} differently")
            ours.update(theirs)
        components.update({k: v for k, v in doc["components"].items() if k != "schemas"})
    return combined


Source = dict[str, Any] | Callable[[], dict[str, Any]]
_SOURCE = web.AppKey("openapi_source", list[Source])


def _resolved(source: Source) -> dict[str, Any]:
    return source() if callable(source) else source


def serve(app: web.Application, doc: Source) -> None:
    """Answer ``GET /v1/openapi.json`` on ``app`` with ``doc``, or what it returns: built at the first
    request, so a server that is seldom asked (every peer's) pays nothing for it at its start, and encoded
    once. Called again for the same ``app`` (a seeder installed beside its embedded tracker), it serves the
    two documents :func:`combine`d, built at once so that a clash stops the start: one port, one document."""
    if _SOURCE in app:
        (served,) = app[_SOURCE]
        app[_SOURCE][0] = combine([_resolved(served), _resolved(doc)])
        return
    source = app[_SOURCE] = [doc]
    body: list[bytes] = []

    async def handler(_request: web.Request) -> web.Response:
        if not body:
            body.append(msgspec.json.encode(_resolved(source[0])))
        return web.Response(body=body[0], content_type="application/json")

    app.router.add_get(PATH, handler)
