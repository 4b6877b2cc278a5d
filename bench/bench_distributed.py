"""Benchmark: what the partitioned search (vpmu check --partitions N) costs per state. Not a test.

For a design and a world it runs the search split over N partitions in this process (the
protocol the Ray actors speak, without Ray) and reports, per state explored:

* the bytes of candidate messages one partition sends another (pickled, as Ray ships them);
* the bytes to and from the driver (each owner's discovery keys, the ids sent back);
* the partitions' memory (tracemalloc: what all partitions together hold at the end, and at
  the peak of a layer, less what they held after building their Systems), so one actor of N
  holds about 1/N of it, plus its interpreter and Ray's worker (about 100 MiB, not counted);

and, beside it, the time ratio of the partitioned search to the local explorer, measured in
one run, interleaved (tracemalloc off). With ``--ray`` it also times the search on Ray actors
(a local Ray with ``--partitions`` CPUs). Run::

    python bench/bench_distributed.py                                   # perf-stays-disabled, amd-default
    python bench/bench_distributed.py --world intel-default --partitions 4 --fingerprint
    python bench/bench_distributed.py --ray
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

from vpmu.check.distributed import SystemSpec, check_partitioned, local_group
from vpmu.check.explore import check
from vpmu.check.system import System
from vpmu.check.world import resolve_world
from vpmu.designs import get_design


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--design", default="perf-stays-disabled")
    ap.add_argument("--world", default="amd-default")
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--fingerprint", action="store_true")
    ap.add_argument("--ray", action="store_true", help="also time the search on Ray actors")
    a = ap.parse_args()
    design, world = get_design(a.design), resolve_world(a.world)
    spec = SystemSpec(design, world)
    mode = "fingerprint" if a.fingerprint else "exact"

    tracemalloc.start()
    group = local_group(spec, a.partitions, a.fingerprint)
    group.measure = True
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    r = check_partitioned(System(design, world), group, fingerprint=a.fingerprint)
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = r.stats.states
    print(f"{a.design} on {a.world}, {mode}, {a.partitions} partitions: {r.verdict}, {n} states, "
          f"{r.stats.transitions} transitions")
    print(f"  candidates between partitions: {group.sent_bytes / n:7.1f} B/state "
          f"({group.sent_bytes / r.stats.transitions:.1f} B/transition)")
    print(f"  to and from the driver:        {group.driver_bytes / n:7.1f} B/state")
    print(f"  partitions' memory, all N:     {(held - base) / n:7.1f} B/state held, {(peak - base) / n:.1f} at peak")
    print(f"  owned per partition:           {', '.join(str(p.owned()) for p in group.parts)}")

    t0 = time.process_time()
    local = check(System(design, world), fingerprint=a.fingerprint)
    t1 = time.process_time()
    check_partitioned(System(design, world), local_group(spec, a.partitions, a.fingerprint), fingerprint=a.fingerprint)
    t2 = time.process_time()
    assert local.stats.states == n
    print(f"  CPU time, partitioned in one process / local explorer: {(t2 - t1) / (t1 - t0):.2f}")
    if a.ray:
        from vpmu.check.executor import RayExecutor

        ex = RayExecutor(cpus=a.partitions)
        w0 = time.perf_counter()
        check(System(design, world), fingerprint=a.fingerprint)
        w1 = time.perf_counter()
        group_r = ex.partitions(spec, a.partitions, a.fingerprint)
        base_rss = ex.get([actor.peak_rss.remote() for actor in group_r.actors])
        w2 = time.perf_counter()
        rr = check_partitioned(System(design, world), group_r, fingerprint=a.fingerprint)
        w3 = time.perf_counter()
        rss = ex.get([actor.peak_rss.remote() for actor in group_r.actors])
        owned = ex.get([actor.owned.remote() for actor in group_r.actors])
        group_r.close()
        ex.close()
        assert rr.stats.states == n
        print(f"  wall time, {a.partitions} Ray actors / local explorer: {(w3 - w2) / (w1 - w0):.2f} "
              f"(actor start-up excluded: {w2 - w1:.1f} s)")
        per = ", ".join(f"{(r - b) / o:.0f}" for r, b, o in zip(rss, base_rss, owned, strict=True))
        print(f"  Ray actors' peak RSS growth per owned state: {per} B "
              f"(each actor started at {min(base_rss) / 2**20:.0f}-{max(base_rss) / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
