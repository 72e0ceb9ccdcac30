"""Reading ``mirrors.toml``: its text into core.mirror_config's structs, the tokens it points to, and each
refusal as one ConfigError naming the source, the line and the key.

Pure, like core.mirror_config: the text, its name and the environment come in as values
(``shoal.mirror.config.load_config`` reads the file and ``os.environ``).

The layout::

    [manager]                       # ManagerSettings; every key optional
    host = "127.0.0.1"
    port = 6970
    token_env = "SHOAL_MIRROR_TOKEN"   # or token_file = "/etc/shoal/mirror.token", or token = "..." (one)
    db = "sqlite:///var/lib/shoal/mirror.db"
    worker_timeout = "1m"

    [worker]                        # WorkerSettings; every key optional
    manager = "http://127.0.0.1:6970"
    token_env = "SHOAL_MIRROR_TOKEN"
    directory = "/srv/mirror"
    concurrency = 2
    log_dir = "/var/log/shoal/{{.Name}}"   # default <directory>/.logs/<job>; {{.Name}} is the job's name
    log_keep = 10                   # run logs kept per job

    [[jobs]]                        # JobSpec, one table per job
    name = "debian"
    provider = "command"            # or "http", "rsync", "two-stage-rsync"
    upstream = "rsync://ftp.debian.org/debian/"
    command = "rsync -a --delete \"$SHOAL_MIRROR_UPSTREAM\" ."
    interval = "6h"                 # or cron = "0 */6 * * *" (UTC); cron wins when both are given
    timeout = "2h"
    retries = 3
    success_exit_codes = [0, 24]    # command and rsync providers: rsync's 24 is "some files vanished"
    layout = "versions"             # or "in-place": sync straight into <directory>/<job> (tunasync's layout)
    log_dir = "/var/log/shoal/debian"  # this job's run logs (default: the worker's log_dir)
    log_keep = 10
    fail_on_match = "^rsync error"  # a line of the run's log matching this fails the run
    size_pattern = "Total file size: (\\S+)"  # the job's size, from the last line of its log that matches

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

    [[jobs]]                        # the rsync providers take tunasync's keys
    name = "ubuntu"
    provider = "rsync"              # or "two-stage-rsync" (stage1_profile = "debian" | "debian-oldstyle")
    upstream = "rsync://rsync.example.org/ubuntu/"
    rsync_options = ["--bwlimit=50m"]   # added to the defaults; rsync_override replaces them
    exclude_file = "/etc/shoal/ubuntu.exclude"
    username = "mirror"             # password or password_file: given to rsync as RSYNC_PASSWORD
    password_file = "/etc/shoal/ubuntu.secret"
    use_ipv6 = true                 # or use_ipv4; not both

Rules, and why:

- A refusal is a struct's (msgspec's: a wrong type or bound, an unknown or missing key) or ours
  (core.mirror_values._Invalid, raised by a struct's ``__post_init__`` or the token's look-up); ``problem``
  turns either into a key path and a message in the file's words.
- TOML parsers report lines only for syntax errors, so the line of a key is found by scanning the text
  (core.toml_lines): table headers and ``key =`` lines, outside multi-line strings. When a key cannot be
  placed (it sits inside an inline table spread over lines, say) the line of its table is given instead.
- ``token``, ``token_env`` and ``token_file`` are one setting written three ways: one of them at most, and
  the one given must give a token (a variable that is set, a file that can be read).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import msgspec

from shoal.core.errors import ConfigError, UsageError
from shoal.core.mirror_config import MirrorConfig
from shoal.core.mirror_values import REFUSALS, dotted, file_dec_hook, problem, tail
from shoal.core.toml_lines import KeyPath, key_lines, line_of

_EMPTY_ENV: Mapping[str, str] = MappingProxyType({})

SecretReader = Callable[[str], str]
"""Reads the secret in a file (``token_file``); a UsageError says why it cannot."""


class _TokenRefused(ValueError):
    """A token setting that gives no token, at ``path``: caught by parse_config a few lines down."""

    def __init__(self, path: KeyPath, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _no_files(path: str) -> str:
    raise UsageError("token_file is read only from a config file on disk")


def _with_token(settings: Any, section: str, environ: Mapping[str, str], read_secret: SecretReader) -> Any:
    """``settings`` (the ``section`` table: ManagerSettings or WorkerSettings) with ``token`` read from
    ``token_env``'s variable in ``environ`` or ``token_file`` by ``read_secret``, when one is given."""
    given = [key for key in ("token", "token_env", "token_file") if getattr(settings, key) is not None]
    if len(given) > 1:
        raise _TokenRefused((section, given[-1]), f"give one of {', '.join(repr(k) for k in given)}, not several")
    if settings.token_file is not None:
        try:
            return msgspec.structs.replace(settings, token=read_secret(settings.token_file))
        except UsageError as exc:
            raise _TokenRefused((section, "token_file"), str(exc)) from None
    variable = settings.token_env
    if variable is None:
        return settings
    value = environ.get(variable, "")
    if not value.strip():
        raise _TokenRefused((section, "token_env"), f"the environment variable {variable} is not set (or empty)")
    return msgspec.structs.replace(settings, token=value)


def _config(data: dict[str, Any], environ: Mapping[str, str], read_secret: SecretReader) -> MirrorConfig:
    config = msgspec.convert(data, MirrorConfig, dec_hook=file_dec_hook)
    return msgspec.structs.replace(
        config,
        manager=_with_token(config.manager, "manager", environ, read_secret),
        worker=_with_token(config.worker, "worker", environ, read_secret),
    )


def parse_config(
    text: str,
    source: str = "<config>",
    *,
    environ: Mapping[str, str] = _EMPTY_ENV,
    read_secret: SecretReader = _no_files,
) -> MirrorConfig:
    """Read a mirrors.toml; ConfigError naming the source, line and key on anything wrong.

    ``environ`` is where ``token_env`` looks its variable up (the caller passes ``os.environ``), and
    ``read_secret`` reads ``token_file`` (the caller passes ``shoal.storage.secret_file.read_secret_file``)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column \d+\)", message)
        line = int(match[1]) if match else (text.count("\n") + 1 if "end of document" in message else None)
        where = f"{source}:{line}" if line is not None else source
        raise ConfigError(f"{where}: not valid TOML: {message}", source=source, line=line, key=None) from None
    try:
        return _config(data, environ, read_secret)
    except _TokenRefused as exc:
        path, message = exc.path, exc.message
    except REFUSALS as exc:
        path, message = problem(exc, data)
    line = line_of(key_lines(text), path)
    where = f"{source}:{line}" if line is not None else source
    key = next((str(part) for part in reversed(path) if isinstance(part, str)), None)
    raise ConfigError(
        f"{where}: {_context(data, path)}: {message}", source=source, line=line, key=key, path=dotted(path)
    ) from None


# -- what is wrong, and where -----------------------------------------------------------------------------


def _context(data: Mapping[str, Any], path: KeyPath) -> str:
    """``jobs[1] (name 'debian')`` or ``manager``: the table the key at ``path`` is in, for the message."""
    table = path[: len(path) - len(tail(path))]
    if len(table) >= 2 and table[0] == "jobs" and isinstance(table[1], int):
        job = data["jobs"][table[1]]
        where = f"jobs[{table[1]}]"
        name = job.get("name") if isinstance(job, Mapping) else None
        if isinstance(name, str):
            where += f" (name {name!r})"
        rest = dotted(table[2:])
        return f"{where} {rest}" if rest else where
    return dotted(table) or "top level"
