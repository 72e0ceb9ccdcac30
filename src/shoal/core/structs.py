"""Decoding the JSON APIs' bodies into their msgspec structs: one way, and one kind of error.

Each message of a JSON API is a ``msgspec.Struct`` (or a dataclass) whose field types and
``msgspec.Meta`` constraints state what a well-formed value is; :func:`decode` turns the body's bytes
straight into it. Rules, and why:

- A body that is not the message is a ProtocolError naming the top-level field at fault (``field``), so
  the HTTP edge answers a 400 that says what to fix. msgspec's message, kept in it, gives the whole path.
- A type may define ``checked(self) -> Self``: the rules a field's type cannot state (one field that must
  agree with another, a value normalised). It runs on decoding only: values the program builds itself are
  not checked again, and need not carry what only a peer's claim must (a secret, say).
- A string holding NUL is refused: the databases behind the services cannot store one (PostgreSQL refuses
  it), and a refused write fails every write committed with it. A lone UTF-16 surrogate (``"\\ud800"``),
  which no database can encode either, is malformed JSON to msgspec already.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, TypeVar

import msgspec

from shoal.core.errors import ProtocolError

T = TypeVar("T")

_AT_PATH = re.compile(r"`\$\.([A-Za-z_][A-Za-z0-9_]*)")
_NAMED = re.compile(r"field `([^`]*)`")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


# Here, in the core, so a client that must start quickly (shoal.daemon.client) reads it without importing an
# HTTP server; shoal.http.openapi describes it in every document.
class ErrorBody(msgspec.Struct, frozen=True):
    """Every error reply of every JSON API: a 4xx or 5xx with the reason in words."""

    error: str


def _decoder(kind: type[T]) -> msgspec.json.Decoder[T]:
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    return decoder


def field_of(message: str) -> str:
    """The top-level field a msgspec error message names: the first step of its path (``$.origin.length``
    names ``origin``), else the field it says is missing or unknown; "" for the body as a whole."""
    found = _AT_PATH.search(message) or _NAMED.search(message)
    return found.group(1) if found else ""


def decode(raw: bytes, kind: type[T]) -> T:
    """``raw`` (a JSON document) as a ``kind``, checked (see the module's rules); ProtocolError otherwise."""
    try:
        value = _decoder(kind).decode(raw)
    except msgspec.ValidationError as exc:
        message, name = str(exc), field_of(str(exc))
        if not name:
            raise ProtocolError(f"the body must be a JSON object of the message: {message}") from None
        raise ProtocolError(f"malformed {name}: {message}", field=name) from None
    except msgspec.DecodeError as exc:
        reason = str(exc)
        if _SURROGATE_ESCAPE.search(raw):
            reason = "a \\u escape holds half of a UTF-16 surrogate pair"
        raise ProtocolError(f"the body is not valid JSON: {reason}") from None
    except RecursionError:  # arrays in arrays, in a field the message does not know
        raise ProtocolError("the body is not valid JSON: nested too deeply") from None
    if b"\\u0000" in raw:
        _refuse_nul(value)
    checked = getattr(value, "checked", None)
    return checked() if checked is not None else value


def _refuse_nul(value: Any) -> None:
    """ProtocolError naming the top-level field of ``value`` that holds a NUL anywhere within it."""
    fields = msgspec.structs.asdict(value) if isinstance(value, msgspec.Struct) else {"": value}
    for name, member in fields.items():
        if any("\x00" in text for text in strings_in(msgspec.to_builtins(member))):
            raise ProtocolError(f"{name or 'the body'} holds a NUL character", field=name)


def strings_in(value: Any) -> Iterator[str]:
    """Every string within ``value``, a JSON document's builtins: dicts' keys and values, lists' items."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            yield item
