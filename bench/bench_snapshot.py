"""Micro-benchmark: snapshot + restore of the full hardware state.

The checker freezes every state it stores (``tuple(list)``), hashes it to look it
up in the seen-set, and thaws it again to step from it (``list(tuple)``). This
measures that round trip for the default Intel and AMD CPUs, one summary line
each. Not a test; run it as::

    python bench/bench_snapshot.py
"""

from __future__ import annotations

import time

from vpmu.config import MachineConfig
from vpmu.hw.layout import Layout
from vpmu.hw.virt import Cpu

BUDGET_S = 1.0  # per vendor
BATCH = 10_000


def _state(vendor: str) -> tuple[Layout, list[int]]:
    layout = Layout()
    cpu = Cpu(MachineConfig(vendor=vendor), layout)
    s = layout.initial()
    # Realistic, non-trivial values (large ints hash like the real thing).
    for i in range(cpu.cfg.num_gp):
        s[cpu.pmc + i] = (1 << 47) - 1000 * (i + 1)
    return layout, s


def bench(vendor: str) -> str:
    layout, s = _state(vendor)
    h = 0
    n = 0
    start = time.perf_counter()
    deadline = start + BUDGET_S
    while True:
        for _ in range(BATCH):
            frozen = tuple(s)  # snapshot (tuples do not cache their hash)
            h ^= hash(frozen)
            s = list(frozen)  # restore
        n += BATCH
        now = time.perf_counter()
        if now >= deadline:
            break
    elapsed = now - start
    rate = n / elapsed
    return (
        f"{vendor:<5}  {len(layout):3d} slots  {rate / 1e6:6.2f} M snapshot+restore/s  "
        f"({1e9 / rate:6.0f} ns each, {n} in {elapsed:.2f} s)"
    )


def main() -> None:
    for vendor in ("intel", "amd"):
        print(bench(vendor))


if __name__ == "__main__":
    main()
