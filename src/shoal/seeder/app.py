"""The seeder's HTTP endpoints (the distributor's interface, plus a listing and the files themselves)::

    GET /serve?REL                    the file's .torrent; waits (bounded) if it is still being hashed
    GET /serve_last_updated?DIRNAME   the .torrent of the newest file under one watched directory
    GET /serve_last_updated           the .torrent of the newest file of all
    GET /serve/PASSKEY?REL, /serve_last_updated/PASSKEY[?DIRNAME]   the same, for a fleet's BitTorrent client
    GET|HEAD /files/REL               the file itself, with Range: the origin and the BEP 19 web seed
    GET|HEAD /files/PASSKEY/REL       the same, for a fleet's BitTorrent client or getter (a fleet token)
    GET /v1/files                     JSON listing: path, size, digest, content task, modified, torrent URL,
                                      info-hash
    GET /v1/seeder/health             files published and pending, bytes and seconds spent hashing
    GET /v1/openapi.json              these routes' OpenAPI document (with the embedded tracker's, if any)

The JSON replies are structs of shoal.seeder.messages, and ``ROUTES`` lists every route once; the OpenAPI
document is generated from them.

REL is the watched directory's name and the path inside it (``releases/app.tar.gz``). Names are checked
before any lookup (``names.parse_rel``) and only published files are served, so nothing outside the
watched directories can be reached. Errors are JSON ``{"error": ...}`` with a 4xx (503 while hashing).

With a fleet token the torrents are private (BEP 27) and their announce URLs carry a passkey
(core.tickets; the tracker refuses announces without one, tracker.bt). A torrent is served only to a
requester that shows it belongs to the fleet: a passkey in the path (``/serve/PASSKEY?REL``, the form a
standard client or a browser can be given; the torrent carries that same passkey), or the fleet's request
credential (``X-Shoal-Fleet``; the torrent carries a passkey made for the requester's address). Anyone else
gets a 403. So do the files themselves: ``/files/REL`` needs the fleet's credential, and
``/files/PASSKEY/REL`` (the private torrents' BEP 19 web seed, and the ``url`` of the listing) a passkey
of the fleet in its first segment, which no REL can be mistaken for (a passkey carries a MAC). Without a
fleet token the files are open, as an origin is (mutual TLS, when configured, guards the whole port).

The routes are installed into an application the caller owns, so one process can serve them beside an
embedded tracker on one port.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from shoal import __version__
from shoal.core.errors import CredentialRefused, ProtocolError
from shoal.core.metainfo import encode_torrent
from shoal.core.tickets import FLEET_HEADER
from shoal.core.tracker_choice import parse_trackers
from shoal.http import openapi
from shoal.http.json_api import error_response, struct_response
from shoal.http.metrics import ROUTE as metrics_route
from shoal.http.metrics import serve_metrics
from shoal.http.openapi import Route
from shoal.seeder import metrics as seeder_metrics
from shoal.seeder.catalog import Catalog, SeededFile
from shoal.seeder.config import SeederConfig
from shoal.seeder.files import file_response
from shoal.seeder.messages import FileListing, ListedFile, SeederHealth
from shoal.seeder.names import parse_rel, through_links
from shoal.seeder.registrar import quote
from shoal.seeder.service import Seeder
from shoal.seeder.wire import WireSeeder

SEEDER = web.AppKey("seeder", Seeder)
CATALOG = web.AppKey("seeder_catalog", Catalog)
CONFIG = web.AppKey("seeder_config", SeederConfig)
TRACKER = web.AppKey("seeder_tracker", tuple[str, ...])
"""The trackers' base URLs for torrents' ``announce`` (and ``announce-list``: BEP 12); empty: the tracker
runs here, at this base URL."""

SEEDER_PATHS = ("/serve", "/serve_last_updated", "/files/", "/v1/files", "/v1/seeder/")


@web.middleware
async def seeder_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if not request.path.startswith(SEEDER_PATHS):
        return await handler(request)
    try:
        return await handler(request)
    except (ProtocolError, web.HTTPException) as exc:
        response = error_response(exc)
        if response is None:
            raise
        return response


def _base_url(request: web.Request) -> str:
    advertised = request.app[CONFIG].advertise
    return advertised.rstrip("/") if advertised else f"{request.scheme}://{request.host}"


def _passkey(request: web.Request, what: str = "torrents") -> str | None:
    """The passkey a torrent (or URL) served to ``request`` carries: None outside a fleet; the requester's
    own passkey (the path's), or one made for its address when it sent the fleet's credential; a 403 naming
    ``what`` is refused for anyone else."""
    key = request.app[CONFIG].credentials.key
    if key is None:
        return None
    given = request.match_info.get("passkey")
    try:
        if given:
            key.check_passkey(given)
            return given
        key.check_credential(request.headers.get(FLEET_HEADER), time.time())
    except CredentialRefused as exc:
        ask = "/serve/PASSKEY?REL" if what == "torrents" else "/files/PASSKEY/REL"
        raise web.HTTPForbidden(
            reason=f"{exc}; this seeder's {what} are for the fleet: ask {ask} (`shoal passkey`)"
        ) from None
    return _requester_passkey(request)


def _requester_passkey(request: web.Request) -> str | None:
    """A passkey made for the requester's address (None outside a fleet), for a request that showed the
    fleet's credential."""
    key = request.app[CONFIG].credentials.key
    if key is None:
        return None
    holder = (request.remote or "").partition("%")[0]  # an IPv6 address without its zone
    return key.passkey(holder or "fleet")


def _file_url(base: str, rel: str, passkey: str | None) -> str:
    """Where a published file is fetched: ``/files/REL``, or ``/files/PASSKEY/REL`` in a fleet."""
    return f"{base}/files/{passkey}/{quote(rel)}" if passkey else f"{base}/files/{quote(rel)}"


def _torrent(request: web.Request, entry: SeededFile, passkey: str | None) -> web.Response:
    base = _base_url(request)
    first, *others = request.app[TRACKER] or (base,)
    announce = f"/announce/{passkey}" if passkey else "/announce"
    body = encode_torrent(
        entry.info,
        announce=f"{first}{announce}",
        backup_announces=[f"{tracker}{announce}" for tracker in others],
        # BEP 19: the web seed is asked with no headers of the client's own, so it carries the passkey too.
        url_list=[_file_url(base, entry.rel, passkey)],
        creation_date=int(entry.published_at),
    )
    filename = entry.info.name.replace('"', "") + ".torrent"
    return web.Response(
        body=body,
        content_type="application/x-bittorrent",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _query_name(request: web.Request) -> str:
    """The query string is the name itself (``/serve?releases/app.tar.gz``), percent-decoded; a name that is
    not UTF-8 once decoded is a ProtocolError (400)."""
    try:
        return unquote(request.query_string, errors="strict")
    except UnicodeDecodeError:
        raise ProtocolError("a file name must be UTF-8, percent-encoded", field="path") from None


async def _rel(request: web.Request, raw: str) -> str:
    """The REL a client's name stands for: as given (``DIR/path``), or a path inside one watched directory
    (``path``: distributor's form); 409 naming the candidates when several directories hold that path.
    A name through a symlink inside its watched directory (a mirror job's ``current``) stands for the
    published file it leads to (``names.through_links``)."""
    rel = parse_rel(raw)
    catalog = request.app[CATALOG]
    names = catalog.named(rel, _root_names(request))
    if len(names) > 1:
        raise web.HTTPConflict(reason=f"{rel} is in several watched directories: {', '.join(names)}; name one")
    if names:
        return names[0]
    roots = request.app[SEEDER].roots
    for candidate in (rel, *(f"{root.name}/{rel}" for root in roots)):
        linked = await asyncio.to_thread(through_links, roots, candidate)
        if linked is not None and catalog.named(linked, ()):
            return linked
    return rel


async def serve(request: web.Request) -> web.Response:
    passkey = _passkey(request)  # first: a stranger learns nothing, not even whether the file is published
    rel = await _rel(request, _query_name(request))
    catalog = request.app[CATALOG]
    try:
        async with asyncio.timeout(request.app[CONFIG].serve_wait):
            entry = await catalog.wait_for(rel)
    except TimeoutError:
        raise web.HTTPServiceUnavailable(reason=f"{rel} is still being hashed", headers={"Retry-After": "5"}) from None
    if entry is None:
        raise web.HTTPNotFound(reason=f"{rel} is not published here")
    return _torrent(request, entry, passkey)


async def serve_last_updated(request: web.Request) -> web.Response:
    passkey = _passkey(request)
    catalog = request.app[CATALOG]
    root = _query_name(request) or None
    if root is not None:
        root = parse_rel(root)
        if root not in {f.root for f in catalog.files.values()} and root not in _root_names(request):
            raise web.HTTPNotFound(reason=f"{root} is not a watched directory")
    entry = catalog.newest(root)
    if entry is None:
        raise web.HTTPNotFound(reason="nothing is published yet")
    return _torrent(request, entry, passkey)


def _root_names(request: web.Request) -> set[str]:
    return {d.resolve().name for d in request.app[CONFIG].dirs}


def _files_rel(request: web.Request) -> str:
    """The REL a ``/files/`` request names, once it showed the fleet's passkey (its first segment) or
    credential when this seeder has a fleet token; a 403 when it showed neither."""
    raw = request.match_info["rel"]
    key = request.app[CONFIG].credentials.key
    if key is None:
        return raw
    first, _, rest = raw.partition("/")
    if rest:
        try:
            key.check_passkey(first)
            return rest
        except CredentialRefused:
            pass  # not a passkey of the fleet: a REL, which needs the fleet's credential
    _passkey(request, what="files")
    return raw


async def files(request: web.Request) -> web.StreamResponse:
    rel = await _rel(request, _files_rel(request))
    catalog = request.app[CATALOG]
    entry = catalog.get(rel)
    if entry is None:
        if catalog.is_pending(rel):
            raise web.HTTPServiceUnavailable(reason=f"{rel} is still being hashed", headers={"Retry-After": "2"})
        raise web.HTTPNotFound(reason=f"{rel} is not published here")
    return await file_response(request, entry)


async def listing(request: web.Request) -> web.Response:
    base = _base_url(request)
    # In a fleet the listing needs the fleet's credential (the tracker's middleware): its URLs carry a
    # passkey made for the requester, so they work as they are in a client that sends no header.
    passkey = _requester_passkey(request)
    serve = f"{base}/serve/{passkey}" if passkey else f"{base}/serve"
    entries = sorted(request.app[CATALOG].files.values(), key=lambda f: f.rel)
    files = [
        ListedFile(
            path=f.rel,
            size=f.stat.size,
            digest=f"blake3:{f.hashes.digest}",
            task_id=f.task_id,
            modified=f.stat.mtime_ns / 1e9,
            info_hash=f.info_hash.hex(),
            torrent=f"{serve}?{quote(f.rel)}",
            url=_file_url(base, f.rel, passkey),
        )
        for f in entries
    ]
    return struct_response(FileListing(files, request.app[CATALOG].pending_names(), time.time()))


async def health(request: web.Request) -> web.Response:
    seeder = request.app[SEEDER]
    return struct_response(
        SeederHealth(
            ok=True,
            files=len(seeder.catalog.files),
            pending=len(seeder.catalog.pending_names()),
            hashed_bytes=seeder.hashed_bytes,
            hashing_seconds=round(seeder.hashing_seconds, 3),
        )
    )


TORRENT = "application/x-bittorrent"
ROUTES = (
    Route(
        "GET",
        "/serve",
        "the .torrent of the file REL, the whole query string (/serve?releases/app.tar.gz), percent-encoded; "
        "waits (bounded) while it is being hashed, then 503 with Retry-After. With a fleet token, a 403 without "
        "the fleet's credential (X-Shoal-Fleet); the torrent is private and announces with a passkey made for "
        "the requester",
        media=TORRENT,
    ),
    Route(
        "GET",
        "/serve_last_updated",
        "the .torrent of the newest file (by mtime): under the watched directory the query string names "
        "(/serve_last_updated?releases), or of all with none",
        media=TORRENT,
    ),
    Route(
        "GET",
        "/serve/{passkey}",
        "as /serve, for a fleet's BitTorrent client (with a fleet token): the torrent announces with PASSKEY, "
        "a 403 for a passkey that is not the fleet's",
        media=TORRENT,
    ),
    Route(
        "GET",
        "/serve_last_updated/{passkey}",
        "as /serve_last_updated, with a passkey as /serve/{passkey} takes it",
        media=TORRENT,
    ),
    Route(
        "GET",
        "/files/{rel}",
        "the file REL (it may hold slashes) itself, for the origin and the BEP 19 web seed: a 206 for a single "
        "Range, ETag its BLAKE3, If-Range; HEAD too. With a fleet token, a 403 without the fleet's credential "
        "(X-Shoal-Fleet) or a passkey of the fleet as REL's first segment (/files/PASSKEY/REL: the private "
        "torrents' web seed)",
        media="application/octet-stream",
    ),
    Route("GET", "/v1/files", "the published files, and those still pending", response=FileListing),
    Route(
        "GET",
        "/v1/seeder/health",
        "files published and pending, bytes and seconds spent hashing",
        response=SeederHealth,
    ),
)
_HANDLERS: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
    "/serve": serve,
    "/serve_last_updated": serve_last_updated,
    "/serve/{passkey}": serve,
    "/serve_last_updated/{passkey}": serve_last_updated,
    "/files/{rel}": files,
    "/v1/files": listing,
    "/v1/seeder/health": health,
}
_PATTERNS = {"/files/{rel}": "/files/{rel:.+}"}
"""Where a route's path parameter spans several segments: a REL is a path."""


def openapi_document() -> dict[str, Any]:
    """The OpenAPI description of the seeder's routes, from the structs its handlers write."""
    return openapi.document("Shoal seeder", __version__, (*ROUTES, metrics_route), description=__doc__ or "")


def install(app: web.Application, seeder: Seeder, tracker: str, wire: WireSeeder | None = None) -> None:
    """Add the seeder's routes to ``app``. ``tracker`` is the tracker base URL for torrents (or several,
    comma-separated: core.tracker_choice); empty when the
    tracker is embedded in ``app`` (torrents then announce to the URL the client used, and /v1/openapi.json
    describes both). ``/metrics`` reports the seeder (with ``wire``, its BitTorrent wire seeder too) beside
    whatever else ``app`` reports there (the embedded tracker)."""
    app[SEEDER] = seeder
    app[CATALOG] = seeder.catalog
    app[CONFIG] = seeder.config
    app[TRACKER] = parse_trackers(tracker) if tracker else ()
    app.middlewares.append(seeder_errors)
    for route in ROUTES:
        app.router.add_get(_PATTERNS.get(route.path, route.path), _HANDLERS[route.path])  # HEAD too
    openapi.serve(app, openapi_document)
    seeder_metrics.install(serve_metrics(app), seeder, wire)
