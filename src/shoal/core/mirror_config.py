"""The mirror configuration's values (``mirrors.toml``, and the jobs the manager sends its workers), validated.

Pure: values in, values out; no files, sockets or clock reads here. Each table is a msgspec struct, and the
same structs read the TOML file and the JSON the manager sends its workers (``JobSpec.from_json``), so a job
means the same thing on both ends, and the manager's OpenAPI document describes it from them.

The file's layout, every table and key, is drawn at the top of core.mirror_toml, which reads it.

Durations, names and hook commands, and how a refusal is said, are core.mirror_values'.

Rules, and why:

- Everything the file says is checked before anything starts: an unknown key anywhere (a typo like
  ``intervall`` would otherwise silently keep the default), a wrong type, a duration that is zero, negative
  or has an unknown unit, a bad cron expression, a duplicate job name, a missing ``upstream``, a command
  provider without a ``command``. Each is one ConfigError naming the key and the line.
- A struct's field types and ``msgspec.Meta`` bounds state what one value may be; its ``__post_init__``
  the rules between values (a provider's keys, ``replicas`` without ``pool``, a cron expression), raising
  ``_Invalid`` with the key. core.mirror_toml reads the file and turns either kind of refusal into one
  ConfigError with the key's line.
- Job indexes in messages count from 0, as TOML paths and JSON pointers do: ``jobs[1]`` is the second job.
- A key only some providers read (``command``: the command provider's; ``success_exit_codes``: the
  command and rsync providers') is refused for the others, for the same reason as an unknown key; so are
  the rsync keys (``RSYNC_ONLY``) for the http and command providers, and ``stage1_profile`` for plain
  rsync. The rsync providers take ``success_exit_codes`` as tunasync's ``rsync_success_exit_codes``:
  statuses that count as a success besides 0 and 24 (23, "partial transfer due to error", is the usual one).
- The rsync providers take tunasync's key names and meanings, so a tunasync worker config maps onto them
  one to one. An rsync upstream ends in ``/`` (as tunasync requires: without it rsync would create the
  module's directory inside the job's). The password never appears in an argument list (``ps`` shows
  those to every user): it goes to rsync through ``RSYNC_PASSWORD``.
- ``fail_on_match`` and ``size_pattern`` are compiled here, so a bad regular expression is a ConfigError,
  not a failed run at 3 a.m.; ``size_pattern`` has exactly one group, the size.
- The in-place layout keeps no versions: ``retention`` and ``publish.pool`` (which pushes one version) are
  refused with it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec.structs import force_setattr

from shoal.core.errors import CronError, ProtocolError, UsageError
from shoal.core.ids import canonical_url
from shoal.core.mirror_values import (
    REFUSALS,
    Duration,
    EnvName,
    Hook,
    HookCommands,
    Name,
    Port,
    Seconds,
    Text,
    TimeLimit,
    _Invalid,
    dec_hook,
    dotted,
    problem,
)
from shoal.core.schedule import Cron
from shoal.core.toml_lines import KeyPath
from shoal.core.tracker_choice import parse_trackers

PROVIDERS = ("http", "command", "rsync", "two-stage-rsync")
RSYNC_PROVIDERS = ("rsync", "two-stage-rsync")
COMMAND_ONLY = ("command", "success_exit_codes")
"""The keys the command provider reads and the http provider refuses (the rsync providers take
``success_exit_codes`` too)."""
RSYNC_ONLY = (
    "rsync_options",
    "rsync_override",
    "exclude_file",
    "username",
    "password",
    "password_file",
    "use_ipv4",
    "use_ipv6",
    "stage1_profile",
)
"""The keys only the rsync providers read (``stage1_profile`` only two-stage-rsync)."""
STAGE1_PROFILES = ("debian", "debian-oldstyle")
LOG_DIR_NAME = re.compile(r"\{\{\s*\.Name\s*\}\}")
"""tunasync's template for the job's name in ``log_dir`` (a Go template), also accepted here."""
_RSYNC_URL = re.compile(r"^(rsync://[^/\s]+/\S*|[^/:\s]+::\S*|[^/:\s]+:(?!:|//)\S*)/$")
"""The sources rsync takes: a daemon's ``rsync://host/module/path/`` or ``host::module/path/``, or a remote
shell's ``[user@]host:path/`` (as tunasync passes them through); always a directory, ending in '/'."""

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# -- the values -------------------------------------------------------------------------------------------


