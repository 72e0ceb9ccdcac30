"""The mirror configuration (``mirrors.toml``): TOML text in, validated values out.

Pure: the text, its name and the environment come in as values (``shoal.mirror.config.load_config`` reads
the file and ``os.environ``); no files, sockets or clock reads here. One validator serves the TOML file and
the JSON the manager sends its workers (``JobSpec.from_json``), so a job means the same thing on both ends.

The layout::

    [manager]                       # ManagerSettings; every key optional
    host = "127.0.0.1"
    port = 6970
    token_env = "SHOAL_MIRROR_TOKEN"   # or token = "..." (not both); keeps the secret out of the file
    db = "sqlite:///var/lib/shoal/mirror.db"
    worker_timeout = "1m"

    [worker]                        # WorkerSettings; every key optional
    manager = "http://127.0.0.1:6970"
    token_env = "SHOAL_MIRROR_TOKEN"
    directory = "/srv/mirror"
    concurrency = 2

    [[jobs]]                        # JobSpec, one table per job
    name = "debian"
    provider = "command"            # or "http"
    upstream = "rsync://ftp.debian.org/debian/"
    command = "rsync -a --delete \"$SHOAL_MIRROR_UPSTREAM\" ."
    interval = "6h"                 # or cron = "0 */6 * * *" (UTC); cron wins when both are given
    timeout = "2h"
    retries = 3
    success_exit_codes = [0, 24]    # command provider only: rsync's 24 is "some files vanished"
    [jobs.env]
    RSYNC_PASSWORD = "..."
    [jobs.hooks]
    post_success = ["date > \"$SHOAL_MIRROR_DIR/last-success\""]
    [jobs.retention]
    keep_versions = 3
    max_age = "30d"
    [jobs.publish]
    seed = true
    pool = "edge"
    replicas = 2

Durations are a positive number of seconds or a string: a number with one unit of ``s``, ``m``, ``h`` or
``d`` (``"90s"``, ``"10m"``, ``"1.5h"``, ``"1d"``).

Rules, and why:

- Everything the file says is checked before anything starts: an unknown key anywhere (a typo like
  ``intervall`` would otherwise silently keep the default), a wrong type, a duration that is zero, negative
  or has an unknown unit, a bad cron expression, a duplicate job name, a missing ``upstream``, a command
  provider without a ``command``. Each is one ConfigError naming the key and the line.
- TOML parsers report lines only for syntax errors, so the line of a key is found by scanning the text
  (``_locate_keys``): table headers and ``key =`` lines, outside multi-line strings. When a key cannot be
  placed (it sits inside an inline table spread over lines, say) the line of its table is given instead.
- Job indexes in messages count from 0, as TOML paths and JSON pointers do: ``jobs[1]`` is the second job.
- A key only one provider reads (``command``, ``success_exit_codes``) is refused for the other one, for
  the same reason as an unknown key.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from shoal.core.errors import ConfigError, CronError, ProtocolError, UsageError
from shoal.core.ids import canonical_url
from shoal.core.schedule import Cron

PROVIDERS = ("http", "command")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*")
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_EMPTY_ENV: Mapping[str, str] = MappingProxyType({})


# -- the values -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hooks:
    """Shell commands run around a job's attempt, each with ``/bin/sh -c``, in order; the first that fails
    stops the rest of its list. What each sees is described in ``shoal.mirror.runner``."""

    pre_job: tuple[str, ...] = ()
    """Before anything else; a failure fails the attempt before the provider runs."""
    pre_exec: tuple[str, ...] = ()
    """Just before the provider runs; a failure fails the attempt."""
    post_exec: tuple[str, ...] = ()
    """Just after the provider, whatever its outcome; a failure fails the attempt."""
    post_success: tuple[str, ...] = ()
    """After a successful attempt, before its version is published; a failure fails the attempt."""
    post_fail: tuple[str, ...] = ()
    """After a failed attempt; a failure here is added to the attempt's error, nothing more."""

    def to_json(self) -> dict[str, list[str]]:
        return {name: list(getattr(self, name)) for name in _HOOK_NAMES}


_HOOK_NAMES = ("pre_job", "pre_exec", "post_exec", "post_success", "post_fail")


@dataclass(frozen=True, slots=True)
class Retention:
    """Which versions of a job's content to keep (``shoal.core.retention``); None: no limit of that kind."""

    keep_versions: int | None = None
    """Keep the newest K versions (at least 1)."""
    max_age: float | None = None
    """Seconds; older versions are removed, but never the newest one."""

    def to_json(self) -> dict[str, Any]:
        return {"keep_versions": self.keep_versions, "max_age": self.max_age}


