"""tunasync's worker.conf and manager.conf in, an equivalent ``mirrors.toml`` out (``shoal mirror import-tunasync``).

Pure: the files' texts come in as values (shoal.mirror.config reads them and globs ``[include]``), the TOML
text and the list of what could not be carried over come out. The keys are tunasync's own
(``worker/config.go``, ``manager/config.go``); how each maps::

    worker.conf                               mirrors.toml
    [global] name                             [worker] name, and every job's worker (its jobs ran there)
    [global] mirror_dir                       [worker] directory
    [global] concurrent                       [worker] concurrency
    [global] interval, retry, timeout,        each job's default, as tunasync applies them
      log_dir, exec_on_success/_failure,
      rsync_options, dangerous_global_success_exit_codes,
      dangerous_global_rsync_success_exit_codes
    [manager] api_base (api_base_list[0])     [worker] manager
    [manager] token                           [worker] token and [manager] token
    [include] include_mirrors                 the [[mirrors]] of every file it globs, after the file's own
    [[mirrors]] (nested [[mirrors.mirrors]])  [[jobs]], one per leaf, its parents' keys inherited
      interval (minutes)                      interval = "2h" (the largest whole unit)
      timeout (seconds)                       timeout = "1h"; unset or 0: timeout = 0 (no limit)
      retry                                   retries
      exec_on_success (+ _extra)              hooks.post_success
      exec_on_failure (+ _extra)              hooks.post_fail
      log_dir ("{{.Name}}" expanded)          log_dir
      provider, upstream, command, env,       the same names (the rsync providers' keys are tunasync's)
        rsync_options, rsync_override, exclude_file, username, password, use_ipv4, use_ipv6,
        stage1_profile, fail_on_match, size_pattern
      success_exit_codes                      success_exit_codes, with the global ones (and for rsync,
      (+ rsync_success_exit_codes: rsync)       the rsync ones too, as tunasync merges them)
    manager.conf [server] addr, port          [manager] host, port

Every job is written with ``layout = "in-place"``: tunasync syncs into ``<mirror_dir>/<name>``, which is what
web server roots point at, and the in-place layout keeps that path.

Rules, and why:

- Nothing is dropped silently: every key present that has no equivalent is a ``Skipped`` entry naming
  where it was and why; core.tunasync_keys holds tunasync's keys, the reasons, and the notes' rules.
- A value tunasync itself would refuse (a provider it does not know, an interval that is not a number) is a
  ConfigError naming the file and the key, as Shoal's own config errors do: converting it would only move
  the mistake into the new file.
- A mirror whose name cannot be a Shoal job name (a directory name: letters, digits, ``.``, ``_``, ``-``) is
  skipped with the reason rather than renamed, since its directory and URLs would change.
- A mirror without a ``timeout`` (unset or 0, its own and the global one) runs without a time limit in
  tunasync, so its job is written with ``timeout = 0``, Shoal's "no limit" (core.mirror_values.NO_LIMIT),
  rather than left to take Shoal's default of one hour and be killed where tunasync would let it finish.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shoal.core.errors import ConfigError
from shoal.core.toml_write import render
from shoal.core.tunasync_keys import (
    GLOBAL_KEYS,
    MIRROR_KEYS,
    NOT_CARRIED,
    WORKER_TABLES_NOT_CARRIED,
    Notes,
    Skipped,
)

TUNASYNC_PROVIDERS = ("rsync", "two-stage-rsync", "command")
DEFAULT_PROVIDER = "rsync"
"""tunasync's providerEnum is rsync when a mirror names none (its zero value)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TEMPLATE = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")
_TEMPLATE_FIELDS = {"Name": "name", "Provider": "provider", "Upstream": "upstream", "MirrorSubDir": "mirror_subdir"}
"""The Go template fields of tunasync's log_dir that name a mirror's keys (its mirrorConfig's field names)."""

# Keys copied under the same name, for the providers that read them.
_SAME_NAME = ("upstream", "fail_on_match", "size_pattern")
_RSYNC_SAME_NAME = (
    "rsync_override",
    "exclude_file",
    "username",
    "password",
    "use_ipv4",
    "use_ipv6",
    "stage1_profile",
)


@dataclass(frozen=True)
class Source:
    """One file's name (as shown in messages) and text."""

    name: str
    text: str


@dataclass(frozen=True)
class Conversion:
    toml: str
    """The mirrors.toml text."""
    skipped: tuple[Skipped, ...]
    jobs: tuple[str, ...]
    """The names of the jobs written, in order."""


def include_pattern(worker: Source) -> str | None:
    """The glob of ``[include] include_mirrors``, for the caller to expand (a relative one from the worker
    file's directory); None when there is none."""
    include = _table(_read(worker), "include", worker.name)
    pattern = include.get("include_mirrors")
    if pattern is None or pattern == "":
        return None
    text: str = _expect(pattern, str, worker.name, "include.include_mirrors")
    return text


