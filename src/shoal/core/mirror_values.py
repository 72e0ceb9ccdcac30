"""The mirror configuration's values that are more than a plain type: names, durations and hook commands, how
each is read (``dec_hook``), and how a refusal is said in the file's words (``problem``).

Pure: values in, values out. core.mirror_config's structs are built of these types and raise ``_Invalid``
(private to the two modules: callers catch ``REFUSALS``); core.mirror_toml (the file) and
``JobSpec.from_json`` (the JSON the manager sends its workers) read with these hooks and turn each refusal
into one message through ``problem``.

Durations are a string: a positive number with one unit of ``s``, ``m``, ``h`` or ``d`` (``"90s"``,
``"10m"``, ``"1.5h"``, ``"1d"``). A bare number (``interval = 120``) is refused in the file: tunasync's
``interval`` counts minutes and its ``timeout`` seconds, so a number copied from its config would silently
mean something else here; the error says which units to write. The JSON the manager sends its workers
carries durations as plain seconds (``dec_hook``); only the file (``file_dec_hook``) insists on a unit.
A time limit (``TimeLimit``: a job's ``timeout``) is a duration or 0, which means none, as it does in
tunasync; a bare 0 needs no unit, since it is the same in every one.

Rules, and why:

- ``Seconds`` and ``HookCommands`` are classes of their own at run time only so that msgspec hands the
  file's value to ``dec_hook``; a struct keeps the plain float or tuple (core.mirror_config's ``_Table``),
  which msgspec can encode again.
- A refusal names a key path and says what is wrong with the value as the file wrote it; msgspec's own
  messages (a wrong type or bound, an unknown or missing key) are rewritten in those words.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from shoal.core.toml_lines import KeyPath

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*")
_ZERO = re.compile(r"\s*0+(?:\.0+)?\s*[smhd]?\s*")
_WITH_UNIT = re.compile(r"\s*\d+(?:\.\d+)?\s*[smhd]\s*")
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_NOT_BLANK = r"\S"
Name = Annotated[str, msgspec.Meta(pattern=_NAME)]
"""A job's, worker's or pool's name: letters, digits, '.', '_', '-'; at most 64; also a directory name."""
Text = Annotated[str, msgspec.Meta(pattern=_NOT_BLANK)]
"""A string that is not blank."""
_PATTERNS_IN_WORDS = {
    _NAME: "a name (letters, digits, '.', '_', '-'; at most 64)",
    _NOT_BLANK: "a string that is not blank",
}
EnvName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


if TYPE_CHECKING:  # to the type checker, the value a struct keeps
    Seconds = float
    LimitSeconds = float
    HookCommands = tuple[str, ...]
else:  # at run time, classes of their own, so msgspec hands the file's value to dec_hook

    class Seconds(float):
        """A duration as the file writes it: a positive number of seconds, or a string such as ``"10m"``
        (read by dec_hook with ``parse_duration``); the struct then keeps the plain float."""

    class LimitSeconds(Seconds):
        """A time limit as the file writes it: a duration, or 0 for none (read by dec_hook with
        ``parse_limit``); the struct then keeps the plain float, 0.0 for none."""

    class HookCommands(tuple):
        """A hook as the file writes it: one command string, or an array of them (read by dec_hook); the
        struct then keeps the plain tuple."""