@dataclass(frozen=True, slots=True)
class Publish:
    """Where a job's new versions go besides its directory."""

    seed: bool = True
    """The worker's seeder publishes the job directory (``shoal seed``)."""
    pool: str | None = None
    """Push each new version's files to this pool..."""
    replicas: int | None = None
    """...with at least this many replicas (None: every member). Only with ``pool``."""

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "pool": self.pool, "replicas": self.replicas}


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One mirror job as configured. Build one with ``parse_config`` or ``from_json``, which validate; the
    constructor itself only freezes ``env`` and ``success_exit_codes``."""

    name: str
    """``[A-Za-z0-9][A-Za-z0-9._-]{0,63}``, unique among the jobs; also the job directory's name."""
    provider: str
    """``http`` or ``command``."""
    upstream: str
    """http: an http(s) URL, a file or a directory index (ending in ``/``). command: $SHOAL_MIRROR_UPSTREAM."""
    command: str = ""
    """The command provider's shell command (required for it, refused for http)."""
    interval: float = 3600.0
    """Seconds from the end of one run to the start of the next (``core.schedule.next_run``)."""
    cron: str | None = None
    """A five-field UTC cron expression (``core.schedule.Cron``); when set it decides the schedule."""
    timeout: float = 3600.0
    """Seconds one attempt may take, hooks included, before it is killed and failed."""
    retries: int = 2
    """Attempts per run, the first included (``core.mirror_job``'s ``max_attempts``)."""
    worker: str | None = None
    """Run only on the worker of this name; None: on any worker."""
    env: Mapping[str, str] = field(default_factory=lambda: _EMPTY_ENV)
    """Extra environment for the provider and the hooks."""
    success_exit_codes: frozenset[int] = frozenset({0})
    """Exit statuses of the command provider that mean success."""
    hooks: Hooks = Hooks()
    retention: Retention = Retention()
    publish: Publish = Publish()

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        object.__setattr__(self, "success_exit_codes", frozenset(self.success_exit_codes))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict that ``from_json`` reads back into an equal JobSpec (the command provider's own
        keys are null for the http provider, which refuses them)."""
        command = self.provider == "command"
        return {
            "name": self.name,
            "provider": self.provider,
            "upstream": self.upstream,
            "command": self.command if command else None,
            "interval": self.interval,
            "cron": self.cron,
            "timeout": self.timeout,
            "retries": self.retries,
            "worker": self.worker,
            "env": dict(self.env),
            "success_exit_codes": sorted(self.success_exit_codes) if command else None,
            "hooks": self.hooks.to_json(),
            "retention": self.retention.to_json(),
            "publish": self.publish.to_json(),
        }

    @classmethod
    def from_json(cls, data: Any) -> JobSpec:
        """Validate ``data`` as the TOML parser validates a ``[[jobs]]`` table (null means absent);
        ProtocolError naming the field on bad input."""
        if not isinstance(data, dict):
            raise ProtocolError("a job must be a JSON object", field="job")
        try:
            return _job(_Table(data, ("job",)))
        except _Invalid as exc:
            raise ProtocolError(f"{_dotted(exc.path)}: {exc.message}", field=_dotted(exc.path)) from None


@dataclass(frozen=True, slots=True)
class ManagerSettings:
    """The ``[manager]`` table: how ``shoal mirror manager`` listens and keeps its state."""

    host: str = "127.0.0.1"
    """Address to listen on; without a token only a loopback address is allowed."""
    port: int = 6970
    """TCP port; 0 picks a free one."""
    token: str | None = None
    """The bearer token workers and ``shoal mirror ctl`` must send (from ``token`` or ``token_env``)."""
    db: str | None = None
    """Database URL (as ``shoal tracker --db``); None: an SQLite file beside the config file."""
    worker_timeout: float = 60.0
    """Seconds after which a worker not heard from is lost and its running jobs fail."""


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """The ``[worker]`` table: what ``shoal mirror worker --config`` connects to and where it writes."""

    manager: str = "http://127.0.0.1:6970"
    """The manager's base URL."""
    token: str | None = None
    """The manager's bearer token (from ``token`` or ``token_env``)."""
    directory: str = "/var/lib/shoal/mirror"
    """Job directories are ``<directory>/<job name>``."""
    concurrency: int = 2
    """Jobs run at once on one worker."""
    tracker: str | None = None
    """Where the worker's seeder announces; None: the seeder's embedded tracker."""
    seed_host: str = "0.0.0.0"
    """Address the worker's seeder listens on."""
    seed_port: int = 6390
    """TCP port of the worker's seeder (HTTP); 0 picks a free one."""
    advertise: str | None = None
    """Base URL clients reach the worker's seeder at; None: the Host a request came in on."""


