"""Benchmark: throughput, time to verdict and peak memory of the check. Not a test.

For each default world it checks ``upstream`` (time to its verdict) and
``perf-stays-disabled`` (a design that holds, so the whole state space is
explored: the throughput figure), once per mode — ``exact`` (the visited set
holds the states) and ``fingerprint`` (it holds 64-bit fingerprints,
``vpmu check --fingerprint``) — and measures the cost per state of the
checker's inner operations (thaw, one step, freeze, hash). One summary line
per run and mode. Each run is made in a fresh process, so its peak memory (the
process's maximum RSS, interpreter included) is its own. Run::

    python bench/bench_check.py                        # default worlds, both modes
    python bench/bench_check.py --repeat 3             # best of 3
    python bench/bench_check.py --mode fingerprint --design perf-stays-disabled --world big.toml
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from concurrent.futures import ProcessPoolExecutor

from vpmu.check.explore import check
from vpmu.check.system import STEP, System
from vpmu.check.world import DEFAULT_WORLDS, resolve_world
from vpmu.designs import get_design

MODES = ("exact", "fingerprint")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(design: str, world: str, mode: str, repeat: int, max_states: int | None) -> str:
    """One summary line: the best of ``repeat`` checks, in this process. CPU time is given
    beside the wall-clock time: on a shared machine it varies less."""
    best = None
    cpu = float("inf")
    for _ in range(repeat):
        system = System(get_design(design), resolve_world(world))
        c0 = time.process_time()
        r = check(system, max_states=max_states, fingerprint=mode == "fingerprint")
        cpu = min(cpu, time.process_time() - c0)
        if best is None or r.stats.seconds < best.stats.seconds:
            best = r
    assert best is not None
    st = best.stats
    p = best.collision_probability
    extra = f"  collision probability {p:.3g}" if p is not None else ""
    return (
        f"check {design:<20} {world:<14} {mode:<11} {best.verdict:<10} {st.states:>8} states "
        f"{st.transitions:>8} transitions depth {st.depth:>4}  {st.seconds:6.2f} s to verdict (cpu {cpu:6.2f} s)  "
        f"{st.rate:>9,.0f} states/s  peak RSS {peak_mib():6.0f} MiB{extra}"
    )


def run_fresh(design: str, world: str, mode: str, repeat: int, max_states: int | None) -> str:
    """run() in a new process: ru_maxrss only grows, so a shared process would report the
    largest earlier run's peak instead of this one's."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(run, design, world, mode, repeat, max_states).result()


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
    ap.add_argument("--mode", choices=(*MODES, "both"), default="both", help="visited-set mode(s) to measure")
    ap.add_argument("--design", action="append", help="design(s) to check (default: upstream, perf-stays-disabled)")
    ap.add_argument("--world", action="append", help="world name(s) or TOML file(s) (default: the default worlds)")
    ap.add_argument("--max-states", type=int, help="stop each check after N states (incomplete)")
    args = ap.parse_args()
    modes = MODES if args.mode == "both" else (args.mode,)
    designs = args.design or ["upstream", "perf-stays-disabled"]
    worlds = args.world or [DEFAULT_WORLDS[v] for v in ("intel", "amd")]
    for world in worlds:
        for design in designs:
            for mode in modes:
                print(run_fresh(design, world, mode, args.repeat, args.max_states), flush=True)
        if not args.world:
            print(per_state_cost(world), flush=True)


if __name__ == "__main__":
    main()
