"""What a client makes of the tracker's reply to a JSON API call: the reply's message, or the one error
for what went wrong. Sans I/O: each transport (aiohttp in the peer and the daemon, urllib in ``shoal
pool``) hands over the status, the content type and the body, and maps only its own connection errors.

Rules, and why:

- The tracker answers JSON, its errors included (``{"error": ...}``): a body that is not JSON comes from
  another server (a web page, a proxy), so the error says the URL is not the tracker API's.
- A 404 or 405 whose error is only the status's reason is aiohttp's "no such route": the base URL is not
  a tracker's (the tracker names what is unknown: a task, a pool).
- A 503 with ``Retry-After`` in seconds (RFC 9110, 10.2.3) and a JSON error is the tracker asking to wait
  (TrackerBusy): it is up and says when to ask again. So is a 429 with them (RFC 6585, 4): the tracker
  takes no more new peers from this address for now (core.peer_limits), and says when it will. The
  TrackerBusy's message is the tracker's error as it came ("the tracker asks to wait: ..."), with no
  reason of the client's own: a tracker asks to wait when it sheds load (its error says it is busy), but
  also while a cluster's task changes owner or its owner does not answer, and when a swarm is full, and
  a client's "busy" (or "failed") would be wrong for all of these. Any other
  5xx is the tracker failing, or a proxy in front of it finding it down (TrackerUnreachable: another
  tracker may answer, and this one later); any other 4xx refuses this request, and the caller's
  ``refused`` makes its API's error of it (a PoolRefused, say).
- A 401 whose JSON names the fleet credential (``{"error": ..., "credential": "fleet"}``; a private
  pool's 401 is the caller's refusal) is the tracker refusing this client's fleet credential (FleetRefused): the same
  credential will not do better, so it is not a refusal a caller retries, and the error says what the
  tracker found wrong (no token given, another fleet's, clocks out of step).
- A 2xx whose body is not the operation's reply is TrackerUnavailable: another version of the protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import msgspec

from shoal.core.errors import FleetRefused, ProtocolError, TrackerBusy, TrackerUnavailable, TrackerUnreachable
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
        wait = parse_retry_after(retry_after) if status in (429, 503) else None
        data = _json(body)
        error_given = isinstance(data, dict) and bool(data.get("error"))
        if wait is not None and data is not None and (status == 503 or error_given):
            said = f"the tracker asks to wait: {_message(data)} (HTTP {status})"
            raise TrackerBusy(said, tracker=tracker, retry_after=wait)
        error = _error(tracker, status, reason, content_type or "no type", body, refused)
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
    message = _message(data)
    if status >= 500:
        return TrackerUnavailable(f"the tracker failed: {message} (HTTP {status})", tracker=tracker)
    if status == 401 and isinstance(data, dict) and data.get("credential") == "fleet":
        return FleetRefused(f"the tracker at {tracker} refused the fleet credential: {message}", tracker=tracker)
    return refused(message, status)


def _message(data: object) -> str:
    """The error a JSON reply gives, on one line; "no reason given" for none."""
    error = data.get("error") if isinstance(data, dict) else None
    return " ".join(str(error).split()) if error else "no reason given"
