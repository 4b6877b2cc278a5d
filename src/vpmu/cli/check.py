"""``vpmu check`` and ``vpmu ablate``: exhaustive exploration of a design on worlds."""

from __future__ import annotations

import argparse
import json
import sys
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
)
from vpmu.cli.executing import add_executor_args, executor_from_args
from vpmu.errors import VpmuError
from vpmu.report.progress import add_progress_args


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


def world_properties(args: argparse.Namespace, worlds: list[Any]) -> list[tuple[str, ...] | None]:
    """The properties to judge on each world: ``--property`` (those of the world's vendor), else the
    world's. No vacuous verdict: a ``--property`` that applies to none of the worlds, or a world none
    of them applies to, is refused before any work (status 2)."""
    from vpmu.check import properties as P

    if not args.property:
        return [None for _ in worlds]
    for name in args.property:
        P.get(name)
    out: list[tuple[str, ...] | None] = []
    for world in worlds:
        vendor = world.machine.vendor
        mine = tuple(dict.fromkeys(p for p in args.property if P.BY_NAME[p].vendor in ("", vendor)))
        if not mine:
            said = ", ".join(f"{p} ({P.BY_NAME[p].vendor} only)" for p in args.property)
            raise VpmuError(
                f"--property {said} does not apply to world {world.name!r} ({vendor}); allowed: a property "
                f"for {vendor} or both vendors (vpmu explain), or --vendor / --world of the property's vendor"
            )
        out.append(mine)
    return out