def convert(worker: Source, includes: Sequence[Source] = (), manager: Source | None = None) -> Conversion:
    """The mirrors.toml equivalent to ``worker`` (with its ``includes``' mirrors, in order) and ``manager``.

    ConfigError when a file is not TOML or holds a value tunasync itself would refuse."""
    notes = Notes()
    data = _read(worker)
    global_ = _table(data, "global", worker.name)
    notes.unknown(global_, GLOBAL_KEYS, f"{worker.name} [global]")
    sections: dict[str, dict[str, Any]] = {"manager": {}, "worker": {}}
    _worker_settings(global_, _table(data, "manager", worker.name), worker.name, sections, notes)
    for table, why in WORKER_TABLES_NOT_CARRIED.items():
        notes.table(data.get(table), f"{worker.name} [{table}]", why)
    notes.unknown(data, {"global", "manager", "include", "mirrors", *WORKER_TABLES_NOT_CARRIED}, worker.name)
    worker_name = sections["worker"].get("name")
    if manager is not None:
        _manager_settings(manager, sections["manager"], notes)
    mirrors = [(worker.name, m) for m in _mirror_list(data, worker.name)]
    for source in includes:
        included = _read(source)
        notes.unknown(included, {"mirrors"}, source.name)
        mirrors += [(source.name, m) for m in _mirror_list(included, source.name)]
    jobs: list[dict[str, Any]] = []
    for source_name, mirror in mirrors:
        for leaf in _leaves(mirror, {}, source_name, notes):
            job = _job(leaf, global_, worker_name, source_name, notes)
            if job is not None:
                jobs.append(job)
    _check_unique(jobs, worker.name)
    header = [f"# Converted from {worker.name}" + (f" and {manager.name}" if manager else "")]
    header.append("# by `shoal mirror import-tunasync`; what it could not carry over it listed on stderr.")
    text = "\n".join(header) + "\n" + render(sections, jobs)
    return Conversion(text, tuple(notes.skipped), tuple(job["name"] for job in jobs))


# -- the tables -------------------------------------------------------------------------------------------


def _worker_settings(
    global_: Mapping[str, Any],
    manager: Mapping[str, Any],
    source: str,
    sections: dict[str, dict[str, Any]],
    notes: Notes,
) -> None:
    worker = sections["worker"]
    name = _optional(global_, "name", str, source, "global")
    if name is not None:
        if not _NAME.fullmatch(name):
            raise _error(source, "global.name", f"{name!r} is not a usable worker name (letters, digits, . _ -)")
        worker["name"] = name
    directory = _optional(global_, "mirror_dir", str, source, "global")
    if directory:
        worker["directory"] = directory
    concurrent = _optional(global_, "concurrent", int, source, "global")
    if concurrent:
        worker["concurrency"] = concurrent
    notes.unknown(manager, {"api_base", "api_base_list", "token", "ca_cert"}, f"{source} [manager]")
    bases = _optional(manager, "api_base_list", list, source, "manager") or []
    base = bases[0] if bases else _optional(manager, "api_base", str, source, "manager")
    if base:
        worker["manager"] = _expect(base, str, source, "manager.api_base")
    if len(bases) > 1:
        notes.add(f"{source} [manager]", "api_base_list", NOT_CARRIED["api_base_list"])
    token = _optional(manager, "token", str, source, "manager")
    if token:
        worker["token"] = token
        sections["manager"]["token"] = token  # the manager of these workers must ask for it
    if _optional(manager, "ca_cert", str, source, "manager"):
        notes.add(f"{source} [manager]", "ca_cert", NOT_CARRIED["ca_cert"])


def _manager_settings(source: Source, settings: dict[str, Any], notes: Notes) -> None:
    data = _read(source)
    notes.unknown(data, {"debug", "server", "files"}, source.name)
    if data.get("debug"):
        notes.add(source.name, "debug", NOT_CARRIED["debug"])
    server = _table(data, "server", source.name)
    notes.unknown(server, {"addr", "port", "ssl_cert", "ssl_key"}, f"{source.name} [server]")
    addr = _optional(server, "addr", str, source.name, "server")
    if addr:
        settings["host"] = addr
    port = _optional(server, "port", int, source.name, "server")
    if port:
        settings["port"] = port
    for key in ("ssl_cert", "ssl_key"):
        if server.get(key):
            notes.add(f"{source.name} [server]", key, NOT_CARRIED[key])
    files = _table(data, "files", source.name)
    notes.unknown(files, {"status_file", "db_file", "db_type", "ca_cert"}, f"{source.name} [files]")
    for key in ("status_file", "db_type", "db_file", "ca_cert"):
        if files.get(key):
            notes.add(f"{source.name} [files]", key, NOT_CARRIED[key])


