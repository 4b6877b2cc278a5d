"""A set of 64-bit fingerprints in one flat array: fingerprint mode's visited set.

A Python ``set`` of ints costs about 40 bytes per int object plus 27-53 bytes of
table per entry (issue 15 measured 98 B/state for it); this open-addressing table
stores the fingerprints themselves, 8 bytes each, at a load of 3/8 to 3/4: 11-21
bytes per state, and about 32 at the moment it grows (old and new table together).
Linear probing; 0 marks an empty slot, so the fingerprint 0 is kept apart in a flag.
Fingerprints are CPython hashes, whose low bits are well mixed (xxHash-style tuple
hashing), so the slot is the fingerprint's low bits.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from typing import BinaryIO

#: Load at which the table doubles.
MAX_LOAD_NUM, MAX_LOAD_DEN = 3, 4


class FingerprintSet:
    def __init__(self, capacity: int = 1 << 10) -> None:
        size = 1 << max(4, (capacity - 1).bit_length())
        self._table: array[int] = array("q", [0]) * size
        self._mask = size - 1
        self._used = 0  # non-zero fingerprints stored
        self._zero = False

    def __len__(self) -> int:
        return self._used + self._zero

    def __contains__(self, key: int) -> bool:
        if key == 0:
            return self._zero
        t, mask = self._table, self._mask
        i = key & mask
        while True:
            v = t[i]
            if v == key:
                return True
            if v == 0:
                return False
            i = (i + 1) & mask

    def add(self, key: int) -> None:
        if key == 0:
            self._zero = True
            return
        t, mask = self._table, self._mask
        i = key & mask
        while True:
            v = t[i]
            if v == key:
                return
            if v == 0:
                break
            i = (i + 1) & mask
        t[i] = key
        self._used += 1
        if self._used * MAX_LOAD_DEN > (mask + 1) * MAX_LOAD_NUM:
            self._grow()

    def update(self, keys: Iterable[int]) -> None:
        for key in keys:
            self.add(key)

    def _grow(self) -> None:
        old = self._table
        size = 2 * len(old)
        t: array[int] = array("q", [0]) * size
        mask = size - 1
        for key in old:
            if key:
                i = key & mask
                while t[i]:
                    i = (i + 1) & mask
                t[i] = key
        self._table, self._mask = t, mask

    def __iter__(self) -> Iterator[int]:
        if self._zero:
            yield 0
        for key in self._table:
            if key:
                yield key

    @property
    def nbytes(self) -> int:
        return len(self._table) * self._table.itemsize

    # -- checkpoints: the table as it is, at disk speed -------------------------------------
    def header(self) -> tuple[int, int, bool]:
        return len(self._table), self._used, self._zero

    def write(self, f: BinaryIO) -> None:
        self._table.tofile(f)

    @classmethod
    def read(cls, f: BinaryIO, header: tuple[int, int, bool]) -> FingerprintSet:
        size, used, zero = header
        if size < 16 or size & (size - 1) or not 0 <= used < size:
            raise ValueError(f"bad fingerprint table header {header}")
        out = cls(16)
        t: array[int] = array("q")
        t.fromfile(f, size)
        out._table, out._mask, out._used, out._zero = t, size - 1, used, bool(zero)
        return out
