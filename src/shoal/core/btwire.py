"""The BitTorrent peer wire protocol's codec (BEP 3): the handshake and the messages, both ways.

Pure, in the manner of h11: bytes go in, frozen dataclasses come out, and back. No sockets, asyncio,
files or clock reads. What a seeder does with the messages is shoal.core.btseeding; the asyncio service
that owns the sockets and the disk is shoal.seeder.wire.

The wire (BEP 3; all integers four bytes, big-endian)::

    handshake   <19><"BitTorrent protocol"><8 reserved bytes><20-byte info_hash><20-byte peer_id>
    message     <length><id><payload>      length counts the id and payload; length 0 is a keep-alive
    0 choke  1 unchoke  2 interested  3 not interested      (no payload)
    4 have <index>   5 bitfield <bytes>   6 request <index><begin><length>
    7 piece <index><begin><block>   8 cancel <index><begin><length>
    9 port <2-byte port> (BEP 5, DHT)   20 extended <1-byte id><payload> (BEP 10)

Rules, and why:

- A message's length is checked against the decoder's ``max_length`` before its payload is buffered, and
  a longer one is a ProtocolError: the caller closes the connection instead of buffering whatever a peer
  claims. No message is longer than ``MAX_MESSAGE_LENGTH``.
- A message of an id whose payload length is fixed (every id but bitfield, piece, extended and unknown
  ones) with another length is a ProtocolError. Unknown ids are decoded, as UnknownMessage, so that the
  caller may ignore them (BEP 3 practice).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from shoal.core.errors import ProtocolError

PROTOCOL = b"BitTorrent protocol"
HANDSHAKE_LENGTH = 1 + len(PROTOCOL) + 8 + 20 + 20
BLOCK_SIZE = 16 << 10
"""The block size every current client requests (BEP 3)."""
MAX_MESSAGE_LENGTH = 1 << 20
"""No message is longer, whatever the torrent: a bitfield of 8 million pieces."""

_HEADER = struct.Struct(">IB")
_U32 = struct.Struct(">I")
_PAIR = struct.Struct(">II")
_TRIPLE = struct.Struct(">III")
_PIECE_HEADER = struct.Struct(">IBII")
_PORT = struct.Struct(">H")
_HANDSHAKE_PREFIX = bytes([len(PROTOCOL)]) + PROTOCOL
_NO_EXTENSIONS = bytes(8)

CHOKE, UNCHOKE, INTERESTED, NOT_INTERESTED, HAVE, BITFIELD, REQUEST, PIECE, CANCEL, PORT = range(10)
EXTENDED = 20


@dataclass(frozen=True, slots=True)
class Handshake:
    info_hash: bytes
    peer_id: bytes
    reserved: bytes = _NO_EXTENSIONS

    def __post_init__(self) -> None:
        if len(self.info_hash) != 20 or len(self.peer_id) != 20 or len(self.reserved) != 8:
            raise ValueError("a handshake holds a 20-byte info_hash, a 20-byte peer_id and 8 reserved bytes")


@dataclass(frozen=True, slots=True)
class KeepAlive:
    pass


@dataclass(frozen=True, slots=True)
class Choke:
    pass


@dataclass(frozen=True, slots=True)
class Unchoke:
    pass


@dataclass(frozen=True, slots=True)
class Interested:
    pass


@dataclass(frozen=True, slots=True)
class NotInterested:
    pass


@dataclass(frozen=True, slots=True)
class Have:
    index: int


@dataclass(frozen=True, slots=True)
class BitfieldMessage:
    data: bytes


@dataclass(frozen=True, slots=True)
class Request:
    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class Piece:
    index: int
    begin: int
    block: bytes


@dataclass(frozen=True, slots=True)
class CancelMessage:
    """BEP 3's cancel: the peer withdraws a Request."""

    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class Port:
    """BEP 5: the peer's DHT port."""

    port: int


@dataclass(frozen=True, slots=True)
class Extended:
    """BEP 10: an extension message; ``extended_id`` 0 is the extension handshake."""

    extended_id: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    message_id: int
    payload: bytes


Message = (
    KeepAlive
    | Choke
    | Unchoke
    | Interested
    | NotInterested
    | Have
    | BitfieldMessage
    | Request
    | Piece
    | CancelMessage
    | Port
    | Extended
    | UnknownMessage
)

_KEEP_ALIVE = KeepAlive()
_BARE: dict[int, Message] = {
    CHOKE: Choke(),
    UNCHOKE: Unchoke(),
    INTERESTED: Interested(),
    NOT_INTERESTED: NotInterested(),
}
_BARE_IDS = {type(message): message_id for message_id, message in _BARE.items()}
# Payload lengths of the messages whose length is fixed; a message of another length is malformed.
_FIXED_PAYLOAD = {CHOKE: 0, UNCHOKE: 0, INTERESTED: 0, NOT_INTERESTED: 0, HAVE: 4, REQUEST: 12, CANCEL: 12, PORT: 2}


def encode_handshake(handshake: Handshake) -> bytes:
    return _HANDSHAKE_PREFIX + handshake.reserved + handshake.info_hash + handshake.peer_id