class _Table(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A table of the file (or object of the JSON): an unknown key is refused, so a typo like
    ``intervall`` cannot silently keep the default."""

    def __post_init__(self) -> None:
        # A decoded duration or hook is kept as the plain float or tuple, which msgspec can encode.
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, Seconds | HookCommands):
                force_setattr(self, name, float(value) if isinstance(value, Seconds) else tuple(value))


class Hooks(_Table, frozen=True):
    """Shell commands run around a job's attempt, each with ``/bin/sh -c``, in order; the first that fails
    stops the rest of its list. What each sees is described in ``shoal.mirror.runner``."""

    pre_job: Hook = ()
    """Before anything else; a failure fails the attempt before the provider runs."""
    pre_exec: Hook = ()
    """Just before the provider runs; a failure fails the attempt."""
    post_exec: Hook = ()
    """Just after the provider, whatever its outcome; a failure fails the attempt."""
    post_success: Hook = ()
    """After a successful attempt, before its version is published; a failure fails the attempt."""
    post_fail: Hook = ()
    """After a failed attempt; a failure here is added to the attempt's error, nothing more."""


class Retention(_Table, frozen=True):
    """Which versions of a job's content to keep (``shoal.core.retention``); None: no limit of that kind."""

    keep_versions: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """Keep the newest K versions (at least 1)."""
    max_age: Duration | None = None
    """Seconds; older versions are removed, but never the newest one."""


class Publish(_Table, frozen=True):
    """Where a job's new versions go besides its directory."""

    seed: bool = True
    """The worker's seeder publishes the job directory (``shoal seed``)."""
    pool: Name | None = None
    """Push each new version's files to this pool..."""
    replicas: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """...with at least this many replicas (None: every member). Only with ``pool``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.replicas is not None and self.pool is None:
            raise _Invalid(("replicas",), "'replicas' needs a 'pool' to push to")


def _regex(path: KeyPath, pattern: str | None, groups: int | None = None) -> None:
    """Refuse a regular expression that does not compile (or has other than ``groups`` groups)."""
    if pattern is None:
        return
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise _Invalid(path, f"{pattern[:60]!r} is not a regular expression: {exc}") from None
    if groups is not None and compiled.groups != groups:
        raise _Invalid(path, f"{pattern[:60]!r} must have exactly {groups} group (the size), not {compiled.groups}")


def _log_dir(path: KeyPath, template: str | None) -> None:
    """Refuse a ``{{...}}`` in ``log_dir`` other than tunasync's ``{{.Name}}``."""
    if template is not None and "{{" in LOG_DIR_NAME.sub("", template):
        raise _Invalid(path, f"{template[:60]!r}: the only template log_dir takes is {{{{.Name}}}} (the job's name)")


def log_directory(template: str, job: str) -> str:
    """``log_dir`` with tunasync's ``{{.Name}}`` replaced by the job's name."""
    return LOG_DIR_NAME.sub(job, template)


Options = Annotated[tuple[Text, ...], msgspec.Meta(description="rsync command-line options, one per item")]


class JobSpec(_Table, frozen=True):
    """One mirror job as configured. ``parse_config`` and ``from_json`` read one from the file or the
    JSON; the constructor checks the rules between fields (and normalises ``cron``) as they do."""

    name: Name
    """Unique among the jobs; also the job directory's name."""
    provider: Literal["http", "command", "rsync", "two-stage-rsync"]
    upstream: Text
    """http: an http(s) URL, a file or a directory index (ending in ``/``). command: $SHOAL_MIRROR_UPSTREAM.
    rsync: ``rsync://host/module/path/`` or ``host::module/path/``, ending in ``/``."""
    command: str | None = None
    """The command provider's shell command (required for it; None for http, which refuses one)."""
    interval: Duration = 3600.0
    """Seconds from the end of one run to the start of the next (``core.schedule.next_run``)."""
    cron: str | None = None
    """A five-field UTC cron expression (``core.schedule.Cron``); when set it decides the schedule."""
    timeout: TimeLimit = 3600.0
    """Seconds one attempt may take, hooks included, before it is killed and failed; ``NO_LIMIT`` (0): none,
    as tunasync runs a job without a timeout."""
    retries: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 2
    """Attempts per run, the first included (``core.mirror_job``'s ``max_attempts``)."""
    worker: Name | None = None
    """Run only on the worker of this name; None: on any worker."""
    env: dict[str, str] = {}
    """Extra environment for the provider and the hooks (not to be changed once built)."""
    success_exit_codes: (
        Annotated[frozenset[Annotated[int, msgspec.Meta(ge=0, le=255)]], msgspec.Meta(min_length=1)] | None
    ) = None
    """Exit statuses that mean success: the command provider's (default: 0 alone), or the rsync providers'
    besides 0 and 24 (default None: those two alone); None for http."""
    hooks: Hooks = Hooks()
    retention: Retention = Retention()
    publish: Publish = Publish()
    rsync_options: Options = ()
    """rsync providers: options added after the default ones (``shoal.core.rsync_args``)."""
    rsync_override: Options | None = None
    """rsync providers: options that replace the default ones; ``rsync_options`` still follow."""
    exclude_file: Text | None = None
    """rsync providers: a file of exclude patterns (``--exclude-from``)."""
    username: Text | None = None
    """rsync providers: the rsync daemon's user (``USER`` in rsync's environment)."""
    password: Text | None = None
    """rsync providers: the daemon's password, given to rsync as ``RSYNC_PASSWORD``."""
    password_file: Text | None = None
    """rsync providers: a file whose first line is the password (read at each run); not with ``password``."""
    use_ipv4: bool = False
    """rsync providers: IPv4 only (``-4``)."""
    use_ipv6: bool = False
    """rsync providers: IPv6 only (``-6``); not with ``use_ipv4``."""
    stage1_profile: Literal["debian", "debian-oldstyle"] | None = None
    """two-stage-rsync: what stage 1 leaves to stage 2 (the index files); default "debian"."""
    layout: Literal["versions", "in-place"] = "versions"
    """versions: each run fills a new ``versions/<version>``, ``current`` points at the newest. in-place:
    runs sync straight into the job directory, as tunasync does."""
    log_dir: Text | None = None
    """Where this job's run logs go (``{{.Name}}`` is the job's name); None: the worker's ``log_dir``."""
    log_keep: Annotated[int, msgspec.Meta(ge=1, le=100000)] | None = None
    """Run logs kept for this job; None: the worker's ``log_keep``."""
    fail_on_match: str | None = None
    """A regular expression; a line of the run's log that matches it fails the run."""
    size_pattern: str | None = None
    """A regular expression with one group; the last line of a successful run's log that matches gives the
    job's size (``5.37G``, ``1,234,567``), shown in its status instead of the bytes counted on disk."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _regex(("fail_on_match",), self.fail_on_match)
        _regex(("size_pattern",), self.size_pattern, groups=1)
        _log_dir(("log_dir",), self.log_dir)
        if self.layout == "in-place":
            if self.retention != Retention():
                raise _Invalid(("retention",), "the in-place layout keeps no versions: 'retention' is not for it")
            if self.publish.pool is not None:
                raise _Invalid(("publish", "pool"), "pushing to a pool needs the versions layout")
        if self.provider not in RSYNC_PROVIDERS:
            for key in RSYNC_ONLY:
                if getattr(self, key) not in (None, False, ()):
                    raise _Invalid((key,), f"{key!r} is only for the rsync and two-stage-rsync providers")
        if self.provider in RSYNC_PROVIDERS:
            self._check_rsync_keys()
        elif self.provider == "http":
            try:
                canonical_url(self.upstream)  # the checks every Shoal URL gets: scheme, host, port
            except UsageError:
                raise _Invalid(("upstream",), f"{self.upstream[:80]!r} is not an http(s) URL") from None
            for key in COMMAND_ONLY:
                if getattr(self, key) is not None:
                    readers = "command provider" if key == "command" else "command and rsync providers"
                    raise _Invalid((key,), f"{key!r} is only for the {readers}")
        elif self.command is None:
            raise _Invalid(("command",), "missing key 'command'")
        elif not self.command.strip():
            raise _Invalid(("command",), "must not be blank")
        else:
            force_setattr(self, "success_exit_codes", frozenset(self.success_exit_codes or {0}))
        if self.cron is not None:
            try:
                force_setattr(self, "cron", Cron.parse(self.cron).expression)
            except CronError as exc:
                raise _Invalid(("cron",), str(exc)) from None
        for key in self.env:
            if not _ENV_NAME.fullmatch(key):
                raise _Invalid(("env", key), f"{key!r} is not an environment variable name")

    def _check_rsync_keys(self) -> None:
        """The rules between an rsync provider's keys."""
        if not _RSYNC_URL.match(self.upstream):
            raise _Invalid(
                ("upstream",),
                f"{self.upstream[:80]!r} is not an rsync source ending in '/' "
                "(rsync://host/module/path/, host::module/path/ or host:path/)",
            )
        if self.command is not None:
            raise _Invalid(("command",), "'command' is only for the command provider")
        if self.success_exit_codes is not None:
            force_setattr(self, "success_exit_codes", frozenset(self.success_exit_codes))
        if self.use_ipv4 and self.use_ipv6:
            raise _Invalid(("use_ipv6",), "give 'use_ipv4' or 'use_ipv6', not both")
        if self.password is not None and self.password_file is not None:
            raise _Invalid(("password_file",), "give 'password' or 'password_file', not both")
        if self.provider == "rsync" and self.stage1_profile is not None:
            raise _Invalid(("stage1_profile",), "'stage1_profile' is only for the two-stage-rsync provider")
        if self.provider == "two-stage-rsync" and self.stage1_profile is None:
            force_setattr(self, "stage1_profile", "debian")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict that ``from_json`` reads back into an equal JobSpec (sets sorted, so equal
        specs give equal dicts)."""
        result: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(self, order="deterministic"))
        return result

    @classmethod
    def from_json(cls, data: Any) -> JobSpec:
        """Read ``data`` as the TOML parser reads a ``[[jobs]]`` table; ProtocolError naming the field on
        bad input."""
        try:
            return msgspec.convert(data, JobSpec, dec_hook=dec_hook)
        except REFUSALS as exc:
            where, message = problem(exc, data)
            field = dotted(("job", *where))
            raise ProtocolError(f"{field}: {message}", field=field) from None


class ManagerSettings(_Table, frozen=True):
    """The ``[manager]`` table: how ``shoal mirror manager`` listens and keeps its state."""

    host: Text = "127.0.0.1"
    """Address to listen on; without a token only a loopback address is allowed."""
    port: Port = 6970
    """TCP port; 0 picks a free one."""
    token: Text | None = None
    """The bearer token workers and ``shoal mirror ctl`` must send (from ``token``, ``token_env`` or
    ``token_file``)."""
    token_env: EnvName | None = None
    """The environment variable ``token`` was read from, if any."""
    token_file: Text | None = None
    """The file (mode 0600) ``token`` was read from, if any."""
    db: Text | None = None
    """Database URL (as ``shoal tracker --db``); None: an SQLite file beside the config file."""
    worker_timeout: Duration = 60.0
    """Seconds after which a worker not heard from is lost and its running jobs fail."""
    public_status: bool = False
    """Serve the jobs' status read-only without the token (``GET /jobs``, tunasync's shape): what a mirror
    site's status page reads. The token still guards every other route (``--public-status`` too)."""
    public_dashboard: bool = False
    """With a token: the read-only status page's snapshots (mirror.dashboard) are readable without it."""