# -- the mirrors ------------------------------------------------------------------------------------------


def _mirror_list(data: Mapping[str, Any], source: str) -> list[dict[str, Any]]:
    mirrors = data.get("mirrors", [])
    if not isinstance(mirrors, list) or not all(isinstance(m, dict) for m in mirrors):
        raise _error(source, "mirrors", "must be an array of tables ([[mirrors]])")
    return mirrors


def _leaves(mirror: Mapping[str, Any], parent: Mapping[str, Any], source: str, notes: Notes) -> list[dict[str, Any]]:
    """tunasync's recursiveMirrors: a mirror with ``[[mirrors.mirrors]]`` children is a template for them,
    each child's keys overriding its parent's; only the leaves are jobs."""
    merged = {**parent, **{k: v for k, v in mirror.items() if k != "mirrors"}}
    children = mirror.get("mirrors")
    if children is None:
        return [merged]
    if not isinstance(children, list) or not all(isinstance(c, dict) for c in children):
        raise _error(source, f"mirrors '{merged.get('name', '?')}'.mirrors", "must be an array of tables")
    return [leaf for child in children for leaf in _leaves(child, merged, source, notes)]


def _job(
    mirror: Mapping[str, Any], global_: Mapping[str, Any], worker: str | None, source: str, notes: Notes
) -> dict[str, Any] | None:
    name = _expect(mirror.get("name"), str, source, "mirrors.name")
    where = f"{source} mirrors {name!r}"
    if not _NAME.fullmatch(name):
        notes.add(where, "name", "not a Shoal job name (letters, digits, . _ -; at most 64): mirror skipped")
        return None
    notes.unknown(mirror, MIRROR_KEYS, where)
    key = f"mirrors {name!r}"
    provider = _optional(mirror, "provider", str, source, key) or DEFAULT_PROVIDER
    if provider not in TUNASYNC_PROVIDERS:
        raise _error(
            source, f"{key}.provider", f"{provider!r} is not a tunasync provider ({', '.join(TUNASYNC_PROVIDERS)})"
        )
    job: dict[str, Any] = {"name": name, "provider": provider}
    for same in _SAME_NAME:
        if mirror.get(same) not in (None, ""):
            job[same] = _expect(mirror[same], str, source, f"{key}.{same}")
    rsync = provider != "command"
    if rsync:
        _rsync_keys(mirror, global_, job, source, key, where, notes)
    else:
        job["command"] = _expect(mirror.get("command"), str, source, f"{key}.command")
        if mirror.get("rsync_success_exit_codes"):
            notes.add(where, "rsync_success_exit_codes", "tunasync ignores it too for the command provider")
    # tunasync's success codes: the global ones, the mirror's, and for rsync the rsync-only ones of both.
    codes = _int_list(global_, "dangerous_global_success_exit_codes", source) + _int_list(
        mirror, "success_exit_codes", source, key
    )
    if rsync:
        codes += _int_list(global_, "dangerous_global_rsync_success_exit_codes", source) + _int_list(
            mirror, "rsync_success_exit_codes", source, key
        )
    if codes:
        job["success_exit_codes"] = sorted({0, *codes})
    _schedule_keys(mirror, global_, job, source, key)
    if worker:
        job["worker"] = worker
    job["layout"] = "in-place"
    log_dir = _optional(mirror, "log_dir", str, source, key) or _optional(global_, "log_dir", str, source, "global")
    if log_dir:
        job["log_dir"] = _expand(log_dir, mirror, where, notes)
    env = mirror.get("env")
    if env:
        job["env"] = _env(env, source, key)
    hooks = _hooks(mirror, global_, source, key)
    if hooks:
        job["hooks"] = hooks
    for skipped, why in NOT_CARRIED.items():
        if mirror.get(skipped) not in (None, "", [], False, 0):
            notes.add(where, skipped, why)
    return job


def _rsync_keys(
    mirror: Mapping[str, Any],
    global_: Mapping[str, Any],
    job: dict[str, Any],
    source: str,
    key: str,
    where: str,
    notes: Notes,
) -> None:
    for same in _RSYNC_SAME_NAME:
        if mirror.get(same) not in (None, "", False, []):
            job[same] = mirror[same]
    if "stage1_profile" in job and job["provider"] != "two-stage-rsync":
        del job["stage1_profile"]  # tunasync reads it only in two-stage-rsync; Shoal refuses it elsewhere
        notes.add(where, "stage1_profile", "only the two-stage-rsync provider reads it (tunasync ignores it too)")
    # tunasync appends the global options to its own, then the mirror's: the same order here.
    options = _str_list(global_, "rsync_options", source) + _str_list(mirror, "rsync_options", source, key)
    if options:
        job["rsync_options"] = options
    if mirror.get("command"):
        notes.add(where, "command", "for rsync it names the rsync program; Shoal runs rsync from PATH")


