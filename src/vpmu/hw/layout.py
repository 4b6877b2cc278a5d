"""The world's state as one flat vector of integers.

Every layer (hardware, host kernel, guest, checker ghosts) claims named slots
in one :class:`Layout`. A state is a ``tuple[int, ...]`` in that layout: cheap
to hash, compare and copy, with no object identity and no insertion order, so
the checker can store millions of them and two runs see identical values.
Code that changes state works on a ``list`` copy and freezes it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vpmu.frozen import Frozen

State = tuple[int, ...]


def format_value(kind: str, value: int) -> str:
    """A slot value as traces print it: by the slot's kind ("hex", "int", "bool", or
    "vectors": a bit set of interrupt vectors such as the APIC's IRR, printed as {0xec,0xfb})."""
    if kind == "bool":
        return "1" if value else "0"
    if kind == "int":
        return str(value)
    if kind == "vectors":
        return "{" + ",".join(hex(v) for v in range(value.bit_length()) if value >> v & 1) + "}"
    return hex(value)


@dataclass(frozen=True)
class Slot(Frozen):
    """One named slot: who owns it and how to print it."""

    name: str
    owner: str  # "hw", "host", "kvm", "guest", "ghost"
    fmt: str  # "hex", "int", "bool", "vectors"


class Layout:
    """An append-only table of named slots."""

    def __init__(self) -> None:
        self.slots: list[Slot] = []
        self._init: list[int] = []
        self._index: dict[str, int] = {}

    def field(self, name: str, owner: str, init: int = 0, fmt: str = "hex") -> int:
        """Claim one slot; return its index."""
        if name in self._index:
            raise ValueError(f"duplicate state slot {name!r}")
        self._index[name] = len(self.slots)
        self.slots.append(Slot(name, owner, fmt))
        self._init.append(init)
        return len(self.slots) - 1

    def array(self, name: str, n: int, owner: str, init: int = 0, fmt: str = "hex") -> int:
        """Claim ``n`` slots named ``name0..name{n-1}``; return the first index."""
        base = len(self.slots)
        for i in range(n):
            self.field(f"{name}{i}", owner, init, fmt)
        return base

    def index(self, name: str) -> int:
        return self._index[name]

    def has(self, name: str) -> bool:
        return name in self._index

    def initial(self) -> list[int]:
        return list(self._init)

    def __len__(self) -> int:
        return len(self.slots)

    def diff(self, before: Sequence[int], after: Sequence[int]) -> list[tuple[str, int, int]]:
        """Slots whose value changed, as (name, old, new), in layout order."""
        return [(self.slots[i].name, before[i], after[i]) for i in range(len(self.slots)) if before[i] != after[i]]

    def fmt(self, i: int, value: int) -> str:
        return format_value(self.slots[i].fmt, value)

    def as_dict(self, state: Sequence[int]) -> dict[str, int]:
        return {slot.name: state[i] for i, slot in enumerate(self.slots)}
