"""``vpmu sweep``: check designs across a grid of machine configurations and world bounds."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from vpmu.cli.common import RAW
from vpmu.cli.executing import add_executor_args, executor_from_args
from vpmu.errors import VpmuError

SWEEP_SCHEMA = "vpmu.sweep/1"
_FLAGS = {
    "vendor": "--vendor",
    "pmu_version": "--pmu-version",
    "ack": "--ack",
    "counters": "--counters",
    "exits": "--exits",
    "nmis": "--nmis",
    "perf_ops": "--perf-ops",
}
_HEAD = {"vendor": "vendor", "pmu_version": "pmu", "ack": "ack", "counters": "gp", "exits": "exits", "nmis": "nmis"}


def cmd_sweep(args: argparse.Namespace) -> int:
    from vpmu.check import sweep as S
    from vpmu.check.executor import LocalExecutor
    from vpmu.designs import get_design

    file = S.load_grid(args.grid) if args.grid else None
    flags: dict[str, tuple[Any, ...]] = {}
    for axis, flag in _FLAGS.items():
        given = getattr(args, axis)
        if given:
            flags[axis] = S.parse_axis(axis, [v for g in given for v in g.split(",")], flag)
    if args.max_states is not None and args.max_states < 1:
        raise VpmuError(f"--max-states = {args.max_states} is not allowed; allowed: an integer >= 1")
    designs = [get_design(d) for d in (args.design or (file.designs if file and file.designs else ("upstream",)))]
    grid = S.Grid(
        S.merge(file, flags),
        tuple(d.name for d in designs),
        tuple(args.world or (file.worlds if file else ())),
        args.max_states if args.max_states is not None else file.max_states if file else None,
        args.fingerprint or bool(file and file.fingerprint),
    )
    pts = S.points(grid)
    runs = [
        S.SweepRun(i * len(designs) + j, d, p.world, grid.max_states, grid.fingerprint)
        for i, p in enumerate(pts)
        for j, d in enumerate(designs)
    ]
    executor = executor_from_args(args) or LocalExecutor(args.jobs)
    tty = sys.stderr.isatty() and not args.json
    done = 0

    def progress(v: Any) -> None:
        nonlocal done
        done += 1
        if tty:
            sys.stderr.write(f"\r[{done}/{len(runs)}] {v.design}: {v.verdict}".ljust(60))

    try:
        verdicts = executor.map(S.sweep_run, runs, progress)
    finally:
        executor.close()
    if tty:
        sys.stderr.write("\r" + " " * 60 + "\r")
    by_point = [verdicts[i * len(designs) : (i + 1) * len(designs)] for i in range(len(pts))]
    if args.json:
        doc = {
            "schema": SWEEP_SCHEMA,
            "designs": [d.name for d in designs],
            "grid": {a: list(v) for a, v in grid.axes.items()},
            "max_states": grid.max_states,
            "fingerprint": grid.fingerprint,
            "points": [
                {"world": p.base, **p.values, "results": [v.to_json() for v in vs]}
                for p, vs in zip(pts, by_point, strict=True)
            ],
        }
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("\n".join(table(pts, by_point, [d.name for d in designs])))
        print(f"{len(pts)} grid points x {len(designs)} design(s) = {len(runs)} runs on {executor.describe()}")
    return _status(verdicts)


def table(pts: list[Any], by_point: list[list[Any]], designs: list[str]) -> list[str]:
    """One row per grid point, one verdict column per design."""
    head = ["world", *_HEAD.values(), "perf_ops", *designs]
    rows = [
        [p.base, *(str(p.values[a]) for a in _HEAD), str(p.values["perf_ops"]), *(v.cell() for v in vs)]
        for p, vs in zip(pts, by_point, strict=True)
    ]
    width = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)).rstrip() for r in [head, *rows]]
    errors = [(p, v) for p, vs in zip(pts, by_point, strict=True) for v in vs if v.verdict == "error"]
    for p, v in errors:
        lines.append(f"error: {v.design} on {p.base}" + (f" ({p.label})" if p.label else "") + f": {v.reason}")
    return lines


def _status(verdicts: list[Any]) -> int:
    """70 if the model faulted on a point, 2 if a point's guest cannot run on its machine, 1 if a design
    is violated somewhere, 3 if a run is incomplete, else 0."""
    if any(v.verdict == "error" and v.reason.startswith("internal:") for v in verdicts):
        return 70
    kinds = {v.verdict for v in verdicts}
    for kind, status in (("error", 2), ("violated", 1), ("incomplete", 3)):
        if kind in kinds:
            return status
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sweep",
        help="check designs across a grid of machines and world bounds; a table of verdicts",
        description="Check each design on every point of a grid: vendor x PMU version x the guest's ack placement "
        "x GP counters x asynchronous exits x unrelated NMIs x host perf operations, on each vendor's default world "
        "(or --world). An axis takes comma-separated values; an axis left out keeps the world's value. A grid file "
        "(--grid FILE.toml) gives the same as a [grid] table, plus designs, worlds, max_states, fingerprint; flags "
        "replace its axes. Each (point, design) is one exhaustive check, run on the executor. "
        "Exit 0: all hold; 1: a violation; 2: bad input or a point whose guest cannot run; 3: incomplete; "
        "70: the model faulted on a point.",
        epilog="examples:\n  vpmu sweep --design upstream --design perf-stays-disabled --exits 0,1 --nmis 0,1\n"
        "  vpmu sweep --vendor intel --pmu-version 2,4,5 --ack early,late --max-states 200000\n"
        "  vpmu sweep --grid grid.toml --json\n  vpmu sweep --grid grid.toml --executor ray://head:10001",
        formatter_class=RAW,
    )
    p.add_argument("--design", action="append", metavar="NAME", help="a built-in design (repeatable; default upstream)")
    p.add_argument("--world", action="append", metavar="NAME|FILE", help="a base world instead of a vendor's default")
    p.add_argument("--grid", metavar="FILE", help="a grid file (TOML): [grid] axes, designs, worlds, max_states")
    p.add_argument("--vendor", action="append", metavar="V,..", help="intel, amd")
    p.add_argument(
        "--pmu-version", action="append", metavar="V,..", help="Intel 1-6; AMD legacy, perfctrextcore, perfmonv2"
    )
    p.add_argument("--ack", action="append", metavar="A,..", help="where the guest PMI handler acks: early, mid, late")
    p.add_argument("--counters", action="append", metavar="N,..", help="general-purpose counters (1-8)")
    p.add_argument("--exits", action="append", metavar="N,..", help="asynchronous VM-exits (0-16)")
    p.add_argument("--nmis", action="append", metavar="N,..", help="unrelated NMIs (0-16)")
    p.add_argument("--perf-ops", action="append", metavar="N,..", help="host perf operations from another CPU (0-16)")
    p.add_argument("--max-states", type=int, metavar="N", help="stop each check after N states (incomplete)")
    p.add_argument("--fingerprint", action="store_true", help="remember visited states by fingerprint (vpmu check)")
    p.add_argument("--json", action="store_true", help=f"print the results as JSON (schema {SWEEP_SCHEMA})")
    add_executor_args(p)
    p.set_defaults(handler=cmd_sweep)
