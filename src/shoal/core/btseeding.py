"""One peer's connection to the seeder of a complete torrent (BEP 3), as a state machine.

Pure, in the manner of h11: bytes go in, events come out, and the bytes to send come back as values. No
sockets, asyncio, files or clock reads; callers pass ``now``. The messages are framed and parsed by
shoal.core.btwire; the asyncio service that owns the sockets and the disk is shoal.seeder.wire. Which of
a seeder's interested peers it unchokes is a policy across connections: shoal.core.unchoke.

A seeding connection's states::

    state            input                                 next             output
    ---------------  ------------------------------------  ---------------  -------------------------------
    AWAIT_HANDSHAKE  the peer's 68-byte handshake          AWAIT_ACCEPT     HandshakeReceived
    AWAIT_ACCEPT     accept(length, piece_length)          CHOKED           bytes: our handshake, bitfield
    CHOKED           unchoke()                             UNCHOKED         bytes: unchoke
    UNCHOKED         choke()                               CHOKED           bytes: choke; the queue is emptied
    any              close(), or malformed input           CLOSED           (ProtocolError raised)

    messages from the peer, in CHOKED and UNCHOKED (the state does not change):
    interested, not interested   PeerInterested / PeerNotInterested when the peer's interest changes
    bitfield, have               validated; PeerCompleted once the peer holds every piece
    request   UNCHOKED           validated and queued for the service (take_requests); dropped when full
              CHOKED             dropped; more than max_requests of them since the last choke: closed
    cancel                       removes the request if it is still queued
    keep-alive, choke, unchoke, piece, port, extended, any other id: ignored

Rules, and why:

- The receiving side learns the info_hash from the handshake before it answers (one port serves many
  torrents): ``HandshakeReceived`` comes out, the caller looks the torrent up, then accepts or closes.
  Bytes that arrived behind the handshake wait in the buffer; the first ``receive_data`` after
  ``accept`` (``b""`` will do) processes them.
- Our handshake's reserved bytes are all zero: we speak only BEP 3, so no peer is entitled to send the
  fast (BEP 6) or extension (BEP 10) messages; any it sends anyway are ignored, as are unknown ids.
- Every message length is bounded before its payload is buffered: a peer's bitfield, or a piece message
  of the largest block we accept, whichever is longer (and never more than 1 MiB). A longer one is a
  ProtocolError: the connection closes instead of buffering whatever a peer claims.
- Requests: ``index < piece_count``, ``0 < length <= max_request_length`` and ``begin + length`` within
  the piece, or the connection closes (BEP 3: clients "close connections which request an amount greater
  than" 16 KiB). The default limit is 128 KiB, not 16: blocks are served as slices of pieces already in
  memory, so a larger block costs nothing, and 2^17 bytes is the limit of the older community
  specification (wiki.theory.org), which some clients still follow.
- The request queue is bounded (``max_requests``, 1024 by default). Past it, requests are dropped, as
  libtorrent drops them past its ``max_allowed_in_request_queue`` for peers without the fast extension.
  The bound sits above what common clients pipeline (libtorrent up to 500 requests, its
  ``max_out_request_queue``): a dropped request is one the peer still counts as outstanding, and its last
  pieces would wait for its request timeout.
- Requests while choked are dropped, not errors: BEP 3 has a choke discard every pending request, and
  requests the peer sent before it saw the choke still arrive. A peer that goes on asking (more than
  ``max_requests`` since the last choke) is closed, as libtorrent closes ``too_many_requests_when_choked``.
- A bitfield is only valid as the first message (BEP 3), of exactly ``ceil(pieces / 8)`` bytes with the
  spare bits clear.
- Keep-alives go out every ``KEEPALIVE_SECONDS`` whatever else is sent (four bytes every two minutes,
  and the core need not hear of every piece the service writes). A peer silent for ``idle_timeout``
  (any bytes count) has expired; so has one without a handshake after ``HANDSHAKE_TIMEOUT``, and one that
  has not been interested for ``interest_timeout`` since we accepted it or since it lost interest: a seed
  has nothing else to offer, and an info-hash is public, so a handshake followed by keep-alives alone is
  how a stranger would hold the seeder's connections.
- ``idle_for`` is how long the peer has sent nothing but keep-alives: the service closes the idlest peers
  when its connections run short (shoal.seeder.wire), so that active peers keep theirs.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from shoal.core.bitfield import Bitfield
from shoal.core.btwire import (
    MAX_MESSAGE_LENGTH,
    BitfieldMessage,
    CancelMessage,
    Choke,
    Handshake,
    Have,
    Interested,
    KeepAlive,
    MessageDecoder,
    NotInterested,
    Request,
    Unchoke,
    encode_handshake,
    encode_message,
)
from shoal.core.errors import ProtocolError

MAX_REQUEST_LENGTH = 128 << 10
"""The longest block a peer may request by default (see the rules above)."""
MAX_QUEUED_REQUESTS = 1024
"""Requests queued per peer by default; past it they are dropped (see the rules above)."""
KEEPALIVE_SECONDS = 120.0
"""BEP 3: keep-alives are "generally sent once every two minutes"."""
IDLE_TIMEOUT = 600.0
"""libtorrent's ``inactivity_timeout``; it sends its keep-alives after half of that without sending."""
HANDSHAKE_TIMEOUT = 20.0
INTEREST_TIMEOUT = 30.0
"""Seconds an accepted peer may stay not interested; clients say they are interested right after our
bitfield, and a client that has every piece says so with its bitfield or haves (PeerCompleted)."""

