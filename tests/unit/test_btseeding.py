"""A seeding connection (core.btseeding), driven over a fake link.

A minimal downloader written with the codec (core.btwire) sits at the far end: the bytes one end returns
are the bytes the other end receives.
"""

from __future__ import annotations

import struct

import pytest

from shoal.core.bitfield import Bitfield
from shoal.core.btseeding import (
    HANDSHAKE_TIMEOUT,
    INTEREST_TIMEOUT,
    KEEPALIVE_SECONDS,
    MAX_QUEUED_REQUESTS,
    MAX_REQUEST_LENGTH,
    Event,
    HandshakeReceived,
    PeerCompleted,
    PeerInterested,
    PeerNotInterested,
    SeedingConnection,
    State,
)
from shoal.core.btwire import (
    BLOCK_SIZE,
    BitfieldMessage,
    CancelMessage,
    Choke,
    Extended,
    Handshake,
    Have,
    Interested,
    KeepAlive,
    Message,
    MessageDecoder,
    NotInterested,
    Piece,
    Port,
    Request,
    Unchoke,
    UnknownMessage,
    encode_handshake,
    encode_message,
    piece_header,
)
from shoal.core.errors import ProtocolError

INFO_HASH = bytes(range(20))
SEED_ID = b"-SH0100-seedseedseed"
PEER_ID = b"-XX0000-downloader00"
NOW = 1_000.0
PIECE = 2 * BLOCK_SIZE
LENGTH = 5 * PIECE + 1000  # six pieces, the last of 1000 bytes: the bitfield has two spare bits
PIECES = 6
PAYLOAD = bytes(i * 7 % 251 for i in range(LENGTH))


def piece_size(index: int) -> int:
    return min(PIECE, LENGTH - index * PIECE)


def blocks(index: int) -> list[Request]:
    size = piece_size(index)
    return [Request(index, begin, min(BLOCK_SIZE, size - begin)) for begin in range(0, size, BLOCK_SIZE)]


def wire(*messages: Message) -> bytes:
    return b"".join(encode_message(m) for m in messages)


class Downloader:
    """The far end of the fake link: says hello, then reads whatever the seeder sends."""

    def __init__(self) -> None:
        self.decoder = MessageDecoder()
        self.handshake: Handshake | None = None
        self.messages: list[Message] = []

    def hello(self) -> bytes:
        return encode_handshake(Handshake(INFO_HASH, PEER_ID))

    def receive(self, data: bytes) -> None:
        self.decoder.feed(data)
        if self.handshake is None:
            self.handshake = self.decoder.next_handshake()
            if self.handshake is None:
                return
        while (message := self.decoder.next_message()) is not None:
            self.messages.append(message)


def accepted(*, unchoked: bool = True, max_requests: int = MAX_QUEUED_REQUESTS) -> SeedingConnection:
    """A connection past the handshake (and unchoked, unless asked otherwise)."""
    seed = SeedingConnection(SEED_ID, NOW, max_requests=max_requests)
    seed.receive_data(Downloader().hello(), NOW)
    seed.accept(LENGTH, PIECE)
    if unchoked:
        seed.unchoke()
    return seed


def test_a_downloader_gets_every_block_over_a_fake_link() -> None:
    seed = SeedingConnection(SEED_ID, NOW)
    down = Downloader()
    assert seed.receive_data(down.hello(), NOW) == [HandshakeReceived(INFO_HASH, PEER_ID, bytes(8))]
    assert seed.state is State.AWAIT_ACCEPT

    down.receive(seed.accept(LENGTH, PIECE))
    assert down.handshake == Handshake(INFO_HASH, SEED_ID)
    assert down.messages == [BitfieldMessage(Bitfield.full(PIECES).to_bytes())]
    assert down.messages[0] == BitfieldMessage(b"\xfc")  # six pieces, the spare bits clear

    assert seed.receive_data(wire(Interested()), NOW) == [PeerInterested()]
    down.receive(seed.unchoke())
    assert down.messages[-1] == Unchoke()

    got = bytearray(LENGTH)
    for index in reversed(range(PIECES)):  # any order
        seed.receive_data(wire(*blocks(index)), NOW)
        for request in seed.take_requests(100):
            start = request.index * PIECE + request.begin
            down.receive(piece_header(request.index, request.begin, request.length))
            down.receive(PAYLOAD[start : start + request.length])
    for message in down.messages[2:]:
        assert isinstance(message, Piece)
        start = message.index * PIECE + message.begin
        got[start : start + len(message.block)] = message.block
    assert bytes(got) == PAYLOAD
    assert seed.receive_data(wire(Have(0)), NOW) == []


