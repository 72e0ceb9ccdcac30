"""Which of its trackers a client asks: a list of tracker base URLs, read once, and the rule that moves a
client from one that does not answer to the next.

Rules, and why:

- ``--tracker``, ``$SHOAL_TRACKER`` and the config keys take one base URL or several, comma-separated
  (``http://t1:6969,http://t2:6969``): the members of one tracker cluster, any of which answers for every
  task. Each is http(s) with a host; an empty entry or another scheme is a usage error naming the entry, so
  a typo never leaves a peer with one tracker fewer than its operator meant. A repeated URL counts once.
- A client asks its *current* tracker and stays with it while it answers (no round-robin per request: the
  owner's forwarding is cheap, but a peer that changes tracker each announce spreads every failure it hits
  over all of them).
- A tracker that does not answer (a connection refused or reset, a timeout, a 5xx other than busy:
  core.errors.TrackerUnreachable) makes the call try the next one in the list at once, wrapping around,
  until each has been tried once in this call; a refusal (4xx) or an answer that is not the protocol is
  that tracker's answer and ends the call, and a busy tracker (503 with Retry-After) is up and waited out.
- The current tracker moves only when the one that failed is still current: two calls in flight that both
  saw the same tracker fail move the client one step, not two.
- When every tracker failed in one call, the caller sees one TrackerUnreachable naming every URL and what
  each did; with a single URL it is that tracker's own error, as before lists existed.

A host name that resolves to several addresses is several trackers at the socket level already: aiohttp
tries each address of a name in turn (RFC 8305 happy eyeballs) before a connection attempt fails, so the
list here is of names, and nothing resolves names itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from shoal.core.errors import TrackerUnreachable, UsageError


def parse_trackers(text: str, *, what: str = "--tracker") -> tuple[str, ...]:
    """The tracker base URLs in ``text`` (comma-separated), in order, without trailing slashes or repeats; an
    entry without a scheme (``HOST:PORT``) is ``http://HOST:PORT``.
    ``what`` names where the text came from (an option, a config key; "" for none) in the UsageError that a
    bad entry gets."""
    prefix = f"{what}: " if what else ""
    urls: list[str] = []
    for entry in text.split(","):
        url = entry.strip()
        if not url:
            shown = repr(text) if text.strip() else "nothing"
            raise UsageError(f"{prefix}an empty tracker URL in {shown} (give base URLs separated by commas)")
        if "://" not in url:
            url = f"http://{url}"  # HOST:PORT, as minion took its tracker
        url = url.rstrip("/")
        _check_url(url, prefix)
        if url not in urls:
            urls.append(url)
    return tuple(urls)


def _check_url(url: str, prefix: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise UsageError(f"{prefix}{url!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{prefix}{url!r} is not a tracker's base URL; give http(s)://HOST:PORT")
    if parts.query or parts.fragment:
        raise UsageError(f"{prefix}{url!r} has a query or a fragment; give the tracker's base URL, http(s)://HOST:PORT")


def _server(url: str) -> tuple[str, str, int | None] | None:
    """The scheme, host and port ``url`` is served at (the scheme's port when it names none)."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    return (parts.scheme, (parts.hostname or "").lower(), port) if parts.hostname else None


def served_by_tracker(url: str, trackers: str | None) -> bool:
    """Whether ``url`` is served by one of ``trackers`` (comma-separated base URLs): the same scheme, host
    and port. A seeder with its tracker embedded is its files' origin too, and a peer shows it the fleet's
    credential as it shows the tracker, and no other origin (a credential is good at the tracker for
    minutes: an outside origin must never see one)."""
    server = _server(url)
    if server is None or not trackers:
        return False
    return any(_server(tracker.strip()) == server for tracker in trackers.split(","))


@dataclass(slots=True)
class TrackerChoice:
    """One client's trackers and the one it asks now (``current``, an index into ``urls``). Shared by the
    client's calls in flight; each call keeps the indexes it tried."""

    urls: tuple[str, ...]
    current: int = 0

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("a tracker choice needs at least one URL")

    def next_try(self, tried: Mapping[int, object]) -> int | None:
        """The tracker a call that already tried ``tried`` asks next: the current one, or the first after it
        (in list order, wrapping around) that this call has not tried; None once it tried them all."""
        count = len(self.urls)
        for step in range(count):
            index = (self.current + step) % count
            if index not in tried:
                return index
        return None

    def failed(self, index: int) -> None:
        """Tracker ``index`` did not answer: if it is still the current one, the next in the list is."""
        if index == self.current:
            self.current = (index + 1) % len(self.urls)

    def all_failed(self, errors: Mapping[int, TrackerUnreachable]) -> TrackerUnreachable:
        """The error of a call to which every tracker failed (``errors`` by index)."""
        if len(self.urls) == 1:
            return errors[0]
        what = "; ".join(f"{self.urls[i]}: {reason(errors[i])}" for i in sorted(errors))
        return TrackerUnreachable(f"no tracker can be reached ({what})", tracker=",".join(self.urls))


def reason(error: TrackerUnreachable) -> str:
    """What one tracker did, without the "cannot reach the tracker at URL" its own message starts with."""
    text = str(error)
    prefix = f"cannot reach the tracker at {error.tracker}: "
    return text.removeprefix(prefix)
