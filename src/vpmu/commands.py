"""Subcommands of the ``vpmu`` CLI: argument definitions and handlers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vpmu.config import VENDORS, MachineConfig
from vpmu.errors import VpmuError

RAW = argparse.RawDescriptionHelpFormatter
SCENARIOS_SCHEMA = "vpmu.scenarios/1"


def _machine(args: argparse.Namespace) -> MachineConfig:
    if getattr(args, "config", None):
        cfg = MachineConfig.load(args.config)
        if args.vendor and args.vendor != cfg.vendor:
            raise VpmuError(
                f"--vendor {args.vendor} contradicts vendor = {cfg.vendor!r} in {args.config}; drop one of them"
            )
        return cfg
    return MachineConfig(vendor=args.vendor or "intel")


def cmd_info(args: argparse.Namespace) -> int:
    from vpmu.hw.layout import Layout
    from vpmu.hw.virt import Cpu

    cpu = Cpu(_machine(args), Layout())
    print("\n".join(cpu.describe()))
    return 0


# --- designs and worlds ------------------------------------------------------------------


def _design(args: argparse.Namespace) -> Any:
    from vpmu.check.design_file import load_design_file
    from vpmu.designs import get_design

    if getattr(args, "design_file", None):
        if args.design:
            raise VpmuError("give either --design or --design-file, not both")
        return load_design_file(args.design_file)
    return get_design(args.design or "upstream")


def _worlds(args: argparse.Namespace) -> list[Any]:
    from vpmu.check.world import DEFAULT_WORLDS, resolve_world

    if args.world:
        worlds = [resolve_world(w) for w in args.world]
        if args.vendor:
            worlds = [w for w in worlds if w.machine.vendor == args.vendor]
            if not worlds:
                raise VpmuError(f"none of the worlds given is an {args.vendor} world")
        return worlds
    vendors = [args.vendor] if args.vendor else list(VENDORS)
    return [resolve_world(DEFAULT_WORLDS[v]) for v in vendors]


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
    design = _design(args)
    worlds = _worlds(args)
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


def cmd_show(args: argparse.Namespace) -> int:
    from vpmu.check.system import System
    from vpmu.check.world import DEFAULT_WORLDS, resolve_world
    from vpmu.designs import DESIGNS
    from vpmu.kernel.lang import listing

    if args.design_file and args.design is not None:
        # `vpmu show --design-file F FUNCTION`: the one positional names the function.
        if args.function is not None:
            raise VpmuError("give either a design name or --design-file, not both")
        args.function, args.design = args.design, None
    if args.design is None and not args.design_file:
        for d in DESIGNS.values():
            print(f"{d.name:<22} {d.summary}")
        return 0
    design = _design(args)
    world = resolve_world(args.world or DEFAULT_WORLDS[args.vendor or "intel"])
    system = System(design, world)
    fns = system.functions
    if args.function is None:
        print(f"{design.name}: {design.summary}")
        if design.base:
            print(f"  derived from {design.base}")
        for e in design.edits:
            print(f"  edit: {e.describe()}")
        if design.source:
            print(f"  source: {design.source}")
        print(f"functions ({world.name}):")
        for name, fn in fns.items():
            print(f"  {name:<32} {len(fn.steps):>3} steps  {fn.doc}")
        return 0
    if args.function not in fns:
        raise VpmuError(f"design {design.name!r} has no function {args.function!r}; functions: {', '.join(fns)}")
    fn = fns[args.function]
    print(f"{fn.name}  ({design.name}, {world.name}){'  [' + fn.source + ']' if fn.source else ''}")
    if fn.doc:
        print(f"  {fn.doc}")
    print("\n".join(listing(fn)))
    return 0


def cmd_designs(args: argparse.Namespace) -> int:
    from vpmu.designs import DESIGNS

    for d in DESIGNS.values():
        base = f" (from {d.base})" if d.base else ""
        print(f"{d.name:<22} {d.summary}{base}")
        if args.verbose:
            print(f"{'':<22} source: {d.source}")
            for e in d.edits:
                print(f"{'':<22} edit: {e.describe()}")
    return 0


def cmd_worlds(args: argparse.Namespace) -> int:
    from vpmu.check.world import builtin_worlds, resolve_world

    worlds = [resolve_world(args.world)] if args.world else list(builtin_worlds().values())
    for w in worlds:
        m = w.machine
        print(
            f"{w.name}  ({m.vendor}, PMU {m.pmu_version}, {m.num_gp} GP x {m.gp_width} bits"
            + (f", {m.num_fixed} fixed" if m.num_fixed else "")
            + ")"
        )
        if args.world or args.verbose:
            print(f"  {w.description}")
            print(
                "  host events: "
                + (", ".join(f"{e.name} ({e.event}, period {e.period})" for e in w.host_events) or "none")
            )
            print("  guest program:")
            for line in w.guest.program:
                print(f"    {line}")
            print(f"  guest PMI handler: {w.guest.ack} ack, enables {w.guest.enable}, rearm {list(w.guest.rearm)}")
            b = w.bounds
            print(f"  bounds: {b.exits} async exits ({', '.join(b.exit_reasons)}), {b.nmis} unrelated NMIs")
            print(f"  properties: {', '.join(w.enabled_properties())}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from vpmu.check import properties as P

    props = [P.get(args.property)] if args.property else list(P.PROPERTIES)
    for p in props:
        vendor = f" ({p.vendor} only)" if p.vendor else ""
        print(f"{p.name}{vendor}\n  {p.description}\n  source: {p.source}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from vpmu.check.simulate import Plan, simulate
    from vpmu.check.system import CONTEXT_LABEL, System
    from vpmu.report.trace import TRACE_SCHEMA, trace_rows

    exits, nmis = Plan.parse(args.exits, "--exits"), Plan.parse(args.nmis, "--nmis")
    perf_plan = Plan.parse(args.perf_ops, "--perf-ops")
    if args.max_steps < 1:
        raise VpmuError(f"--max-steps = {args.max_steps} is not allowed; allowed: an integer >= 1")
    design = _design(args)
    worlds = _worlds(args)
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
        }
    if args.trace:
        Path(args.trace).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        print(f"trace written to {args.trace}")
    if args.html:
        from vpmu.report.html import write_html

        print(write_html(doc, args.html, "vpmu simulate"))
    return 1 if r.violations else 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from vpmu.check.ablate import ablate

    design = _design(args)
    worlds = _worlds(args)
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


def cmd_diff(args: argparse.Namespace) -> int:
    from vpmu.check.system import System
    from vpmu.check.world import DEFAULT_WORLDS, resolve_world
    from vpmu.designs import get_design
    from vpmu.report.diff import diff_function, diff_path, path_texts

    a, b = get_design(args.a), get_design(args.b)
    world = resolve_world(args.world or DEFAULT_WORLDS[args.vendor or "intel"])
    sa, sb = System(a, world), System(b, world)
    print(f"{a.name} -> {b.name} ({world.name}); + only in {b.name}, - only in {a.name}, ~ moved, * changed")
    same = True
    for name in sorted(set(sa.functions) | set(sb.functions)):
        lines = diff_function(sa.functions.get(name), sb.functions.get(name))
        if lines:
            same = False
            print(f"{name}:")
            print("\n".join(lines))
    for fn in ("kvm_mediated_pmu_load", "kvm_mediated_pmu_put"):
        pa, pb = path_texts(sa.task, fn), path_texts(sb.task, fn)
        if pa != pb:
            print(f"{fn}, inlined (what runs, in order):")
            print("\n".join(diff_path(pa, pb)))
    if same:
        print("no difference")
    return 0


def cmd_scenarios(args: argparse.Namespace) -> int:
    from vpmu.check.world import default_exit_reason
    from vpmu.report.text import Style, counterexample, use_color
    from vpmu.report.trace import trace_rows
    from vpmu.scenarios import load_catalog
    from vpmu.scenarios.run import describe, run, summary, table

    if args.context < 0:
        raise VpmuError(f"--context = {args.context} is not allowed; allowed: an integer >= 0")
    chosen = load_catalog().select(args.ids)
    st = Style(use_color(sys.stdout))
    outcomes = []
    for scenario in chosen:
        o = run(scenario)
        outcomes.append(o)
        if args.trace and not args.json:
            print("\n".join(describe(o)))
            if o.verdict == "violated" and o.result is not None and o.system is not None:
                print(st.bold(f"counterexample ({len(o.result.records)} steps)"))
                print("\n".join(counterexample(o.system, o.result, st, last=args.context)))
            elif o.verdict == "holds":
                print(
                    f"holds: {o.states} states, {o.transitions} transitions, depth {o.depth} "
                    "(every interleaving within the world's bounds); no counterexample to show"
                )
            elif o.message and o.verdict != "not expressible":
                print(f"{o.verdict}: {o.message}")
            if o.scenario.script is not None:
                sc = o.scenario.script
                expected = [("step", x) for x in sc.steps] + [("journal", x) for x in sc.journal]
                expected += [("absent", x) for x in sc.absent]
                vendor = o.scenario.world.machine.vendor if o.scenario.world else "intel"
                reason = f" ({sc.exit_reason or default_exit_reason(vendor)})" if sc.exits != "none" else ""
                head = f"scripted run (exits {sc.exits}{reason}, NMIs {sc.nmis}): {o.script_steps} steps"
                if o.script_problems:
                    print(f"{head}; observations that differ:")
                    print("\n".join(f"  {p}" for p in o.script_problems))
                else:
                    how = "steps and journal in order, absent lines nowhere"
                    print(f"{head}; all {len(expected)} expected observations as stated ({how})")
                    print("\n".join(f"  {kind:<8} {x}" for kind, x in expected))
            print()
    differ = any(not o.matches for o in outcomes)
    if args.html:
        _scenario_html(outcomes, args.html)
    if args.json:
        doc = []
        for o in outcomes:
            s = o.scenario
            entry: dict[str, Any] = {
                "id": s.id,
                "title": s.title,
                "hazards": list(s.hazards),
                "source": s.source,
                "note": s.note,
                "expressible": s.expressible,
            }
            if not s.expressible:
                entry["reason"] = s.reason
            else:
                entry.update(
                    design=s.design,
                    world=s.world_name,
                    vendor=s.vendor,
                    expected={
                        "verdict": s.verdict,
                        "property": s.prop or None,
                        "properties": list(s.properties) or None,
                        "restricted": s.restricted or None,
                    },
                    observed={
                        "verdict": o.verdict,
                        "property": o.prop or None,
                        "message": o.message,
                        "states": o.states,
                        "seconds": round(o.seconds, 3),
                        "script_problems": o.script_problems if s.script is not None else None,
                    },
                    matches=o.matches,
                )
                if args.trace and o.verdict == "violated" and o.result is not None and o.system is not None:
                    entry["trace"] = trace_rows(o.system, o.result.states, o.result.records)
            doc.append(entry)
        json.dump({"schema": SCENARIOS_SCHEMA, "scenarios": doc}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif not args.trace or len(outcomes) > 1:
        print("\n".join(table(outcomes, st)))
        print(summary(outcomes))
    else:
        print(summary(outcomes))
    return 1 if differ else 0


def _scenario_html(outcomes: list[Any], out: str) -> None:
    """--html: the timeline of the first chosen scenario that has a counterexample."""
    from vpmu.report.html import write_html
    from vpmu.report.trace import CHECK_SCHEMA

    for o in outcomes:
        if o.verdict == "violated" and o.result is not None and o.system is not None:
            doc = {"schema": CHECK_SCHEMA, "results": [check_entry(o.system, o.result)]}
            sys.stderr.write(f"vpmu: scenario {o.scenario.id}: {write_html(doc, out, 'vpmu scenarios')}\n")
            return
    sys.stderr.write(f"vpmu: no counterexample among the scenarios run: {out} not written\n")


def _common_design_world(p: argparse.ArgumentParser, many_worlds: bool = True) -> None:
    p.add_argument("--design", help="a built-in design (vpmu designs); default upstream")
    p.add_argument("--design-file", metavar="FILE", help="a design file (.toml edits or .py)")
    p.add_argument(
        "--world",
        action="append" if many_worlds else "store",
        metavar="NAME|FILE",
        help="a built-in world (vpmu worlds) or a world TOML file" + ("; repeatable" if many_worlds else ""),
    )
    p.add_argument("--vendor", choices=VENDORS, help="only the default world of this vendor")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="explore every interleaving and judge every state",
        description="Explore every reachable state of a design on one or more worlds and judge it against the "
        "properties (vpmu explain). Exit 0: all hold; 1: a violation; 2: bad input; 3: incomplete.",
        epilog="examples:\n  vpmu check\n  vpmu check --design seed-assert --vendor amd\n"
        "  vpmu check --world my-world.toml --property no-warn --json\n"
        "  vpmu check --design lvtpc-before-clear --vendor intel --html h1.html\n"
        "  vpmu check --world big-world.toml --fingerprint",
        formatter_class=RAW,
    )
    _common_design_world(p)
    p.add_argument("--property", action="append", metavar="NAME", help="check only this property (repeatable)")
    p.add_argument("--max-states", type=int, metavar="N", help="stop with 'incomplete' after N states")
    p.add_argument(
        "--fingerprint",
        action="store_true",
        help="remember visited states by a 64-bit fingerprint: far less memory; 'holds' then comes with the "
        "estimated probability that a fingerprint collision hid a state",
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
        "show",
        help="list designs, a design's functions, or a function's steps",
        description="Without arguments: the designs. With a design: its functions (as built for a world). "
        "With a function: its labelled steps, as kernel-like code.",
        epilog="examples:\n  vpmu show\n  vpmu show upstream kvm_mediated_pmu_load\n"
        "  vpmu show v5 perf_load_guest_context --vendor amd",
        formatter_class=RAW,
    )
    p.add_argument("design", nargs="?", help="design name")
    p.add_argument("function", nargs="?", help="function name")
    p.add_argument("--design-file", metavar="FILE", help="show a design file instead of a built-in design")
    p.add_argument("--world", metavar="NAME|FILE", help="build for this world (default: the vendor's default)")
    p.add_argument("--vendor", choices=VENDORS, help="build for this vendor's default world")
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser(
        "designs",
        help="list the built-in designs",
        description="List the built-in designs.",
        epilog="examples:\n  vpmu designs\n  vpmu designs -v",
        formatter_class=RAW,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="also print sources and edits")
    p.set_defaults(handler=cmd_designs)

    p = sub.add_parser(
        "worlds",
        help="list the built-in worlds, or describe one",
        description="List the built-in worlds, or describe one (built-in name or TOML file).",
        epilog="examples:\n  vpmu worlds\n  vpmu worlds intel-default",
        formatter_class=RAW,
    )
    p.add_argument("world", nargs="?", help="a world to describe")
    p.add_argument("-v", "--verbose", action="store_true", help="describe every world")
    p.set_defaults(handler=cmd_worlds)

    p = sub.add_parser(
        "explain",
        help="describe a property and its source",
        description="Describe a property (or all) and cite its source.",
        epilog="examples:\n  vpmu explain\n  vpmu explain lvtpc-route-consistent",
        formatter_class=RAW,
    )
    p.add_argument("property", nargs="?", help="property name")
    p.set_defaults(handler=cmd_explain)

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
    _common_design_world(p)
    p.add_argument("--exits", default="none", metavar="PLAN", help="when asynchronous VM-exits happen")
    p.add_argument(
        "--exit-reason",
        default="",
        choices=("timer", "interrupt"),
        help="timer: VMX preemption timer (KVM fastpath; Intel only, the default there); "
        "interrupt: a host interrupt (full exit; the default on AMD)",
    )
    p.add_argument("--nmis", default="none", metavar="PLAN", help="when unrelated NMIs arrive")
    p.add_argument(
        "--perf-ops",
        default="none",
        metavar="PLAN",
        help="when another CPU starts a host perf operation: the first one possible (open an event "
        "declared opened = false, else disable, then re-enable, the first host event)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for random plans")
    p.add_argument("--max-steps", type=int, default=1_000_000, help="stop after this many steps")
    p.add_argument("--trace", metavar="FILE", help="write the trace as JSON (schema vpmu.trace/1)")
    p.add_argument("--html", metavar="OUT", help="write the trace as an HTML timeline (vpmu trace render)")
    p.set_defaults(handler=cmd_simulate)

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
    _common_design_world(p)
    p.add_argument("--function", required=True, help="the function to mutate (vpmu show DESIGN lists them)")
    p.add_argument("--max-states", type=int, metavar="N", help="stop each check after N states (incomplete)")
    p.add_argument("--jobs", type=int, default=0, metavar="N", help="worker processes (default: one per core)")
    p.set_defaults(handler=cmd_ablate)

    p = sub.add_parser(
        "diff",
        help="step-level difference between two designs",
        description="Per function: inserted, deleted, moved and changed steps; then the inlined load and put "
        "paths side by side, so a step that moved between functions shows where it now runs.",
        epilog="examples:\n  vpmu diff v5 upstream\n  vpmu diff upstream seed-assert --vendor amd",
        formatter_class=RAW,
    )
    p.add_argument("a", help="the first design")
    p.add_argument("b", help="the second design")
    p.add_argument("--world", metavar="NAME|FILE", help="build both for this world")
    p.add_argument("--vendor", choices=VENDORS, help="build both for this vendor's default world")
    p.set_defaults(handler=cmd_diff)

    p = sub.add_parser(
        "scenarios",
        help="run the canned scenarios (App. C, hazards H1-H20, findings): expected vs observed",
        description="Run the scenario catalog (vpmu/scenarios/catalog/): each scenario is a design, a world and the "
        "verdict the checker must give (holds, a named property violated, or the world refused), some with a "
        "scripted run and the observations it must show. Prints one row per scenario, then the scenarios the model "
        "cannot express yet, with the reason. Exit 0: every verdict as expected; 1: one differs; 2: unknown id.",
        epilog="examples:\n  vpmu scenarios\n  vpmu scenarios S5 --trace\n  vpmu scenarios S1-seed-amd H1 --trace "
        "--context 12\n  vpmu scenarios --json",
        formatter_class=RAW,
    )
    p.add_argument("ids", nargs="*", metavar="ID", help="scenarios to run (default: all), e.g. S5 H3-late F1")
    p.add_argument("--trace", action="store_true", help="describe each scenario and print its counterexample")
    p.add_argument("--context", type=int, default=0, metavar="N", help="with --trace: only the last N steps")
    p.add_argument("--json", action="store_true", help="print results as JSON (schema vpmu.scenarios/1)")
    p.add_argument("--html", metavar="OUT", help="write the first counterexample among them as an HTML timeline")
    p.set_defaults(handler=cmd_scenarios)

    p = sub.add_parser(
        "info",
        help="print the machine a config describes",
        description="Print the machine a config describes: MSRs present, counters, widths, features.",
        epilog="examples:\n  vpmu info\n  vpmu info --vendor amd\n  vpmu info --config machine.toml",
        formatter_class=RAW,
    )
    p.add_argument("--config", metavar="FILE", help="machine TOML file ([machine] table)")
    p.add_argument("--vendor", choices=VENDORS, help="vendor (default intel, or the config's)")
    p.set_defaults(handler=cmd_info)