@dataclass(frozen=True, slots=True)
class MirrorConfig:
    manager: ManagerSettings = ManagerSettings()
    worker: WorkerSettings = WorkerSettings()
    jobs: tuple[JobSpec, ...] = ()

    def job(self, name: str) -> JobSpec | None:
        return next((job for job in self.jobs if job.name == name), None)


# -- parsing ----------------------------------------------------------------------------------------------

KeyPath = tuple[str | int, ...]


class _Invalid(Exception):
    """A value at ``path`` is wrong; turned into ConfigError (with a line) or ProtocolError at the edge."""

    def __init__(self, path: KeyPath, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _dotted(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


T = TypeVar("T")


class _Table:
    """A TOML/JSON table being read: typed getters that record which keys were read, and ``finish`` to
    refuse the rest. None counts as absent (JSON's null; TOML has none)."""

    def __init__(self, data: Mapping[str, Any], path: KeyPath) -> None:
        self.data = data
        self.path = path
        self.read: set[str] = set()

    def fail(self, key: str, message: str) -> _Invalid:
        return _Invalid((*self.path, key), message)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def get(self, key: str, convert: Callable[[Any], T], default: T) -> T:
        self.read.add(key)
        value = self.data.get(key)
        if value is None:
            return default
        try:
            return convert(value)
        except _Invalid:
            raise
        except (TypeError, ValueError, UsageError) as exc:
            raise self.fail(key, str(exc)) from None

    def required(self, key: str, convert: Callable[[Any], T]) -> T:
        if self.data.get(key) is None:
            raise self.fail(key, f"missing key {key!r}")
        result = self.get(key, convert, None)
        assert result is not None
        return result

    def table(self, key: str) -> _Table:
        self.read.add(key)
        value = self.data.get(key)
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise self.fail(key, f"{key} must be a table, not {_kind(value)}")
        return _Table(value, (*self.path, key))

    def finish(self) -> None:
        for key in self.data:
            if key not in self.read:
                raise self.fail(key, f"unknown key {key!r}")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    return type(value).__name__


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, not {_kind(value)}")
    return value


def _nonempty(value: Any) -> str:
    text = _string(value)
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def _name(value: Any) -> str:
    text = _string(value)
    if not _NAME.fullmatch(text):
        raise ValueError(f"{text[:80]!r} is not a valid name (letters, digits, '.', '_', '-'; at most 64)")
    return text


def _integer(low: int, high: int | None = None) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected an integer, not {_kind(value)}")
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ValueError(f"must be {bounds}, not {value}")
        return value

    return convert


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, not {_kind(value)}")
    return value


def parse_duration(value: Any) -> float:
    """A positive, finite number of seconds, from a number or a string like ``"90s"``, ``"10m"``, ``"6h"``,
    ``"1d"``; ValueError or TypeError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"expected a duration (seconds, or a string like '10m'), not {_kind(value)}")
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if not match:
            raise ValueError(f"{value[:40]!r} is not a duration (a number with s, m, h or d: '90s', '10m', '6h')")
        seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    else:
        seconds = float(value)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"a duration must be positive, not {value!r}")
    return seconds


def _url(value: Any) -> str:
    text = _nonempty(value)
    try:
        canonical_url(text)  # the checks every Shoal URL gets: scheme, host, port
    except UsageError:
        raise ValueError(f"{text[:80]!r} is not an http(s) URL") from None
    return text


def _cron(value: Any) -> str:
    text = _string(value)
    try:
        return Cron.parse(text).expression
    except CronError as exc:
        raise ValueError(str(exc)) from None


def _commands(value: Any) -> tuple[str, ...]:
    """A hook: one command string, or an array of them."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise TypeError(f"expected a command string or an array of them, not {_kind(value)}")
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"every hook command must be a non-empty string, not {_kind(item)}")
    return tuple(items)


def _exit_codes(value: Any) -> frozenset[int]:
    if not isinstance(value, list) or not value:
        raise TypeError(f"expected a non-empty array of exit statuses, not {_kind(value)}")
    check = _integer(0, 255)
    return frozenset(check(item) for item in value)


def _env(table: _Table) -> Mapping[str, str]:
    env: dict[str, str] = {}
    for key in table.data:
        if not _ENV_NAME.fullmatch(key):
            raise table.fail(key, f"{key!r} is not an environment variable name")
        value = table.get(key, _string, "")
        env[key] = value
    return env


def _job(table: _Table) -> JobSpec:
    name = table.required("name", _name)
    provider = table.required("provider", _string)
    if provider not in PROVIDERS:
        raise table.fail("provider", f"unknown provider {provider!r} (known: {', '.join(PROVIDERS)})")
    upstream = table.required("upstream", _url if provider == "http" else _nonempty)
    if provider == "command":
        command = table.required("command", _nonempty)
        codes = table.get("success_exit_codes", _exit_codes, frozenset({0}))
    else:
        for key in ("command", "success_exit_codes"):
            if table.has(key):
                raise table.fail(key, f"{key!r} is only for the command provider")
            table.read.add(key)
        command, codes = "", frozenset({0})
    spec = JobSpec(
        name=name,
        provider=provider,
        upstream=upstream,
        command=command,
        interval=table.get("interval", parse_duration, 3600.0),
        cron=table.get("cron", _cron, None),
        timeout=table.get("timeout", parse_duration, 3600.0),
        retries=table.get("retries", _integer(1, 1000), 2),
        worker=table.get("worker", _name, None),
        env=_env(table.table("env")),
        success_exit_codes=codes,
        hooks=_hooks(table.table("hooks")),
        retention=_retention(table.table("retention")),
        publish=_publish(table.table("publish")),
    )
    table.finish()
    return spec


def _hooks(table: _Table) -> Hooks:
    empty: tuple[str, ...] = ()
    hooks = Hooks(**{name: table.get(name, _commands, empty) for name in _HOOK_NAMES})
    table.finish()
    return hooks


def _retention(table: _Table) -> Retention:
    retention = Retention(
        keep_versions=table.get("keep_versions", _integer(1), None),
        max_age=table.get("max_age", parse_duration, None),
    )
    table.finish()
    return retention


def _publish(table: _Table) -> Publish:
    seed = table.get("seed", _boolean, True)
    pool = table.get("pool", _name, None)
    replicas = table.get("replicas", _integer(1), None)
    if replicas is not None and pool is None:
        raise table.fail("replicas", "'replicas' needs a 'pool' to push to")
    table.finish()
    return Publish(seed=seed, pool=pool, replicas=replicas)


def _token(table: _Table, environ: Mapping[str, str]) -> str | None:
    token = table.get("token", _nonempty, None)
    variable = table.get("token_env", _string, None)
    if variable is None:
        return token
    if token is not None:
        raise table.fail("token_env", "give 'token' or 'token_env', not both")
    if not _ENV_NAME.fullmatch(variable):
        raise table.fail("token_env", f"{variable!r} is not an environment variable name")
    value = environ.get(variable, "")
    if not value.strip():
        raise table.fail("token_env", f"the environment variable {variable} is not set (or empty)")
    return value


def _manager(table: _Table, environ: Mapping[str, str]) -> ManagerSettings:
    settings = ManagerSettings(
        host=table.get("host", _nonempty, "127.0.0.1"),
        port=table.get("port", _integer(0, 65535), 6970),
        token=_token(table, environ),
        db=table.get("db", _nonempty, None),
        worker_timeout=table.get("worker_timeout", parse_duration, 60.0),
    )
    table.finish()
    return settings


def _worker(table: _Table, environ: Mapping[str, str]) -> WorkerSettings:
    settings = WorkerSettings(
        manager=table.get("manager", _url, "http://127.0.0.1:6970"),
        token=_token(table, environ),
        directory=table.get("directory", _nonempty, "/var/lib/shoal/mirror"),
        concurrency=table.get("concurrency", _integer(1, 1000), 2),
        tracker=table.get("tracker", _url, None),
        seed_host=table.get("seed_host", _nonempty, "0.0.0.0"),
        seed_port=table.get("seed_port", _integer(0, 65535), 6390),
        advertise=table.get("advertise", _url, None),
    )
    table.finish()
    return settings


def _config(data: Mapping[str, Any], environ: Mapping[str, str]) -> MirrorConfig:
    root = _Table(data, ())
    manager = _manager(root.table("manager"), environ)
    worker = _worker(root.table("worker"), environ)
    root.read.add("jobs")
    raw_jobs = data.get("jobs", [])
    if not isinstance(raw_jobs, list):
        raise root.fail("jobs", "jobs must be an array of tables ([[jobs]])")
    jobs: list[JobSpec] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_jobs):
        if not isinstance(raw, Mapping):
            raise _Invalid(("jobs", index), "each job must be a table ([[jobs]])")
        job = _job(_Table(raw, ("jobs", index)))
        if job.name in seen:
            raise _Invalid(("jobs", index, "name"), f"duplicate job name {job.name!r} (also jobs[{seen[job.name]}])")
        seen[job.name] = index
        jobs.append(job)
    root.finish()
    return MirrorConfig(manager=manager, worker=worker, jobs=tuple(jobs))