SCRIPT = Downloader().hello() + wire(
    BitfieldMessage(b"\x80"),  # the peer holds piece 0
    Interested(),
    KeepAlive(),
    *blocks(1),
    Request(5, 0, 1000),
    CancelMessage(1, 0, BLOCK_SIZE),
    Port(6881),
    Extended(0, b"d1:md11:ut_metadatai1eee"),
    UnknownMessage(13, b"fast extension"),
    Piece(0, 0, b"unasked"),
    *[Have(i) for i in range(1, PIECES)],
    NotInterested(),
)
EXPECTED_EVENTS: list[Event] = [
    HandshakeReceived(INFO_HASH, PEER_ID, bytes(8)),
    PeerInterested(),
    PeerCompleted(),
    PeerNotInterested(),
]
EXPECTED_QUEUE = [Request(1, BLOCK_SIZE, BLOCK_SIZE), Request(5, 0, 1000)]


def drive(chunks: list[bytes]) -> tuple[list[Event], list[Request]]:
    """Feed ``chunks``; accept and unchoke as soon as the handshake is in."""
    seed = SeedingConnection(SEED_ID, NOW)
    events: list[Event] = []
    for chunk in chunks:
        new = seed.receive_data(chunk, NOW)
        events += new
        if any(isinstance(event, HandshakeReceived) for event in new):
            seed.accept(LENGTH, PIECE)
            seed.unchoke()
            events += seed.receive_data(b"", NOW)  # what came with the handshake
    return events, seed.take_requests(100)


def test_the_script_in_one_piece() -> None:
    assert drive([SCRIPT]) == (EXPECTED_EVENTS, EXPECTED_QUEUE)


def test_the_script_split_at_every_byte_boundary() -> None:
    for cut in range(len(SCRIPT) + 1):
        assert drive([SCRIPT[:cut], SCRIPT[cut:]]) == (EXPECTED_EVENTS, EXPECTED_QUEUE), cut


def test_the_script_a_byte_at_a_time() -> None:
    assert drive([SCRIPT[i : i + 1] for i in range(len(SCRIPT))]) == (EXPECTED_EVENTS, EXPECTED_QUEUE)


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (Request(PIECES, 0, BLOCK_SIZE), "request for piece 6 of 6"),
        (Request(5, 0, 1001), "beyond piece 5"),
        (Request(5, 1000, 1), "beyond piece 5"),
        (Request(0, PIECE - 1, 2), "beyond piece 0"),
        (Request(0, 0, 0), "request of 0 bytes"),
        (Request(0, 0, MAX_REQUEST_LENGTH + 1), "request of"),
    ],
)
def test_a_bad_request_closes_the_connection(request_: Request, reason: str) -> None:
    seed = accepted()
    with pytest.raises(ProtocolError, match=reason) as info:
        seed.receive_data(wire(request_), NOW)
    assert info.value.field == "request"
    assert seed.state is State.CLOSED
    assert seed.receive_data(wire(Request(0, 0, 1)), NOW) == []  # bytes after the close are ignored


def test_a_block_longer_than_16_kib_is_served_up_to_the_limit() -> None:
    seed = SeedingConnection(SEED_ID, NOW, max_request_length=PIECE)
    seed.receive_data(Downloader().hello(), NOW)
    seed.accept(LENGTH, PIECE)
    seed.unchoke()
    seed.receive_data(wire(Request(0, 0, PIECE)), NOW)
    assert seed.take_requests(1) == [Request(0, 0, PIECE)]


def test_requests_while_choked_are_dropped_and_a_peer_that_keeps_asking_is_closed() -> None:
    seed = accepted(unchoked=False, max_requests=4)
    seed.receive_data(wire(*[Request(0, 0, BLOCK_SIZE)] * 4), NOW)
    assert seed.queued == 0 and seed.dropped_requests == 4 and seed.state is State.CHOKED
    with pytest.raises(ProtocolError, match="while choked"):
        seed.receive_data(wire(Request(0, 0, BLOCK_SIZE)), NOW)
    assert seed.state is State.CLOSED


