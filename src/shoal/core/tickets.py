"""Fleet credentials: what a fleet token proves, as values. No files, sockets or clock reads.

A fleet shares one secret token (a file on the tracker and on every peer). It never travels: two keys are
derived from it (HMAC-SHA256 of the token over a fixed label), one for each thing it proves.

- **Request credentials** (``X-Shoal-Fleet: 1.ISSUED.MAC``) prove to the tracker that a request comes from
  a holder of the token. ``MAC`` is the request key's HMAC of ``ISSUED`` (whole seconds), so a credential
  costs one HMAC to make and one to check, and one seen on the wire is good for CREDENTIAL_TTL only. It
  rides in a header of its own, not ``Authorization``, which a private pool's bearer token uses already.
- **Tickets** (``X-Shoal-Ticket: EXPIRES.MAC.PEER``) prove to a peer's piece server that the tracker
  admitted PEER to a task until EXPIRES: ``MAC`` is the ticket key's HMAC of ``TASK|PEER|EXPIRES``. The
  tracker hands one out with every announce reply, good for a few announce intervals (ticket_expiry), so a
  leaked ticket opens one task for a short while; a peer that stops announcing loses its access when its
  last ticket runs out. Every piece server of the fleet holds the token too, so it checks a ticket alone,
  without asking the tracker.

- **Passkeys** (``HOLDER.MAC``) prove to the BitTorrent tracker that a standard client's announce comes
  from a holder the fleet gave one: ``MAC`` is the passkey key's HMAC of HOLDER (a host's name or address).
  Standard clients cannot send headers, so the passkey rides in the announce URL's path
  (``/announce/PASSKEY``), as private trackers do; being derived, it is checked without a table. It does
  not expire: rolling the token revokes every passkey made with the old one.

Clocks of a fleet's hosts agree within CLOCK_SKEW (NTP); every check allows that much.

**Rotation.** A token file may hold several tokens: the first signs, every one verifies. An operator adds
the new token second, rolls the file out to every host, makes it first, and removes the old one, and no
host refuses another's credential at any step. The keyring (:class:`FleetKey`) is the one object every part
of a process checks with; when the file changes, ``replace_tokens`` swaps its keys in place (one
assignment), so every part sees the new tokens at once.

MACs are truncated to 128 bits (RFC 2104, section 5: at least half the hash's length) and compared in
constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shoal.core.errors import CredentialRefused, UsageError

FLEET_HEADER = "X-Shoal-Fleet"
"""The request header of a request credential (to the tracker)."""
TICKET_HEADER = "X-Shoal-Ticket"
"""The request header of a ticket (to a peer's piece server)."""
TOKEN_MIN_BYTES = 16
"""The shortest token taken: 128 bits, if it is random (``openssl rand -hex 32`` makes a good one)."""
CLOCK_SKEW = 30.0
"""Seconds two hosts' clocks may disagree by; every check of a time allows this much."""
CREDENTIAL_TTL = 300.0
"""Seconds a request credential is good for after it was made (and CLOCK_SKEW before)."""
CREDENTIAL_REFRESH = 60.0
"""Seconds a client uses one request credential before it makes the next."""
TICKET_INTERVALS = 4
"""A ticket is good for this many announce intervals (at least the tracker's peer TTL): a peer announces
every interval, so it always holds a fresh one, and a few lost announces do not cut it off."""
SEEDER_HOLDER = "seeder"
"""The holder of a seeder's own passkey: its BitTorrent announces, and the ``/files/PASSKEY/REL`` URLs a
mirror worker pushes to a pool."""
PASSKEY_PARAM = "passkey"
"""The query parameter an announce or scrape may carry its passkey in, instead of the path."""
_VERSION = "1"
_MAC_BYTES = 16
_SEEN_LIMIT = 4096
"""Request credentials remembered as verified: a client uses one for CREDENTIAL_REFRESH seconds, so a
tracker of a few thousand peers checks each one's MAC once a minute and looks it up the rest of the time."""
_HOLDER = re.compile(r"[A-Za-z0-9._:-]{1,64}")
"""What names a passkey's holder: a host name or address, as URL paths take it unescaped."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _digits(text: str) -> bool:
    """Whole seconds as a credential writes them: ASCII digits, no more than 12."""
    return text.isascii() and text.isdigit() and len(text) <= 12


def parse_tokens(raw: bytes, source: str) -> tuple[bytes, ...]:
    """The tokens in a token file's bytes, one a line (surrounding white space dropped; blank lines and
    lines starting with ``#`` skipped), the signing one first; a UsageError naming ``source`` when there is
    none, or one too short to be a secret."""
    tokens = tuple(t for t in (line.strip() for line in raw.splitlines()) if t and not t.startswith(b"#"))
    if not tokens:
        raise UsageError(f"{source}: no fleet token in the file (make one with `openssl rand -hex 32`)")
    for number, token in enumerate(tokens, 1):
        if len(token) < TOKEN_MIN_BYTES:
            raise UsageError(
                f"{source}: token {number}: a fleet token has at least {TOKEN_MIN_BYTES} bytes "
                "(make one with `openssl rand -hex 32`)"
            )
    return tokens


def ticket_expiry(now: float, interval: float, peer_ttl: float) -> int:
    """When a ticket handed out ``now`` runs out: TICKET_INTERVALS intervals on, at least one peer TTL."""
    return math.ceil(now + max(TICKET_INTERVALS * interval, peer_ttl))


@dataclass(frozen=True, slots=True)
class _Keys:
    """The keys one token yields, one for each thing it proves."""

    request: bytes
    ticket: bytes
    passkey: bytes

    @classmethod
    def derive(cls, token: bytes) -> _Keys:
        def derive(label: bytes) -> bytes:
            return hmac.new(token, b"shoal fleet v1 " + label, hashlib.sha256).digest()

        return cls(derive(b"request"), derive(b"ticket"), derive(b"passkey"))


_REQUEST: Callable[[_Keys], bytes] = operator.attrgetter("request")
_TICKET: Callable[[_Keys], bytes] = operator.attrgetter("ticket")
_PASSKEY: Callable[[_Keys], bytes] = operator.attrgetter("passkey")


class FleetKey:
    """The keyring of a fleet's tokens: the first token's keys sign, every token's verify (see Rotation in
    the module's docstring). ``repr`` shows none of them."""

    __slots__ = ("_keys", "_seen")

    def __init__(self, tokens: Sequence[bytes]) -> None:
        self._keys: tuple[_Keys, ...] = ()
        self._seen: dict[str, int] = {}
        """Request credentials whose MAC these keys verified, with their time (see _SEEN_LIMIT)."""
        self.replace_tokens(tokens)

    def __repr__(self) -> str:
        count = len(self._keys)
        return f"FleetKey({count} token{'s' if count > 1 else ''})"

    @classmethod
    def from_token(cls, token: bytes) -> FleetKey:
        return cls((token,))

    def replace_tokens(self, tokens: Sequence[bytes]) -> None:
        """Check with ``tokens`` from now on (the first signs); a ValueError for none."""
        if not tokens:
            raise ValueError("a fleet keyring needs a token")
        self._keys = tuple(_Keys.derive(token) for token in tokens)
        self._seen = {}  # verified by keys that may be gone now

    @property
    def request_key(self) -> bytes:
        """The key request credentials are signed with."""
        return self._keys[0].request

    @property
    def ticket_key(self) -> bytes:
        """The key tickets are signed with."""
        return self._keys[0].ticket

    def _verifies(self, mac: str, message: bytes, key_of: Callable[[_Keys], bytes]) -> bool:
        """Whether ``mac`` is a MAC of ``message`` by one of the tokens' ``key_of`` keys, the signing
        token's tried first."""
        for keys in self._keys:
            if hmac.compare_digest(mac, self._mac(key_of(keys), message)):
                return True
        return False

    # -- request credentials (peer -> tracker) --------------------------------------------------------

    def credential(self, now: float) -> str:
        """A request credential made ``now``."""
        issued = str(int(now))
        return f"{_VERSION}.{issued}.{self._mac(self.request_key, issued.encode())}"

    def check_credential(self, value: str | None, now: float) -> None:
        """Nothing when ``value`` is a request credential of this fleet in force ``now``; else
        CredentialRefused saying what is wrong (missing, malformed, out of date, not this fleet's)."""
        if not value:
            raise CredentialRefused(f"this tracker needs a fleet credential ({FLEET_HEADER}): give --fleet-token-file")
        issued = self._seen.get(value)
        if issued is None:
            issued = self._verified_time(value)
            if len(self._seen) >= _SEEN_LIMIT:
                self._seen.clear()
            self._seen[value] = issued
        age = now - issued
        if not -CLOCK_SKEW <= age <= CREDENTIAL_TTL + CLOCK_SKEW:
            raise CredentialRefused(
                f"the fleet credential is {abs(age):.0f} s {'old' if age > 0 else 'ahead'}: are the clocks in step?"
            )

    def _verified_time(self, value: str) -> int:
        """The time of a request credential whose MAC checks out; CredentialRefused for any other."""
        version, _, rest = value.partition(".")
        issued, _, mac = rest.partition(".")
        if version != _VERSION or not _digits(issued) or not mac or not mac.isascii():
            raise CredentialRefused(f"malformed fleet credential ({FLEET_HEADER})")
        if not self._verifies(mac, issued.encode(), _REQUEST):
            raise CredentialRefused("the fleet credential is not this fleet's: is the token the tracker's?")
        return int(issued)

    # -- tickets (tracker -> peer -> other peers' piece servers) --------------------------------------

    def ticket(self, task_id: str, peer_id: str, expires: int) -> str:
        """The ticket admitting ``peer_id`` to ``task_id`` until ``expires`` (whole seconds)."""
        return f"{expires}.{self._mac(self.ticket_key, _ticket_message(task_id, peer_id, expires))}.{peer_id}"

    def check_ticket(self, value: str | None, task_id: str, now: float) -> str:
        """The peer ``value`` admits to ``task_id`` at ``now``; CredentialRefused when it admits nobody: no
        ticket, a malformed one, one run out, or one not made with this fleet's key for this task."""
        if not value:
            raise CredentialRefused(f"no ticket ({TICKET_HEADER}): only peers the tracker admitted to the task")
        expires, _, rest = value.partition(".")
        mac, _, peer_id = rest.partition(".")
        if not _digits(expires) or not mac or not (mac + peer_id).isascii() or not peer_id:
            raise CredentialRefused(f"malformed ticket ({TICKET_HEADER})")
        message = _ticket_message(task_id, peer_id, int(expires))
        if not self._verifies(mac, message, _TICKET):
            raise CredentialRefused("the ticket is not valid for this task")
        if now > int(expires) + CLOCK_SKEW:
            raise CredentialRefused(f"the ticket ran out {now - int(expires):.0f} s ago")
        return peer_id

    # -- passkeys (a standard BitTorrent client -> the tracker's /announce and /scrape) ----------------

    def passkey(self, holder: str) -> str:
        """The passkey of ``holder`` (a host's name or address; a ValueError for one a URL path would have
        to escape)."""
        if not _HOLDER.fullmatch(holder):
            raise ValueError(f"a passkey's holder is 1 to 64 of A-Z a-z 0-9 . _ : -, not {holder!r}")
        return f"{holder}.{self._mac(self._keys[0].passkey, holder.encode())}"

    def check_passkey(self, value: str | None) -> str:
        """The holder ``value`` is the passkey of; CredentialRefused when it is none of this fleet's."""
        if not value:
            raise CredentialRefused(
                "this tracker is private: announce with your passkey (/announce/PASSKEY; `shoal passkey`)"
            )
        holder, _, mac = value.rpartition(".")
        if not _HOLDER.fullmatch(holder) or not mac or not mac.isascii():
            raise CredentialRefused("malformed passkey")
        if not self._verifies(mac, holder.encode(), _PASSKEY):
            raise CredentialRefused("the passkey is not this fleet's")
        return holder

    @staticmethod
    def _mac(key: bytes, message: bytes) -> str:
        return _b64(hmac.new(key, message, hashlib.sha256).digest()[:_MAC_BYTES])


def _ticket_message(task_id: str, peer_id: str, expires: int) -> bytes:
    return f"{task_id}|{peer_id}|{expires}".encode()
