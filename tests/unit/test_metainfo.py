"""Shoal's .torrent encoder, cross-checked with an independent parser (libtorrent), info-hash included."""

from __future__ import annotations

import hashlib

import libtorrent as lt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.core.metainfo import SHA1_SIZE, TorrentInfo, encode_torrent


def _info(length: int, piece_length: int, name: str = "release.bin") -> TorrentInfo:
    count = -(-length // piece_length)
    pieces = b"".join(hashlib.sha1(i.to_bytes(4, "big")).digest() for i in range(count))
    return TorrentInfo(name, length, piece_length, pieces)


def test_libtorrent_reads_what_we_write() -> None:
    info = _info(5 * 262144 + 17, 262144)
    data = encode_torrent(
        info,
        announce="http://seed.example:6390/announce",
        url_list=["http://seed.example:6390/files/rel/release.bin"],
        creation_date=1_700_000_000,
    )
    parsed = lt.torrent_info(lt.bdecode(data))
    assert bytes.fromhex(str(parsed.info_hashes().v1)) == info.info_hash()
    assert parsed.name() == "release.bin"
    assert parsed.total_size() == info.length
    assert parsed.piece_length() == 262144
    assert parsed.num_pieces() == 6
    meta = lt.bdecode(data)  # libtorrent 2.1 deprecates torrent_info.trackers(); read its own decoding
    assert meta[b"announce"] == b"http://seed.example:6390/announce"
    assert meta[b"url-list"] == [b"http://seed.example:6390/files/rel/release.bin"]
    assert parsed.creation_date() == 1_700_000_000
    assert bytes(parsed.hash_for_piece(5)) == info.pieces[5 * SHA1_SIZE :]


def test_backup_trackers_are_tiers_of_their_own_after_the_first() -> None:
    """BEP 12: one tracker per tier, in order, so clients use the first and move on only when it fails."""
    data = encode_torrent(
        _info(262144, 262144),
        announce="http://t1:6969/announce",
        backup_announces=["http://t2:6969/announce", "http://t3:6969/announce"],
    )
    meta = lt.bdecode(data)
    assert meta[b"announce"] == b"http://t1:6969/announce", "for clients that do not read announce-list"
    assert meta[b"announce-list"] == [
        [b"http://t1:6969/announce"],
        [b"http://t2:6969/announce"],
        [b"http://t3:6969/announce"],
    ]
    read = lt.load_torrent_buffer(data)  # libtorrent's own reading: one tier each, in order
    assert list(zip(read.tracker_tiers, read.trackers, strict=True)) == [
        (0, "http://t1:6969/announce"),
        (1, "http://t2:6969/announce"),
        (2, "http://t3:6969/announce"),
    ]
    assert b"announce-list" not in lt.bdecode(encode_torrent(_info(1, 262144), announce="http://t1/announce"))


@settings(max_examples=40, deadline=None)
@given(
    length=st.integers(min_value=0, max_value=1 << 40),
    shift=st.integers(min_value=14, max_value=24),
    # libtorrent reads a backslash as a path separator too, and refuses a name that is nothing but separators.
    name=st.text(alphabet=st.characters(blacklist_characters="/\\\0", blacklist_categories=("Cs",)), min_size=1),
)
def test_info_hash_matches_libtorrent(length: int, shift: int, name: str) -> None:
    if name in (".", "..") or length >> shift > 4096:
        return  # keep the hash strings small; the encoding does not depend on the count
    info = TorrentInfo(name, length, 1 << shift, b"\x01" * SHA1_SIZE * -(-length // (1 << shift)))
    if length == 0:
        return  # libtorrent refuses empty torrents; the encoder's output is still checked below
    parsed = lt.torrent_info(lt.bdecode(encode_torrent(info, announce="http://t/announce")))
    # libtorrent sanitises control characters in names for its own use; the info-hash covers the raw name.
    assert bytes.fromhex(str(parsed.info_hashes().v1)) == info.info_hash()


@pytest.mark.parametrize("name", ["", "a/b", ".", "..", "x\0y"])
def test_names_that_are_not_file_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        _info(10, 16384, name)


def test_piece_hashes_must_match_the_length() -> None:
    with pytest.raises(ValueError, match="pieces need"):
        TorrentInfo("f", 3 * 16384, 16384, b"\0" * 40)