class WorkerSettings(_Table, frozen=True):
    """The ``[worker]`` table: what ``shoal mirror worker --config`` connects to and where it writes."""

    name: Name | None = None
    """The worker's name when ``--name`` is not given (tunasync's ``[global] name``)."""

    manager: Text = "http://127.0.0.1:6970"
    """The manager's base URL."""
    token: Text | None = None
    """The manager's bearer token (from ``token``, ``token_env`` or ``token_file``)."""
    token_env: EnvName | None = None
    """The environment variable ``token`` was read from, if any."""
    token_file: Text | None = None
    """The file (mode 0600) ``token`` was read from, if any."""
    directory: Text = "/var/lib/shoal/mirror"
    """Job directories are ``<directory>/<job name>``."""
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 2
    """Jobs run at once on one worker."""
    tracker: Text | None = None
    """Where the worker's seeder announces, one tracker or several comma-separated (as ``--tracker``);
    None: the seeder's embedded tracker."""
    seed_host: Text = "0.0.0.0"
    """Address the worker's seeder listens on."""
    seed_port: Port = 6390
    """TCP port of the worker's seeder (HTTP); 0 picks a free one."""
    advertise: Text | None = None
    """Base URL clients reach the worker's seeder at; None: the Host a request came in on."""
    fleet_token_file: Text | None = None
    """The fleet's token file for the worker's seeder, as ``shoal seed --fleet-token-file`` (relative to the
    config file unless absolute); ``--fleet-token-file`` and ``$SHOAL_FLEET_TOKEN_FILE`` come first. None:
    a trusted LAN."""
    ca: Text | None = None
    """The fleet's CA, as ``shoal seed --ca`` (relative to the config file unless absolute)."""
    tls_cert: Text | None = None
    """The seeder's TLS certificate (PEM, with its chain), as ``shoal seed --tls-cert``."""
    tls_key: Text | None = None
    """The private key of ``tls_cert``, as ``shoal seed --tls-key``."""
    tls_client_ca: Text | None = None
    """Mutual TLS: serve only clients with a certificate this CA signed, as ``shoal seed --tls-client-ca``."""
    log_dir: Text | None = None
    """Where jobs' run logs go unless a job says (``{{.Name}}`` is the job's name); None:
    ``<directory>/.logs/<job>`` (hidden, so the seeder does not publish it)."""
    log_keep: Annotated[int, msgspec.Meta(ge=1, le=100000)] = 10
    """Run logs kept per job unless a job says: older ones are removed."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _log_dir(("log_dir",), self.log_dir)
        if self.tracker is not None:
            try:
                parse_trackers(self.tracker, what="tracker")
            except UsageError as exc:
                raise _Invalid(("tracker",), str(exc).removeprefix("tracker: ")) from None
        for key in ("manager", "advertise"):
            url = getattr(self, key)
            try:
                if url is not None:
                    canonical_url(url)
            except UsageError:
                raise _Invalid((key,), f"{url[:80]!r} is not an http(s) URL") from None


class MirrorConfig(_Table, frozen=True):
    manager: ManagerSettings = ManagerSettings()
    worker: WorkerSettings = WorkerSettings()
    jobs: tuple[JobSpec, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        seen: dict[str, int] = {}
        for index, job in enumerate(self.jobs):
            if job.name in seen:
                problem = f"duplicate job name {job.name!r} (also jobs[{seen[job.name]}])"
                raise _Invalid(("jobs", index, "name"), problem)
            seen[job.name] = index

    def job(self, name: str) -> JobSpec | None:
        return next((job for job in self.jobs if job.name == name), None)
