"""Run one schedule of a world: scripted or seeded-random exits and NMIs, real widths.

The simulator drives the same :class:`~vpmu.check.system.System` the checker
explores, choosing one move at a time: a pending interrupt is always taken;
otherwise the next scheduled event whose time has come happens (times are
counted in guest instructions retired); otherwise the running context takes
its next step. Guest loops advance in bulk, never past a scheduled event or a
counter overflow with PMI enabled (on the machine or on the reference), so a
million-instruction loop costs a handful of steps.

Schedules, as text (``--exits``, ``--nmis``):

* ``every:K`` — an event after every K guest instructions;
* ``at:A,B,C`` — after exactly A, B, C guest instructions;
* ``random:P`` — with a seed: at each guest step boundary, probability P.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from vpmu.check import properties as P
from vpmu.check.system import ASYNC_EXIT, DELIVER, NMI, STEP, Move, StepRecord, System
from vpmu.errors import VpmuError
from vpmu.hw import virt as V
from vpmu.hw.layout import State
from vpmu.kernel.lang import Instr

EXIT_REASONS = {"timer": V.EXIT_TIMER, "interrupt": V.EXIT_EXTINT_HOST}


@dataclass(frozen=True)
class Plan:
    """When events happen, in guest instructions retired."""

    kind: str  # "none", "every", "at", "random"
    every: int = 0
    at: tuple[int, ...] = ()
    probability: float = 0.0

    @staticmethod
    def parse(text: str, option: str) -> Plan:
        if text in ("", "none"):
            return Plan("none")
        kind, _, arg = text.partition(":")
        try:
            if kind == "every":
                k = int(arg)
                if k < 1:
                    raise ValueError
                return Plan("every", every=k)
            if kind == "at":
                pts = tuple(sorted(int(x) for x in arg.split(",") if x))
                if any(p < 0 for p in pts):
                    raise ValueError
                return Plan("at", at=pts)
            if kind == "random":
                p = float(arg)
                if not 0 < p <= 1:
                    raise ValueError
                return Plan("random", probability=p)
        except ValueError:
            pass
        raise VpmuError(
            f"{option} = {text!r} is not allowed; allowed: none, every:K (K >= 1), at:A,B,... (A >= 0), "
            "random:P (0 < P <= 1)"
        )

    def due(self, retired: int, last: int, rnd: random.Random) -> bool:
        """Is an event due, ``retired`` guest instructions in, the last one at ``last`` (-1: none)?"""
        if self.kind == "every":
            return retired - max(last, 0) >= self.every
        if self.kind == "at":
            return any(last < p <= retired for p in self.at)
        if self.kind == "random":
            return rnd.random() < self.probability
        return False

    def room(self, retired: int, last: int) -> int | None:
        """Guest instructions that may retire before the next planned event (None: unbounded)."""
        if self.kind == "every":
            return max(1, self.every - (retired - max(last, 0)))
        if self.kind == "at":
            later = [p - retired for p in self.at if p > retired]
            return min(later) if later else None
        if self.kind == "random":
            return 1
        return None


@dataclass
class SimResult:
    records: list[StepRecord]
    states: list[State]
    retired: int
    exits: int
    nmis: int
    violations: list[str] = field(default_factory=list)
    journal: list[tuple[str, str, int, int]] = field(default_factory=list)
    finished: bool = False

    @property
    def final(self) -> State:
        return self.states[-1]


def simulate(
    system: System,
    exits: Plan,
    nmis: Plan = Plan("none"),
    reason: str = "timer",
    seed: int = 0,
    max_steps: int = 1_000_000,
) -> SimResult:
    """Run one schedule to the end of the guest program (or ``max_steps``)."""
    if reason not in EXIT_REASONS:
        raise VpmuError(f"exit reason {reason!r} is not allowed; allowed: {', '.join(EXIT_REASONS)}")
    rnd = random.Random(seed)
    system.stop_on_violation = False
    ghost = system.ghost
    ghost.journal = []
    cpu = system.cpu
    retired = 0
    last_exit = last_nmi = -1
    n_exits = n_nmis = 0

    def chunk(s: list[int], ins: Instr) -> int:
        step = ins.step
        room = [r for r in (exits.room(retired, last_exit), nmis.room(retired, last_nmi)) if r is not None]
        limit = min(room) if room else s[step.arg]
        br = 1 if step.branch else 0
        for pmu, guest in ((cpu, True), (ghost.ref, True)):
            k = pmu.units_until_pmi(s, guest, step.ring, 1, br)
            if k is not None:
                limit = min(limit, k)
        return max(1, limit)

    system.chunk = chunk
    s = system.initial()
    states = [s]
    records: list[StepRecord] = []
    seen_violation = 0
    for _ in range(max_steps):
        moves = system.moves(s)
        if not moves:
            break
        move: Move
        if (DELIVER, 0) in moves:
            move = (DELIVER, 0)
        elif s[cpu.mode] and exits.due(retired, last_exit, rnd):
            move = (ASYNC_EXIT, EXIT_REASONS[reason])
            last_exit = retired
            n_exits += 1
        elif not s[cpu.nmi_pending] and nmis.due(retired, last_nmi, rnd) and nmis.kind != "none":
            move = (NMI, 0)
            last_nmi = retired
            n_nmis += 1
        else:
            move = (STEP, 0)
        s, rec = system.apply(s, move)
        retired += rec.units
        states.append(s)
        records.append(rec)
        v = s[ghost.violation]
        if v and not seen_violation:
            seen_violation = v
    violations = [f"{P.by_index(seen_violation).name}: {ghost.message}"] if seen_violation else []
    return SimResult(
        records, states, retired, n_exits, n_nmis, violations, ghost.journal or [], finished=system.finished(s)
    )
