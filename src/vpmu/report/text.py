"""Counterexamples and verdicts as text a reviewer reads in one pass."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from vpmu.check.explore import Result
from vpmu.check.system import System
from vpmu.report.color import use_color as use_color  # re-exported: the commands import it from here
from vpmu.report.trace import fmt_value, trace_rows


class Style:
    def __init__(self, color: bool) -> None:
        self.color = color

    def _w(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def bold(self, t: str) -> str:
        return self._w("1", t)

    def red(self, t: str) -> str:
        return self._w("31;1", t)

    def green(self, t: str) -> str:
        return self._w("32;1", t)

    def yellow(self, t: str) -> str:
        return self._w("33;1", t)

    def dim(self, t: str) -> str:
        return self._w("2", t)


def verdict_word(verdict: str, st: Style) -> str:
    return {"holds": st.green, "violated": st.red}.get(verdict, st.yellow)(verdict)


def step_lines(
    rows: Sequence[dict[str, Any]],
    fmt: Callable[[str, int], str],
    st: Style,
    last: int = 0,
    regs: Callable[[int], str] | None = None,
) -> list[str]:
    """Trace rows (report.trace) as the table a reviewer reads: step, context, design step, the
    slots it changed; the step's code and hardware events below; with ``regs``, every register
    after the step. ``last`` > 0 keeps only the last N steps."""
    width = max([len(r["label"]) for r in rows] + [4])
    ctxw = max([len(r["context"]) for r in rows] + [7])
    out = [st.bold(f"{'#':>4}  {'context':<{ctxw}}  {'step':<{width}}  changed")]
    start = max(0, len(rows) - last) if last else 0
    if start:
        out.append(st.dim(f"   ... {start} earlier steps (use --context 0 to see all)"))
    for r in rows[start:]:
        ch = ", ".join(f"{n} {fmt(n, old)}->{fmt(n, new)}" for n, (old, new) in r["changes"].items())
        out.append(f"{r['step']:>4}  {r['context']:<{ctxw}}  {r['label']:<{width}}  {ch or st.dim('-')}")
        detail = r["text"]
        if r["hw"]:
            detail += "   [" + "; ".join(r["hw"]) + "]"
        out.append(st.dim(f"{'':>4}  {'':<{ctxw}}  {detail}"))
        if regs is not None:
            out.append(st.dim(f"{'':>4}  {'':<{ctxw}}  {regs(r['step'])}"))
    return out


def violation_lines(prop: str, description: str, source: str, step: int, message: str, st: Style) -> list[str]:
    return [
        "",
        st.red(f"violated: {prop}") + f" — {description}",
        f"  source: {source}",
        f"  at step {step}: {message}",
    ]


def counterexample(system: System, result: Result, st: Style, last: int = 0, full: bool = False) -> list[str]:
    """The trace table and the violated property, as lines."""
    rows = trace_rows(system, result.states, result.records)

    def regs(step: int) -> str:
        final = result.states[step]
        return ", ".join(
            f"{slot.name}={fmt_value(system, slot.name, final[i])}"
            for i, slot in enumerate(system.layout.slots)
            if slot.owner not in ("ctx", "ghost")
        )

    out = step_lines(rows, lambda n, v: fmt_value(system, n, v), st, last, regs if full else None)
    return out + violation_lines(result.prop, result.description, result.source, len(rows), result.message, st)


def summary_table(rows: Sequence[tuple[str, str, str, Result]], st: Style) -> list[str]:
    """One line per (design, world): verdict and statistics."""
    # Columns as wide as their longest name (a world name longer than 16 used to shift the row).
    wd = max([20] + [len(r[0]) for r in rows])
    ww = max([16] + [len(r[1]) for r in rows])
    head = (
        f"{'design':<{wd}} {'world':<{ww}} {'verdict':<10} {'states':>9} {'trans.':>9} {'depth':>6} "
        f"{'seconds':>8} {'states/s':>9}  detail"
    )
    out = [st.bold(head)]
    for design, world, _vendor, r in rows:
        detail = r.prop if r.verdict == "violated" else r.reason
        if r.verdict == "violated":
            detail += f" (trace: {len(r.records)} steps)"
        if r.collision_probability is not None:
            detail += f"{', ' if detail else ''}fingerprints: collision probability {r.collision_probability:.3g}"
        verdict = verdict_word(r.verdict, st) + " " * max(0, 10 - len(r.verdict))  # pad the visible text
        out.append(
            f"{design:<{wd}} {world:<{ww}} {verdict} "
            f"{r.stats.states:>9} {r.stats.transitions:>9} {r.stats.depth:>6} {r.stats.seconds:>8.2f} "
            f"{r.stats.rate:>9.0f}  {detail}".rstrip()
        )
    return out


def progress_printer(stream: TextIO = sys.stderr):  # type: ignore[no-untyped-def]
    """A one-line progress display (states, queue, rate) for terminals."""

    def show(stats: Any, queue: int) -> None:
        stream.write(
            f"\r  {stats.states:>10} states  {queue:>8} queued  depth {stats.depth:>5}  "
            f"{stats.rate:>9.0f} states/s  {stats.seconds:6.1f} s"
        )
        stream.flush()

    return show
