"""The BitTorrent wire protocol's codec (core.btwire): messages and the handshake, both ways."""

from __future__ import annotations

import struct
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
    parse_handshake,
    piece_header,
)
from shoal.core.errors import ProtocolError


def wire(*messages: Message) -> bytes:
    return b"".join(encode_message(m) for m in messages)


u32 = st.integers(min_value=0, max_value=2**32 - 1)
messages = st.one_of(
    st.sampled_from([KeepAlive(), Choke(), Unchoke(), Interested(), NotInterested()]),
    st.builds(Have, u32),
    st.builds(BitfieldMessage, st.binary(max_size=64)),
    st.builds(Request, u32, u32, u32),
    st.builds(Piece, u32, u32, st.binary(max_size=300)),
    st.builds(CancelMessage, u32, u32, u32),
    st.builds(Port, st.integers(min_value=0, max_value=65535)),
    st.builds(Extended, st.integers(min_value=0, max_value=255), st.binary(max_size=64)),
    st.builds(
        UnknownMessage,
        st.integers(min_value=10, max_value=255).filter(lambda i: i != 20),
        st.binary(max_size=64),
    ),
)


def decode_all(data: bytes, cuts: list[int] | None = None) -> list[Message]:
    decoder = MessageDecoder()
    out: list[Message] = []
    edges = [0, *sorted(cuts or []), len(data)]
    for start, end in pairwise(edges):
        decoder.feed(data[start:end])
        while (message := decoder.next_message()) is not None:
            out.append(message)
    assert decoder.buffered == 0
    return out


@given(messages)
def test_every_message_round_trips(message: Message) -> None:
    assert decode_all(encode_message(message)) == [message]


@given(st.lists(messages, max_size=20), st.data())
def test_a_stream_decodes_the_same_however_it_is_cut(stream: list[Message], data: st.DataObject) -> None:
    raw = wire(*stream)
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(raw)), max_size=10))
    assert decode_all(raw, cuts) == stream


@given(st.binary(min_size=20, max_size=20), st.binary(min_size=20, max_size=20), st.binary(min_size=8, max_size=8))
def test_handshake_round_trips(info_hash: bytes, peer_id: bytes, reserved: bytes) -> None:
    handshake = Handshake(info_hash, peer_id, reserved)
    raw = encode_handshake(handshake)
    assert len(raw) == 68 and raw[:20] == b"\x13BitTorrent protocol"
    assert parse_handshake(raw) == handshake


def test_piece_header_frames_a_block_without_it() -> None:
    block = b"x" * 100
    assert piece_header(3, 16384, len(block)) + block == encode_message(Piece(3, 16384, block))
    assert len(piece_header(0, 0, BLOCK_SIZE)) == 13


def test_layouts_follow_bep3() -> None:
    assert encode_message(KeepAlive()) == b"\0\0\0\0"
    assert encode_message(Interested()) == b"\0\0\0\x01\x02"
    assert encode_message(Request(1, 2, 3)) == b"\0\0\0\x0d\x06" + struct.pack(">III", 1, 2, 3)
    assert encode_message(Port(6881)) == b"\0\0\0\x03\x09\x1a\xe1"


@pytest.mark.parametrize(
    "data",
    [
        b"\x13BitTorrent protocoX" + bytes(48),
        b"\x12BitTorrent protocol" + bytes(48),
        b"GET /announce HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(40),
    ],
)
def test_a_bad_protocol_string_is_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError, match="protocol string") as info:
        parse_handshake(data)
    assert info.value.field == "handshake"


def test_a_bad_protocol_string_is_refused_before_the_handshake_is_whole() -> None:
    decoder = MessageDecoder()
    decoder.feed(b"GET / HTTP/1.1\r\n")
    assert decoder.next_handshake() is None  # 16 bytes: not enough to judge
    decoder.feed(b"Host")
    with pytest.raises(ProtocolError):
        decoder.next_handshake()


def test_an_oversize_length_is_refused_before_its_payload_arrives() -> None:
    decoder = MessageDecoder(max_length=1000)
    decoder.feed(struct.pack(">I", 1001))
    with pytest.raises(ProtocolError, match="exceeds") as info:
        decoder.next_message()
    assert info.value.field == "length"


@pytest.mark.parametrize(
    "raw",
    [
        b"\0\0\0\x02\x00\x00",  # choke with a payload byte
        b"\0\0\0\x04\x04\0\0\0",  # have with three index bytes
        b"\0\0\0\x0c\x06" + bytes(11),  # request one byte short
        b"\0\0\0\x0e\x08" + bytes(13),  # cancel one byte long
        b"\0\0\0\x08\x07" + bytes(7),  # piece shorter than its header
        b"\0\0\0\x01\x14",  # extended without its extension id
    ],
)
def test_a_message_of_the_wrong_length_is_refused(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_all(raw)
