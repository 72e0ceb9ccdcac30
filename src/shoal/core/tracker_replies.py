"""What a client makes of the tracker's reply to a JSON API call: the reply's message, or the one error
for what went wrong. Sans I/O: each transport (aiohttp in the peer and the daemon, urllib in ``shoal
pool``) hands over the status, the content type and the body, and maps only its own connection errors.

Rules, and why:

- The tracker answers JSON, its errors included (``{"error": ...}``): a body that is not JSON comes from
  another server (a web page, a proxy), so the error says the URL is not the tracker API's.
- A 404 or 405 whose error is only the status's reason is aiohttp's "no such route": the base URL is not
  a tracker's (the tracker names what is unknown: a task, a pool).
- A 503 with ``Retry-After`` in seconds (RFC 9110, 10.2.3) and a JSON error is the tracker shedding load
  (TrackerBusy): it is up and says when to ask again. Any other 5xx is the tracker failing, or a proxy
  in front of it finding it down (TrackerUnreachable: another tracker may answer, and this one later);
  any other 4xx refuses this request, and the caller's ``refused`` makes its API's error of it (a
  PoolRefused, say).
- A 2xx whose body is not the operation's reply is TrackerUnavailable: another version of the protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import msgspec

from shoal.core.errors import ProtocolError, TrackerBusy, TrackerUnavailable, TrackerUnreachable
from shoal.core.structs import decode

T = TypeVar("T")
Refused = Callable[[str, int], Exception]
"""Makes the error for a 4xx refusal from the tracker's message and the status."""


def read_reply(
    tracker: str,
    status: int,
    reason: str,
    content_type: str,
    body: bytes,
    kind: type[T],
    refused: Refused,
    retry_after: str | None = None,
) -> T:
    """The reply ``body`` (with ``status``, its ``reason`` and its ``Retry-After`` header, if any) of a call
    to ``tracker`` as a ``kind``, or the error the module's rules give."""
    if status >= 400:
        error = _error(tracker, status, reason, content_type or "no type", body, refused)
        wait = parse_retry_after(retry_after) if status == 503 else None
        if wait is not None and isinstance(error, TrackerUnavailable) and _json(body) is not None:
            raise TrackerBusy(str(error), tracker=tracker, retry_after=wait) from None
        if status >= 500:
            raise TrackerUnreachable(str(error), tracker=tracker) from None
        raise error
    try:
        return decode(body, kind)
    except ProtocolError as exc:
        if _json(body) is None:
            raise TrackerUnavailable.not_a_tracker(tracker, f"a page ({content_type or 'no type'})") from None
        raise TrackerUnavailable(f"the tracker's reply is not the protocol: {exc}", tracker=tracker) from None


def parse_retry_after(value: str | None) -> float | None:
    """The seconds a ``Retry-After`` header names; None when there is none or it is not delay-seconds (an
    HTTP-date is not: the tracker never sends one, and a client's clock need not agree with a proxy's)."""
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        return None
    return float(int(value))


def _json(body: bytes) -> object | None:
    try:
        value: object = msgspec.json.decode(body)
        return value
    except msgspec.DecodeError:
        return None


def _error(tracker: str, status: int, reason: str, content_type: str, body: bytes, refused: Refused) -> Exception:
    answered = f"{status} {reason}".strip()
    data = _json(body)
    if data is None:
        return TrackerUnavailable.not_a_tracker(tracker, f"{answered} ({content_type})")
    error = data.get("error") if isinstance(data, dict) else None
    if status in (404, 405) and error in (None, reason):
        return TrackerUnavailable.not_a_tracker(tracker, answered)
    message = " ".join(str(error).split()) if error else "no reason given"
    if status >= 500:
        return TrackerUnavailable(f"the tracker failed: {message} (HTTP {status})", tracker=tracker)
    return refused(message, status)
