"""Benchmark: throughput and time to verdict of the default check. Not a test.

For each default world it checks ``upstream`` (time to its verdict) and
``perf-stays-disabled`` (a design that holds, so the whole state space is
explored: the throughput figure), and measures the cost per state of the
checker's inner operations (thaw, one step, freeze, hash). One summary line
per run; peak memory is the process's maximum RSS. Run::

    python bench/bench_check.py            # default worlds
    python bench/bench_check.py --repeat 3 # best of 3
"""

from __future__ import annotations

import argparse
import resource
import time

from vpmu.check.explore import check
from vpmu.check.system import STEP, System
from vpmu.check.world import DEFAULT_WORLDS, resolve_world
from vpmu.designs import get_design


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(design: str, world: str, repeat: int) -> str:
    best = None
    for _ in range(repeat):
        system = System(get_design(design), resolve_world(world))
        r = check(system)
        if best is None or r.stats.seconds < best.stats.seconds:
            best = r
    assert best is not None
    st = best.stats
    return (
        f"check {design:<20} {world:<14} {best.verdict:<9} {st.states:>8} states {st.transitions:>8} transitions "
        f"depth {st.depth:>4}  {st.seconds:6.2f} s to verdict  {st.rate:>9,.0f} states/s  "
        f"peak RSS {peak_mib():6.0f} MiB"
    )


def per_state_cost(world: str, n: int = 20_000) -> str:
    """Cost of the operations the explorer does per transition, on real states."""
    system = System(get_design("perf-stays-disabled"), resolve_world(world))
    states = [system.initial()]
    s = states[0]
    while len(states) < 500:
        moves = system.moves(s)
        if not moves:
            s = system.initial()
            continue
        s, _ = system.apply(s, moves[0])
        states.append(s)
    t0 = time.perf_counter()
    h = 0
    for i in range(n):
        h ^= hash(tuple(list(states[i % len(states)])))
    t1 = time.perf_counter()
    for i in range(n):
        system.apply(states[i % len(states)], (STEP, 0))
    t2 = time.perf_counter()
    return (
        f"state {world:<14} {len(system.layout)} slots: thaw+freeze+hash {1e6 * (t1 - t0) / n:5.2f} us, "
        f"one move (apply + ghost checks) {1e6 * (t2 - t1) / n:5.2f} us"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    for vendor in ("intel", "amd"):
        world = DEFAULT_WORLDS[vendor]
        print(run("upstream", world, args.repeat), flush=True)
        print(run("perf-stays-disabled", world, args.repeat), flush=True)
        print(per_state_cost(world), flush=True)


if __name__ == "__main__":
    main()
