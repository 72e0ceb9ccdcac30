"""Shoal's exception tree, and the process exit code each branch maps to.

::

    ShoalError                      1  anything else that went wrong
    ├── UsageError                  2  bad arguments, flags, units, paths given by the user
    │   ├── ConfigError             2  a mirrors.toml that cannot be used (names the file, the line and the key)
    │   ├── CronError               2  a cron expression that cannot be read (names the field)
    │   └── PoolRefused             2  the tracker refused a pool request: unknown pool, token, a bad push
    ├── TrackerUnavailable          3  the tracker could not be reached or answered nonsense
    │   ├── TrackerUnreachable      3  no answer (refused, reset, timed out) or a 5xx: try the next tracker
    │   ├── TrackerBusy             3  the tracker asks to wait (503 with Retry-After): wait, then ask again
    │   └── FleetRefused            3  the tracker refused this peer's fleet credential (its 401)
    ├── OriginError                 4  the origin failed (HTTP error, refused, short body)
    │   ├── NoSwarmCopy             4  --no-origin: the swarm cannot supply the file, and the origin is not asked
    │   └── OriginChanged           4  the origin's file changed under a download, too often to go on
    ├── JoinAgain                   -  a download's attempt is over (a new generation): the engine joins again
    ├── IntegrityError              5  content fails a whole-file digest (--digest, the origin's, a cache id)
    ├── LocalIOError                6  reading or writing local files failed
    ├── CacheError                  7  the node cache cannot do what was asked
    │   ├── CacheFull               7  the file does not fit: larger than the capacity, or no room
    │   ├── NotInCache              7  no entry (or no copy on disk) for that id
    │   └── CacheLocked             7  another daemon serves that cache directory
    ├── CallbackFailed              8  the file is in place, but the --callback command failed
    ├── ListenError                 9  an address to listen on cannot be had (in use, not this host's)
    ├── ProtocolError               -  malformed input from a peer or a client (mapped to 4xx at the edge)
    │   ├── Conflict                -  a request at odds with what exists now (409 at the edge)
    │   │   ├── IllegalTransition   -  an event a state machine does not allow in its status
    │   │   └── PoolExists          -  a pool of that name exists already
    │   ├── NotFound                -  what a request names does not exist: a pool, a push job (404 at the edge)
    │   └── CredentialRefused       -  no fleet credential or ticket, or one that does not check out (401/403)
    ├── StoreError                  1  the SQL database failed or could not be reached (503 at the edge)
    │   ├── DatabaseLocked         10  another tracker process holds the SQLite database file
    │   ├── TaskMoved               1  another tracker took over the task of a write meanwhile (503 at the edge)
    │   │   └── TaskCreatedElsewhere 1  another tracker created the task this one's write created
    │   └── PoolMoved               1  another tracker took over the pool of a write meanwhile (503 at the edge)
    ├── AnnounceRefused             -  the tracker will not decide an announce now: a peer limit, a move (429/503)
    ├── DaemonUnavailable           1  no daemon answers on the control socket
    │   └── UnsafeSocket            1  the socket's directory or the process behind it is not this user's
    ├── RemoteError                 *  an error the daemon reported (* the daemon's exit code, kept)
    ├── HashingStopped              1  the daemon's idle hasher was stopped before a file was hashed
    ├── ManagerRefused              1  the mirror manager refused a request (its 409)
    ├── UnknownJob                  1  the mirror manager has no job of that name (404 at the edge)
    ├── UnknownWorker               1  the mirror manager has no worker of that name (404 at the edge)
    ├── NoWorker                    1  no live mirror worker can take the job now (409 at the edge)
    ├── StaleSession                1  a mirror worker must register again (409 with "register" at the edge)
    ├── StaleRun                    1  a report from a run that is no longer the job's current one (409)
    ├── ProviderError               1  a mirror provider could not produce a complete, consistent version
    │   └── ProviderTimedOut        1  the provider's command ran past its time and was stopped
    ├── PublishError                1  a mirror version could not be pushed to its pool
    └── LogUnavailable              1  a mirror job's run log cannot be had from its worker now (503/504)

Every error Shoal raises on purpose is defined here, so this drawing is the whole tree. Modules keep only
private exceptions that never leave them (a control-flow signal caught a few lines away).

Errors carry their context as attributes (``url``, ``peer``, ``piece``) so callers can act on them
without parsing messages. Foreign exceptions (aiohttp, OSError, SQLAlchemy) are translated at the edge
of the layer that sees them.
"""

from __future__ import annotations

import enum
import errno
import os


class ShoalError(Exception):
    """Root of every error Shoal raises on purpose."""

    exit_code = 1