def parse_handshake(data: bytes | bytearray | memoryview) -> Handshake:
    """The handshake in the first 68 bytes of ``data``; a ProtocolError when they are not one."""
    if len(data) < HANDSHAKE_LENGTH:
        raise ProtocolError(f"handshake has {len(data)} bytes, expected {HANDSHAKE_LENGTH}", field="handshake")
    _check_prefix(data)
    raw = bytes(data[:HANDSHAKE_LENGTH])
    return Handshake(info_hash=raw[28:48], peer_id=raw[48:68], reserved=raw[20:28])


def _check_prefix(data: bytes | bytearray | memoryview) -> None:
    # Checked as soon as 20 bytes are in, so that an HTTP request or a scanner's probe is refused at once.
    if data[:20] != _HANDSHAKE_PREFIX:
        raise ProtocolError("not a BitTorrent handshake (protocol string)", field="handshake")


def piece_header(index: int, begin: int, length: int) -> bytes:
    """The 13 bytes that open a piece message of a ``length``-byte block.

    Write the block itself after them as it is (a memoryview of a piece in memory): the message needs no
    copy of it.
    """
    return _PIECE_HEADER.pack(9 + length, PIECE, index, begin)


def encode_message(message: Message) -> bytes:
    match message:
        case KeepAlive():
            return bytes(4)
        case Choke() | Unchoke() | Interested() | NotInterested():
            return _HEADER.pack(1, _BARE_IDS[type(message)])
        case Have(index):
            return _HEADER.pack(5, HAVE) + _U32.pack(index)
        case BitfieldMessage(data):
            return _HEADER.pack(1 + len(data), BITFIELD) + data
        case Request(index, begin, length):
            return _HEADER.pack(13, REQUEST) + _TRIPLE.pack(index, begin, length)
        case Piece(index, begin, block):
            return piece_header(index, begin, len(block)) + block
        case CancelMessage(index, begin, length):
            return _HEADER.pack(13, CANCEL) + _TRIPLE.pack(index, begin, length)
        case Port(port):
            return _HEADER.pack(3, PORT) + _PORT.pack(port)
        case Extended(extended_id, payload):
            return _HEADER.pack(2 + len(payload), EXTENDED) + bytes([extended_id]) + payload
        case UnknownMessage(message_id, payload):
            return _HEADER.pack(1 + len(payload), message_id) + payload
    raise TypeError(f"not a BitTorrent message: {message!r}")


class MessageDecoder:
    """Splits a byte stream into the handshake and then messages, as whole messages become available.

    Cost is per message, not per byte: each message is read with ``struct.unpack_from`` at an offset into
    one buffer, and consumed bytes are dropped from its front once per ``feed``.
    """

    __slots__ = ("_buf", "_pos", "max_length")

    def __init__(self, max_length: int = MAX_MESSAGE_LENGTH) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.max_length = max_length
        """The longest message (id and payload) accepted; a longer length prefix is a ProtocolError."""

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_handshake(self) -> Handshake | None:
        """The handshake, once all 68 bytes are in; None until then."""
        available = len(self._buf) - self._pos
        view = memoryview(self._buf)[self._pos :]
        try:
            if available >= 20:
                _check_prefix(view)
            if available < HANDSHAKE_LENGTH:
                return None
            handshake = parse_handshake(view)
        finally:
            view.release()  # a live view would stop the bytearray from resizing
        self._pos += HANDSHAKE_LENGTH
        return handshake

    def next_message(self) -> Message | None:
        """The next whole message; None until one is complete."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 4:
            return None
        (length,) = _U32.unpack_from(buf, pos)
        if length > self.max_length:
            raise ProtocolError(f"message of {length} bytes exceeds the limit of {self.max_length}", field="length")
        end = pos + 4 + length
        if len(buf) < end:
            return None
        self._pos = end
        if length == 0:
            return _KEEP_ALIVE
        message_id = buf[pos + 4]
        start = pos + 5
        payload = length - 1
        fixed = _FIXED_PAYLOAD.get(message_id)
        if fixed is not None and payload != fixed:
            raise ProtocolError(f"message {message_id} has {payload} payload bytes, expected {fixed}", field="length")
        if message_id == REQUEST:
            return Request(*_TRIPLE.unpack_from(buf, start))
        if message_id <= NOT_INTERESTED:
            return _BARE[message_id]
        if message_id == HAVE:
            return Have(*_U32.unpack_from(buf, start))
        if message_id == CANCEL:
            return CancelMessage(*_TRIPLE.unpack_from(buf, start))
        if message_id == BITFIELD:
            return BitfieldMessage(bytes(buf[start:end]))
        if message_id == PIECE:
            if payload < 8:
                raise ProtocolError("piece message shorter than its header", field="length")
            index, begin = _PAIR.unpack_from(buf, start)
            return Piece(index, begin, bytes(buf[start + 8 : end]))
        if message_id == PORT:
            return Port(*_PORT.unpack_from(buf, start))
        if message_id == EXTENDED:
            if payload < 1:
                raise ProtocolError("extended message without its extension id", field="length")
            return Extended(buf[start], bytes(buf[start + 1 : end]))
        return UnknownMessage(message_id, bytes(buf[start:end]))
