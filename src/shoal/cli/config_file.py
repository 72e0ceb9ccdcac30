"""Where a long-running command's settings come from: its flags, ``SHOAL_<COMMAND>_<FLAG>`` variables, and a
TOML file named by ``--config``.

Precedence, highest first: a flag on the command line, its environment variable, the config file's key, the
default. That is click's own order (command line, ``envvar``, ``default_map``, default), so nothing here
decides between sources: :func:`configured` names every option's variable and adds ``--config``, whose
callback (eager, so it runs before any other option is read) checks the file and makes it the context's
``default_map``. A flag added to a configured command later gets its variable and its key for free.

Names, and why:

- The variable of ``--max-inflight`` on ``shoal tracker`` is ``SHOAL_TRACKER_MAX_INFLIGHT``, and its key
  ``max_inflight``: the long flag as users read it in ``--help``, not click's parameter name (``--socket``
  is ``socket``, not ``socket_path``). Variables that existed before (``SHOAL_TRACKER``,
  ``SHOAL_FLEET_TOKEN_FILE``) still work, after the command's own one.
- A key is checked against the command's options and the TOML type against the option's (a string where a
  number belongs is refused, not turned into ``"5"``): an unknown key (a typo would silently keep the
  default), a wrong type or a value the option refuses is a usage error (exit 2) naming the file, the line
  and the key. A bad value in a variable names the variable.
- ``--help`` and ``--config`` are not keys; repeatable options and ``DIR...`` arguments take an array.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from shoal.core.toml_lines import key_lines, line_of

C = TypeVar("C", bound=click.Command)

_NOT_KEYS = frozenset({"config", "help"})


def configured(prefix: str, *, config_file: bool = True) -> Callable[[C], C]:
    """Give every option of a command the variable ``PREFIX_FLAG`` (before any it had), and, with
    ``config_file``, a ``--config PATH`` option reading the TOML file of its defaults.

    Applied above ``@click.command``: ``@configured("SHOAL_TRACKER")``."""

    def decorate(command: C) -> C:
        for param in command.params:
            key = setting_key(param)
            if key is not None:
                param.envvar = [f"{prefix}_{key.upper()}", *_envvars(param)]
        if config_file:
            command.params.insert(0, _config_option(prefix))
        return command

    return decorate


def setting_key(param: click.Parameter) -> str | None:
    """The key a parameter has in a config file (and, upper-cased, in its variable's name): its first long
    flag with ``_`` for ``-``, or an argument's name; None for ``--help``."""
    if isinstance(param, click.Argument):
        return param.name
    long_flags = [opt for opt in param.opts if opt.startswith("--")]
    if not long_flags:
        return None
    key = long_flags[0][2:].replace("-", "_")
    return None if key in _NOT_KEYS else key


def _envvars(param: click.Parameter) -> list[str]:
    if param.envvar is None:
        return []
    return [param.envvar] if isinstance(param.envvar, str) else list(param.envvar)


def _config_option(prefix: str) -> click.Option:
    return click.Option(
        ["--config"],
        type=click.Path(dir_okay=False, path_type=Path),
        envvar=f"{prefix}_CONFIG",
        is_eager=True,
        expose_value=False,
        callback=_load_defaults,
        metavar="PATH",
        help=f"A TOML file of defaults for these options (keys: the long flags, '_' for '-'; flags and "
        f"{prefix}_FLAG variables win).",
    )


def _load_defaults(ctx: click.Context, param: click.Parameter, path: Path | None) -> None:
    if path is None:
        return
    text = _read(ctx, path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise click.UsageError(f"{path}: not valid TOML: {exc}", ctx) from None
    by_key = {key: p for p in ctx.command.params if (key := setting_key(p)) is not None}
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{path}:{_line_of(text, key)}: {key}"
        target = by_key.get(key)
        if target is None or target.name is None:
            raise click.UsageError(f"{where}: unknown key{_hint(key, by_key)}", ctx)
        problem = _type_problem(target, value)
        if problem is not None:
            raise click.UsageError(f"{where}: {problem}", ctx)
        try:  # the option's own checks (a range, a unit, a URL), now, so the error can name the file
            target.process_value(ctx, tuple(value) if isinstance(value, list) else value)
        except click.BadParameter as exc:
            raise click.UsageError(f"{where}: {exc.message}", ctx) from None
        defaults[target.name] = value
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


def _read(ctx: click.Context, path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise click.UsageError(f"cannot read the config file {path}: {reason}", ctx) from None


def _hint(key: str, by_key: dict[str, click.Parameter]) -> str:
    spelled = key.replace("-", "_")
    if spelled != key and spelled in by_key:
        return f" (write it {spelled})"
    return f" (known keys: {', '.join(sorted(by_key))})"


# -- types -----------------------------------------------------------------------------------------------

_TOML_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}
_PLURALS = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


def _type_problem(param: click.Parameter, value: Any) -> str | None:
    """Why ``value`` (as TOML read it) cannot be this parameter's, or None: a scalar of the option's type,
    or an array of them for a repeatable option or a variadic argument."""
    many = getattr(param, "multiple", False) or param.nargs == -1
    want = _scalar_type(param)
    if many:
        if not isinstance(value, list):
            return f"expected an array of {_PLURALS[want]}, not {_shown(value)}"
        wrong = next((item for item in value if not _is(item, want)), None)
        return None if wrong is None else f"expected an array of {_PLURALS[want]}, but it holds {_shown(wrong)}"
    return None if _is(value, want) else f"expected {_TOML_NAMES[want]}, not {_shown(value)}"


def _scalar_type(param: click.Parameter) -> type:
    if isinstance(param, click.Option) and param.count:
        return int
    if isinstance(param, click.Option) and param.is_flag:
        return bool
    kind = param.type
    if isinstance(kind, click.types.IntParamType):
        return int
    if isinstance(kind, click.types.FloatParamType):
        return float
    if isinstance(kind, click.types.BoolParamType):
        return bool
    return str


def _is(value: Any, want: type) -> bool:
    if isinstance(value, bool):  # TOML's true is no number
        return want is bool
    if want is float:
        return isinstance(value, int | float)
    return isinstance(value, want)


def _shown(value: Any) -> str:
    other = "a table" if isinstance(value, dict) else "a date or time"  # TOML's remaining kinds
    kind = next((name for t, name in _TOML_NAMES.items() if isinstance(value, t)), other)
    text = repr(value)
    return f"{kind} ({text if len(text) <= 40 else text[:37] + '...'})"


def _line_of(text: str, key: str) -> int | str:
    """The line a top-level key is written on (core.toml_lines), or ``?``."""
    line = line_of(key_lines(text), (key,))
    return "?" if line is None else line


# -- errors ----------------------------------------------------------------------------------------------


def reworded(exc: click.UsageError, argv: Sequence[str]) -> str | None:
    """The message of a bad value that came from a variable, naming it (``SHOAL_TRACKER_PORT: ...``); None
    for any other error, which click's words describe (a flag names itself; a file's value was checked
    when the file was read). ``argv``: the command line, where a flag given wins over its variable."""
    if not isinstance(exc, click.BadParameter) or exc.param is None or setting_key(exc.param) is None:
        return None
    flags = exc.param.opts
    if any(arg == flag or arg.startswith(f"{flag}=") for arg in argv for flag in flags if flag.startswith("--")):
        return None
    variable = next((name for name in _envvars(exc.param) if os.environ.get(name)), None)
    return f"{variable}: {exc.message}" if variable else None