class JoinAgain(ShoalError):
    """The attempt is over: the task moved to a new generation, or the origin serves another file now.
    Raised by the download core (core.download) and caught by the engine, which joins again; never leaves
    it (after too many, the engine raises OriginChanged)."""


class UsageError(ShoalError):
    """The user asked for something malformed: a bad flag value, unit, URL or destination."""

    exit_code = 2


class ConfigError(UsageError):
    """A mirror configuration (mirrors.toml) cannot be used. ``source`` is the file's name, ``line`` the line
    at fault (None when unknown), ``key`` the offending key's own name (``intervall``), ``path`` where it
    sits (``jobs[1].intervall``; empty for a syntax error)."""

    def __init__(self, message: str, *, source: str, line: int | None, key: str | None, path: str = "") -> None:
        super().__init__(message)
        self.source = source
        self.line = line
        self.key = key
        self.path = path


class CronError(UsageError):
    """A cron expression that cannot be read; ``field`` names the part at fault."""

    def __init__(self, message: str, *, expression: str, field: str) -> None:
        super().__init__(f"cron expression {expression!r}: {message}")
        self.expression = expression
        self.field = field


class PoolRefused(UsageError):
    """The tracker refused a request of its pool API (an unknown pool, a missing or wrong token, a bad
    push); ``status`` is the HTTP status it answered with."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class TrackerUnavailable(ShoalError):
    """The tracker could not be reached, or gave an answer that is not the protocol."""

    exit_code = 3

    def __init__(self, message: str, *, tracker: str = "") -> None:
        super().__init__(message)
        self.tracker = tracker

    @classmethod
    def not_a_tracker(cls, tracker: str, answered: str) -> TrackerUnavailable:
        """A server at ``tracker`` answered the tracker API with something else (``answered``: "404 Not
        Found, text/html", say): a web server, or a Shoal tracker given by its BitTorrent /announce URL."""
        path = tracker.split("://", 1)[-1].partition("/")[2].rstrip("/")
        if path.endswith(("announce", "scrape")):
            advice = "give the tracker's base URL (http://HOST:PORT), not its BitTorrent /" + path.rsplit("/", 1)[-1]
        else:
            advice = "is that a Shoal tracker? give its base URL (http://HOST:PORT)"
        return cls(f"{tracker} answered {answered}, not the tracker API: {advice}", tracker=tracker)


class TrackerUnreachable(TrackerUnavailable):
    """The tracker gave no answer (a connection refused or reset, a timeout) or failed (a 5xx that is not
    busy): a client with several trackers asks the next (core.tracker_choice). ``tracker`` is the URL, or
    the comma-separated list when every one of a client's trackers failed."""


class TrackerBusy(TrackerUnavailable):
    """The tracker is up but asks to wait: it answered 503 (or 429) with ``Retry-After`` and an error that
    says why, which is the message (core.tracker_replies): most often it sheds load (busy), but a cluster's
    member asks it too while a task changes owner, and a full swarm of a newcomer. A client waits
    ``retry_after`` seconds (bounded, jittered: core.retry.busy_delay) and asks again; it is not the tracker
    being down, so it never leads to the origin fallback or to giving up. Only a caller that chose not to
    wait sees it, as a TrackerUnavailable it may ignore."""

    def __init__(self, message: str, *, tracker: str = "", retry_after: float) -> None:
        super().__init__(message, tracker=tracker)
        self.retry_after = retry_after


class FleetRefused(TrackerUnavailable):
    """The tracker refused this peer's fleet credential (a 401): no fleet token given, another fleet's, or
    clocks out of step (core.tickets). Asking again does not help; the message says what the tracker said."""


class OriginError(ShoalError):
    """The origin refused, failed, or sent something other than what was asked."""

    exit_code = 4

    def __init__(self, message: str, *, url: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status

    @property
    def transient(self) -> bool:
        """Whether the origin may answer otherwise later: no HTTP status (unreachable, a broken reply), a
        5xx, a timeout (408) or too many requests (429). A 4xx refusal is its answer about the file."""
        return self.status is None or self.status >= 500 or self.status in (408, 429)


class NoSwarmCopy(OriginError):
    """``--no-origin``: the swarm cannot supply the file (or the rest of it), and the origin may not be asked."""


class OriginChanged(OriginError):
    """The origin's file (length, ETag or Last-Modified) changed while the swarm was fetching it."""


class IntegrityError(ShoalError):
    """Downloaded content does not match a whole-file digest (the user's, the origin's, or a cache id)."""

    exit_code = 5

    def __init__(self, message: str, *, expected: str = "", actual: str = "") -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class LocalIOError(ShoalError):
    """A local file could not be read or written (missing directory, permissions, disk full)."""

    exit_code = 6

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class ListenError(ShoalError):
    """A server cannot listen where it was asked to: the port is in use, the address is not this host's,
    the port needs privileges, or a socket path cannot be bound. The same exit code from every command
    that listens (tracker, seed, daemon, mirror, get), so a supervisor can tell it from a bad flag."""

    exit_code = 9

    def __init__(self, message: str, *, address: str = "") -> None:
        super().__init__(message)
        self.address = address

    @classmethod
    def from_os_error(cls, address: str, exc: OSError) -> ListenError:
        """The error for binding ``address`` (HOST:PORT or a socket path) that failed with ``exc``: the
        system's reason without the wrapper's repetition of the address, and what to do where it is clear."""
        # asyncio's bind error repeats the address in its strerror; a name lookup's (gaierror) errno is negative.
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror or str(exc)
        advice = {
            errno.EADDRINUSE: "; another process listens there: stop it or choose another port",
            errno.EADDRNOTAVAIL: "; that address is not this host's",
        }.get(exc.errno or 0, "")
        if exc.errno == errno.EACCES and not address.startswith("/"):
            advice = "; ports below 1024 need root or CAP_NET_BIND_SERVICE"
        return cls(f"cannot listen on {address}: {reason}{advice}", address=address)


class CacheError(ShoalError):
    """The node cache cannot do what was asked."""

    exit_code = 7

    def __init__(self, message: str, *, digest: str = "") -> None:
        super().__init__(message)
        self.digest = digest


class CacheFull(CacheError):
    """A file does not fit: it is larger than the capacity, or pinned and in-use entries leave no room.
    Nothing was evicted for it."""

    def __init__(self, message: str, *, size: int, capacity: int, digest: str = "") -> None:
        super().__init__(message, digest=digest)
        self.size = size
        self.capacity = capacity


class NotInCache(CacheError):
    """The cache has no entry for an id, or the entry's file is not on disk."""


class CacheLocked(CacheError):
    """Another daemon holds the cache directory's lock (one daemon per cache: two would each keep their own
    capacity and evict without regard to the other's downloads)."""

    def __init__(self, message: str, *, path: str, pid: int | None) -> None:
        super().__init__(message)
        self.path = path
        self.pid = pid


class CallbackFailed(ShoalError):
    """The download succeeded and the file is in place, but the ``--callback`` command could not be started
    or did not exit 0."""

    exit_code = 8

    def __init__(self, message: str, *, command: str, path: str, status: int | None = None) -> None:
        super().__init__(message)
        self.command = command
        self.path = path
        self.status = status
        """The command's exit status (negative: the signal that killed it); None when it could not start."""


class ProtocolError(ShoalError):
    """Malformed input from the network: a request body, a bitfield, a header from a peer."""

    http_status = 400
    """The status an HTTP API answers this error with."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class Conflict(ProtocolError):
    """A well-formed request that what exists now does not allow: a name already taken, a status change a
    state machine forbids. The client caused it, and nothing changed (409 Conflict at an API's edge)."""

    http_status = 409


class IllegalTransition(Conflict):
    """An event that a state machine's table does not allow in its status: a stale or duplicated report, or
    a command that makes no sense now (stopping a paused job). Raised by each transition table (a pool job
    and its assignments in shoal.core.pool, a mirror job in shoal.core.mirror_job); 409 Conflict at an API's
    edge. ``subject`` names what has the status (``job``, ``assignment``); ``reason`` says more where the
    table's guard, not its pairs, refused."""

    def __init__(self, subject: str, status: enum.Enum, event: object, reason: str = "") -> None:
        message = f"{type(event).__name__} is not allowed while the {subject} is {status.value}"
        super().__init__(f"{message}: {reason}" if reason else message, field="status")
        self.subject = subject
        self.status = status
        self.event = event


class NotFound(ProtocolError):
    """What a request names does not exist: a pool, a push job, a member's part in one."""

    http_status = 404


class PoolExists(Conflict):
    """A pool of that name exists already: the name is taken, the database is fine."""


class CredentialRefused(ProtocolError):
    """A request without a fleet credential (or ticket) where one is needed, or with one that does not check
    out (core.tickets): a 401 from the tracker, a 403 from a piece server."""

    http_status = 401


# -- the SQL store ------------------------------------------------------------------------------------


class StoreError(ShoalError):
    """The SQL database (tracker, pools, mirror manager) failed or could not be reached."""


class AnnounceRefused(ShoalError):
    """The tracker will not decide an announce now: a peer limit refuses a peer new to its task
    (core.peer_limits), or the tracker stopped deciding the task as it decided it (core.ownership). The
    announce is answered with ``status`` and ``Retry-After: retry_after``, and nothing of it was decided."""

    def __init__(self, message: str, *, status: int, retry_after: int) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class TaskMoved(StoreError):
    """Another tracker sharing the database took over the task of a write since this tracker read it: the
    write of a decision made before the task moved (core.ownership) came to commit after the new owner had
    read the database. Nothing of it was written, this tracker's soft state of the task is dropped, and the
    announce is answered 503 with Retry-After. ``task_id`` is the task."""

    def __init__(self, task_id: str, message: str = "") -> None:
        super().__init__(message or f"task {task_id[:16]} was taken over by another tracker meanwhile")
        self.task_id = task_id


class TaskCreatedElsewhere(TaskMoved):
    """A task this tracker decided as new was created meanwhile by another tracker sharing the database (a
    TaskMoved whose write was the task's creation). Nothing of it was written; the task is read again."""

    def __init__(self, task_id: str) -> None:
        super().__init__(task_id, f"task {task_id[:16]} was created by another tracker meanwhile")


class PoolMoved(StoreError):
    """Another tracker sharing the database took over the pool of a write since this tracker took it over (or
    this tracker never did: it does not own the pool), so the write, decided on what this tracker read, was left
    out (tracker.pools, "A pool's writes carry its epoch"). Nothing of it was written, this tracker lets go of
    the pool, and the request is answered 503 with Retry-After. ``pool`` is the pool's name."""

    def __init__(self, pool: str) -> None:
        super().__init__(f"pool {pool!r} was taken over by another tracker meanwhile")
        self.pool = pool


class DatabaseLocked(StoreError):
    """Another process holds the lock of the tracker's SQLite database file (storage.db_lock): two trackers
    on one file would each keep the peers and leases in their own memory and lease the same pieces twice.
    ``path`` is the database file, ``pid`` the holder's (None when it cannot be told)."""

    exit_code = 10

    def __init__(self, message: str, *, path: str, pid: int | None) -> None:
        super().__init__(message)
        self.path = path
        self.pid = pid


# -- the daemon ---------------------------------------------------------------------------------------


class DaemonUnavailable(ShoalError):
    """No daemon answers on the control socket."""


class UnsafeSocket(DaemonUnavailable):
    """The control socket cannot be trusted: its directory is another user's or open to others, or the
    process listening on it runs as another user (not root). Nothing was sent to it. ``path`` is the
    socket."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class RemoteError(ShoalError):
    """An error the daemon reported; it keeps the daemon's exit code."""

    def __init__(self, message: str, *, exit_code: int = 1, kind: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.kind = kind


class HashingStopped(ShoalError):
    """The idle hasher (shoal.storage.idle_hash) was stopped while a file was being hashed, or before: the
    daemon is stopping, and the next start completes what is left. Not a failure."""


# -- mirror jobs --------------------------------------------------------------------------------------


class ManagerRefused(ShoalError):
    """The mirror manager understood the request and refused it (409): ``status`` is the HTTP status, ``register``
    True when it asks a worker to register again."""

    def __init__(self, message: str, *, status: int, register: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.register = register


class UnknownJob(ShoalError):
    """The mirror manager has no job of that name (a 404 at the HTTP edge)."""


class UnknownWorker(ShoalError):
    """The mirror manager has no worker of that name (a 404 at the HTTP edge)."""


class NoWorker(ShoalError):
    """No live mirror worker can take the job now (a 409 at the HTTP edge)."""


class StaleSession(ShoalError):
    """A mirror worker's poll names a session other than the manager's, or it never registered: it must
    register again (a 409 with ``"register": true`` at the HTTP edge)."""


class StaleRun(ShoalError):
    """A report from a mirror job's run that is no longer its current one (a 409 at the HTTP edge)."""


class ProviderError(ShoalError):
    """A mirror provider could not produce a complete, consistent version; the message says why.
    ``returncode``: the command's exit status, when a command failed."""

    def __init__(self, message: str, *, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


class ProviderTimedOut(ProviderError):
    """The provider's command ran past its time and was stopped; ``output`` is the tail of what it printed."""

    def __init__(self, message: str, *, output: str) -> None:
        super().__init__(message)
        self.output = output


class PublishError(ShoalError):
    """A mirror version could not be pushed to its pool."""


class LogUnavailable(ShoalError):
    """A mirror job's run log cannot be had from its worker now: the worker is not live, or did not answer
    in time, or could not read the file. ``status`` is the HTTP status the manager answers with (503, 504)."""

    def __init__(self, message: str, *, status: int = 503) -> None:
        super().__init__(message)
        self.status = status
