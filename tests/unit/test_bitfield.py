"""Bitfields and their wire form (core.bitfield)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core.bitfield import Bitfield
from shoal.core.errors import ProtocolError


@st.composite
def bitfields(draw: st.DrawFn, max_size: int = 300) -> Bitfield:
    size = draw(st.integers(min_value=0, max_value=max_size))
    indices = draw(st.sets(st.integers(min_value=0, max_value=size - 1))) if size else set()
    return Bitfield.of(size, indices)


@given(bitfields())
def test_encode_decode_roundtrip(bf: Bitfield) -> None:
    decoded = Bitfield.decode(bf.size, bf.encode())
    assert decoded == bf
    assert list(decoded) == list(bf)
    assert len(decoded) == len(bf)


@given(bitfields())
def test_members_and_missing_partition_the_pieces(bf: Bitfield) -> None:
    members = list(bf)
    assert members == sorted(members)
    assert sorted(members + list(bf.missing())) == list(range(bf.size))
    assert all(i in bf for i in members)
    assert bf.complete == (len(bf) == bf.size)


def test_msb_first_layout() -> None:
    # BEP 3: the high bit of the first byte is piece 0.
    assert Bitfield.of(10, [0, 9]).to_bytes() == bytes([0b1000_0000, 0b0100_0000])


@pytest.mark.parametrize(("size", "nbytes"), [(8, 0), (8, 2), (9, 1), (0, 1)])
def test_decode_rejects_wrong_length(size: int, nbytes: int) -> None:
    with pytest.raises(ProtocolError, match="bytes") as info:
        Bitfield.decode(size, base64.b64encode(bytes(nbytes)).decode())
    assert info.value.field == "bitfield"


@pytest.mark.parametrize(("size", "last_byte"), [(9, 0b0000_0001), (9, 0b0100_0000), (1, 0b0100_0000), (15, 1)])
def test_decode_rejects_spare_bits(size: int, last_byte: int) -> None:
    data = bytes((size + 7) // 8 - 1) + bytes([last_byte])
    with pytest.raises(ProtocolError, match="past the last piece") as info:
        Bitfield.decode(size, base64.b64encode(data).decode())
    assert info.value.field == "bitfield"


@pytest.mark.parametrize("text", ["not base64!", "AA=", "A", "é", "AA\n=="])
def test_decode_rejects_non_base64(text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        Bitfield.decode(8, text)
    assert info.value.field == "bitfield"


def test_out_of_range_indices() -> None:
    bf = Bitfield(10)
    with pytest.raises(IndexError):
        bf.add(10)
    with pytest.raises(IndexError):
        bf.add(-1)
    assert -1 not in bf and 10 not in bf and "0" not in bf
    bf.discard(99)
    assert len(bf) == 0


def test_add_and_discard_keep_the_count() -> None:
    bf = Bitfield(20)
    for i in (3, 3, 7, 19):
        bf.add(i)
    assert len(bf) == 3
    bf.discard(3)
    bf.discard(3)
    assert list(bf) == [7, 19]
    assert len(bf) == 2


def test_full_and_empty() -> None:
    assert Bitfield.full(13).complete and len(Bitfield.full(13)) == 13
    assert Bitfield(0).complete
    assert not Bitfield(1).complete


@given(st.data())
def test_union_update(data: st.DataObject) -> None:
    a = data.draw(bitfields())
    b = Bitfield.of(a.size, data.draw(st.sets(st.integers(0, a.size - 1))) if a.size else ())
    expected = set(a) | set(b)
    a.union_update(b)
    assert set(a) == expected and len(a) == len(expected)


def test_union_of_different_sizes_is_refused() -> None:
    with pytest.raises(ValueError):
        Bitfield(8).union_update(Bitfield(9))


def test_copy_is_independent() -> None:
    original = Bitfield.of(8, [1])
    clone = original.copy()
    clone.add(2)
    assert list(original) == [1] and list(clone) == [1, 2]
    assert original != clone and hash(original) == hash(Bitfield.of(8, [1]))


@given(bitfields(), st.data())
def test_run_end_is_the_first_unset_index_from_start(bf: Bitfield, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, bf.size))
    expected = next((i for i in range(start, bf.size) if i not in bf), bf.size)
    assert bf.run_end(start) == expected