def test_an_unchoke_forgives_requests_sent_while_choked() -> None:
    seed = accepted(unchoked=False, max_requests=4)
    seed.receive_data(wire(*[Request(0, 0, BLOCK_SIZE)] * 4), NOW)
    seed.unchoke()
    seed.choke()
    seed.receive_data(wire(*[Request(0, 0, BLOCK_SIZE)] * 4), NOW)  # in flight when the choke went out
    assert seed.state is State.CHOKED


def test_a_full_queue_drops_further_requests() -> None:
    seed = accepted(max_requests=3)
    seed.receive_data(wire(*blocks(0), *blocks(1)), NOW)
    assert seed.queued == 3 and seed.dropped_requests == 1
    assert seed.take_requests(2) == [*blocks(0)]
    seed.receive_data(wire(Request(2, 0, BLOCK_SIZE)), NOW)
    assert seed.take_requests(10) == [Request(1, 0, BLOCK_SIZE), Request(2, 0, BLOCK_SIZE)]


def test_cancel_removes_a_queued_request_only() -> None:
    seed = accepted()
    seed.receive_data(wire(*blocks(0), *blocks(1)), NOW)
    [taken] = seed.take_requests(1)
    # The second cancel is for a block already taken to be sent, the third for one never asked for.
    seed.receive_data(
        wire(
            CancelMessage(1, 0, BLOCK_SIZE),
            CancelMessage(taken.index, taken.begin, taken.length),
            CancelMessage(3, 0, 1),
        ),
        NOW,
    )
    assert seed.take_requests(10) == [Request(0, BLOCK_SIZE, BLOCK_SIZE), Request(1, BLOCK_SIZE, BLOCK_SIZE)]


def test_choke_discards_the_queue() -> None:
    seed = accepted()
    seed.receive_data(wire(*blocks(0)), NOW)
    assert seed.choke() == encode_message(Choke())
    assert seed.queued == 0 and seed.state is State.CHOKED


def test_interest_events_come_only_when_interest_changes() -> None:
    seed = accepted()
    assert seed.receive_data(wire(Interested(), Interested()), NOW) == [PeerInterested()]
    assert seed.receive_data(wire(NotInterested(), NotInterested()), NOW) == [PeerNotInterested()]
    assert not seed.peer_interested


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xfd", "past the last piece"),  # six pieces: bit 7 (the 8th) is spare
        (b"\xfc\x00", "2 bytes, expected 1"),
        (b"", "0 bytes, expected 1"),
    ],
)
def test_a_bad_bitfield_closes_the_connection(data: bytes, reason: str) -> None:
    seed = accepted()
    with pytest.raises(ProtocolError, match=reason) as info:
        seed.receive_data(wire(BitfieldMessage(data)), NOW)
    assert info.value.field == "bitfield"
    assert seed.state is State.CLOSED


def test_a_bitfield_after_another_message_closes_the_connection() -> None:
    seed = accepted()
    with pytest.raises(ProtocolError, match="after the first message"):
        seed.receive_data(wire(Interested(), BitfieldMessage(b"\x00")), NOW)


def test_a_keepalive_before_the_bitfield_is_fine() -> None:
    seed = accepted()
    assert seed.receive_data(wire(KeepAlive(), BitfieldMessage(b"\xfc")), NOW) == [PeerCompleted()]


def test_repeated_haves_do_not_complete_a_peer() -> None:
    seed = accepted()
    assert (
        seed.receive_data(wire(BitfieldMessage(b"\x80"), Have(0), *[Have(i) for i in range(1, PIECES - 1)]), NOW) == []
    )
    assert seed.receive_data(wire(Have(1), Have(PIECES - 1), Have(PIECES - 1)), NOW) == [PeerCompleted()]


def test_a_have_out_of_range_closes_the_connection() -> None:
    seed = accepted()
    with pytest.raises(ProtocolError, match="have for piece 6") as info:
        seed.receive_data(wire(Have(PIECES)), NOW)
    assert info.value.field == "have"


def test_the_message_limit_follows_the_torrent() -> None:
    seed = accepted()
    # The longest message the peer may send: a piece message of the longest block we accept.
    seed.receive_data(encode_message(Piece(0, 0, bytes(MAX_REQUEST_LENGTH))), NOW)
    with pytest.raises(ProtocolError, match="exceeds"):
        seed.receive_data(struct.pack(">IB", MAX_REQUEST_LENGTH + 10, 99), NOW)
    assert seed.state is State.CLOSED


