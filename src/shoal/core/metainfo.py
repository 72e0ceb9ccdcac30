"""BitTorrent v1 metainfo for one file: Shoal's own .torrent encoder, on fastbencode.

A seeded file becomes a single-file torrent (BEP 3) whose ``announce`` is the tracker's ``/announce`` and
whose ``url-list`` (BEP 19) names the seeder's ``/files/REL``, so a client may take pieces from the swarm,
from the web seed, or both. Pieces are SHA-1, as BEP 3 requires; they are cut at the same boundaries as
Shoal's own BLAKE3 pieces (``manifest.piece_length_for``), so one pass over the file yields both.

Rules: the info dictionary holds exactly ``length``, ``name``, ``piece length`` and ``pieces`` (bencoding
sorts the keys), and ``private`` (1) for a fleet's torrent, and the info-hash is the SHA-1 of its bencoding.
A private torrent (BEP 27) is one whose clients learn peers from its tracker only: no DHT, no peer exchange,
no local discovery, so the tracker's passkey check cannot be gone around; the flag is in the info
dictionary, so a client cannot drop it without changing the info-hash. Nothing a client ignores is put in the
info dictionary, because every byte there changes the info-hash; ``creation date`` and ``created by`` sit
outside it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from fastbencode import bencode

SHA1_SIZE = 20
CREATED_BY = "Shoal"


@dataclass(frozen=True, slots=True)
class TorrentInfo:
    """The info dictionary of a single-file torrent."""

    name: str
    length: int
    piece_length: int
    pieces: bytes
    """The SHA-1 digests of the pieces, concatenated (20 bytes each)."""
    private: bool = False
    """BEP 27: clients take peers from the tracker only."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or "\0" in self.name or self.name in (".", ".."):
            raise ValueError(f"a torrent name must be a plain file name, not {self.name!r}")
        if self.length < 0 or self.piece_length <= 0:
            raise ValueError("length must not be negative and piece length must be positive")
        count = -(-self.length // self.piece_length)
        if len(self.pieces) != count * SHA1_SIZE:
            raise ValueError(f"{count} pieces need {count * SHA1_SIZE} bytes of hashes, got {len(self.pieces)}")

    @property
    def piece_count(self) -> int:
        return len(self.pieces) // SHA1_SIZE

    def info_dict(self) -> dict[bytes, object]:
        info: dict[bytes, object] = {
            b"length": self.length,
            b"name": self.name.encode(),
            b"piece length": self.piece_length,
            b"pieces": self.pieces,
        }
        if self.private:
            info[b"private"] = 1
        return info

    def info_hash(self) -> bytes:
        """The 20-byte SHA-1 of the bencoded info dictionary: the torrent's identity on the wire."""
        return hashlib.sha1(bencode(self.info_dict())).digest()


def encode_torrent(
    info: TorrentInfo,
    *,
    announce: str,
    url_list: Sequence[str] = (),
    creation_date: int | None = None,
    backup_announces: Sequence[str] = (),
) -> bytes:
    """The bencoded .torrent file. ``url-list`` is left out when empty (BEP 19 allows a string or a list;
    a list is what every client reads). ``backup_announces`` (trackers of one cluster after the first) make
    an ``announce-list`` (BEP 12) of one tier per tracker, in order: a client asks the first tier's tracker
    and moves to the next tier's only when it fails, as Shoal's own peers do (core.tracker_choice), while
    a tier of several would make each client shuffle them, and the BitTorrent swarms are per tracker."""
    meta: dict[bytes, object] = {
        b"announce": announce.encode(),
        b"created by": CREATED_BY.encode(),
        b"info": info.info_dict(),
    }
    if backup_announces:
        meta[b"announce-list"] = [[url.encode()] for url in (announce, *backup_announces)]
    if url_list:
        meta[b"url-list"] = [url.encode() for url in url_list]
    if creation_date is not None:
        meta[b"creation date"] = int(creation_date)
    return bytes(bencode(meta))
