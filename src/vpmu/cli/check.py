"""``vpmu check`` and ``vpmu ablate``: exhaustive exploration of a design on worlds."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from vpmu.cli.common import RAW, add_design_world_args, design_from_args, worlds_from_args
from vpmu.errors import VpmuError


def check_entry(system: Any, result: Any) -> dict[str, Any]:
    """One result of a vpmu.check/1 document (docs/json-schema.md)."""
    from vpmu.report.trace import trace_rows

    entry: dict[str, Any] = {
        "design": system.design.name,
        "world": system.world.name,
        "vendor": system.world.machine.vendor,
        "verdict": result.verdict,
        "states": result.stats.states,
        "transitions": result.stats.transitions,
        "depth": result.stats.depth,
        "seconds": round(result.stats.seconds, 3),
        "properties": list(system.props),
        "violation": None,
    }
    if result.reason:
        entry["incomplete_reason"] = result.reason
    if result.collision_probability is not None:
        entry["collision_probability"] = result.collision_probability
    if result.verdict == "violated":
        entry["violation"] = {
            "property": result.prop,
            "description": result.description,
            "source": result.source,
            "message": result.message,
            "trace": trace_rows(system, result.states, result.records),
        }
    return entry


def cmd_check(args: argparse.Namespace) -> int:
    from vpmu.check import properties as P
    from vpmu.check.explore import check
    from vpmu.check.system import System
    from vpmu.report.text import Style, counterexample, progress_printer, summary_table, use_color
    from vpmu.report.trace import CHECK_SCHEMA

    for name in args.property or []:
        P.get(name)
    if args.max_states is not None and args.max_states < 1:
        raise VpmuError(f"--max-states = {args.max_states} is not allowed; allowed: an integer >= 1")
    design = design_from_args(args)
    worlds = worlds_from_args(args)
    if (args.checkpoint or args.resume) and len(worlds) != 1:
        flag = "--checkpoint" if args.checkpoint else "--resume"
        raise VpmuError(f"{flag} checks one world; {len(worlds)} worlds were given (pass one --world or --vendor)")
    if args.checkpoint_every <= 0:
        raise VpmuError(f"--checkpoint-every = {args.checkpoint_every} is not allowed; allowed: seconds > 0")
    st = Style(use_color(sys.stdout))
    rows = []
    out_json: list[dict[str, Any]] = []
    status = 0
    for world in worlds:
        props = tuple(args.property) if args.property else None
        system = System(design, world, props)
        tty = sys.stderr.isatty() and not args.json
        result = check(
            system,
            max_states=args.max_states,
            progress=progress_printer() if tty else None,
            fingerprint=args.fingerprint,
            checkpoint=args.checkpoint,
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
        )
        if tty:
            sys.stderr.write("\r" + " " * 90 + "\r")
        rows.append((design.name, world.name, world.machine.vendor, result))
        if result.verdict == "violated":
            status = 1
        elif result.verdict == "incomplete" and status == 0:
            status = 3
        out_json.append(check_entry(system, result))
        if not args.json and result.verdict == "violated" and not args.no_trace:
            print(st.bold(f"{design.name} on {world.name}: counterexample ({len(result.records)} steps)"))
            print("\n".join(counterexample(system, result, st, last=args.context, full=args.full)))
            print()
    if args.html:
        from vpmu.report.html import write_html

        done = write_html({"schema": CHECK_SCHEMA, "results": out_json}, args.html, "vpmu check")
        sys.stderr.write(f"vpmu: {done or f'no counterexample: {args.html} not written'}\n")
    if args.json:
        json.dump({"schema": CHECK_SCHEMA, "results": out_json}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("\n".join(summary_table(rows, st)))
    return status


def cmd_ablate(args: argparse.Namespace) -> int:
    from vpmu.check.ablate import ablate

    design = design_from_args(args)
    worlds = worlds_from_args(args)
    outcomes = ablate(design, args.function, worlds, max_states=args.max_states, jobs=args.jobs)
    print(f"ablation of {design.name}:{args.function} on {', '.join(w.name for w in worlds)}")
    print(f"{'mutation':<58} {'world':<16} {'verdict':<10} {'property':<32} {'trace':>5}")
    baseline = {o.world: o for o in outcomes if o.mutation.startswith("(none")}
    for o in outcomes:
        prop = o.prop or (
            "not load-bearing in this world" if o.mutation.startswith("delete") and o.verdict == "holds" else ""
        )
        length = str(o.length) if o.verdict == "violated" else ""
        print(f"{o.mutation:<58} {o.world:<16} {o.verdict:<10} {prop:<32} {length:>5}".rstrip())
    for world, base in baseline.items():
        if base.verdict != "holds":
            print(
                f"note: {design.name} itself is {base.verdict} on {world} ({base.prop}); a mutant's verdict "
                "there may be that same violation, so it does not say whether the mutated step is load-bearing"
            )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="explore every interleaving and judge every state",
        description="Explore every reachable state of a design on one or more worlds and judge it against the "
        "properties (vpmu explain). Exit 0: all hold; 1: a violation; 2: bad input; 3: incomplete.",
        epilog="examples:\n  vpmu check\n  vpmu check --design seed-assert --vendor amd\n"
        "  vpmu check --world my-world.toml --property no-warn --json\n"
        "  vpmu check --design lvtpc-before-clear --vendor intel --html h1.html\n"
        "  vpmu check --world big-world.toml --fingerprint\n"
        "  vpmu check --world big-world.toml --fingerprint --checkpoint big.ckpt   # Ctrl-C, then:\n"
        "  vpmu check --world big-world.toml --fingerprint --checkpoint big.ckpt --resume big.ckpt",
        formatter_class=RAW,
    )
    add_design_world_args(p)
    p.add_argument("--property", action="append", metavar="NAME", help="check only this property (repeatable)")
    p.add_argument("--max-states", type=int, metavar="N", help="stop with 'incomplete' after N states")
    p.add_argument(
        "--fingerprint",
        action="store_true",
        help="remember visited states by a 64-bit fingerprint: far less memory; 'holds' then comes with the "
        "estimated probability that a fingerprint collision hid a state",
    )
    p.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="save the search to FILE every --checkpoint-every seconds and when it stops incomplete (Ctrl-C, "
        "--max-states); continue it with --resume FILE",
    )
    p.add_argument(
        "--checkpoint-every", type=float, default=600.0, metavar="SECONDS", help="seconds between saves (default 600)"
    )
    p.add_argument(
        "--resume",
        metavar="FILE",
        help="continue a search saved by --checkpoint (same design, world, properties and --fingerprint); the "
        "result is that of an uninterrupted run",
    )
    p.add_argument("--json", action="store_true", help="print results as JSON (schema vpmu.check/1)")
    p.add_argument("--no-trace", action="store_true", help="do not print counterexample tables")
    p.add_argument("--full", action="store_true", help="print every register after every step")
    p.add_argument("--context", type=int, default=0, metavar="N", help="print only the last N steps of a trace")
    p.add_argument(
        "--html", metavar="OUT", help="write the first counterexample as an HTML timeline (vpmu trace render)"
    )
    p.set_defaults(handler=cmd_check)

    p = sub.add_parser(
        "ablate",
        help="which steps of a function are load-bearing: delete each, swap neighbours, check",
        description="For each step of FUNCTION, check the design with that step deleted; for each adjacent pair, "
        "the design with the two swapped. A deletion that violates nothing is reported as not load-bearing in "
        "these worlds. Mutants run in parallel processes when more than one core is available.",
        epilog="examples:\n  vpmu ablate --function kvm_mediated_pmu_load\n"
        "  vpmu ablate --design perf-stays-disabled --function kvm_mediated_pmu_load --vendor amd",
        formatter_class=RAW,
    )
    add_design_world_args(p)
    p.add_argument("--function", required=True, help="the function to mutate (vpmu show DESIGN lists them)")
    p.add_argument("--max-states", type=int, metavar="N", help="stop each check after N states (incomplete)")
    p.add_argument("--jobs", type=int, default=0, metavar="N", help="worker processes (default: one per core)")
    p.set_defaults(handler=cmd_ablate)
