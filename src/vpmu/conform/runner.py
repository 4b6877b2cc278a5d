"""Conformance: the public PMU test suites, native vs virtualized, under exit schedules.

A case (:mod:`vpmu.conform.suites`) is a guest program per VM plus the original
test's assertions. One *run* executes a VM's program on the composed system
(:class:`~vpmu.check.system.System`) under a design and one schedule, with a
:class:`Tap` on the observation channel that records every guest access — its
tag, what the guest observed (virtualized) and what the reference, a native CPU
running the guest's own programming, shows at the same instant (native). A case
passes a schedule when, in every run,

* every observation is identical natively and virtualized (values, and #GP or
  not),
* the assertions hold on the virtualized values (and on the native ones —
  otherwise the case, not the design, is wrong),
* the ghost reports no guest-visible violation (guest transparency, guest PMI
  accounting; host-side properties are ``vpmu check``'s job and are not judged
  here: the guest cannot see them).

Schedules (``--schedule``):

* ``none`` — no asynchronous exits (the guest still exits for every intercepted
  access: selectors, FIXED_CTR_CTRL, LVTPC, CPUID);
* ``every:K[:timer]`` — a host-interrupt exit (full put/load) after every K guest
  instructions, or a preemption-timer exit (KVM's fastpath; Intel only: SVM has
  none, so an AMD case reports it as not applicable);
* ``steps`` — for short programs: one run per guest instruction boundary, with a
  single exit exactly there;
* ``random:SEED[:no-nmi]`` — seeded: exits (both kinds) at random instruction
  counts, and at any moment an unrelated host NMI (not with ``no-nmi``) or a host
  perf_event_{disable,enable}() IPI from another CPU.

Guest instructions are counted as they complete (hardware-retired, emulated by
KVM, or skipped by the guest's #GP fixup); bulk loops are split exactly where a
schedule puts an exit.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from vpmu.check import properties as P
from vpmu.check.system import ASYNC_EXIT, DELIVER, NMI, NMI_CTX, STEP, Move, StepRecord, System
from vpmu.check.world import ASYNC_EXITS, NO_TIMER_ON_AMD, Bounds, GuestSpec, WorldSpec
from vpmu.conform.suites import Case, Check, Outcome, Vm, all_cases, show
from vpmu.designs import get_design
from vpmu.errors import Fault, VpmuError
from vpmu.hw import msr as M
from vpmu.hw.layout import State
from vpmu.hw.pmu import Pmu
from vpmu.kernel import kvm
from vpmu.kernel.env import KernelEnv, Observer
from vpmu.kernel.lang import Instr
from vpmu.kernel.pmu_filter import PreparedFilter

#: The properties a conformance run judges: what the guest can observe.
GUEST_PROPERTIES = ("guest-transparency", "guest-pmi-accounting")
#: Programs with at most this many guest instructions get the ``steps`` sweep.
SHORT = 600
MAX_STEPS = 3_000_000
INCOMPLETE = f"did not finish in {MAX_STEPS:,} steps"
F1_NOTE = (
    "finding F1 (docs/findings.md): an unrelated NMI inside kvm_mediated_pmu_load() ran perf's PMI handler, "
    "which re-enabled PERF_GLOBAL_CTRL / rewrote LVTPC before the guest's selectors were loaded; "
    "design perf-stays-disabled removes it"
)
TRACE_KEEP = 120


# --- observations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """One guest access: what the guest observed, and what a native CPU shows."""

    n: int
    tag: str  # "" for an untagged access
    what: str
    native: Outcome
    virt: Outcome
    step: int  # the system move after which it was observed
    vm: str = ""

    @property
    def differs(self) -> bool:
        return self.native != self.virt

    def describe(self) -> str:
        where = f"{self.vm}: " if self.vm else ""
        tag = f" @{self.tag}" if self.tag else ""
        return f"{where}{self.what}{tag}: guest {show(self.virt)}, native {show(self.native)} (step {self.step})"


class Tap(Observer):
    """The observation channel of a run: forwards to the ghost, records every guest access."""

    def __init__(self, system: System, vm: str = "") -> None:
        self.system = system
        self.vm = vm
        self.ghost = system.ghost
        self.ref = system.ghost.ref
        self.isa = system.isa
        self.vendor = system.cpu.cfg.vendor
        self.obs: list[Observation] = []
        self.pending: tuple[str, str, Outcome] | None = None  # a write in flight: tag, what, native outcome
        self.completed = 0  # guest instructions completed by KVM's emulation or the #GP fixup
        self.matched = 0  # PMIs delivered to the guest that a native CPU raised, since the last check
        self.step = 0
        self.native_filter: FilteredReference | None = None
        system.isa.probe = self
        system.env.obs = self

    # -- forwarded unchanged
    def warn(self, s: list[int], what: str) -> None:
        self.ghost.warn(s, what)

    def host_count(self, s: list[int], event: int, delta: int) -> None:
        self.ghost.host_count(s, event, delta)

    def host_pmi_handled(self, s: list[int], event: int) -> None:
        self.ghost.host_pmi_handled(s, event)

    # -- guest observations
    def _record(self, tag: str, what: str, native: Outcome, virt: Outcome, write: bool = False) -> None:
        if write and not tag and native == virt:
            return
        self.obs.append(Observation(len(self.obs), tag, what, native, virt, self.step, self.vm))

    def _native_read(self, s: list[int], kind: str, index: int) -> Outcome:
        if kind == "rdmsr" and index in kvm.PERFCTR_QUIRK_MSRS and not self.ref.has_msr(index):
            return 0  # KVM's quirk for an absent K7/P6 counter reads 0: part of the VM's contract
        try:
            return self.ref.rdpmc(s, index) if kind == "rdpmc" else self.ref.rdmsr(s, index)
        except Fault:
            return None
        finally:
            self.ref.log.clear()

    def _what(self, kind: str, index: int, value: int = 0) -> str:
        if kind == "rdpmc":
            return f"rdpmc({index:#x})"
        name = M.msr_name(self.vendor, index)
        return f"wrmsr({name}, {value:#x})" if kind == "wrmsr" else f"rdmsr({name})"

    def guest_read(self, s: list[int], kind: str, index: int, value: int) -> None:
        native = self._native_read(s, kind, index)
        self._record(self.isa.tag, self._what(kind, index), native, value)
        if not (kind == "rdmsr" and index in kvm.PERFCTR_QUIRK_MSRS and not self.ref.has_msr(index)):
            self.ghost.guest_read(s, kind, index, value)  # (the quirk's 0 is compared above)

    def guest_write(self, s: list[int], msr: int, value: int) -> None:
        native: Outcome = 0
        if msr != M.MSR_X2APIC_LVTPC and self.ref.has_msr(msr):
            try:
                self.ref.wrmsr(list(s), msr, value)
            except Fault:
                native = None
            finally:
                self.ref.log.clear()
        elif msr not in kvm.PERFCTR_QUIRK_MSRS and self.system.cpu.has_msr(msr):
            native = None  # a PMU MSR of the host's the guest's CPUID does not enumerate (KVM's quirk aside)
        self.pending = (self.isa.tag, self._what("wrmsr", msr, value), native)
        self.ghost.guest_write(s, msr, value)

    def _complete_write(self, virt: Outcome) -> None:
        if self.pending is not None:
            tag, what, native = self.pending
            self.pending = None
            self._record(tag, what, native, virt, write=True)

    def wrote(self, s: list[int]) -> None:
        self._complete_write(0)

    def guest_emulated(self, s: list[int], cpl: int, branches: int = 0) -> None:
        self.completed += 1
        self._complete_write(0)  # the model's KVM completes every intercepted write
        self.ghost.guest_emulated(s, cpl, branches)

    def faulted(self, s: list[int], fault: Fault) -> None:
        self.completed += 1
        if self.pending is not None:
            self._complete_write(None)
            return
        kind, index, _ = self.isa.access
        self._record(self.isa.tag, self._what(kind, index), self._native_read(s, kind, index), None)

    def guest_pmi(self, s: list[int]) -> None:
        if s[self.ref.pmi_pending]:
            self.matched += 1
        self.ghost.guest_pmi(s)

    def filter_changed(self, s: list[int]) -> None:
        if self.native_filter is not None:
            self.native_filter.apply(kvm.current_filter(self.system.env, s))

    def irq_check(self, s: list[int], tag: str, count: int) -> None:
        # A native CPU takes a PMI as soon as it is raised: the ones the guest got, plus one
        # still owed (raised by the reference, never delivered).
        native = self.matched + (1 if s[self.ref.pmi_pending] else 0)
        self.matched = 0
        self._record(tag, "check_irq()", native, count)


# --- schedules ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    name: str
    kind: str  # "none", "every", "at", "random", "steps"
    every: int = 0
    at: tuple[int, ...] = ()
    reason: str = "interrupt"
    seed: int = 0
    nmis: bool = True  # random: unrelated host NMIs too

    @staticmethod
    def parse(text: str) -> Schedule:
        kind, _, rest = text.partition(":")
        try:
            if text == "none":
                return Schedule("none", "none")
            if text == "steps":
                return Schedule("steps", "steps")
            if kind == "every":
                k, _, reason = rest.partition(":")
                if int(k) < 1 or reason not in ("", "timer", "interrupt"):
                    raise ValueError
                return Schedule(text, "every", every=int(k), reason=reason or "interrupt")
            if kind == "at":
                pts = tuple(sorted(int(x) for x in rest.split(",") if x))
                if not pts or pts[0] < 0:
                    raise ValueError
                return Schedule(text, "at", at=pts)
            if kind == "random":
                seed, _, quiet = rest.partition(":")
                if quiet not in ("", "no-nmi"):
                    raise ValueError
                return Schedule(text, "random", seed=int(seed), nmis=not quiet)
        except ValueError:
            pass
        raise VpmuError(
            f"schedule {text!r} is not allowed; allowed: none, every:K[:timer|interrupt] (K >= 1), at:A,B,..., "
            "steps, random:SEED[:no-nmi]"
        )


#: Random schedules: chances per move of an unrelated NMI and of a host perf IPI; exits per program.
NMI_CHANCE, PERF_OP_CHANCE, RANDOM_EXITS = 0.004, 0.003, 64


def exit_periods(size: int) -> tuple[int, ...]:
    """The K of the ``every:K`` schedules of a program of ``size`` guest instructions."""
    if size <= SHORT:
        return (1, 3, 17)
    if size <= 50_000:
        return (7, 61)
    return (99_991, 1_000_003)


def default_schedules(size: int) -> list[Schedule]:
    """The schedules a case runs by default, by its size in guest instructions."""
    ks = exit_periods(size)
    out = [Schedule.parse("none")]
    out += [Schedule.parse(f"every:{k}") for k in ks]
    out.append(Schedule.parse(f"every:{ks[-1]}:timer"))
    out.append(Schedule.parse("steps"))  # a long case reports it as not applicable
    out += [Schedule.parse(f"random:{seed}") for seed in (1, 2, 3)]
    out += [Schedule.parse(f"random:{seed}:no-nmi") for seed in (1, 2)]
    return out


# --- one run --------------------------------------------------------------------------------


@dataclass
class VmRun:
    vm: str
    obs: list[Observation]
    violation: str = ""  # "property: message" of the ghost, if any
    finished: bool = True
    steps: int = 0
    instructions: int = 0
    exits: int = 0
    nmis: int = 0
    perf_ops: int = 0
    trace: list[dict[str, Any]] | None = None  # the steps up to the first difference
    #: perf's NMI handler ran inside kvm_mediated_pmu_load() and re-enabled PERF_GLOBAL_CTRL or
    #: rewrote LVTPC: the mechanism of finding F1 (docs/findings.md).
    f1: bool = False


class FilteredReference:
    """The native CPU of a VM with an event filter: one whose PMU does not implement the
    events the filter refuses. A selector for such an event is accepted and reads back, and
    the counter counts nothing — what KVM's filter shows the guest (§5.5, selftests §8.2).
    When userspace changes the filter on the running VM (``set_filter``), the native CPU
    changes with it, at the same instant. (The checker's reference has no filter, so
    ``vpmu check`` reports a filter as a guest-transparency difference; here the filter is
    part of the VM's contract.)"""

    def __init__(self, ref: Pmu, env: KernelEnv) -> None:
        self.ref, self.env = ref, env
        self.events = dict(ref.events)
        self.fixed_counts = ref.fixed_counts
        self.apply(env.filters[0])

    def apply(self, f: PreparedFilter | None) -> None:
        ref, vendor = self.ref, self.env.cpu.cfg.vendor
        if f is None:
            ref.events = dict(self.events)
            setattr(ref, "fixed_counts", self.fixed_counts)  # noqa: B010 - an instance override
            return
        ref.events = {
            k: v
            for k, v in self.events.items()
            if f.gp_allowed((k[0] & 0xFF) | (k[0] & 0xF00) << 24 | k[1] << 8, vendor)
        }
        counts = self.fixed_counts

        def fixed_counts(s: list[int], j: int, cpl: int) -> str | None:
            return counts(s, j, cpl) if f.fixed_allowed(j) else None

        setattr(ref, "fixed_counts", fixed_counts)  # noqa: B010 - an instance override, not a method rebind


def world_for(case: Case, vm: Vm) -> WorldSpec:
    return WorldSpec(
        name=f"{case.id}{'/' + vm.label if vm.label else ''}",
        machine=case.machine,
        vcpu=vm.vcpu,
        host_events=case.host_events,
        guest=GuestSpec(vm.program, enable="GP0" if vm.vcpu.num_gp else "0"),
        bounds=Bounds(exits=0, nmis=0, perf_ops=0),
        properties=GUEST_PROPERTIES,
        description=case.title,
        source=f"conform:{case.id}",
    )


def run_vm(design: str, case: Case, vm: Vm, schedule: Schedule, size: int = 0, max_steps: int = MAX_STEPS) -> VmRun:
    """Run one VM of a case under one schedule (``size``: its guest instructions, for random exits)."""
    system = System(get_design(design), world_for(case, vm), GUEST_PROPERTIES)
    system.stop_on_violation = False
    tap = Tap(system, vm.label)
    tap.native_filter = FilteredReference(system.ghost.ref, system.env)
    cpu, ghost = system.cpu, system.ghost
    rnd = random.Random(f"{schedule.seed}/{vm.label}")  # each VM of a case its own draw
    units = 0
    pos = 0
    mean_gap = max(1, size // RANDOM_EXITS) if size else 1000
    at = list(schedule.at)

    def next_after(p: int) -> int | None:
        if schedule.kind == "every":
            return (p // schedule.every + 1) * schedule.every
        if schedule.kind == "at":
            later = [a for a in at if a > p]
            return later[0] if later else None
        if schedule.kind == "random":
            return p + 1 + int(rnd.expovariate(1 / mean_gap))
        return None

    next_exit: int | None = at[0] if schedule.kind == "at" else next_after(0)
    ref = ghost.ref

    def chunk(s: list[int], ins: Instr) -> int:
        step = ins.step
        limit = s[step.arg]
        if next_exit is not None and next_exit > pos:
            limit = min(limit, next_exit - pos)
        br = 1 if step.branch else 0
        for pmu in (cpu, ref):
            k = pmu.units_until_pmi(s, True, step.ring, 1, br)
            if k is not None:
                limit = min(limit, k)
        return max(1, limit)

    system.chunk = chunk
    s: State = system.initial()
    recent: deque[tuple[StepRecord, State, State]] = deque(maxlen=TRACE_KEEP)
    run = VmRun(vm.label, tap.obs)
    load_span = system.task.spans("kvm_mediated_pmu_load")
    gc_msr = system.env.PERF_GLOBAL_CTRL
    seen_violation = 0
    first_bad = -1
    checked = 0
    steps = 0
    for steps in range(1, max_steps + 1):
        moves = system.moves(s)
        if not moves:
            break
        move: Move
        in_guest = bool(s[cpu.mode])
        if (DELIVER, 0) in moves:
            move = (DELIVER, 0)
        elif in_guest and next_exit is not None and pos >= next_exit:
            reason = schedule.reason
            if schedule.kind == "random":
                reason = "timer" if rnd.random() < 0.3 else "interrupt"
                if cpu.cfg.amd:
                    reason = "interrupt"  # SVM has no preemption timer
            move = (ASYNC_EXIT, ASYNC_EXITS[reason])
            run.exits += 1
            next_exit = next_after(pos)
        elif schedule.nmis and schedule.kind == "random" and not s[cpu.nmi_pending] and rnd.random() < NMI_CHANCE:
            move = (NMI, 0)
            run.nmis += 1
        elif schedule.kind == "random" and (perf_moves := system.perf_ops(s)) and rnd.random() < PERF_OP_CHANCE:
            move = rnd.choice(perf_moves)
            run.perf_ops += 1
        else:
            move = (STEP, 0)
        tap.step = steps
        before = s
        s, rec = system.apply(s, move)
        recent.append((rec, before, s))
        if rec.context == NMI_CTX and not run.f1 and any(a <= s[system.task_pc] < b for a, b in load_span):
            run.f1 = any((k == "wrmsr" and a == gc_msr and b) or k == "lvtpc" for k, a, b in rec.hw)
        units += rec.units
        pos = units + tap.completed
        v = s[ghost.violation]
        if v and not seen_violation:
            seen_violation = v
            run.violation = f"{P.by_index(v).name}: {ghost.message}"
        if first_bad < 0:
            differs = any(o.differs for o in tap.obs[checked:])
            checked = len(tap.obs)
            if seen_violation or differs:
                first_bad = steps
                run.trace = _trace_rows(system, list(recent), steps - len(recent) + 1)
    run.finished = system.finished(s)
    run.steps = steps
    run.instructions = pos
    return run


def _trace_rows(system: System, items: list[tuple[StepRecord, State, State]], first: int) -> list[dict[str, Any]]:
    from vpmu.check.system import CONTEXT_LABEL
    from vpmu.report.trace import changes, hw_event_str

    rows = []
    for n, (rec, before, after) in enumerate(items):
        rows.append(
            {
                "step": first + n,
                "context": CONTEXT_LABEL.get(rec.context, rec.context),
                "label": rec.label,
                "text": rec.text,
                "changes": {name: [old, new] for name, old, new in changes(system, before, after)},
                "hw": [hw_event_str(system, *e) for e in rec.hw],
            }
        )
    return rows


# --- a case under a schedule ----------------------------------------------------------------


@dataclass
class CaseRun:
    case: str
    schedule: str
    passed: bool = True
    native_ok: bool = True
    runs: int = 0
    seconds: float = 0.0
    steps: int = 0
    exits: int = 0
    nmis: int = 0
    perf_ops: int = 0
    instructions: int = 0
    failed_checks: list[str] = field(default_factory=list)  # virtualized assertions that fail
    native_failed: list[str] = field(default_factory=list)  # assertions that fail natively
    first_diff: str = ""
    violation: str = ""
    where: str = ""  # which run of a sweep failed first
    note: str = ""
    skipped: str = ""  # the schedule does not apply to the case: why
    trace: list[dict[str, Any]] | None = None
    observations: int = 0

    @property
    def incomplete(self) -> bool:
        return self.violation == INCOMPLETE

    @property
    def verdict(self) -> str:
        if self.skipped:
            return "n/a"
        if self.incomplete:
            return "INCOMPLETE"
        if not self.native_ok:
            return "CASE"
        return "pass" if self.passed else "FAIL"

    @property
    def caught_by_assertion(self) -> bool:
        return bool(self.failed_checks)


def evaluate(checks: Iterable[Check], values: dict[str, Outcome]) -> list[str]:
    """Names of the checks that fail on these values (skipped and unobserved ones aside)."""
    bad = []
    for c in checks:
        if c.skip:
            continue
        ok = c.evaluate(values)
        if ok is False:
            got = ", ".join(show(values[t]) for t in c.tags)
            bad.append(f"{c.name} (expected {c.text}, got {got})")
    return bad


def _judge(case: Case, runs: Sequence[VmRun], out: CaseRun, label: str = "") -> bool:
    """Fold VM runs into the case result; True if this group passed."""
    native: dict[str, Outcome] = {}
    virt: dict[str, Outcome] = {}
    ok = True
    for r in runs:
        out.steps += r.steps
        out.exits += r.exits
        out.nmis += r.nmis
        out.perf_ops += r.perf_ops
        out.instructions += r.instructions
        out.observations += len(r.obs)
        for o in r.obs:
            if o.tag:
                native[o.tag] = o.native
                virt[o.tag] = o.virt
        diff = next((o for o in r.obs if o.differs), None)
        if diff is not None or r.violation or not r.finished:
            ok = False
            if not out.first_diff and not out.violation:
                out.first_diff = diff.describe() if diff else ""
                out.violation = r.violation if r.violation else "" if r.finished else INCOMPLETE
                out.trace = r.trace
                out.where = label
                if r.f1 and case.vendor == "intel":  # on AMD the re-enabled GlobalCtl counts nothing (H8)
                    out.note = F1_NOTE
    # The reference follows the guest's own programming, including values it computed from what
    # it read (a preset from a measured count): after a difference it no longer shows a native
    # run, so native assertions are judged on clean runs only.
    nat_bad = evaluate(case.checks, native) if ok else []
    virt_bad = evaluate(case.checks, virt)
    if nat_bad:
        out.native_ok = False
        out.native_failed += [b for b in nat_bad if b not in out.native_failed]
    if virt_bad:
        ok = False
        if not out.where:
            out.where = label
        out.failed_checks += [b for b in virt_bad if b not in out.failed_checks]
    if not ok:
        out.passed = False
    return ok


_SIZES: dict[tuple[str, str, tuple[object, ...]], int] = {}


def _sizes(design: str, case: Case, vms: Sequence[Vm]) -> list[int]:
    """Guest instructions each VM's program completes (a run without exits; cached per process)."""
    out = []
    for vm in vms:
        key = (design, case.id, vm.key())
        if key not in _SIZES:
            _SIZES[key] = run_vm(design, case, vm, Schedule("none", "none")).instructions
        out.append(_SIZES[key])
    return out


def run_case(case: Case, design: str, schedule: Schedule) -> CaseRun:
    """Run every VM of a case under a schedule (``steps``: the sweep) and judge it."""
    t0 = time.perf_counter()
    out = CaseRun(case.id, schedule.name)
    if schedule.kind == "every" and schedule.reason == "timer" and case.vendor == "amd":
        out.skipped = NO_TIMER_ON_AMD
        return out
    if schedule.kind == "steps":
        vms = case.sweep or case.vms
        sizes = _sizes(design, case, vms)
        if not case.sweep and sum(sizes) > SHORT:
            out.skipped = f"a long case ({sum(sizes):,} guest instructions): no step sweep"
            return out
        for vm, size in zip(vms, sizes, strict=True):
            for b in range(size + 1):
                r = run_vm(design, case, vm, Schedule(f"at:{b}", "at", at=(b,)))
                out.runs += 1
                _judge(case, [r], out, f"{vm.label or 'vm'}: exit after instruction {b}")
    else:
        sizes = _sizes(design, case, case.vms) if schedule.kind == "random" else [0] * len(case.vms)
        runs = [run_vm(design, case, vm, schedule, size) for vm, size in zip(case.vms, sizes, strict=True)]
        out.runs = len(runs)
        _judge(case, runs, out)
    out.seconds = time.perf_counter() - t0
    return out


# --- many cases, in parallel ---------------------------------------------------------------

_CASES: dict[str, Case] | None = None


def cases_by_id() -> dict[str, Case]:
    global _CASES
    if _CASES is None:
        _CASES = {c.id: c for c in all_cases()}
    return _CASES


def case_size(case: Case, design: str = "upstream") -> int:
    return sum(_sizes(design, case, case.vms))


def plan(cases: Sequence[Case], schedules: Sequence[str] | None) -> list[tuple[str, str]]:
    """(case id, schedule) pairs: the given schedules, or each case's defaults."""
    tasks = []
    for case in cases:
        if schedules:
            names = list(schedules)
        elif case.schedules:
            names = list(case.schedules)
        else:
            names = [s.name for s in default_schedules(case_size(case))]
        tasks += [(case.id, n) for n in names]
    return tasks


def _task(args: tuple[str, str, str]) -> CaseRun:
    case_id, schedule, design = args
    return run_case(cases_by_id()[case_id], design, Schedule.parse(schedule))


def run_tasks(
    tasks: Sequence[tuple[str, str]],
    design: str,
    jobs: int = 1,
    progress: Callable[[CaseRun], None] | None = None,
    executor: Any = None,
) -> list[CaseRun]:
    """Run (case, schedule) tasks, in ``jobs`` processes or on ``executor`` (vpmu.check.executor);
    results in task order."""
    work = [(c, s, design) for c, s in tasks]
    if executor is not None:
        return list(executor.map(_task, work, progress))
    results: list[CaseRun] = []
    if jobs <= 1 or len(work) <= 1:
        for w in work:
            r = _task(w)
            results.append(r)
            if progress:
                progress(r)
        return results
    # One task at a time per worker (their costs differ by three orders of magnitude); results in task order.
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for r in pool.map(_task, work, chunksize=1):
            results.append(r)
            if progress:
                progress(r)
    return results


# --- the mutation check ---------------------------------------------------------------------

#: The broken designs the suite must catch (the scenarios issue's ablations).
MUTATIONS = ("no-clear", "no-status-restore", "put-keeps-eventsel", "no-guestonly-amd", "filter-no-reprogram")


def mutation_schedules(size: int) -> list[str]:
    """The schedules a mutation runs every case under: no exits, the densest periodic exits,
    fastpath exits, and one random schedule without unrelated NMIs (so that finding F1
    of upstream does not count as a catch)."""
    ks = exit_periods(size)
    return ["none", f"every:{ks[0]}", f"every:{ks[-1]}:timer", "random:1:no-nmi"]


@dataclass
class MutationResult:
    design: str
    by_assertion: list[str]  # cases whose own assertions fail
    by_comparison: list[str]  # cases where only the native comparison (or the ghost) differs
    runs: list[CaseRun]

    @property
    def caught(self) -> bool:
        return bool(self.by_assertion or self.by_comparison)


#: Mutations that change nothing on one vendor (GuestOnly exists only on AMD).
MUTATION_VENDORS = {"no-guestonly-amd": ("amd",)}


def mutation_tasks(cases: Sequence[Case], design: str) -> list[tuple[str, str]]:
    """Every case of the design's vendors under its mutation schedules (a case with its own
    schedule set: those of them without unrelated NMIs)."""
    vendors = MUTATION_VENDORS.get(design, ("intel", "amd"))
    tasks = []
    for c in cases:
        if c.vendor not in vendors:
            continue
        if c.schedules:
            names = [s for s in c.schedules if s != "steps" and not (s.startswith("random:") and "no-nmi" not in s)]
        else:
            names = mutation_schedules(case_size(c))
        tasks += [(c.id, s) for s in names]
    return tasks


def fold_mutation(design: str, runs: Sequence[CaseRun]) -> MutationResult:
    by_a: list[str] = []
    by_c: list[str] = []
    for r in runs:
        if r.passed or r.skipped or r.incomplete:
            continue
        if r.failed_checks:
            if r.case not in by_a:
                by_a.append(r.case)
        elif r.case not in by_c and r.case not in by_a:
            by_c.append(r.case)
    by_c = [c for c in by_c if c not in by_a]
    return MutationResult(design, by_a, by_c, list(runs))