def _schedule_keys(
    mirror: Mapping[str, Any], global_: Mapping[str, Any], job: dict[str, Any], source: str, key: str
) -> None:
    interval = _inherited(mirror, global_, "interval", source, key)
    if interval:
        job["interval"] = duration(interval * 60)
    timeout = _inherited(mirror, global_, "timeout", source, key)
    # 0 is Shoal's "no limit" (a bare 0 needs no unit), as an unset timeout is tunasync's.
    job["timeout"] = duration(timeout) if timeout else 0
    retry = _inherited(mirror, global_, "retry", source, key)
    if retry:
        job["retries"] = retry


def _inherited(mirror: Mapping[str, Any], global_: Mapping[str, Any], name: str, source: str, key: str) -> int:
    """A mirror's own value of ``name``, else the global one, as tunasync takes them (0: unset)."""
    own: int | None = _optional(mirror, name, int, source, key)
    if own:
        _positive(own, source, f"{key}.{name}")
        return own
    value: int = _optional(global_, name, int, source, "global") or 0
    if value:
        _positive(value, source, f"global.{name}")
    return value


def _hooks(mirror: Mapping[str, Any], global_: Mapping[str, Any], source: str, key: str) -> dict[str, list[str]]:
    """exec_on_success/_failure: the mirror's replace the global ones, the ``_extra`` lists are added."""
    hooks: dict[str, list[str]] = {}
    for tunasync, shoal in (("exec_on_success", "post_success"), ("exec_on_failure", "post_fail")):
        own = _str_list(mirror, tunasync, source, key)
        commands = (own or _str_list(global_, tunasync, source)) + _str_list(mirror, f"{tunasync}_extra", source, key)
        if commands:
            hooks[shoal] = commands
    return hooks


def _expand(template: str, mirror: Mapping[str, Any], where: str, notes: Notes) -> str:
    def field(match: re.Match[str]) -> str:
        key = _TEMPLATE_FIELDS.get(match[1])
        if key is None:
            notes.add(where, "log_dir", f"the template field {match[0]} is not known here; written as it was")
            return match[0]
        return str(mirror.get(key, ""))

    return _TEMPLATE.sub(field, template)


def _env(env: Any, source: str, key: str) -> dict[str, str]:
    if not isinstance(env, dict):
        raise _error(source, f"{key}.env", "must be a table of strings")
    for name, value in env.items():
        if not _ENV_NAME.fullmatch(name) or not isinstance(value, str):
            raise _error(source, f"{key}.env.{name}", "must be an environment variable name with a string value")
    return dict(env)


def _check_unique(jobs: Sequence[Mapping[str, Any]], source: str) -> None:
    seen: set[str] = set()
    for job in jobs:
        if job["name"] in seen:
            raise _error(source, "mirrors.name", f"two mirrors are named {job['name']!r} (with the included files)")
        seen.add(job["name"])


def duration(seconds: int) -> str:
    """``7200`` as ``"2h"``: a whole number of the largest unit that divides it (d, h, m, s)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# -- reading values ---------------------------------------------------------------------------------------


def _read(source: Source) -> dict[str, Any]:
    try:
        return tomllib.loads(source.text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source.name}: not valid TOML: {exc}", source=source.name, line=None, key=None) from None


def _table(data: Mapping[str, Any], name: str, source: str) -> dict[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise _error(source, name, "must be a table")
    return table


def _optional(table: Mapping[str, Any], key: str, kind: type, source: str, where: str) -> Any:
    value = table.get(key)
    return None if value is None else _expect(value, kind, source, f"{where}.{key}")


def _expect(value: Any, kind: type, source: str, key: str) -> Any:
    if value is None:
        raise _error(source, key, "missing")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        words = {str: "a string", int: "an integer", list: "an array", dict: "a table"}[kind]
        raise _error(source, key, f"must be {words}, not {json.dumps(value, default=str)[:60]}")
    return value


def _positive(value: int, source: str, key: str) -> None:
    if value < 0:
        raise _error(source, key, f"must not be negative, not {value}")


def _str_list(table: Mapping[str, Any], key: str, source: str, where: str = "global") -> list[str]:
    values = _optional(table, key, list, source, where) or []
    for value in values:
        _expect(value, str, source, f"{where}.{key}")
    return list(values)


def _int_list(table: Mapping[str, Any], key: str, source: str, where: str = "global") -> list[int]:
    values = _optional(table, key, list, source, where) or []
    for value in values:
        _expect(value, int, source, f"{where}.{key}")
        if not 0 <= value <= 255:
            raise _error(source, f"{where}.{key}", f"{value} is not an exit status (0 to 255)")
    return list(values)


def _error(source: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {message}", source=source, line=None, key=key.rsplit(".", 1)[-1])
