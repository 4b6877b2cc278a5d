"""Native vs mediated vs legacy: the conformance cases under both vPMUs, side by side.

``vpmu conform --design legacy`` runs every selected case under the legacy
perf-based vPMU (design ``legacy``) and under the merged mediated vPMU
(``upstream``) on the same schedules, and reports per case what a native CPU
shows (the reference: the case's assertions on native values), whether the
mediated vPMU matched it, and whether legacy did. Where legacy departs, the
report names the mechanism from what legacy's perf and KVM code did in the
departing runs (:data:`vpmu.kernel.perf_events.MECHANISMS`).

Default schedules (each case): ``none``, the densest ``every:K`` and
``random:1`` — three of the runner's eleven, to keep a run that executes every
case twice near the cost of one default ``vpmu conform``; ``--schedule``
chooses others.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from vpmu.conform import runner as R
from vpmu.conform.suites import Case
from vpmu.kernel import perf_events

MEDIATED = "upstream"

#: What each mechanism does to what the guest sees, most specific first (the report names the
#: first ones that ran in a departing run).
MECHANISMS: dict[str, str] = {
    "refused": "counts lost to host perf: no host counter was free for KVM's pinned event (host events took "
    "them first), so perf left it in ERROR (kernel/events/core.c merge_sched_in)",
    "overflow-ignored": "overflow dropped: kvm_perf_overflow() found the PMC already marked for reprogramming",
    "min-period": "PMI late: perf arms at least 2 events (x86_perf_event_set_period), so a counter one event "
    "from overflow overflows one event late",
    "period-offset": "PMI timing off: a write to a running counter takes its sample period from pmc->counter, "
    "which excludes what the perf event counted since the last pause (pmc_write_counter)",
    "emulated-overflow": "overflow seen late: reached by instructions KVM emulated, it is detected at the next "
    "reprogram (pmc_pause_counter) and the PMI injected on the following entry (skid)",
    "emulated-count": "emulation counted: every PMU access exits, and KVM counts each instruction it emulates as "
    "one event, ignoring CMASK/INV/EDGE (kvm_pmu_incr_counter, pmc_is_event_match)",
    "multiplexed": "a host flexible event was scheduled out for KVM's event (host-side multiplexing)",
}


@dataclass
class LegacyRun:
    """One case x schedule under legacy, with the mechanisms its runs went through."""

    run: R.CaseRun
    mechanisms: Counter[str] = field(default_factory=Counter)


def default_schedules(size: int) -> list[str]:
    return ["none", f"every:{R.exit_periods(size)[0]}", "random:1"]


def plan(cases: Sequence[Case], schedules: Sequence[str] | None) -> list[tuple[str, str]]:
    tasks = []
    for case in cases:
        names = list(schedules) if schedules else default_schedules(R.case_size(case, "legacy"))
        tasks += [(case.id, n) for n in names]
    return tasks


def _legacy_task(args: tuple[str, str]) -> LegacyRun:
    case_id, schedule = args
    perf_events.MECHANISMS.clear()
    run = R.run_case(R.cases_by_id()[case_id], "legacy", R.Schedule.parse(schedule))
    return LegacyRun(run, Counter(perf_events.MECHANISMS))


def run_legacy(
    tasks: Sequence[tuple[str, str]], jobs: int, progress: Callable[[R.CaseRun], None] | None = None
) -> list[LegacyRun]:
    if jobs <= 1 or len(tasks) <= 1:
        out = []
        for t in tasks:
            out.append(_legacy_task(t))
            if progress:
                progress(out[-1].run)
        return out
    results = []
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for r in pool.map(_legacy_task, tasks, chunksize=1):
            results.append(r)
            if progress:
                progress(r.run)
    return results


@dataclass
class CaseComparison:
    case: str
    native_ok: bool
    mediated: list[R.CaseRun]
    legacy: list[LegacyRun]

    @staticmethod
    def _bad(runs: Sequence[R.CaseRun]) -> list[R.CaseRun]:
        return [r for r in runs if not r.skipped and r.verdict != "pass"]

    @property
    def departs(self) -> bool:
        return bool(self._bad([x.run for x in self.legacy]))

    def mechanisms(self) -> list[str]:
        """Mechanisms that ran in legacy's departing runs, most specific first."""
        seen: Counter[str] = Counter()
        for x in self.legacy:
            if not x.run.skipped and x.run.verdict != "pass":
                seen.update(x.mechanisms)
        return [m for m in MECHANISMS if seen[m]]

    def cell(self, runs: Sequence[R.CaseRun]) -> str:
        ran = [r for r in runs if not r.skipped]
        if not ran:
            return "n/a"
        bad = self._bad(ran)
        if not bad:
            return "pass"
        word = "F1" if all(r.note for r in bad) else "FAIL"  # the mediated vPMU's finding F1 (runner.F1_NOTE)
        return f"{word} {len(bad)}/{len(ran)}"

    def first_difference(self) -> str:
        bad = self._bad([x.run for x in self.legacy])
        if not bad:
            return ""
        r = bad[0]
        return f"{r.schedule}: {r.first_diff or (r.failed_checks[0] if r.failed_checks else r.violation)}"


def compare(
    cases: Sequence[Case],
    schedules: Sequence[str] | None,
    jobs: int,
    progress: Callable[[str, R.CaseRun], None] | None = None,
) -> list[CaseComparison]:
    """Run the cases under legacy, then under the mediated vPMU; ``progress(design, run)``."""
    tasks = plan(cases, schedules)
    legacy = run_legacy(tasks, jobs, (lambda r: progress("legacy", r)) if progress else None)
    mediated = R.run_tasks(tasks, MEDIATED, jobs, (lambda r: progress(MEDIATED, r)) if progress else None)
    out: dict[str, CaseComparison] = {}
    for (case_id, _), lr, mr in zip(tasks, legacy, mediated, strict=True):
        c = out.setdefault(case_id, CaseComparison(case_id, True, [], []))
        c.legacy.append(lr)
        c.mediated.append(mr)
        c.native_ok = c.native_ok and lr.run.native_ok and mr.native_ok
    return list(out.values())


def table(rows: Sequence[CaseComparison]) -> list[str]:
    width = max((len(r.case) for r in rows), default=4) + 2
    out = [f"{'case':<{width}}{'native':<8}{'mediated':<12}{'legacy':<12}departure of legacy (mechanism)"]
    for r in rows:
        why = ""
        if r.departs:
            names = r.mechanisms()
            why = ", ".join(names[:3]) if names else "no legacy mechanism ran (see the difference)"
        native = "pass" if r.native_ok else "CASE"
        out.append(f"{r.case:<{width}}{native:<8}{r.cell(r.mediated):<12}{r.cell([x.run for x in r.legacy]):<12}{why}")
    return out


def details(rows: Sequence[CaseComparison]) -> list[str]:
    out: list[str] = []
    for r in rows:
        if not r.departs:
            continue
        out.append(f"{r.case}: {r.first_difference()}")
        for m in r.mechanisms()[:3]:
            out.append(f"  {m}: {MECHANISMS[m]}")
    return out


def to_json(rows: Sequence[CaseComparison]) -> list[dict[str, Any]]:
    return [
        {
            "case": r.case,
            "native": "pass" if r.native_ok else "case-error",
            "mediated": r.cell(r.mediated),
            "legacy": r.cell([x.run for x in r.legacy]),
            "legacy_departs": r.departs,
            "mechanisms": r.mechanisms(),
            "first_difference": r.first_difference() or None,
            "schedules": [x.run.schedule for x in r.legacy],
        }
        for r in rows
    ]
