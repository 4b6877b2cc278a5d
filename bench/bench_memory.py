"""Benchmark: memory per state of a check, the interpreter and the model excluded. Not a test.

In a fresh process it builds the system (design, world: the model's code and tables),
collects garbage, and takes the process's resident size as the baseline; then it runs
the check and takes the peak resident size (``ru_maxrss``). The difference divided by
the states explored is the search's cost per state: the visited set, the per-state
bookkeeping, the frontier and every transient (set resizes, the layer being built).
``--tracemalloc`` measures the same with Python's allocator tracing instead (several
times slower; the peak of traced allocations, so no allocator slack). Run::

    python bench/bench_memory.py --world bench/worlds/intel-default-perf1.toml
    python bench/bench_memory.py --world bench/worlds/intel-default-perf2.toml --checkpoint big.ckpt
    python bench/bench_memory.py --world intel-default --exact --tracemalloc
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
import tracemalloc

from vpmu.check.explore import Stats, check
from vpmu.check.system import System
from vpmu.check.world import resolve_world
from vpmu.designs import get_design


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--design", default="perf-stays-disabled")
    ap.add_argument("--world", default="intel-default", help="a world name or TOML file")
    ap.add_argument("--exact", action="store_true", help="exact mode (default: fingerprint mode)")
    ap.add_argument("--tracemalloc", action="store_true", help="measure with tracemalloc instead of RSS")
    ap.add_argument("--checkpoint", metavar="FILE", help="save the search to FILE (every 10 minutes, and on Ctrl-C)")
    ap.add_argument("--resume", metavar="FILE", help="continue from a checkpoint")
    ap.add_argument("--progress", type=float, default=60.0, metavar="SECONDS", help="print progress this often")
    args = ap.parse_args()
    system = System(get_design(args.design), resolve_world(args.world))
    gc.collect()
    base = rss_mib()
    if base > peak_mib() + 1:
        raise SystemExit("cannot take a baseline: the process's peak is already above its size")
    if args.tracemalloc:
        tracemalloc.start()

    def progress(st: Stats, width: int) -> None:
        print(
            f"  {st.states:>12,} states {st.transitions:>12,} transitions depth {st.depth:>5}  "
            f"{st.seconds:8.0f} s  layer {width:>9,}  RSS {rss_mib():8.0f} MiB",
            flush=True,
        )

    c0 = time.process_time()
    r = check(
        system,
        fingerprint=not args.exact,
        progress=progress,
        progress_every=args.progress,
        checkpoint=args.checkpoint,
        resume=args.resume,
    )
    cpu = time.process_time() - c0
    st = r.stats
    if args.tracemalloc:
        used = tracemalloc.get_traced_memory()[1] / 2**20
        how = "tracemalloc peak"
    else:
        used = peak_mib() - base
        how = f"peak RSS {peak_mib():.0f} MiB - baseline {base:.0f} MiB"
    cp = f", collision probability {r.collision_probability:.3g}" if r.collision_probability is not None else ""
    print(
        f"{args.design} on {system.world.name} ({'exact' if args.exact else 'fingerprint'}): {r.verdict}"
        f"{' (' + r.reason + ')' if r.reason else ''}{cp}\n"
        f"  {st.states:,} states, {st.transitions:,} transitions, depth {st.depth}, {st.seconds:.0f} s "
        f"(cpu {cpu:.0f} s), {st.rate:,.0f} states/s\n"
        f"  search memory {used:,.0f} MiB ({how}): {used * 2**20 / max(1, st.states):.1f} B/state"
    )


if __name__ == "__main__":
    main()
