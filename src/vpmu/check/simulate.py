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

import math
import random
from dataclasses import dataclass, field

from vpmu.check import properties as P
from vpmu.check.system import ASYNC_EXIT, DELIVER, NMI, STEP, Move, StepRecord, System
from vpmu.check.world import ASYNC_EXITS, check_exit_reason, default_exit_reason
from vpmu.errors import VpmuError, show_value
from vpmu.hw.layout import State
from vpmu.kernel.lang import Instr


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
                if not pts or any(p < 0 for p in pts):
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
            f"{option} = {show_value(text)} is not allowed; allowed: none, every:K (K >= 1), at:A,B,... (A >= 0), "
            "random:P (0 < P <= 1)"
        )

    def timer(self, rnd: random.Random) -> Timer:
        return Timer(self, rnd)


class Timer:
    """When a plan's next event is due, in guest instructions retired.

    A random plan draws the gap to its next event from the geometric
    distribution (probability P at each guest instruction), so loops still
    advance in bulk between events.
    """

    def __init__(self, plan: Plan, rnd: random.Random) -> None:
        self.plan, self.rnd = plan, rnd
        self.points = list(plan.at)
        self.next_at: int | None = None
        self.fired(0, first=True)

    def fired(self, retired: int, first: bool = False) -> None:
        """Schedule the next event after one happened at ``retired``."""
        plan = self.plan
        if plan.kind == "every":
            self.next_at = retired + plan.every
        elif plan.kind == "at":
            while self.points and (self.points[0] < retired or (not first and self.points[0] == retired)):
                self.points.pop(0)
            self.next_at = self.points[0] if self.points else None
        elif plan.kind == "random":
            u = 1.0 - self.rnd.random()  # in (0, 1]
            gap = 0 if plan.probability >= 1 else int(math.log(u) / math.log(1.0 - plan.probability))
            self.next_at = retired + 1 + gap
        else:
            self.next_at = None

    def due(self, retired: int) -> bool:
        return self.next_at is not None and retired >= self.next_at

    def room(self, retired: int) -> int | None:
        """Guest instructions that may retire before the next event (None: unbounded)."""
        return None if self.next_at is None else max(1, self.next_at - retired)


@dataclass
class SimResult:
    records: list[StepRecord]
    states: list[State]
    retired: int
    exits: int
    nmis: int
    perf_ops: int
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
    reason: str = "",
    seed: int = 0,
    max_steps: int = 1_000_000,
    perf_ops: Plan = Plan("none"),
) -> SimResult:
    """Run one schedule to the end of the guest program (or ``max_steps``).

    ``perf_ops`` plans host perf operations from another CPU; each is the first
    one host perf can start (:meth:`System.perf_ops`): with one host event,
    perf_event_disable() then perf_event_enable(); an event the world declares
    ``opened = false`` is opened first. ``reason`` is the asynchronous exit
    ("" the vendor's default: the preemption timer on Intel, a host interrupt on AMD).
    """
    vendor = system.cpu.cfg.vendor
    reason = reason or default_exit_reason(vendor)
    check_exit_reason(reason, vendor, "exit reason")
    rnd = random.Random(seed)
    system.stop_on_violation = False
    ghost = system.ghost
    ghost.journal = []
    cpu = system.cpu
    retired = 0
    n_exits = n_nmis = n_perf = 0
    t_exit, t_nmi, t_perf = exits.timer(rnd), nmis.timer(rnd), perf_ops.timer(rnd)

    def chunk(s: list[int], ins: Instr) -> int:
        step = ins.step
        room = [r for r in (t.room(retired) for t in (t_exit, t_nmi, t_perf)) if r is not None]
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
        elif s[cpu.mode] and t_exit.due(retired):
            move = (ASYNC_EXIT, ASYNC_EXITS[reason])
            t_exit.fired(retired)
            n_exits += 1
        elif not s[cpu.nmi_pending] and t_nmi.due(retired):
            move = (NMI, 0)
            t_nmi.fired(retired)
            n_nmis += 1
        elif (perf_moves := system.perf_ops(s)) and t_perf.due(retired):
            move = perf_moves[0]
            t_perf.fired(retired)
            n_perf += 1
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
        records, states, retired, n_exits, n_nmis, n_perf, violations, ghost.journal or [], finished=system.finished(s)
    )