def parse_config(text: str, source: str = "<config>", *, environ: Mapping[str, str] = _EMPTY_ENV) -> MirrorConfig:
    """Read a mirrors.toml; ConfigError naming the source, line and key on anything wrong.

    ``environ`` is where ``token_env`` looks its variable up (the caller passes ``os.environ``)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column \d+\)", message)
        line = int(match[1]) if match else (text.count("\n") + 1 if "end of document" in message else None)
        where = f"{source}:{line}" if line is not None else source
        raise ConfigError(f"{where}: not valid TOML: {message}", source=source, line=line, key=None) from None
    try:
        return _config(data, environ)
    except _Invalid as exc:
        line = _line_of(_locate_keys(text), exc.path)
        where = f"{source}:{line}" if line is not None else source
        key = next((str(part) for part in reversed(exc.path) if isinstance(part, str)), None)
        raise ConfigError(
            f"{where}: {_context(data, exc.path)}: {exc.message}",
            source=source,
            line=line,
            key=key,
            path=_dotted(exc.path),
        ) from None


def _context(data: Mapping[str, Any], path: KeyPath) -> str:
    """``jobs[1] (name 'debian')`` or ``manager``: the table an error is in, for the message."""
    if len(path) >= 2 and path[0] == "jobs" and isinstance(path[1], int):
        job = data["jobs"][path[1]]
        where = f"jobs[{path[1]}]"
        name = job.get("name") if isinstance(job, Mapping) else None
        if isinstance(name, str):
            where += f" (name {name!r})"
        rest = _dotted(path[2:-1])
        return f"{where} {rest}" if rest else where
    return _dotted(path[:-1]) or "top level"


# -- where keys are ---------------------------------------------------------------------------------------

_HEADER = re.compile(r"\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?$")
_BARE_OR_QUOTED = r'(?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')'
_KEY = re.compile(rf"\s*({_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*)\s*=")


def _split_key(dotted: str) -> list[str]:
    return [part.strip().strip("\"'") for part in re.findall(_BARE_OR_QUOTED, dotted)]


def _locate_keys(text: str) -> dict[KeyPath, int]:
    """The line (1-based) where each table and key is first written, by path (``("jobs", 1, "hooks")``).

    A scan, not a parser: it follows table headers (counting ``[[array]]`` entries) and ``key =`` lines,
    and skips the insides of multi-line strings. Only used on text tomllib has accepted."""
    lines: dict[KeyPath, int] = {}
    counts: dict[KeyPath, int] = {}  # array-of-tables path -> entries seen
    prefix: KeyPath = ()
    in_string: str | None = None  # the delimiter of the multi-line string being skipped
    for number, line in enumerate(text.splitlines(), 1):
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        header = _HEADER.match(line)
        if header and not _KEY.match(line):
            parts = _split_key(header[2])
            resolved: list[str | int] = []
            for i, part in enumerate(parts):
                resolved.append(part)
                key = tuple(resolved)
                last = i == len(parts) - 1
                if last and header[1] == "[[":
                    counts[key] = counts.get(key, 0) + 1
                if key in counts:
                    resolved.append(counts[key] - 1)
            prefix = tuple(resolved)
            lines.setdefault(prefix, number)
            continue
        match = _KEY.match(line)
        if match:
            path = prefix
            for part in _split_key(match[1]):
                path = (*path, part)
                lines.setdefault(path, number)
            rest = line[match.end() :]
            for delimiter in ('"""', "'''"):
                if rest.count(delimiter) % 2 == 1:
                    in_string = delimiter
                    break
    return lines


def _line_of(lines: Mapping[KeyPath, int], path: KeyPath) -> int | None:
    """The line of ``path``, or of its nearest enclosing table that has one."""
    for end in range(len(path), 0, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None