_KEEP_ALIVE = encode_message(KeepAlive())
_CHOKE = encode_message(Choke())
_UNCHOKE = encode_message(Unchoke())


class State(enum.Enum):
    AWAIT_HANDSHAKE = "await handshake"
    AWAIT_ACCEPT = "await accept"
    CHOKED = "choked"
    UNCHOKED = "unchoked"
    CLOSED = "closed"


# The transitions the caller drives; the table in the module docstring, as the code uses it. CLOSED is
# reachable from every state (close(), or a ProtocolError) and is not listed.
_TRANSITIONS: dict[tuple[State, str], State] = {
    (State.AWAIT_HANDSHAKE, "handshake"): State.AWAIT_ACCEPT,
    (State.AWAIT_ACCEPT, "accept"): State.CHOKED,
    (State.CHOKED, "unchoke"): State.UNCHOKED,
    (State.UNCHOKED, "choke"): State.CHOKED,
}


@dataclass(frozen=True, slots=True)
class HandshakeReceived:
    """The peer asked for ``info_hash``: accept the connection, or close it if that torrent is not served."""

    info_hash: bytes
    peer_id: bytes
    reserved: bytes


@dataclass(frozen=True, slots=True)
class PeerInterested:
    """The peer wants pieces: it may take an unchoke slot."""


@dataclass(frozen=True, slots=True)
class PeerNotInterested:
    """The peer wants nothing now: its unchoke slot can go to another peer."""


@dataclass(frozen=True, slots=True)
class PeerCompleted:
    """The peer holds every piece (by its bitfield or its haves): it needs nothing more from a seeder."""


Event = HandshakeReceived | PeerInterested | PeerNotInterested | PeerCompleted


