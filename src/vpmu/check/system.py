"""The whole machine for one design and one world: contexts, moves, and the ghost.

:class:`System` composes the layers: the CPU (hw), host perf and KVM built
from the design (kernel), the guest program (guest), and the ghost (check).
It defines the state graph the checker explores:

* one CPU, so exactly one context runs at a time: in host mode the NMI
  handler if active, else the IRQ handler, else the vCPU task; in guest mode
  the guest's PMI handler if active, else its main program;
* a pending NMI or interrupt that can be taken is taken before the running
  context's next step (with ``pmi_skid`` > 0 the checker may also let up to
  that many steps run first);
* the checker may also, within the world's bounds, force an asynchronous
  VM-exit at any guest instruction boundary, or raise an unrelated NMI.

A move is a small tuple; :meth:`System.apply` performs one and returns what
happened, which the trace writer prints.

The state graph, for searches built on it (the explorer, a distributed one):
:meth:`System.initial` is the initial state; :meth:`System.moves` lists the
moves enabled in a state in a fixed order; :meth:`System.next_state` performs
one without a trace record (what a search needs; ``apply`` is for replays);
``running(s)[0]`` is the context that makes a state's next move (context
switches are counted between consecutive moves), :meth:`System.violation` the
violated property's index (0: none), and :meth:`System.finished` whether the
vCPU task has finished. States are tuples of ints; all of these are pure
functions of the state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vpmu.check import properties as P
from vpmu.check.ghost import Ghost
from vpmu.check.world import ASYNC_EXITS, WorldSpec
from vpmu.designs import ENTRIES
from vpmu.errors import Fault, VpmuError
from vpmu.guest.isa import GuestIsa
from vpmu.guest.program import assemble, msr_index, parse_value, pmi_handler
from vpmu.hw import msr as M
from vpmu.hw import virt as V
from vpmu.hw.layout import Layout, State
from vpmu.hw.virt import Cpu
from vpmu.kernel import kvm, perf
from vpmu.kernel.env import KernelEnv
from vpmu.kernel.lang import END, IRET, LOOP, VMENTER, WARN, Design, Instr, Program, compile_program

if TYPE_CHECKING:
    from vpmu.check.smp import Smp

# Move kinds
STEP, DELIVER, ASYNC_EXIT, NMI, PERF_OP, MIGRATE = 0, 1, 2, 3, 4, 5
CALL_FUNCTION_SINGLE_VECTOR = 0xFB  # the IPI perf_install_in_context() / perf_event_{enable,disable}() send
LOCAL_TIMER_VECTOR = 0xEC  # the local APIC timer: hrtimers, incl. perf's multiplexing timer
Move = tuple[int, int]
# PERF_OP arguments: an event index toggles it (disable/enable); OPEN + e opens event e on
# another CPU; CLOSE + e closes it; ROTATE fires the multiplexing hrtimer.
PERF_OPEN, PERF_ROTATE, PERF_CLOSE = 0x100, 0x200, 0x400

TASK, NMI_CTX, IRQ_CTX, GUEST, GUEST_IRQ = "task", "nmi", "irq", "guest", "guest-irq"
CONTEXT_LABEL = {
    TASK: "host",
    NMI_CTX: "NMI",
    IRQ_CTX: "IRQ",
    GUEST: "guest",
    GUEST_IRQ: "guest PMI",
}


@dataclass
class StepRecord:
    """What one move did, for traces."""

    move: Move
    context: str
    label: str  # function:label, or a description of an event
    text: str
    hw: list[tuple[str, int, int]]
    units: int = 0  # guest instructions this move retired in guest mode


class System:
    def __init__(self, design: Design, world: WorldSpec, properties: tuple[str, ...] | None = None) -> None:
        self.design = design
        self.world = world
        L = self.layout = Layout()
        self.cpu = Cpu(world.machine, L)
        legacy = design.vpmu == "legacy"
        env = self.env = KernelEnv(
            self.cpu, L, world.vcpu, world.host_events, perf_based=legacy, lifecycle=world.lifecycle
        )
        self.props = properties if properties is not None else world.enabled_properties()
        if legacy:  # the mediated load/put's invariants do not apply (properties.MEDIATED_ONLY)
            asked = [p for p in properties or () if p in P.MEDIATED_ONLY]
            if asked:
                raise VpmuError(
                    f"property {asked[0]!r} does not apply to design {design.name!r}: {P.MEDIATED_ONLY[asked[0]]}"
                )
            self.props = tuple(p for p in self.props if p not in P.MEDIATED_ONLY)
        _check_properties(self.props, world)
        self.ghost = Ghost(env, L, self.props)
        env.obs = self.ghost
        # Context program counters (-1: not running).
        self.task_pc = L.field("ctx.task.pc", "ctx", fmt="int")
        self.nmi_pc = L.field("ctx.nmi.pc", "ctx", init=-1, fmt="int")
        self.irq_pc = L.field("ctx.irq.pc", "ctx", init=-1, fmt="int")
        self.irq_vec = L.field("ctx.irq.vector", "ctx", fmt="int")  # which handler the IRQ context runs
        self.perf_ops_left = L.field("budget.perf_ops", "ctx", init=world.bounds.perf_ops, fmt="int")
        self.exits_left = L.field("budget.exits", "ctx", init=world.bounds.exits, fmt="int")
        self.nmis_left = L.field("budget.nmis", "ctx", init=world.bounds.nmis, fmt="int")
        self.async_reasons = tuple(ASYNC_EXITS[r] for r in world.bounds.exit_reasons)
        #: The checker stops expanding a violating state; a simulation may run on.
        self.stop_on_violation = True
        #: Guest loop instructions one step may retire; the simulator raises it.
        self.chunk: Callable[[list[int], Instr], int] = lambda s, ins: 1

        fns = design.build(env)
        self.task = compile_program(fns, ENTRIES["task"])
        self.nmi = compile_program(fns, ENTRIES["nmi"])
        self.irq_programs = {
            M.PERF_GUEST_MEDIATED_PMI_VECTOR: compile_program(fns, ENTRIES["irq"]),
            CALL_FUNCTION_SINGLE_VECTOR: compile_program(fns, ENTRIES["ipi"]),
            LOCAL_TIMER_VECTOR: compile_program(fns, ENTRIES["timer"]),
        }
        boot = compile_program(fns, "kvm_enable_virtualization_cpu")
        # Where the task resumes at VM-exit: an NMI exit's NMI runs there, before anything else (V7).
        self._after_vmenter = frozenset(pc + 1 for pc, ins in enumerate(self.task.code) if ins.step.kind == VMENTER)
        _check_ends(design.name, self.task, END, "the vCPU task")
        _check_ends(design.name, self.nmi, IRET, "the NMI handler")
        for prog in self.irq_programs.values():
            _check_ends(design.name, prog, IRET, "an interrupt handler")
        isa = self.isa = GuestIsa(env)
        env.inject_gp = self._inject_gp
        try:
            gmain = assemble(env, isa, "guest_main", world.guest.program)
            rearm = []
            for line in world.guest.rearm:
                parts = line.split()
                if len(parts) != 2:
                    raise VpmuError(f"guest.rearm entry {line!r}: expected 'MSR VALUE'")
                rearm.append((msr_index(env, parts[0]), parse_value(env, parts[1])))
            handler = pmi_handler(env, isa, world.guest.ack, parse_value(env, world.guest.enable), rearm)
        except VpmuError as e:
            raise VpmuError(f"{world.source or world.name}: {e}") from None
        self.guest = compile_program({"guest_main": gmain}, "guest_main")
        self.guest_irq = compile_program({"guest_pmi_handler": handler}, "guest_pmi_handler")
        self.functions = {**fns, "guest_main": gmain, "guest_pmi_handler": handler}

        # Checkpoints for I5/I6 and the loaded window for I9, in the task program.
        self.checkpoints = self._checkpoints()
        window: set[int] = set()
        for (_, load_end), (put_start, _) in zip(
            self.task.spans("kvm_mediated_pmu_load"), self.task.spans("kvm_mediated_pmu_put"), strict=False
        ):
            window.update(range(load_end, put_start + 1))
        self.ghost.loaded_window = frozenset(window)
        self.ghost.task_pc = self.task_pc
        self._initial = self._boot(boot)
        # Several pCPUs: their state blocks and the migration move (vpmu.check.smp). A one-CPU
        # world has none, so the checker pays nothing for CPUs a world does not have.
        self.smp: Smp | None = None
        if world.cpus > 1:
            from vpmu.check.smp import Smp

            self.smp = Smp(self)
            self._initial = self.smp.initial

    def _inject_gp(self, s: list[int], why: str) -> None:
        """kvm_inject_gp() for an intercepted guest instruction: the guest's #GP fixup (if its
        program declared one) skips the instruction, which does not retire."""
        if not self.isa.fault_fixup(s, Fault("#GP", why)):
            raise VpmuError(f"KVM injected #GP into the guest ({why}) and the guest program has no #GP fixup")
        env = self.env
        rip = env.guest_irq_rip if s[env.guest_irq_rip] >= 0 else env.guest_rip
        s[rip] += 1

    def _checkpoints(self) -> dict[int, list[tuple[int, Callable[[list[int]], None]]]]:
        """pc -> [(first pc of the span, check)]: a check runs when the task steps from inside its
        span to the pc (falling through or jumping), not when it arrives from elsewhere (the
        fastpath's goto vmenter lands on the end of load without having run it)."""
        out: dict[int, list[tuple[int, Callable[[list[int]], None]]]] = {}
        ghost = self.ghost
        for start, end in self.task.spans("kvm_mediated_pmu_load"):
            out.setdefault(end, []).append((start, ghost.after_load))
        for start, end in self.task.spans("kvm_mediated_pmu_put"):
            inner = [a for a, _ in self.task.spans("perf_put_guest_context") if start <= a < end]
            out.setdefault(inner[0] if inner else end, []).append((start, ghost.after_put))
            out.setdefault(end, []).append((start, ghost.after_put_end))
        return out

    # -- initial state ---------------------------------------------------------------------
    def _boot(self, boot: Program) -> State:
        """Boot: LVTPC = NMI (perf_events_lapic_init), KVM enables virtualization,
        host events are created and scheduled in, perf enables the PMU."""
        s = self.layout.initial()
        cpu, env = self.cpu, self.env
        cpu.write_lvtpc(s, M.APIC_DM_NMI)
        for ins in boot.code:
            if ins.step.kind == END:
                break
            if ins.do and (ins.when is None or ins.when(s)):
                ins.do(s)
        for e, ev in enumerate(env.host_events):
            if not ev.opened:
                continue
            s[env.ev_prev[e]] = env.armed_value(e)  # x86_perf_event_set_period()
        perf.sched_in(env, s)
        for e, ev in enumerate(env.host_events):
            if s[env.ev_active[e]]:
                s[self.ghost.owner_gp + ev.counter] = 1
        if env.pmu_ctx_here(s) and cpu.global_ctrl >= 0:
            cpu.wrmsr(s, env.PERF_GLOBAL_CTRL, env.host_global_enable)
        if cpu.vmcs_guest_pgc >= 0:
            # kvm_pmu_refresh(): the reset value reaches the VMCS via write_global_ctrl (§1.4).
            s[cpu.vmcs_guest_pgc] = s[env.pmu_global_ctrl]
        cpu.log.clear()
        return tuple(s)

    def initial(self) -> State:
        return self._initial

    # -- contexts ------------------------------------------------------------------------------
    def running(self, s: State | list[int]) -> tuple[str, int, Program]:
        """The running context, its pc slot, and its program."""
        if s[self.cpu.mode]:
            if s[self.env.guest_irq_rip] >= 0:
                return GUEST_IRQ, self.env.guest_irq_rip, self.guest_irq
            return GUEST, self.env.guest_rip, self.guest
        if s[self.nmi_pc] >= 0:
            return NMI_CTX, self.nmi_pc, self.nmi
        if s[self.irq_pc] >= 0:
            return IRQ_CTX, self.irq_pc, self.irq_programs[s[self.irq_vec]]
        return TASK, self.task_pc, self.task

    def finished(self, s: State | list[int]) -> bool:
        return (
            not s[self.cpu.mode]
            and s[self.nmi_pc] < 0
            and s[self.irq_pc] < 0
            and self.task.code[s[self.task_pc]].step.kind == END
        )

    def _deliverable(self, s: State | list[int]) -> bool:
        cpu = self.cpu
        if s[cpu.mode]:
            return cpu.guest_exit_pending(s) != V.EXIT_NONE
        if cpu.host_nmi_deliverable(s):
            return True
        return s[self.irq_pc] < 0 and s[self.nmi_pc] < 0 and cpu.host_irq_deliverable(s) != 0

    # -- the state graph -------------------------------------------------------------------------
    def moves(self, s: State) -> list[Move]:
        """Every move enabled in ``s``, in a fixed order (determinism)."""
        if s[self.ghost.violation] and self.stop_on_violation:
            return []
        out: list[Move] = []
        done = self.finished(s)
        deliverable = self._deliverable(s)
        if deliverable:
            out.append((DELIVER, 0))
            if self.cpu.skid >= 0 and s[self.cpu.skid] > 0:
                out.append((STEP, 0))
        elif not done:
            out.append((STEP, 0))
        if done:
            return out
        if s[self.cpu.mode] and s[self.exits_left] > 0 and not deliverable:
            out.extend((ASYNC_EXIT, r) for r in self.async_reasons)
        # A backtrace request waits until every target CPU cleared its bit (one at a time).
        if s[self.nmis_left] > 0 and not s[self.cpu.nmi_pending] and not s[self.env.nmi_backtrace]:
            out.append((NMI, 0))
        if s[self.perf_ops_left] > 0:
            out.extend(self.perf_ops(s))
        if self.smp is not None and out:
            out.extend(self.smp.migrations(s))
        return out

    def perf_ops(self, s: State | list[int]) -> list[Move]:
        """What host perf on another CPU may start now: toggle an installed event, open one
        that does not exist yet, or (when a flexible event found no counter) rotate. One
        operation at a time: none while an IPI or the multiplexing timer is in flight."""
        env = self.env
        if s[env.ipi_event] >= 0 or self._timer_in_flight(s):
            return []
        out: list[Move] = []
        for e, ev in enumerate(env.host_events):
            if s[env.ev_installed[e]]:
                out.append((PERF_OP, e))
            elif not s[env.ev_opened[e]]:
                out.append((PERF_OP, PERF_OPEN + e))
            if ev.close and s[env.ev_opened[e]] and (ev.cpu or s[env.ev_installed[e]]):
                out.append((PERF_OP, PERF_CLOSE + e))
        if s[env.rotate_necessary]:
            out.append((PERF_OP, PERF_ROTATE))
        return out

    def _irq_running(self, s: State | list[int], vector: int) -> bool:
        return s[self.irq_pc] >= 0 and s[self.irq_vec] == vector

    def _timer_in_flight(self, s: State | list[int]) -> bool:
        """The multiplexing timer interrupt is pending, acknowledged (VMX acks it at VM-exit:
        ISR and the exit's vector) or its handler runs."""
        cpu, timer = self.cpu, 1 << LOCAL_TIMER_VECTOR
        acked = cpu.exit_vector >= 0 and s[cpu.exit_vector] == LOCAL_TIMER_VECTOR
        return bool((s[cpu.irr] | s[cpu.isr]) & timer) or acked or self._irq_running(s, LOCAL_TIMER_VECTOR)

    def successors(self, s: State) -> list[tuple[Move, State]]:
        """Every enabled move of ``s`` with the state it leads to, in :meth:`moves` order."""
        return [(m, self._apply(s, m, False)[0]) for m in self.moves(s)]

    def next_state(self, state: State, move: Move) -> State:
        """The state one move leads to (what :meth:`apply` returns, without building its record)."""
        return self._apply(state, move, False)[0]

    def apply(self, state: State, move: Move) -> tuple[State, StepRecord]:
        """Perform one move; return the new state and a record of it."""
        new, rec = self._apply(state, move, True)
        assert rec is not None
        return new, rec

    def _apply(self, state: State, move: Move, record: bool) -> tuple[State, StepRecord | None]:
        if move[0] == MIGRATE:
            assert self.smp is not None
            return self.smp.migrate(state, move, record)
        s = list(state)
        cpu, ghost = self.cpu, self.ghost
        cpu.log.clear()
        kind, arg = move
        ctx, pc_slot, prog = self.running(s)
        ghost.instr = None
        ghost.context = ctx
        rec: StepRecord | None
        if kind == STEP:
            rec = self._step(state, s, ctx, pc_slot, prog, record)
        elif kind == DELIVER:
            rec = self._deliver(s, ctx)
        elif kind == ASYNC_EXIT:
            s[self.exits_left] -= 1
            cpu.vmexit(s, arg)
            rec = StepRecord(move, ctx, "VM-exit", f"asynchronous VM-exit: {V.EXIT_NAMES[arg]}", [])
        elif kind == NMI:
            s[self.nmis_left] -= 1
            s[cpu.nmi_pending] = 1
            s[self.env.nmi_backtrace] = 1
            rec = StepRecord(
                move,
                ctx,
                "NMI",
                "an unrelated NMI arrives (NMI pending): another CPU's backtrace IPI (this CPU in backtrace_mask)",
                [],
            )
        else:
            s[self.perf_ops_left] -= 1
            text = self._perf_op(s, arg)
            label = "timer" if arg == PERF_ROTATE else "IPI" if "IPI" in text else "perf"  # no IPI: other CPU's own
            rec = StepRecord(move, ctx, label, text, [])
        if rec is not None:
            if record:
                rec.move = move
                rec.hw = list(cpu.log)
            else:
                rec = None
        ghost.after_step(state, s, cpu.log)
        if kind == STEP and ctx == TASK and s[self.task_pc] in self.checkpoints:
            prev = state[self.task_pc]
            for start, judge in self.checkpoints[s[self.task_pc]]:
                if start <= prev < s[self.task_pc]:
                    judge(s)
        if not s[ghost.violation] and self.finished(s) and not self._deliverable(s):
            ghost.terminal(s)
        return tuple(s), rec

    def _perf_op(self, s: list[int], arg: int) -> str:
        """Start a host perf operation from another CPU; describe it."""
        env, cpu = self.env, self.cpu
        if arg == PERF_ROTATE:
            s[cpu.irr] |= 1 << LOCAL_TIMER_VECTOR
            return "perf's multiplexing hrtimer expires: local APIC timer interrupt pending"
        if PERF_OPEN <= arg < PERF_CLOSE and perf.mediated_pmu_account_event(env, s, arg & 0xFF):
            name = env.host_events[arg & 0xFF].name
            return f"another CPU's perf_event_open({name}) fails: -EOPNOTSUPP (a mediated VM exists, H14)"
        if arg >= PERF_OPEN:
            remote = _remote_perf_op(env, s, arg)
            if remote:
                return remote
        e = arg & 0xFF
        name = env.host_events[e].name
        s[env.ipi_event] = arg - PERF_CLOSE + perf.IPI_REMOVE if arg >= PERF_CLOSE else e
        s[cpu.irr] |= 1 << CALL_FUNCTION_SINGLE_VECTOR
        if arg >= PERF_CLOSE:
            return (
                f"another CPU closes {name} (perf_event_release_kernel: perf_remove_from_context), remove IPI pending"
            )
        if arg >= PERF_OPEN:
            s[env.ev_opened[e]] = 1
            return f"another CPU opens {name} (perf_event_open: active_events++), install IPI pending"
        what = "perf_event_disable" if s[env.ev_enabled[e]] else "perf_event_enable"
        return f"another CPU calls {what}({name}): IPI pending"

    def _deliver(self, s: list[int], ctx: str) -> StepRecord:
        cpu = self.cpu
        if s[cpu.mode]:
            reason = cpu.guest_exit_pending(s)
            cpu.vmexit(s, reason)
            return StepRecord((DELIVER, 0), ctx, "VM-exit", f"VM-exit: {V.EXIT_NAMES[reason]}", [])
        if cpu.host_nmi_deliverable(s):
            cpu.take_nmi(s)
            s[self.nmi_pc] = 0
            text = "NMI delivered: default_do_nmi()"
            if cpu.cfg.intel and s[cpu.exit_reason] == V.EXIT_NMI and s[self.task_pc] in self._after_vmenter:
                text = "NMI delivered: the NMI VM-exit's vmx_handle_nmi() -> vmx_do_nmi_irqoff() -> default_do_nmi()"
            return StepRecord((DELIVER, 0), ctx, "NMI", text, [])
        vec = cpu.host_irq_deliverable(s)
        cpu.take_irq(s, vec)
        return StepRecord((DELIVER, 0), ctx, "IRQ", self._enter_irq(s, vec), [])

    def _enter_irq(self, s: list[int], vec: int) -> str:
        """Start the handler of ``vec`` in the IRQ context; describe it."""
        prog = self.irq_programs.get(vec)
        if prog is None:
            return f"interrupt {vec:#x} (no handler in the model)"
        s[self.irq_pc] = 0
        s[self.irq_vec] = vec
        return f"interrupt {vec:#x}: {prog.entry}()"

    def _step(
        self, state: State, s: list[int], ctx: str, pc_slot: int, prog: Program, record: bool = True
    ) -> StepRecord | None:
        cpu, ghost = self.cpu, self.ghost
        pc = s[pc_slot]
        ins = prog.code[pc]
        st = ins.step
        ghost.instr = ins
        guest = ctx in (GUEST, GUEST_IRQ)
        if self.cpu.skid >= 0 and s[cpu.skid] > 0:
            s[cpu.skid] -= 1
            if ctx != NMI_CTX:  # an instruction ran: a later NMI is not back to back (nor swallowed)
                s[self.env.nmi_b2b] = s[self.env.swallow_nmi] = 0
        cond = ins.when is None or ins.when(s)
        next_pc = pc + 1
        n_units = 1
        try:
            if st.kind == LOOP:
                n_units = max(1, min(self.chunk(s, ins), s[st.arg]))
                s[st.arg] -= n_units
                if s[st.arg] > 0:
                    next_pc = pc
            elif st.kind == WARN:
                if cond:
                    ghost.warn(s, f"{ins.qualified}: {st.listing()}")
                    if ins.target >= 0:
                        next_pc = ins.target
            elif st.kind == kvm.INTR:
                if cond:
                    self._enter_irq(s, s[cpu.exit_vector])
            else:
                if cond and ins.do is not None:
                    ins.do(s)
                if cond and ins.target >= 0:
                    next_pc = ins.target
        except Fault as f:
            if guest:
                if not self.isa.fault_fixup(s, f):
                    raise VpmuError(f"guest instruction {ins.qualified} ({st.listing()}) faults: {f}") from None
                n_units = 0  # a faulting instruction does not retire; the guest's #GP fixup skips it
            else:
                ghost.warn(s, f"{ins.qualified}: unchecked MSR access error: {f}")
        for slot in ins.clear:
            s[slot] = 0
        # Advance the pc and retire the instruction in the mode it ran in.
        if guest:
            if s[cpu.mode]:  # completed in guest mode (no exit)
                if st.kind == IRET:
                    pass  # the handler's iret cleared its rip
                else:
                    s[pc_slot] = next_pc
                if st.retire and n_units:
                    branches = n_units if st.branch else 0
                    if st.branch and st.period > 1:  # a loop body ending in a branch: count the group ends
                        left = s[st.arg]
                        branches = (left + n_units - 1) // st.period - (left - 1) // st.period
                    cycles = None
                    if st.ipc > 1:  # a cycle ends with every ipc-th instruction of the loop
                        left = s[st.arg]
                        cycles = (left + n_units - 1) // st.ipc - (left - 1) // st.ipc
                    cpu.retire(s, True, st.ring, n_units, branches, cycles, st.ipc)
                    ghost.guest_retired(s, st.ring, n_units, branches, cycles, st.ipc)
            elif st.kind == IRET:
                pass
            # else: the instruction exited; KVM skips it once emulated
        else:
            if st.kind == IRET:
                s[pc_slot] = -1
                if ctx == NMI_CTX:
                    cpu.iret_nmi(s)
                elif ctx == IRQ_CTX:
                    s[self.irq_vec] = 0
            elif st.kind != END:
                s[pc_slot] = next_pc
            if st.kind not in (VMENTER, END) and st.retire and not s[cpu.mode]:
                cpu.retire(s, False, 0, 1)
                ghost.host_retired(s, 1)
        if not record:
            return None  # a search move: the text is built only for traces (replays)
        text = st.listing()
        if st.kind == LOOP and n_units != 1:
            text = f"{n_units} of {text}"
        units = n_units if guest and s[cpu.mode] and st.retire else 0
        return StepRecord((STEP, 0), ctx, ins.qualified, text, [], units)

    # -- helpers for reports -------------------------------------------------------------------------
    def violation(self, s: State) -> int:
        return s[self.ghost.violation]


def _remote_perf_op(env: KernelEnv, s: list[int], arg: int) -> str:
    """Open or close an event bound to another CPU: no IPI reaches this CPU, only the
    system-wide active_events changes (V3: __x86_pmu_event_init() increments it,
    hw_perf_event_destroy() decrements it; arch/x86/events/core.c). "" for this CPU's events."""
    e = arg & 0xFF
    ev = env.host_events[e]
    if not ev.cpu:
        return ""
    if arg >= PERF_CLOSE:
        s[env.ev_opened[e]] = 0
        return f"CPU {ev.cpu} closes {ev.name} (its free: hw_perf_event_destroy(), active_events--)"
    s[env.ev_opened[e]] = 1
    return f"CPU {ev.cpu} opens {ev.name} for itself (perf_event_open: __x86_pmu_event_init(), active_events++)"


def _check_ends(design: str, prog: Program, kind: str, what: str) -> None:
    """A context's program must end in its unconditional end (task) or iret (handler) step, or the
    context would run off its code: a design that deletes that step is refused by name."""
    last = prog.code[-1] if prog.code else None
    if last is None or last.step.kind != kind or last.when is not None:
        raise VpmuError(
            f"design {design!r}: {prog.entry} ({what}) no longer ends in an unconditional {kind} step "
            f"(ends in {last.qualified if last else 'nothing: every step deleted'}); an edit deleted or moved it"
        )


def _check_properties(props: tuple[str, ...], world: WorldSpec) -> None:
    """No vacuous verdict: judge at least one property, and only properties of the world's vendor."""
    from vpmu.check import properties as P

    vendor = world.machine.vendor
    wrong = [p for p in props if P.get(p).vendor not in ("", vendor)]
    if wrong or not props:
        said = ", ".join(f"{p} ({P.BY_NAME[p].vendor} only)" for p in wrong) or "none"
        raise VpmuError(
            f"world {world.name!r} ({vendor}): properties to judge: {said}; allowed: at least one property, "
            f"each of them for {vendor} or both vendors (vpmu explain)"
        )
