"""A set of piece indices as a bit array, most significant bit first (the BitTorrent layout, BEP 3).

Bitfields cross the network base64-encoded; :func:`Bitfield.decode` validates length and spare bits, so a
bad bitfield from a peer is a ProtocolError, never an IndexError deep inside the tracker.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator

from shoal.core.errors import ProtocolError


class Bitfield:
    __slots__ = ("_bits", "_count", "size")

    def __init__(self, size: int, data: bytes | None = None) -> None:
        if size < 0:
            raise ValueError("size must not be negative")
        self.size = size
        nbytes = (size + 7) // 8
        if data is None:
            self._bits = bytearray(nbytes)
            self._count = 0
        else:
            if len(data) != nbytes:
                raise ProtocolError(f"bitfield has {len(data)} bytes, expected {nbytes}", field="bitfield")
            spare = nbytes * 8 - size
            if spare and data[-1] & ((1 << spare) - 1):
                raise ProtocolError("bitfield sets bits past the last piece", field="bitfield")
            self._bits = bytearray(data)
            self._count = sum(bin(b).count("1") for b in self._bits)

    @classmethod
    def full(cls, size: int) -> Bitfield:
        bf = cls(size)
        for i in range(size):
            bf.add(i)
        return bf

    @classmethod
    def of(cls, size: int, indices: Iterable[int]) -> Bitfield:
        bf = cls(size)
        for i in indices:
            bf.add(i)
        return bf

    @classmethod
    def decode(cls, size: int, text: str) -> Bitfield:
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("bitfield is not valid base64", field="bitfield") from None
        return cls(size, data)

    def encode(self) -> str:
        return base64.b64encode(bytes(self._bits)).decode()

    def to_bytes(self) -> bytes:
        return bytes(self._bits)

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int) or not 0 <= index < self.size:
            return False
        return bool(self._bits[index >> 3] & (0x80 >> (index & 7)))

    def add(self, index: int) -> None:
        if not 0 <= index < self.size:
            raise IndexError(f"piece {index} out of range")
        mask = 0x80 >> (index & 7)
        if not self._bits[index >> 3] & mask:
            self._bits[index >> 3] |= mask
            self._count += 1

    def discard(self, index: int) -> None:
        if index in self:
            self._bits[index >> 3] &= ~(0x80 >> (index & 7)) & 0xFF
            self._count -= 1

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[int]:
        for byte_index, byte in enumerate(self._bits):
            if byte:
                base = byte_index << 3
                for bit in range(8):
                    if byte & (0x80 >> bit):
                        yield base + bit

    @property
    def complete(self) -> bool:
        return self._count == self.size

    def missing(self) -> Iterator[int]:
        for i in range(self.size):
            if i not in self:
                yield i

    def union_update(self, other: Bitfield) -> None:
        if other.size != self.size:
            raise ValueError("bitfields of different sizes")
        for i, b in enumerate(other._bits):
            self._bits[i] |= b
        self._count = sum(bin(b).count("1") for b in self._bits)

    def copy(self) -> Bitfield:
        return Bitfield(self.size, bytes(self._bits))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bitfield) and other.size == self.size and other._bits == self._bits

    def __hash__(self) -> int:
        return hash((self.size, bytes(self._bits)))

    def __repr__(self) -> str:
        return f"Bitfield({self.size}, {len(self)} set)"