Duration = Annotated[
    Seconds,
    msgspec.Meta(
        description=(
            "a number with one unit of s, m, h or d ('90s', '10m', '1.5h', '1d'); in JSON, seconds as a number too"
        ),
        extra_json_schema={"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string"}]},
    ),
]
TimeLimit = Annotated[
    LimitSeconds,
    msgspec.Meta(
        description=(
            "a duration with one unit of s, m, h or d ('90s', '10m', '1.5h', '1d'), or 0: no limit; in JSON, "
            "seconds as a number too"
        ),
        extra_json_schema={"anyOf": [{"type": "number", "minimum": 0}, {"type": "string"}]},
    ),
]
NO_LIMIT = 0.0
"""A ``TimeLimit`` of 0: none. tunasync's meaning of a timeout of 0 too, so a converted job keeps it."""
Hook = Annotated[
    HookCommands,
    msgspec.Meta(
        description="shell commands, run in order with /bin/sh -c",
        extra_json_schema={"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    ),
]


class _Invalid(ValueError):
    """A value at ``path`` (below the struct that raised it) is wrong; a ValueError, so msgspec adds the
    struct's own path, and turned into ConfigError (with a line) or ProtocolError at the edge."""

    def __init__(self, path: KeyPath, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


REFUSALS = (_Invalid, msgspec.ValidationError)
"""What reading values into these structs raises when they will not do: msgspec's refusals and this
module's own; :func:`problem` turns each into a key path and a message."""


# -- reading ----------------------------------------------------------------------------------------------


def parse_duration(value: Any) -> float:
    """A positive, finite number of seconds, from a number or a string like ``"90s"``, ``"10m"``, ``"6h"``,
    ``"1d"``; ValueError or TypeError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"expected a duration (seconds, or a string like '10m'), not {shown(value)}")
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


def parse_limit(value: Any) -> float:
    """A time limit: ``NO_LIMIT`` for 0 (a number, or a string such as ``"0"`` or ``"0s"``), else a duration
    as ``parse_duration`` reads it; ValueError or TypeError otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return NO_LIMIT
    if isinstance(value, str) and _ZERO.fullmatch(value):
        return NO_LIMIT
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{exc}, or 0 for no limit") from None


def _commands(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise TypeError(f"expected a command string or an array of them, not {shown(value)}")
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"every hook command must be a non-empty string, not {shown(item)}")
    return tuple(items)


def dec_hook(kind: type, value: Any) -> Any:
    """msgspec's ``dec_hook`` for the two types that may be written in more than one way: every decoding of
    these structs from JSON (``JobSpec.from_json``, the mirror client's of a run command) passes it."""
    if kind is Seconds:
        return Seconds(parse_duration(value))
    if kind is LimitSeconds:
        return LimitSeconds(parse_limit(value))
    if kind is HookCommands:
        return HookCommands(_commands(value))
    raise NotImplementedError(kind)


def file_dec_hook(kind: type, value: Any) -> Any:
    """``dec_hook`` for the TOML file, where a duration must name its unit (the module's docstring says why)."""
    if kind is Seconds or kind is LimitSeconds:
        _require_unit(value)  # 0 passes: it is the same in every unit
    return dec_hook(kind, value)


def _require_unit(value: Any) -> None:
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if isinstance(value, str) and _DURATION.fullmatch(value) and not _WITH_UNIT.fullmatch(value):
        number = float(value)
    if number is None or not (math.isfinite(number) and number > 0):
        return  # parse_duration says what is wrong with it
    shown = f"{number:g}"
    readings = [reading for reading in (_largest(number, "s"), _largest(number, "m")) if reading]
    also = f" ({', '.join(readings)})" if readings else ""
    raise ValueError(
        f"{value!r} has no unit, and tools differ on it (tunasync's interval counts minutes, its timeout "
        f'seconds): write it with one of s, m, h, d, as "{shown}s", "{shown}m" or "{shown}h"{also}'
    )


def _largest(number: float, unit: str) -> str:
    """``"120m" is "2h"``: ``number`` of ``unit`` in the largest unit that keeps it whole, if that is larger."""
    seconds = number * _UNIT_SECONDS[unit]
    for larger in ("d", "h", "m"):
        size = _UNIT_SECONDS[larger]
        if size > _UNIT_SECONDS[unit] and seconds >= size and seconds % size == 0:
            return f'"{number:g}{unit}" is "{seconds / size:g}{larger}"'
    return ""


# -- what is wrong, in the file's words ------------------------------------------------------------------

_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[\.\.\.\]")
_NAMED = re.compile(r"^Object (?P<what>contains unknown|missing required) field `(?P<key>[^`]*)`$")


def problem(exc: Exception, data: Any) -> tuple[KeyPath, str]:
    """The key path and the message of a refusal: our own (``_Invalid``, a duration or a hook that does
    not read, said in our words) or msgspec's (a wrong type or bound, an unknown or missing key)."""
    if isinstance(exc, _Invalid):
        return exc.path, exc.message
    text = str(exc)
    at = _AT.search(text)
    message = text[: at.start()] if at else text
    path: list[str | int] = []
    for step in _STEP.finditer(at["path"] if at else ""):
        if step[0] == "[...]":  # a value in a table of arbitrary keys; env is the only one, of strings
            table = _value_at(data, tuple(path))
            path.append(next(k for k, v in table.items() if not isinstance(v, str)))
        else:
            path.append(step[1] if step[1] is not None else int(step[2]))
    cause = exc.__cause__
    if isinstance(cause, _Invalid):
        return (*path, *cause.path), cause.message
    if isinstance(cause, TypeError | ValueError):  # the decode hook's: already names the value
        return tuple(path), f"{path[-1]}: {cause}"
    named = _NAMED.match(message)
    if named:
        verb = "unknown" if named["what"].startswith("contains") else "missing"
        return (*path, named["key"]), f"{verb} key {named['key']!r}"
    message = message[0].lower() + message[1:]
    for pattern, words in _PATTERNS_IN_WORDS.items():
        message = message.replace(f"`str` matching regex {pattern!r}", words)
    name = dotted(tail(tuple(path)))
    return tuple(path), f"{name} = {shown(_value_at(data, tuple(path)))}: {message}" if name else message


def _value_at(data: Any, path: KeyPath) -> Any:
    for part in path:
        data = data[part]
    return data


def tail(path: KeyPath) -> KeyPath:
    """From the last key on: ``success_exit_codes[0]`` of ``jobs[0].success_exit_codes[0]``."""
    keys = [i for i, part in enumerate(path) if isinstance(part, str)]
    return path[keys[-1] :] if keys else path


def dotted(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def shown(value: Any) -> str:
    """A value as the file would write it, cut short (for messages)."""
    try:
        text = msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
