"""``vpmu scenarios``: the scenario catalog, expected against observed verdicts."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from functools import partial
from typing import Any

from vpmu.cli.common import RAW, Once, non_negative_int, output_path, positive_int
from vpmu.cli.executing import add_executor_args, executor_from_args
from vpmu.report.progress import add_progress_args

SCENARIOS_SCHEMA = "vpmu.scenarios/1"
#: The scenario runner's state cap (vpmu.scenarios.run.MAX_STATES, repeated so that --help needs no import).
MAX_STATES = 2_000_000


def cmd_scenarios(args: argparse.Namespace) -> int:
    from vpmu.check.executor import LocalExecutor
    from vpmu.check.world import default_exit_reason
    from vpmu.report.progress import Progress
    from vpmu.report.text import Style, counterexample, use_color
    from vpmu.report.trace import trace_rows
    from vpmu.scenarios import load_catalog, load_user_scenarios
    from vpmu.scenarios.run import attach, describe, interrupted, run, run_detached, summary, table

    catalog = load_user_scenarios(args.file, args.catalog) if args.file or args.catalog else load_catalog()
    chosen = catalog.select(args.ids)
    if args.kernel:
        from vpmu.cli.source import tree_design_name

        name = tree_design_name(args.kernel, register=True)
        sys.stderr.write(f"vpmu: the scenarios of design upstream run with the tree's design {name}\n")
        chosen = [replace(sc, design=name) if sc.design == "upstream" else sc for sc in chosen]
    executor = executor_from_args(args) or (LocalExecutor(args.jobs) if args.jobs else None)
    ran: list[Any] = []
    if executor is not None:  # every scenario is one run on the executor; shown in catalog order
        try:
            ran = [attach(o) for o in executor.map(partial(run_detached, max_states=args.max_states), chosen)]
        finally:
            executor.close()
    st = Style(use_color(sys.stdout))
    prog = Progress(args.progress)
    outcomes = []
    stopped = False
    for n, scenario in enumerate(chosen):
        if stopped:
            outcomes.append(interrupted(scenario, started=False))
            continue
        if executor is not None:
            o = ran[n]
        else:
            try:
                o = run(
                    scenario,
                    max_states=args.max_states,
                    progress=prog.states(f"scenario {scenario.id} ({n + 1}/{len(chosen)})"),
                )
            except KeyboardInterrupt:
                # Ctrl-C stops the whole command: this scenario and the rest are incomplete, none "differs".
                prog.clear()
                o, stopped = interrupted(scenario, started=True), True
            prog.clear()
        outcomes.append(o)
        if not stopped:
            prog.done(f"[{n + 1}/{len(chosen)}] scenario {scenario.id}: {o.observed}")
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
    differ = any(not o.matches and not o.interrupted for o in outcomes)
    if stopped:
        sys.stderr.write("vpmu: interrupted: the scenarios not finished are reported incomplete\n")
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
                if o.interrupted:
                    entry["incomplete"] = True
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
    return 3 if stopped else 1 if differ else 0


def _scenario_html(outcomes: list[Any], out: str) -> None:
    """--html: the timeline of the first chosen scenario that has a counterexample."""
    from vpmu.cli.check import check_entry
    from vpmu.report.html import write_html
    from vpmu.report.trace import CHECK_SCHEMA

    for o in outcomes:
        if o.verdict == "violated" and o.result is not None and o.system is not None:
            doc = {"schema": CHECK_SCHEMA, "results": [check_entry(o.system, o.result)]}
            sys.stderr.write(f"vpmu: scenario {o.scenario.id}: {write_html(doc, out, 'vpmu scenarios')}\n")
            return
    sys.stderr.write(f"vpmu: no counterexample among the scenarios run: {out} not written\n")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "scenarios",
        help="run the canned scenarios (App. C, hazards H1-H20, findings): expected vs observed",
        description="Run the scenario catalog (vpmu/scenarios/catalog/): each scenario is a design, a world and the "
        "verdict the checker must give (holds, a named property violated, or the world refused), some with a "
        "scripted run and the observations it must show. Prints one row per scenario, then the scenarios the model "
        "cannot express yet, with the reason. --file and --catalog run your own scenario files (same format, "
        "docs/scenarios.md). Exit 0: every verdict as expected; 1: one differs; 2: bad input (an unknown id, "
        "an invalid file); 3: interrupted (Ctrl-C); 70: internal error.",
        epilog="examples:\n  vpmu scenarios\n  vpmu scenarios --file my-scenario.toml --trace\n"
        "  vpmu scenarios S5 --trace\n  vpmu scenarios S1-seed-amd H1 --trace "
        "--context 12\n  vpmu scenarios --json",
        formatter_class=RAW,
    )
    p.add_argument("ids", nargs="*", metavar="ID", help="scenarios to run (default: all), e.g. S5 H3-late F1")
    p.add_argument(
        "--file",
        action="append",
        metavar="F.toml",
        help="run this scenario file instead of the packaged catalog (repeatable; docs/scenarios.md)",
    )
    p.add_argument(
        "--catalog", action="append", metavar="DIR", help="run every *.toml scenario in DIR instead (repeatable)"
    )
    p.add_argument(
        "--max-states",
        type=positive_int,
        default=MAX_STATES,
        metavar="N",
        help=f"a check that visits more states is incomplete (default {MAX_STATES:,})",
    )
    add_progress_args(p)
    p.add_argument("--trace", action="store_true", help="describe each scenario and print its counterexample")
    p.add_argument(
        "--context", type=non_negative_int, default=0, metavar="N", help="with --trace: only the last N steps"
    )
    p.add_argument(
        "--kernel",
        action=Once,
        metavar="DIR",
        help="run the scenarios of design upstream with the design of this kernel tree",
    )
    p.add_argument("--json", action="store_true", help="print results as JSON (schema vpmu.scenarios/1)")
    p.add_argument(
        "--html",
        type=output_path,
        action=Once,
        metavar="OUT",
        help="write the first counterexample among them as an HTML timeline",
    )
    add_executor_args(p, jobs_help="worker processes (default: the scenarios run in this process)")
    p.set_defaults(handler=cmd_scenarios)