def cmd_check(args: argparse.Namespace) -> int:
    from vpmu.check.explore import INCOMPLETE, Result, Stats, check
    from vpmu.check.system import System
    from vpmu.report.progress import Progress
    from vpmu.report.text import Style, counterexample, summary_table, use_color
    from vpmu.report.trace import CHECK_SCHEMA

    design = design_from_args(args)
    worlds = worlds_from_args(args)
    if (args.checkpoint or args.resume) and len(worlds) != 1:
        flag = "--checkpoint" if args.checkpoint else "--resume"
        raise VpmuError(f"{flag} checks one world; {len(worlds)} worlds were given (pass one --world or --vendor)")
    if args.checkpoint_every <= 0:
        raise VpmuError(f"--checkpoint-every = {args.checkpoint_every} is not allowed; allowed: seconds > 0")
    if (args.checkpoint or args.resume) and (args.executor or args.partitions):
        raise VpmuError("--checkpoint/--resume save a local search; drop --executor and --partitions")
    props = world_properties(args, worlds)
    # Every world is built before any is explored: a world or design error costs no run.
    systems = [System(design, world, p) for world, p in zip(worlds, props, strict=True)]
    executor = executor_from_args(args)
    # --executor: each world is one run on the executor (or, with --partitions, one search split over it).
    ran = None if executor is None or args.partitions else _check_runs(executor, design, worlds, props, args)
    st = Style(use_color(sys.stdout))
    prog = Progress(args.progress)
    rows = []
    out_json: list[dict[str, Any]] = []
    status = 0
    interrupted = False
    for i, system in enumerate(systems):
        world = system.world
        if interrupted:
            result = Result(INCOMPLETE, Stats(), reason="interrupted (Ctrl-C) before this world started")
        elif ran is not None:
            result = ran[i]
        else:
            try:
                if args.partitions:
                    result = _partitioned(executor, system, args, prog.states(f"{design.name} on {world.name}"))
                else:
                    result = check(
                        system,
                        max_states=args.max_states,
                        progress=prog.states(f"{design.name} on {world.name}"),
                        fingerprint=args.fingerprint,
                        checkpoint=args.checkpoint,
                        checkpoint_every=args.checkpoint_every,
                        resume=args.resume,
                    )
            except KeyboardInterrupt:
                result = Result(INCOMPLETE, Stats(), reason="interrupted")
            prog.clear()
            if result.verdict == INCOMPLETE and result.reason == "interrupted":
                # Ctrl-C stops the whole command, not one world (explore.check returns on it).
                result.reason = "interrupted (Ctrl-C)"
                interrupted = True
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
    if interrupted:
        status = 3
        sys.stderr.write("vpmu: interrupted: the worlds not finished are reported incomplete\n")
    if executor is not None:
        executor.close()  # a Ray this command started
    if args.html:
        from vpmu.report.html import write_html

        done = write_html({"schema": CHECK_SCHEMA, "results": out_json}, args.html, "vpmu check")
        sys.stderr.write(f"vpmu: {done or f'no counterexample: {args.html} not written'}\n")
    if args.json:
        json.dump({"schema": CHECK_SCHEMA, "results": out_json}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("\n".join(summary_table(rows, st)))
        if design.vpmu == "legacy":
            from vpmu.check import properties as P

            print(st.dim("not checked, as they do not apply to the legacy vPMU:"))
            for name, why in P.MEDIATED_ONLY.items():
                print(st.dim(f"  {name}: {why}"))
    return status


def _check_runs(executor: Any, design: Any, worlds: list[Any], props: Any, args: argparse.Namespace) -> list[Any]:
    from vpmu.check.runs import CheckRun, check_run

    runs = [CheckRun(design, w, p, args.max_states, args.fingerprint) for w, p in zip(worlds, props, strict=True)]
    try:
        return list(executor.map(check_run, runs))
    finally:
        executor.close()


def _partitioned(executor: Any, system: Any, args: argparse.Namespace, progress: Any) -> Any:
    from vpmu.check.distributed import SystemSpec, check_partitioned, partition_group

    spec = SystemSpec(system.design, system.world, system.props)
    group = partition_group(executor, spec, args.partitions, args.fingerprint)
    try:
        return check_partitioned(
            system,
            group,
            max_depth=system.world.bounds.max_depth,
            max_states=args.max_states,
            progress=progress,
            fingerprint=args.fingerprint,
        )
    finally:
        group.close()


def cmd_ablate(args: argparse.Namespace) -> int:
    from vpmu.check.ablate import ablate
    from vpmu.report.progress import Progress

    design = design_from_args(args)
    worlds = worlds_from_args(args)
    prog = Progress(args.progress)

    def report(done: int, total: int, o: Any) -> None:
        prog.done(f"[{done}/{total}] {o.mutation} on {o.world}: {o.verdict}, {o.states} states")

    executor = executor_from_args(args)
    try:
        outcomes = ablate(
            design,
            args.function,
            worlds,
            max_states=args.max_states,
            jobs=args.jobs,
            progress=report,
            executor=executor,
        )
    except KeyboardInterrupt:
        # Ctrl-C stops every mutant: no partial table, whose missing rows could read as "holds".
        sys.stderr.write("vpmu: interrupted: the ablation is incomplete; no mutant's verdict is reported\n")
        return 3
    finally:
        if executor is not None:
            executor.close()
    print(f"ablation of {design.name}:{args.function} on {', '.join(w.name for w in worlds)}")
    ww = max([16] + [len(w.name) for w in worlds])
    wm = max([58] + [len(o.mutation) for o in outcomes])
    print(f"{'mutation':<{wm}} {'world':<{ww}} {'verdict':<10} {'property':<32} {'trace':>5}")
    baseline = {o.world: o for o in outcomes if o.mutation.startswith("(none")}
    for o in outcomes:
        prop = o.prop or (
            "not load-bearing in this world" if o.mutation.startswith("delete") and o.verdict == "holds" else ""
        )
        length = str(o.length) if o.verdict == "violated" else ""
        print(f"{o.mutation:<{wm}} {o.world:<{ww}} {o.verdict:<10} {prop:<32} {length:>5}".rstrip())
    for world, base in baseline.items():
        if base.verdict != "holds":
            print(
                f"note: {design.name} itself is {base.verdict} on {world} ({base.prop}); a mutant's verdict "
                "there may be that same violation, so it does not say whether the mutated step is load-bearing"
            )
    # Exit 3 if a check stopped at --max-states: that mutant's row has no verdict.
    return 3 if any(o.verdict == "incomplete" for o in outcomes) else 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="explore every interleaving and judge every state",
        description="Explore every reachable state of a design on one or more worlds and judge it against the "
        "properties (vpmu explain). Exit 0: all hold; 1: a violation; 2: bad input; 3: incomplete (a state cap, "
        "Ctrl-C); 70: internal error (a bug in vpmu).",
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
    p.add_argument("--max-states", type=positive_int, metavar="N", help="stop with 'incomplete' after N states")
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
    add_progress_args(p)
    p.add_argument("--no-trace", action="store_true", help="do not print counterexample tables")
    p.add_argument("--full", action="store_true", help="print every register after every step")
    p.add_argument(
        "--context", type=non_negative_int, default=0, metavar="N", help="print only the last N steps of a trace"
    )
    p.add_argument(
        "--html",
        type=output_path,
        action=Once,
        metavar="OUT",
        help="write the first counterexample as an HTML timeline (vpmu trace render)",
    )
    add_executor_args(p, jobs=False, partitions=True)
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
    p.add_argument(
        "--function", required=True, action=Once, help="the function to mutate (vpmu show DESIGN lists them)"
    )
    p.add_argument("--max-states", type=positive_int, metavar="N", help="stop each check after N states (incomplete)")
    add_progress_args(p)
    add_executor_args(p)
    p.set_defaults(handler=cmd_ablate)
