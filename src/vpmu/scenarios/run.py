"""Run catalog scenarios: the checker's verdict, the scripted run's observations, the table.

A scenario's verdict is the checker's (every interleaving of the world, within
its bounds). A scenario with a ``[script]`` also runs one schedule with the
simulator and compares what it shows with the expected observations, as lines:

* step lines, one per step and one per hardware event of the step,
  ``context: function:label`` and ``context: function:label: event`` (the
  hardware events as in a counterexample, e.g. ``wrmsr IA32_PERF_GLOBAL_CTRL <- 0x0``);
* journal lines, what the parties observed: ``guest read WHAT = SEEN (native EXPECTED)``,
  ``guest PMI delivered`` (``(spurious)`` when none was owed),
  ``host count EVENT +SEEN (host-mode events EXPECTED)``.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from vpmu.check.explore import VIOLATED, Progress, Result, check
from vpmu.check.simulate import Plan, simulate
from vpmu.check.system import CONTEXT_LABEL, StepRecord, System
from vpmu.errors import VpmuError
from vpmu.report.text import Style, verdict_word
from vpmu.report.trace import hw_event_str
from vpmu.scenarios import Scenario, Script

#: A scenario whose check visits more states than this is "incomplete" (a mismatch).
MAX_STATES = 2_000_000
#: Steps a scripted run may take.
MAX_SCRIPT_STEPS = 200_000
#: Where the reasons of the scenarios the model cannot express are wrapped.
REASON_WIDTH = 120
NOT_EXPRESSIBLE, REFUSED, INCOMPLETE, ERROR = "not expressible", "refused", "incomplete", "error"


@dataclass
class Outcome:
    scenario: Scenario
    verdict: str  # holds | violated | refused | incomplete | error | not expressible
    prop: str = ""
    message: str = ""
    seconds: float = 0.0
    states: int = 0
    transitions: int = 0
    depth: int = 0
    script_steps: int = 0
    script_problems: list[str] = field(default_factory=list)
    result: Result | None = None
    system: System | None = None
    #: Ctrl-C stopped it (or it never started): no verdict, neither as expected nor differing.
    interrupted: bool = False

    @property
    def observed(self) -> str:
        if self.verdict == VIOLATED:
            text = f"violated: {self.prop}"
        elif self.verdict in (INCOMPLETE, ERROR):
            text = f"{self.verdict} ({self.message})"
        else:
            text = self.verdict
        if self.script_problems:
            text += " (script differs)"
        return text

    @property
    def matches(self) -> bool:
        s = self.scenario
        if not s.expressible:
            return True
        return self.verdict == s.verdict and self.prop == s.prop and not self.script_problems


def step_lines(system: System, records: Iterable[StepRecord]) -> list[str]:
    out = []
    for rec in records:
        ctx = CONTEXT_LABEL.get(rec.context, rec.context)
        out.append(f"{ctx}: {rec.label}")
        out.extend(f"{ctx}: {rec.label}: {hw_event_str(system, *e)}" for e in rec.hw)
    return out


def journal_lines(journal: Iterable[tuple[str, str, int, int]]) -> list[str]:
    out = []
    for kind, what, seen, expect in journal:
        if kind == "guest read":
            out.append(f"guest read {what} = {seen:#x} (native {expect:#x})")
        elif kind == "guest PMI":
            out.append("guest PMI delivered" + ("" if expect else " (spurious)"))
        elif kind == "host count":
            out.append(f"host count {what} +{seen} (host-mode events {expect})")
        else:
            out.append(f"{kind} {what} {seen:#x} {expect:#x}")
    return out


def _same(expected: str, line: str) -> bool:
    return line == expected or line.split(": ", 1)[-1] == expected


def in_order(expected: Sequence[str], lines: Sequence[str], what: str) -> list[str]:
    """Problems, if ``expected`` is not a subsequence of ``lines``."""
    problems = []
    pos = 0
    prev = ""
    for e in expected:
        at = next((i for i in range(pos, len(lines)) if _same(e, lines[i])), -1)
        if at < 0:
            earlier = any(_same(e, line) for line in lines[:pos])
            after = f" after {prev!r}" if prev else ""
            problems.append(f"{what}: {e!r} not seen{after}" + (" (it appears only earlier)" if earlier else ""))
            continue
        pos, prev = at + 1, e
    return problems


def run_script(scenario: Scenario, script: Script) -> tuple[int, list[str]]:
    """Run the scripted schedule; the number of steps and every observation that differs."""
    assert scenario.world is not None
    system = System(scenario.get_design(), scenario.world, scenario.properties or None)
    r = simulate(
        system,
        Plan.parse(script.exits, "script.exits"),
        Plan.parse(script.nmis, "script.nmis"),
        reason=script.exit_reason,
        seed=script.seed,
        max_steps=MAX_SCRIPT_STEPS,
    )
    problems = []
    if not r.finished:
        problems.append(f"the scripted run did not finish in {MAX_SCRIPT_STEPS} steps")
    seen = r.violations[0].split(":", 1)[0] if r.violations else ""
    if seen != script.violation:
        want = script.violation or "none"
        problems.append(
            f"scripted run violates {seen or 'nothing'}; expected {want}"
            + (f" ({r.violations[0]})" if r.violations else "")
        )
    steps = step_lines(system, r.records)
    problems += in_order(script.steps, steps, "step")
    problems += in_order(script.journal, journal_lines(r.journal), "journal")
    problems += [f"absent: {a!r} was seen" for a in script.absent if any(_same(a, line) for line in steps)]
    return len(r.records), problems


def interrupted(scenario: Scenario, started: bool) -> Outcome:
    """The outcome of a scenario Ctrl-C stopped (``started``) or kept from starting."""
    why = "interrupted (Ctrl-C)" if started else "interrupted (Ctrl-C) before it started"
    return Outcome(scenario, INCOMPLETE, message=why, interrupted=True)


def run(scenario: Scenario, max_states: int = MAX_STATES, progress: Progress | None = None) -> Outcome:
    """Check one scenario (and run its script); never raises for a model or input problem.

    Ctrl-C raises KeyboardInterrupt (the caller reports every unfinished scenario incomplete)."""
    if not scenario.expressible:
        return Outcome(scenario, NOT_EXPRESSIBLE, message=scenario.reason)
    if scenario.world is None:
        # Only a refused world gets here (the catalog rejects any other load error).
        ok = scenario.error in scenario.world_error
        return Outcome(scenario, REFUSED if ok else ERROR, message=scenario.world_error)
    start = time.perf_counter()
    try:
        system = System(scenario.get_design(), scenario.world, scenario.properties or None)
        result = check(system, max_states=max_states, progress=progress)
    except VpmuError as e:
        return Outcome(scenario, ERROR, message=str(e), seconds=time.perf_counter() - start)
    if result.verdict == INCOMPLETE and result.reason == "interrupted":
        raise KeyboardInterrupt  # explore.check returns on Ctrl-C; the whole command stops
    out = Outcome(
        scenario,
        result.verdict,
        prop=result.prop,
        message=result.message or result.reason,
        states=result.stats.states,
        transitions=result.stats.transitions,
        depth=result.stats.depth,
        result=result,
        system=system,
    )
    if scenario.script is not None:
        try:
            out.script_steps, out.script_problems = run_script(scenario, scenario.script)
        except VpmuError as e:
            out.script_problems = [f"scripted run failed: {e}"]
    out.seconds = time.perf_counter() - start
    return out


def run_detached(scenario: Scenario, max_states: int = MAX_STATES) -> Outcome:
    """:func:`run` for another process or a Ray task: the outcome without its System (which holds
    closures); :func:`attach` rebuilds it where the outcome is shown."""
    out = run(scenario, max_states=max_states)
    out.system = None
    return out


def attach(out: Outcome) -> Outcome:
    """Give a detached outcome its System again (the same design, world and properties)."""
    s = out.scenario
    if out.result is not None and out.system is None and s.world is not None:
        out.system = System(s.get_design(), s.world, s.properties or None)
    return out


# --- text --------------------------------------------------------------------------------------


def _hazards(s: Scenario) -> str:
    return ",".join(s.hazards) or "-"


def _expected(s: Scenario) -> str:
    return s.expected + ("*" if s.properties else "")


def table(outcomes: Sequence[Outcome], st: Style) -> list[str]:
    """The scenario table: one row per expressible scenario, then the ones the model cannot express."""
    rows = [o for o in outcomes if o.scenario.expressible]
    w_id = max([len(o.scenario.id) for o in rows] + [8])
    w_hz = max([len(_hazards(o.scenario)) for o in rows] + [6])
    w_d = max([len(o.scenario.design) for o in rows] + [6])
    w_e = max([len(_expected(o.scenario)) for o in rows] + [8])
    w_o = max([len(o.observed) for o in rows] + [8])
    out = []
    if rows:
        out.append(
            st.bold(
                f"{'scenario':<{w_id}}  {'hazard':<{w_hz}}  {'design':<{w_d}}  {'expected':<{w_e}}  "
                f"{'observed':<{w_o}}  {'time':>7}"
            )
        )
    for o in rows:
        s = o.scenario
        word = verdict_word(o.verdict, st) + o.observed[len(o.verdict) :]
        pad = " " * max(0, w_o - len(o.observed))
        mark = "" if o.matches else "  " + (st.yellow("NOT FINISHED") if o.interrupted else st.red("DIFFERS"))
        out.append(
            f"{s.id:<{w_id}}  {_hazards(s):<{w_hz}}  {s.design:<{w_d}}  {_expected(s):<{w_e}}  "
            f"{word}{pad}  {o.seconds:>6.2f}s{mark}"
        )
    if any(o.scenario.properties for o in rows):
        out.append("* judged on a subset of the properties; `vpmu scenarios ID --trace` says which and why")
    missing = [o for o in outcomes if not o.scenario.expressible]
    if missing:
        if out:
            out.append("")
        out.append(st.bold("not expressible in the model yet:"))
        indent = " " * (2 + w_id + 2 + w_hz + 2)
        for o in missing:
            s = o.scenario
            lines = textwrap.wrap(s.reason, max(40, REASON_WIDTH - len(indent)), break_on_hyphens=False)
            out.append(f"  {s.id:<{w_id}}  {_hazards(s):<{w_hz}}  {lines[0]}")
            out.extend(indent + line for line in lines[1:])
    return out


def summary(outcomes: Sequence[Outcome]) -> str:
    rows = [o for o in outcomes if o.scenario.expressible]
    differ = [o for o in rows if not o.matches and not o.interrupted]
    stopped = [o for o in rows if o.interrupted]
    missing = len(outcomes) - len(rows)
    noun = "scenario" if len(rows) == 1 else "scenarios"
    done = len(rows) - len(differ) - len(stopped)
    text = f"{len(rows)} {noun}: {done} as expected, {len(differ)} differ"
    if differ:
        text += " (" + ", ".join(o.scenario.id for o in differ) + ")"
    if stopped:
        text += f", {len(stopped)} incomplete (interrupted: " + ", ".join(o.scenario.id for o in stopped) + ")"
    if missing:
        text += f"; {missing} not expressible yet"
    return text


def _wrapped(label: str, text: str) -> list[str]:
    return textwrap.wrap(
        text, REASON_WIDTH, initial_indent=f"  {label}: ", subsequent_indent="    ", break_on_hyphens=False
    )


def describe(o: Outcome) -> list[str]:
    """What ``--trace`` prints above the trace: the scenario, its expectation, the verdict."""
    s = o.scenario
    out = [f"{s.id}: {s.title}"]
    out.append(f"  hazards: {', '.join(s.hazards) or '-'}")
    out += _wrapped("source", s.source)
    if not s.expressible:
        out += _wrapped("not expressible", s.reason)
    else:
        vendor = f" ({s.vendor})" if s.vendor else ""
        out.append(f"  design: {s.design}; world: {s.world_name}{vendor}")
        if s.properties:
            out += _wrapped("properties judged", ", ".join(s.properties))
            out += _wrapped("restricted because", s.restricted)
        out.append(f"  expected: {s.expected}; observed: {o.observed}")
    if s.note:
        out += _wrapped("note", s.note)
    return out
