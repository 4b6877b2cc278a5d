"""``vpmu conform``: the public PMU test suites as guest programs, native vs virtualized.

Exit status: 0 every run passes (``--mutations``: every mutation is caught by
some case or is a documented gap of the public suites), 1 a failure, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from vpmu.cli.common import Once, output_path, write_output
from vpmu.cli.executing import add_executor_args, executor_from_args
from vpmu.errors import VpmuError
from vpmu.report.progress import add_progress_args

if TYPE_CHECKING:
    from vpmu.conform.runner import CaseRun
    from vpmu.conform.suites import Case
    from vpmu.report.text import Style

RAW = argparse.RawDescriptionHelpFormatter

#: Mutations no public case catches, and why (docs/fidelity.md, "Gaps of the public suites").
KNOWN_GAPS: dict[str, str] = {
    "put-keeps-eventsel": (
        "the guest cannot see selectors left in hardware after put: the next load rewrites every counter that "
        "differs from pmc->counter and clears stale status bits (H10), so only the host sees the damage (its "
        "counters and PMIs: clean-after-put, host-pmi-accounting in vpmu check)"
    ),
}


def _select(args: argparse.Namespace) -> list[Case]:
    from vpmu.conform.runner import cases_by_id
    from vpmu.conform.suites import SUITES

    cases = list(cases_by_id().values())
    if args.vendor:
        cases = [c for c in cases if c.vendor == args.vendor]
    if args.suite:
        for s in args.suite:
            if s not in SUITES:
                raise VpmuError(f"unknown suite {s!r}; suites: {', '.join(SUITES)}")
        cases = [c for c in cases if c.suite in args.suite]
    if args.case:
        chosen = []
        for name in args.case:
            hit = [c for c in cases if c.id == name or c.name == name or name in c.id]
            if not hit:
                raise VpmuError(f"no case matches {name!r}; vpmu conform --list shows them")
            chosen += [c for c in hit if c not in chosen]
        cases = chosen
    if not cases:
        raise VpmuError("no case selected")
    return cases


def _schedules(args: argparse.Namespace) -> list[str] | None:
    from vpmu.conform.runner import Schedule

    if not args.schedule:
        return None
    return [Schedule.parse(s).name for s in args.schedule]


def _design(name: str | None) -> str:
    from vpmu.designs import get_design

    return get_design(name or "upstream").name


def _cell(runs: Sequence[CaseRun], st: Style) -> str:
    if not runs:
        return ""
    if all(r.skipped for r in runs):
        return st.dim("n/a")
    bad = [r for r in runs if not r.skipped and r.verdict != "pass"]
    if not bad:
        n = sum(1 for r in runs if not r.skipped)
        return st.green("pass") + (f" x{n}" if n > 1 else "")
    word = "F1" if all(r.note for r in bad) else bad[0].verdict
    return st.red(f"{word} {len(bad)}/{len(runs)}")


COLUMNS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("native", lambda n: True),
    ("none", lambda n: n == "none"),
    ("every:K", lambda n: n.startswith("every:") and not n.endswith(":timer")),
    ("fastpath", lambda n: n.endswith(":timer")),
    ("steps", lambda n: n == "steps"),
    ("random", lambda n: n.startswith("random:") and not n.endswith(":no-nmi")),
    ("random no-nmi", lambda n: n.endswith(":no-nmi")),
)


def _visible_len(s: str) -> int:
    import re

    return len(re.sub(r"\033\[[0-9;]*m", "", s))


def _pad(s: str, w: int) -> str:
    return s + " " * max(0, w - _visible_len(s))


def table(results: Sequence[CaseRun], st: Style, verbose: bool) -> list[str]:
    by_case: dict[str, list[CaseRun]] = {}
    for r in results:
        by_case.setdefault(r.case, []).append(r)
    width = max(len(c) for c in by_case) + 2
    out: list[str] = []
    if verbose:
        out.append(
            st.bold(
                f"{'case':<{width}}{'schedule':<22}{'verdict':<11}{'runs':>6}{'exits':>8}{'NMIs':>6}{'IPIs':>6}{'seconds':>9}"
            )
        )
        for r in results:
            extra = f"  {r.skipped}" if r.skipped else ""
            out.append(
                f"{r.case:<{width}}{r.schedule:<22}{r.verdict:<11}{r.runs:>6}{r.exits:>8}{r.nmis:>6}{r.perf_ops:>6}"
                f"{r.seconds:>9.2f}{extra}"
            )
        return out
    cols = [c for c, test in COLUMNS if any(test(r.schedule) for r in results)]
    head = f"{'case':<{width}}" + "".join(f"{c:<{8 if c == 'native' else 16}}" for c in cols) + f"{'seconds':>8}"
    out.append(st.bold(head))
    for case, runs in by_case.items():
        line = f"{case:<{width}}"
        for c, test in COLUMNS:
            if c == "native":
                bad = any(not r.native_ok for r in runs)
                line += _pad(st.red("CASE") if bad else st.green("pass"), 8)
            elif c in cols:
                line += _pad(_cell([r for r in runs if test(r.schedule)], st), 16)
        line += f"{sum(r.seconds for r in runs):>8.2f}"
        out.append(line)
    return out


def failures(results: Sequence[CaseRun], st: Style) -> list[str]:
    out: list[str] = []
    for r in results:
        if r.skipped or r.verdict == "pass":
            continue
        out.append(st.bold(f"{r.case} under {r.schedule}: {r.verdict}") + (f" ({r.where})" if r.where else ""))
        if r.first_diff:
            out.append(f"  first difference: {r.first_diff}")
        if r.violation:
            out.append(f"  ghost: {r.violation}")
        for b in r.failed_checks[:6]:
            out.append(f"  assertion fails: {b}")
        if len(r.failed_checks) > 6:
            out.append(f"  ... and {len(r.failed_checks) - 6} more assertions")
        for b in r.native_failed[:3]:
            out.append(f"  fails natively too (a case error): {b}")
        if r.note:
            out.append(f"  note: {r.note}")
    return out


def omissions_lines(vendor: str | None, st: Style) -> list[str]:
    from vpmu.conform.suites import all_omissions

    out = [st.bold("not run (with the reason):")]
    for o in all_omissions():
        if vendor and o.vendor not in (vendor, "both"):
            continue
        out.append(f"  {o.vendor:<6} {o.suite:<10} {o.name}: {o.kind} — {o.reason}")
    return out


def _result_json(r: CaseRun) -> dict[str, Any]:
    return {
        "case": r.case,
        "schedule": r.schedule,
        "verdict": r.verdict,
        "runs": r.runs,
        "seconds": round(r.seconds, 3),
        "exits": r.exits,
        "nmis": r.nmis,
        "perf_ops": r.perf_ops,
        "instructions": r.instructions,
        "first_difference": r.first_diff or None,
        "violation": r.violation or None,
        "failed_assertions": r.failed_checks,
        "native_failed_assertions": r.native_failed,
        "where": r.where or None,
        "note": r.note or None,
        "skipped": r.skipped or None,
    }


def cmd_conform(args: argparse.Namespace) -> int:
    from vpmu.report.text import Style, use_color

    st = Style(use_color(sys.stdout))
    if args.list:
        return _list(args, st)

    if args.mutation and not args.mutations:
        raise VpmuError("--mutation DESIGN is for the mutation check: give --mutations as well")
    if args.kernel:
        from vpmu.cli.source import tree_design_name

        if args.design:
            raise VpmuError("--kernel derives the design from the tree; drop --design")
        design = tree_design_name(args.kernel, register=False)
    else:
        design = _design(args.design)
    cases = _select(args)
    jobs = args.jobs or os.cpu_count() or 1
    executor = executor_from_args(args)
    try:
        if args.mutations:
            return _mutations(args, cases, jobs, st, executor)
        if design == "legacy":  # its ablations run as any design does
            return _compare(args, cases, jobs, st)
        return _conform(args, design, cases, jobs, st, executor)
    finally:
        if executor is not None:
            executor.close()


def _conform(args: argparse.Namespace, design: str, cases: Sequence[Case], jobs: int, st: Any, executor: Any) -> int:
    from vpmu.conform import runner as C
    from vpmu.report.progress import Progress

    t0 = time.perf_counter()
    tasks = C.plan(cases, _schedules(args))
    prog = Progress(args.progress)
    finished: list[CaseRun] = []

    def progress(r: CaseRun) -> None:
        finished.append(r)
        prog.done(f"[{len(finished)}/{len(tasks)}] {r.case} {r.schedule}: {r.verdict}")

    try:
        results = C.run_tasks(tasks, design, jobs, progress, executor)
    except KeyboardInterrupt:
        # Ctrl-C stops every run; those not finished have no verdict (none of them "passes").
        failed = sum(1 for r in finished if not r.skipped and r.verdict != "pass")
        sys.stderr.write(
            f"vpmu: interrupted: {len(finished)} of {len(tasks)} runs finished ({failed} failed); "
            f"the other {len(tasks) - len(finished)} are incomplete\n"
        )
        return 3
    seconds = time.perf_counter() - t0
    bad = [r for r in results if not r.skipped and r.verdict != "pass"]
    if args.trace:
        first = next((r for r in bad if r.trace), None)
        doc: dict[str, Any] = {
            "schema": "vpmu.trace/1",
            "design": design,
            "case": first.case if first else None,
            "schedule": first.schedule if first else None,
            "trace": first.trace if first else [],
        }
        write_output(args.trace, json.dumps(doc, indent=1) + "\n", "--trace")
    if args.json:
        json.dump(
            {
                "schema": "vpmu.conform/1",
                "design": design,
                "seconds": round(seconds, 2),
                "results": [_result_json(r) for r in results],
            },
            sys.stdout,
            indent=2,
        )
        sys.stdout.write("\n")
        return 1 if bad else 0
    print(st.bold(f"vpmu conform: design {design}, {len(cases)} cases, {len(results)} case x schedule runs"))
    print("\n".join(table(results, st, args.verbose)))
    if bad:
        print()
        print("\n".join(failures(results, st)))
    if not args.case:
        print()
        print("\n".join(omissions_lines(args.vendor, st)))
    f1 = [r for r in bad if r.note]
    skipped = sum(1 for r in results if r.skipped)
    ran = len(results) - skipped
    summary = f"{ran - len(bad)} of {ran} pass"
    if bad:
        summary += f", {len(bad)} fail"
        if f1:
            summary += f" ({len(f1)} after an unrelated NMI inside kvm_mediated_pmu_load: finding F1)"
    if skipped:
        summary += f"; {skipped} not applicable"
    print(f"\n{summary}; {seconds:.1f} s with {executor.describe() if executor else f'{jobs} job(s)'}")
    if args.trace:
        print(f"trace of the first failure written to {args.trace}")
    return 1 if bad else 0


def _compare(args: argparse.Namespace, cases: Sequence[Case], jobs: int, st: Style) -> int:
    """``--design legacy``: native vs mediated vs legacy per case (vpmu.conform.compare)."""
    from vpmu.conform import compare as K
    from vpmu.conform import runner as C

    t0 = time.perf_counter()
    done = 0

    def progress(design: str, r: CaseRun) -> None:
        nonlocal done
        done += 1
        if args.progress:
            sys.stderr.write(f"[{done}] {design} {r.case} {r.schedule}: {r.verdict}\n")

    rows = K.compare(cases, _schedules(args), jobs, progress)
    seconds = time.perf_counter() - t0
    departs = [r for r in rows if r.departs]
    if args.json:
        doc = {"schema": "vpmu.conform-compare/1", "seconds": round(seconds, 2), "cases": K.to_json(rows)}
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 1 if departs else 0
    which = ", ".join(args.schedule) if args.schedule else "none, every:K (densest), random:1"
    print(st.bold(f"vpmu conform: native vs mediated (upstream) vs legacy, {len(rows)} cases; schedules: {which}"))
    print("\n".join(K.table(rows)))
    if departs:
        print()
        print(st.bold("where legacy departs from native, and why:"))
        print("\n".join(K.details(rows)))
    if any(r.cell(r.mediated).startswith("F1") for r in rows):
        print(f"\nmediated F1: {C.F1_NOTE}")
    print(f"\nlegacy departs from native in {len(departs)} of {len(rows)} cases; {seconds:.1f} s with {jobs} job(s)")
    return 1 if departs else 0


def _list(args: argparse.Namespace, st: Style) -> int:
    from vpmu.conform.runner import cases_by_id

    cases = list(cases_by_id().values())
    if args.vendor:
        cases = [c for c in cases if c.vendor == args.vendor]
    if args.suite:
        cases = [c for c in cases if c.suite in args.suite]
    for c in cases:
        n = sum(1 for k in c.checks if not k.skip)
        skip = sum(1 for k in c.checks if k.skip)
        counts = f"{n} assertion{'' if n == 1 else 's'}" + (f", {skip} not expressible" if skip else "")
        print(f"{c.id:<56} {c.title}  [{counts}]")
        if args.verbose:
            print(f"    source: {c.source}; VMs: {len(c.vms)}; guest lines: {sum(len(v.program) for v in c.vms)}")
            for note in c.notes:
                print(f"    note: {note}")
    print()
    print("\n".join(omissions_lines(args.vendor, st)))
    return 0


def _mutations(args: argparse.Namespace, cases: Sequence[Case], jobs: int, st: Style, executor: Any = None) -> int:
    from vpmu.conform import runner as C

    designs = [_design(d) for d in (args.mutation or C.MUTATIONS)]
    t0 = time.perf_counter()
    results = []
    for d in designs:
        tasks = C.mutation_tasks(cases, d)
        results.append(C.fold_mutation(d, C.run_tasks(tasks, d, jobs, executor=executor)))
    uncaught = [m for m in results if not m.caught and m.design not in KNOWN_GAPS]
    if args.json:
        doc = [
            {
                "design": m.design,
                "caught_by_assertion": m.by_assertion,
                "caught_by_comparison_only": m.by_comparison,
                "known_gap": KNOWN_GAPS.get(m.design),
            }
            for m in results
        ]
        json.dump({"schema": "vpmu.conform-mutations/1", "mutations": doc}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 1 if uncaught else 0
    print(st.bold("mutation check: which cases catch each broken design"))
    for m in results:
        from vpmu.designs import DESIGNS

        print(st.bold(f"\n{m.design}") + f" — {DESIGNS[m.design].summary}")
        if m.by_assertion:
            print(f"  caught by the case's own assertions ({len(m.by_assertion)}):")
            for c in m.by_assertion:
                print(f"    {c}")
        if m.by_comparison:
            print(f"  caught only by the native comparison ({len(m.by_comparison)}; the original would pass):")
            for c in m.by_comparison:
                print(f"    {c}")
        if not m.caught:
            gap = KNOWN_GAPS.get(m.design)
            print(st.yellow("  caught by no case") + (f": a gap of the public suites — {gap}" if gap else ""))
        if args.verbose:
            for r in m.runs:
                if r.verdict not in ("pass", "n/a"):
                    print(f"      {r.case} {r.schedule}: {r.first_diff or r.violation}")
    print(f"\n{time.perf_counter() - t0:.1f} s with {executor.describe() if executor else f'{jobs} job(s)'}")
    return 1 if uncaught else 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "conform",
        help="replay the public PMU test suites as guest programs, native vs virtualized",
        description="Run kvm-unit-tests x86/pmu.c and the KVM selftests pmu_counters_test and "
        "pmu_event_filter_test, re-expressed as guest programs, natively (the reference CPU) and virtualized "
        "under a design, with exit schedules: none, every:K[:timer], steps (one run per instruction boundary "
        "of a short program), random:SEED[:no-nmi] (exits, unrelated NMIs, host perf IPIs). A run passes when "
        "the guest observes what a native CPU shows and the original test's assertions hold. "
        "Exit 0: all pass; 1: a failure; 2: bad input. docs/conformance.md describes the cases.",
        epilog="examples:\n  vpmu conform\n  vpmu conform --vendor amd --suite kut\n"
        "  vpmu conform --case check_counter_overflow --schedule every:99991 --schedule random:7\n"
        "  vpmu conform --design perf-stays-disabled --vendor intel\n"
        "  vpmu conform --mutations\n  vpmu conform --list -v",
        formatter_class=RAW,
    )
    p.add_argument(
        "--design",
        action=Once,
        help="a built-in design (vpmu designs); default upstream; legacy: native vs mediated vs legacy per case",
    )
    p.add_argument(
        "--kernel", action=Once, metavar="DIR", help="derive the design from a kernel source tree (vpmu source design)"
    )
    p.add_argument("--vendor", action=Once, choices=("intel", "amd"), help="only this vendor's cases")
    p.add_argument("--suite", action="append", metavar="NAME", help="kut, counters or filter (repeatable)")
    p.add_argument("--case", action="append", metavar="NAME", help="a case id, name or part of one (repeatable)")
    p.add_argument(
        "--schedule",
        action="append",
        metavar="S",
        help="none, every:K[:timer], at:A,B, steps, random:SEED[:no-nmi] (repeatable; default: each case's set)",
    )
    add_executor_args(p)
    p.add_argument(
        "--mutations", action="store_true", help="run the mutation check instead: which cases catch each broken design"
    )
    p.add_argument("--mutation", action="append", metavar="DESIGN", help="with --mutations: only this design")
    p.add_argument("--list", action="store_true", help="list the cases and what is not run, and exit")
    p.add_argument(
        "--trace",
        type=output_path,
        action=Once,
        metavar="FILE",
        help="write the steps before the first failure as JSON",
    )
    p.add_argument("--json", action="store_true", help="print results as JSON")
    add_progress_args(p)
    p.add_argument("-v", "--verbose", action="store_true", help="one line per case and schedule")
    p.set_defaults(handler=cmd_conform)
