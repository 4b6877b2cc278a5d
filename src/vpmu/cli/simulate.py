"""``vpmu simulate``: one schedule of a world with real widths."""

from __future__ import annotations

import argparse
import json
from typing import Any

from vpmu.cli.common import (
    RAW,
    Once,
    add_design_world_args,
    design_from_args,
    non_negative_int,
    output_path,
    positive_int,
    worlds_from_args,
    write_output,
)
from vpmu.errors import VpmuError


def cmd_simulate(args: argparse.Namespace) -> int:
    from vpmu.check.simulate import Plan, simulate
    from vpmu.check.system import CONTEXT_LABEL, System
    from vpmu.report.trace import TRACE_SCHEMA, observation_rows, trace_rows

    exits, nmis = Plan.parse(args.exits, "--exits"), Plan.parse(args.nmis, "--nmis")
    perf_plan = Plan.parse(args.perf_ops, "--perf-ops")
    if args.max_steps < 1:
        raise VpmuError(f"--max-steps = {args.max_steps} is not allowed; allowed: an integer >= 1")
    design = design_from_args(args)
    worlds = worlds_from_args(args)
    if len(worlds) != 1:
        raise VpmuError("simulate runs one world: give --world or --vendor")
    world = worlds[0]
    system = System(design, world)
    r = simulate(
        system,
        exits,
        nmis,
        reason=args.exit_reason,
        seed=args.seed,
        max_steps=args.max_steps,
        perf_ops=perf_plan,
    )
    print(
        f"{design.name} on {world.name}: {len(r.records)} steps, {r.retired} guest instructions, "
        f"{r.exits} scheduled exits, {r.nmis} NMIs, {r.perf_ops} host perf IPIs, "
        f"{'finished' if r.finished else 'stopped (max steps)'}"
    )
    print("observations (seen / expected):")
    host_ok: dict[str, list[int]] = {}
    for kind, what, seen, expect in r.journal:
        if kind == "host count" and seen == expect:
            host_ok.setdefault(what, [0, 0])
            host_ok[what][0] += 1
            host_ok[what][1] += seen
        elif kind == "host count":
            print(f"  host perf read {what}: +{seen}, but the ghost saw {expect} host-mode events  MISMATCH")
        elif kind == "guest PMI":
            print("  guest PMI delivered" + ("" if expect else "  (none owed: spurious)"))
        else:
            print(f"  guest {what} = {seen:#x} (native {expect:#x})" + ("" if seen == expect else "  MISMATCH"))
    for name, (reads, total) in host_ok.items():
        print(f"  host perf event {name}: {reads} reads, {total} events counted, all equal to its host-mode events")
    if r.violations:
        print("violations:")
        for v in r.violations:
            print(f"  {v}")
    if args.trace or args.html:
        rows = trace_rows(system, r.states, r.records)
        doc = {
            "schema": TRACE_SCHEMA,
            "design": design.name,
            "world": world.name,
            "contexts": sorted(set(CONTEXT_LABEL.values())),
            "steps": rows,
            "observations": observation_rows(r.journal),
            "violations": list(r.violations),
        }
    if args.trace:
        write_output(args.trace, json.dumps(doc, indent=1) + "\n", "--trace")
        print(f"trace written to {args.trace}")
    if args.html:
        from vpmu.report.html import write_html

        print(write_html(doc, args.html, "vpmu simulate"))
    return 1 if r.violations else 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="run one schedule with real widths and report what each party observed",
        description="Run one schedule of a world: exits and NMIs scripted (every:K, at:A,B) or seeded random "
        "(random:P). Guest loops advance in bulk. Exit 1 if any observation differs from the reference.",
        epilog="examples:\n  vpmu simulate --world intel-long --exits every:10000\n"
        "  vpmu simulate --vendor amd --exits random:0.01 --nmis random:0.001 --seed 7 --trace t.json\n"
        "  vpmu simulate --vendor intel --exits every:3 --html sim.html",
        formatter_class=RAW,
    )
    add_design_world_args(p)
    p.add_argument("--exits", action=Once, default="none", metavar="PLAN", help="when asynchronous VM-exits happen")
    p.add_argument(
        "--exit-reason",
        default="",
        choices=("timer", "interrupt"),
        help="timer: VMX preemption timer (KVM fastpath; Intel only, the default there); "
        "interrupt: a host interrupt (full exit; the default on AMD)",
    )
    p.add_argument("--nmis", action=Once, default="none", metavar="PLAN", help="when unrelated NMIs arrive")
    p.add_argument(
        "--perf-ops",
        default="none",
        metavar="PLAN",
        help="when another CPU starts a host perf operation: the first one possible (open an event "
        "declared opened = false, else disable, then re-enable, the first host event)",
    )
    p.add_argument("--seed", type=non_negative_int, action=Once, default=0, help="seed for random plans")
    p.add_argument("--max-steps", type=positive_int, action=Once, default=1_000_000, help="stop after this many steps")
    p.add_argument(
        "--trace", type=output_path, action=Once, metavar="FILE", help="write the trace as JSON (schema vpmu.trace/1)"
    )
    p.add_argument(
        "--html",
        type=output_path,
        action=Once,
        metavar="OUT",
        help="write the trace as an HTML timeline (vpmu trace render)",
    )
    p.set_defaults(handler=cmd_simulate)