def test_a_torrent_of_many_pieces_accepts_a_long_bitfield() -> None:
    pieces = 2_000_000
    seed = SeedingConnection(SEED_ID, NOW)
    seed.receive_data(Downloader().hello(), NOW)
    out = seed.accept(pieces * BLOCK_SIZE, BLOCK_SIZE)
    assert len(out) == 68 + 5 + pieces // 8
    assert seed.receive_data(wire(BitfieldMessage(bytes(pieces // 8))), NOW) == []


def test_calls_out_of_order_are_bugs_of_the_caller() -> None:
    seed = SeedingConnection(SEED_ID, NOW)
    with pytest.raises(RuntimeError, match="cannot accept in state await handshake"):
        seed.accept(LENGTH, PIECE)
    seed.receive_data(Downloader().hello(), NOW)
    with pytest.raises(RuntimeError, match="cannot unchoke"):
        seed.unchoke()
    seed.accept(LENGTH, PIECE)
    with pytest.raises(RuntimeError, match="cannot choke in state choked"):
        seed.choke()
    with pytest.raises(ValueError):
        SeedingConnection(b"short", NOW)


def test_bytes_behind_the_handshake_wait_for_accept() -> None:
    seed = SeedingConnection(SEED_ID, NOW)
    events = seed.receive_data(Downloader().hello() + wire(Interested()), NOW)
    assert events == [HandshakeReceived(INFO_HASH, PEER_ID, bytes(8))]
    assert seed.receive_data(b"", NOW) == []  # not accepted yet: nothing is judged
    seed.accept(LENGTH, PIECE)
    assert seed.receive_data(b"", NOW) == [PeerInterested()]


def test_keepalives_and_silence() -> None:
    seed = SeedingConnection(SEED_ID, NOW, idle_timeout=300.0)
    assert not seed.expired(NOW + HANDSHAKE_TIMEOUT)
    assert seed.expired(NOW + HANDSHAKE_TIMEOUT + 1)  # no handshake yet
    seed.receive_data(Downloader().hello(), NOW + 10)
    seed.accept(LENGTH, PIECE)
    seed.receive_data(wire(Interested()), NOW + 10)
    assert seed.keepalive(NOW + KEEPALIVE_SECONDS - 1) == b""
    assert seed.keepalive(NOW + KEEPALIVE_SECONDS) == encode_message(KeepAlive())
    assert seed.keepalive(NOW + KEEPALIVE_SECONDS + 1) == b""
    seed.receive_data(wire(KeepAlive()), NOW + 200)
    assert not seed.expired(NOW + 500)
    assert seed.expired(NOW + 501)


def test_a_handshake_never_followed_by_interest_expires_whatever_keepalives_come() -> None:
    seed = SeedingConnection(SEED_ID, NOW)
    seed.receive_data(Downloader().hello(), NOW)
    seed.accept(LENGTH, PIECE)
    for t in range(5, int(INTEREST_TIMEOUT), 5):
        seed.receive_data(wire(KeepAlive()), NOW + t)
    assert not seed.expired(NOW + INTEREST_TIMEOUT)
    assert seed.expired(NOW + INTEREST_TIMEOUT + 1)


def test_a_peer_that_loses_interest_expires_unless_it_comes_back() -> None:
    seed = accepted(unchoked=False)
    seed.receive_data(wire(Interested()), NOW + 1)
    assert not seed.expired(NOW + INTEREST_TIMEOUT + 100)  # interested and not silent for long: kept
    seed.receive_data(wire(NotInterested()), NOW + 200)
    assert not seed.expired(NOW + 200 + INTEREST_TIMEOUT)
    assert seed.expired(NOW + 201 + INTEREST_TIMEOUT)
    seed.receive_data(wire(Interested()), NOW + 200 + INTEREST_TIMEOUT)
    assert not seed.expired(NOW + 201 + INTEREST_TIMEOUT)


def test_idle_for_counts_from_the_last_message_that_is_not_a_keepalive() -> None:
    seed = SeedingConnection(SEED_ID, NOW)
    assert seed.idle_for(NOW + 7) == 7  # before its handshake: since the connection started
    seed.receive_data(Downloader().hello(), NOW + 1)
    seed.accept(LENGTH, PIECE)
    assert seed.idle_for(NOW + 7) == 6
    seed.receive_data(wire(Interested()), NOW + 10)
    seed.receive_data(wire(KeepAlive()), NOW + 20)
    assert seed.idle_for(NOW + 30) == 20
    seed.unchoke()
    seed.receive_data(wire(Request(0, 0, BLOCK_SIZE)), NOW + 25)
    assert seed.idle_for(NOW + 30) == 5
