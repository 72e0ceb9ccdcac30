"""The probe ``tracker_breakdown.py`` loads into a ``shoal tracker`` as its ``sitecustomize``: where an
announce's CPU goes, by the thread CPU time (``time.thread_time``) of each part of the request's path.

Loaded only when ``SHOAL_BREAKDOWN_OUT`` names a directory and the process is a tracker. Each timed part is a
function wrapped in place before the tracker builds its application: a plain function by the thread time
of its call, a coroutine by the thread time of each of its steps (from a resume to the next suspension), so
the time it waits suspended is not counted, and an await of one timed coroutine inside another counts in
both (the table nests them). The collector's passes are timed through ``gc.callbacks``; every thread's CPU
comes from ``/proc/self/task``. Every second a cumulative snapshot is appended to
``OUT/probe-PID.jsonl``; the wrappers cost about a microsecond per call, which the figures include.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any

_thread_time = time.thread_time
seconds: dict[str, float] = {}
calls: dict[str, int] = {}


def _add(name: str, spent: float) -> None:
    seconds[name] = seconds.get(name, 0.0) + spent
    calls[name] = calls.get(name, 0) + 1


class _Timed:
    """Awaits ``coro``, adding the thread time of each of its steps to ``name``."""

    __slots__ = ("coro", "name")

    def __init__(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        self.coro, self.name = coro, name

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, total = self.coro, 0.0
        value: Any = None
        error: BaseException | None = None
        while True:
            started = _thread_time()
            try:
                yielded = coro.throw(error) if error is not None else coro.send(value)
            except StopIteration as stop:
                _add(self.name, total + _thread_time() - started)
                return stop.value
            except BaseException:
                _add(self.name, total + _thread_time() - started)
                raise
            total += _thread_time() - started
            try:
                value, error = (yield yielded), None
            except BaseException as exc:  # thrown in (a cancellation): handed on to the coroutine
                value, error = None, exc


def time_coroutine(owner: Any, attr: str, name: str) -> None:
    original = getattr(owner, attr)

    async def timed(*args: Any, **kwargs: Any) -> Any:
        return await _Timed(original(*args, **kwargs), name)

    setattr(owner, attr, timed)


def time_function(owner: Any, attr: str, name: str) -> None:
    original: Callable[..., Any] = getattr(owner, attr)

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = _thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            _add(name, _thread_time() - started)

    setattr(owner, attr, timed)


def _threads() -> dict[str, float]:
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = open(f"/proc/self/task/{tid}/stat").read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        out[f"{tid} {stat[stat.find('(') + 1 : stat.rfind(')')]}"] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _install(out: str) -> None:
    main = threading.get_ident()
    collecting = [0.0]

    def collector(phase: str, info: dict[str, int]) -> None:
        if threading.get_ident() != main:
            return
        if phase == "start":
            collecting[0] = _thread_time()
        else:
            spent = _thread_time() - collecting[0]
            _add("gc", spent)
            _add(f"gc: generation {info['generation']}", spent)

    gc.callbacks.append(collector)

    import importlib

    import aiohttp.web_protocol as protocol
    from aiohttp import web

    import shoal.core.announce as announce
    import shoal.core.swarm as swarm
    import shoal.http.json_api as json_api
    import shoal.storage.db as db
    import shoal.storage.task_rows as task_rows
    import shoal.storage.tracker_store as store
    import shoal.tracker.app as app

    try:  # the service's own module since 6c96b4a; tracker.app's before, as builds from then are compared too
        service: Any = importlib.import_module("shoal.tracker.service")
    except ImportError:
        service = app
    cluster = importlib.import_module("shoal.tracker.cluster")

    # The peers' lane (since 8e21f47): it answers the announces in front of aiohttp, whose parts then time
    # nothing but the requests handed to it.
    try:
        lane: Any = importlib.import_module("shoal.http.lane")
        peer_lane: Any = importlib.import_module("shoal.tracker.peer_lane")
    except ImportError:
        lane = peer_lane = None
    if lane is not None:
        time_function(lane.LaneConnection, "data_received", "lane: data_received (parse, take, write)")
        time_coroutine(peer_lane.PeerAnswers, "announce", "lane: PeerAnswers.announce")
        time_function(peer_lane, "decode", "lane: decode and check the body")
        time_function(lane.LaneConnection, "_write", "lane: write")
    time_function(protocol.RequestHandler, "data_received", "aiohttp: data_received (parse)")
    time_coroutine(protocol.RequestHandler, "_handle_request", "aiohttp: _handle_request")
    time_coroutine(protocol.RequestHandler, "finish_response", "aiohttp: finish_response (write)")
    time_coroutine(web.Application, "_handle", "aiohttp: Application._handle (route, middlewares)")
    time_coroutine(app, "announce", "announce handler")
    time_coroutine(json_api, "read_body", "read_body")
    time_function(json_api, "decode", "decode and check the body")
    time_coroutine(service.TrackerService, "announce", "TrackerService.announce")
    time_coroutine(store.TrackerStore, "load", "store.load")
    time_function(service, "decide_announce", "decide_announce")
    # The decision's parts (core.announce's helpers, called through its module's globals) and the store's.
    time_function(announce, "_asker_view", "decide: asker's view")
    time_function(announce, "_take_reports", "decide: take hash reports")
    time_function(announce, "_lease_decisions", "decide: leases")
    time_function(swarm.Swarm, "hand_out", "decide: hand-out")
    if hasattr(swarm.Swarm, "hand_out_addresses"):  # the hand-out named by its holders' addresses at once
        time_function(swarm.Swarm, "hand_out_addresses", "decide: hand-out")
    time_function(swarm.Swarm, "lease_holders", "decide: lease holders")
    time_function(swarm.Swarm, "addresses", "decide: addresses")
    time_function(store.TrackerStore, "stage", "store.stage")
    time_function(task_rows.TaskRows, "apply", "stage: apply to memory")
    time_function(swarm.Swarm, "apply", "stage: swarm.apply")
    time_function(service.TrackerService, "_crossings", "crossings")
    time_function(app, "struct_response", "struct_response (encode)")
    # The cluster's checks on an owned request (a database several trackers share): who owns the task, in
    # the middleware and again at the decision, and when tasks last moved.
    time_function(cluster.Cluster, "owner", "cluster: owner (the middleware's and the decision's)")
    time_function(cluster.Cluster, "last_move", "cluster: last_move")
    time_function(cluster, "owner", "ownership.owner")
    # The group commit's batches on the loop (a server database's driver runs there, SQLite's in threads):
    # as a coroutine, since the batch's statements hand the thread back to the loop at each round trip,
    # which a plain function's thread time would count. Builds before TrackerStore.write_batch wrote every
    # batch through write_transaction.
    if hasattr(store.TrackerStore, "write_batch"):
        time_coroutine(store.TrackerStore, "write_batch", "store: write_batch (the writer's batches)")
    else:
        time_coroutine(db.SqlStore, "write_transaction", "store: write_batch (the writer's batches)")

    def dump() -> None:
        path = os.path.join(out, f"probe-{os.getpid()}.jsonl")
        while True:
            time.sleep(1.0)
            snapshot = {
                "t": time.time(),
                "seconds": dict(seconds),
                "calls": dict(calls),
                "threads": _threads(),
                "process": sum(os.times()[:2]),
            }
            with open(path, "a") as f:
                f.write(json.dumps(snapshot) + "\n")

    threading.Thread(target=dump, daemon=True, name="breakdown-probe").start()


_OUT = os.environ.get("SHOAL_BREAKDOWN_OUT")
if _OUT and "tracker" in sys.argv:
    _install(_OUT)