class SeedingConnection:
    """One peer's connection to the seeder of a complete torrent. See the module docstring for its states.

    ``receive_data`` takes the peer's bytes and returns events; the methods that answer (``accept``,
    ``unchoke``, ``choke``, ``keepalive``) return the bytes to send. Validated requests wait in a queue
    until the service takes them (``take_requests``) to send their blocks, which it frames with
    ``piece_header``. Malformed input raises ProtocolError and leaves the connection CLOSED.
    """

    def __init__(
        self,
        peer_id: bytes,
        now: float,
        *,
        max_requests: int = MAX_QUEUED_REQUESTS,
        max_request_length: int = MAX_REQUEST_LENGTH,
        idle_timeout: float = IDLE_TIMEOUT,
        interest_timeout: float = INTEREST_TIMEOUT,
    ) -> None:
        if len(peer_id) != 20:
            raise ValueError("peer_id must be 20 bytes")
        if max_requests < 1 or not 0 < max_request_length <= MAX_MESSAGE_LENGTH - 9:
            raise ValueError("max_requests and max_request_length must be positive, the latter at most 1 MiB")
        self.peer_id = peer_id
        self.max_requests = max_requests
        self.max_request_length = max_request_length
        self.idle_timeout = idle_timeout
        self.interest_timeout = interest_timeout
        self.state = State.AWAIT_HANDSHAKE
        self.info_hash = b""
        self.remote_peer_id = b""
        self.peer_interested = False
        self.dropped_requests = 0
        """Requests dropped because the queue was full or the peer was choked."""
        self._decoder = MessageDecoder()
        self._queue: deque[Request] = deque()
        self._piece_length = 0
        self._piece_count = 0
        self._last_piece_length = 0
        self._peer_has = bytearray()
        """The peer's pieces, in the wire's bitfield layout."""
        self._peer_pieces = 0
        self._messages_seen = 0
        self._choked_requests = 0
        self._now = now
        """The ``now`` of the input being processed."""
        self._started = now
        self._last_received = now
        self._last_active = now
        """When the peer last sent a message other than a keep-alive."""
        self._uninterested_since: float | None = now
        """Since when the peer has not been interested; None while it is."""
        self._last_keepalive = now

    # -- input from the peer ---------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> list[Event]:
        """Feed the peer's bytes; return what happened. Raises ProtocolError (and closes) on bad input."""
        if self.state is State.CLOSED:
            return []
        self._now = now
        if data:
            self._last_received = now
            self._decoder.feed(data)
        try:
            if self.state is State.AWAIT_HANDSHAKE:
                return self._receive_handshake()
            if self.state is State.AWAIT_ACCEPT:
                return []
            return self._receive_messages()
        except ProtocolError:
            self.close()
            raise

    def _receive_handshake(self) -> list[Event]:
        handshake = self._decoder.next_handshake()
        if handshake is None:
            return []
        self._move("handshake")
        self.info_hash = handshake.info_hash
        self.remote_peer_id = handshake.peer_id
        return [HandshakeReceived(handshake.info_hash, handshake.peer_id, handshake.reserved)]

    def _receive_messages(self) -> list[Event]:
        events: list[Event] = []
        next_message = self._decoder.next_message
        while (message := next_message()) is not None:
            # type() is, not isinstance: this loop runs once per 16 KiB request of every peer.
            if type(message) is KeepAlive:
                continue  # its bytes already counted as activity
            self._messages_seen += 1
            self._last_active = self._now
            if type(message) is Request:
                self._on_request(message)
            elif type(message) is Interested:
                if not self.peer_interested:
                    self.peer_interested = True
                    self._uninterested_since = None
                    events.append(PeerInterested())
            elif type(message) is NotInterested:
                if self.peer_interested:
                    self.peer_interested = False
                    self._uninterested_since = self._now
                    events.append(PeerNotInterested())
            elif type(message) is CancelMessage:
                self._on_cancel(message)
            elif type(message) is Have:
                self._on_have(message.index, events)
            elif type(message) is BitfieldMessage:
                self._on_bitfield(message.data, events)
            # Anything else is ignored: the peer's choke and unchoke (we never request), pieces we never
            # asked for (libtorrent ignores those too once it is a seed), BEP 5 port, BEP 10 extended, and
            # ids we do not know (BEP 3 practice).
        return events

    def _on_request(self, request: Request) -> None:
        index, begin, length = request.index, request.begin, request.length
        if index >= self._piece_count:
            raise ProtocolError(f"request for piece {index} of {self._piece_count}", field="request")
        size = self._piece_length if index < self._piece_count - 1 else self._last_piece_length
        if not 0 < length <= self.max_request_length:
            raise ProtocolError(f"request of {length} bytes (at most {self.max_request_length})", field="request")
        if begin + length > size:
            raise ProtocolError(f"request {begin}+{length} beyond piece {index} of {size} bytes", field="request")
        if self.state is State.CHOKED:
            self.dropped_requests += 1
            self._choked_requests += 1
            if self._choked_requests > self.max_requests:
                raise ProtocolError("kept requesting while choked", field="request")
        elif len(self._queue) >= self.max_requests:
            self.dropped_requests += 1
        else:
            self._queue.append(request)

    def _on_cancel(self, cancel: CancelMessage) -> None:
        try:
            self._queue.remove(Request(cancel.index, cancel.begin, cancel.length))
        except ValueError:
            pass  # already taken to be sent, or never queued: BEP 3 lets the block go out anyway

    def _on_have(self, index: int, events: list[Event]) -> None:
        if index >= self._piece_count:
            raise ProtocolError(f"have for piece {index} of {self._piece_count}", field="have")
        # A byte array, not Bitfield's integer: a peer sends a have for every piece it completes, and
        # setting a bit of a big integer copies it (quadratic over a torrent of many pieces).
        byte, mask = index >> 3, 0x80 >> (index & 7)
        if not self._peer_has[byte] & mask:
            self._peer_has[byte] |= mask
            self._peer_pieces += 1
            if self._peer_pieces == self._piece_count:
                events.append(PeerCompleted())

    def _on_bitfield(self, data: bytes, events: list[Event]) -> None:
        if self._messages_seen != 1:
            raise ProtocolError("bitfield after the first message", field="bitfield")
        self._peer_pieces = len(Bitfield(self._piece_count, data))  # validates length and spare bits
        self._peer_has[:] = data
        if self._peer_pieces == self._piece_count:
            events.append(PeerCompleted())

    # -- the service's decisions -----------------------------------------------------------------------

    def accept(self, length: int, piece_length: int) -> bytes:
        """Serve the torrent the peer asked for: our handshake and our (complete) bitfield, to send."""
        if length <= 0 or piece_length <= 0:
            raise ValueError("a torrent has a positive length and piece length")
        piece_count = -(-length // piece_length)
        bitfield_bytes = (piece_count + 7) // 8
        if 1 + bitfield_bytes > MAX_MESSAGE_LENGTH:
            raise ValueError(f"{piece_count} pieces: a bitfield longer than the message limit")
        self._move("accept")
        self._uninterested_since = self._last_active = self._now
        self._piece_length = piece_length
        self._piece_count = piece_count
        self._last_piece_length = length - (piece_count - 1) * piece_length
        self._peer_has = bytearray(bitfield_bytes)
        self._decoder.max_length = max(1 + bitfield_bytes, 9 + self.max_request_length)
        bitfield = Bitfield.full(piece_count).to_bytes()
        return encode_handshake(Handshake(self.info_hash, self.peer_id)) + encode_message(BitfieldMessage(bitfield))

    def unchoke(self) -> bytes:
        self._move("unchoke")
        self._choked_requests = 0
        return _UNCHOKE

    def choke(self) -> bytes:
        """Choke the peer; its queued requests are dropped (BEP 3: a choke discards pending requests)."""
        self._move("choke")
        self._queue.clear()
        return _CHOKE

    def close(self) -> None:
        self.state = State.CLOSED
        self._queue.clear()

    def _move(self, trigger: str) -> None:
        try:
            self.state = _TRANSITIONS[self.state, trigger]
        except KeyError:
            raise RuntimeError(f"cannot {trigger} in state {self.state.value}") from None

    # -- the request queue -----------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._queue)

    def take_requests(self, limit: int) -> list[Request]:
        """Up to ``limit`` queued requests, oldest first, to send now; a cancel no longer reaches them."""
        queue = self._queue
        count = min(limit, len(queue))
        return [queue.popleft() for _ in range(count)]

    # -- timers ----------------------------------------------------------------------------------------

    def keepalive(self, now: float) -> bytes:
        """A keep-alive to send when one is due, else ``b""``."""
        if self.state in (State.CHOKED, State.UNCHOKED) and now - self._last_keepalive >= KEEPALIVE_SECONDS:
            self._last_keepalive = now
            return _KEEP_ALIVE
        return b""

    def expired(self, now: float) -> bool:
        """The peer has been silent too long, never finished its handshake, or has not been interested for
        too long: close the connection."""
        if self.state is State.AWAIT_HANDSHAKE:
            return now - self._started > HANDSHAKE_TIMEOUT
        uninterested = self._uninterested_since
        if uninterested is not None and now - uninterested > self.interest_timeout:
            return True
        return now - self._last_received > self.idle_timeout

    def idle_for(self, now: float) -> float:
        """Seconds since the peer last sent a message other than a keep-alive (since its connection started,
        before its handshake)."""
        return now - self._last_active
