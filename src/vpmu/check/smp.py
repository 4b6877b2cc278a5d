"""Several physical CPUs and vCPU migration (worlds with ``cpus`` > 1).

The vCPU runs on one pCPU at a time; :class:`Smp` keeps that CPU's
per-CPU state in the slots every function already uses (the PMU and local
APIC registers, perf's per-CPU state with ``cpuc->enabled``,
``guest_ctx_loaded`` and ``guest_lvtpc_loaded``, the per-CPU instances of the
host's system-wide events, the NMI path's per-CPU variables, and the ghost's
per-CPU bookkeeping), and every other pCPU's in a shadow block of its own.
What belongs to the vCPU (KVM's ``struct kvm_pmu``, the vLAPIC, the VMCS, the
guest, the reference PMU) stays put. A migration is the scheduler's preemption
of the vCPU task between two ``vcpu_enter_guest()`` calls: ``kvm_sched_out()`` ->
``kvm_arch_vcpu_put()`` on one pCPU and ``kvm_sched_in()`` ->
``kvm_arch_vcpu_load()`` on the other (arch/x86/kvm/x86.c, v7.0; with a
mediated PMU neither touches the PMU: ``pmu->event_count`` is 0, and the next
``kvm_mediated_pmu_load()`` runs on the new pCPU). It swaps the blocks. A pCPU
the vCPU is not on is quiescent in the model: its own host tasks are not
modelled, so its counters do not advance until the vCPU comes back.

:class:`~vpmu.check.system.System` builds an :class:`Smp` only for a world with
several pCPUs (``system.smp``); a one-CPU world has none, so the checker pays
nothing for CPUs a world does not have. (A helper object rather than a
subclass, so that the compiled build can compile both.)
"""

from __future__ import annotations

from vpmu.check.system import MIGRATE, StepRecord, System
from vpmu.hw.layout import State

__all__ = ["MIGRATE", "Smp", "per_cpu_slot"]

#: Slots that belong to the vCPU or the checker, not to a pCPU, by name (or name prefix).
_VCPU_HW = ("MODE", "EXIT_REASON", "EXIT_QUALIFICATION", "EXIT_DATA", "EXIT_GUEST_CPL", "EXIT_INTR_VECTOR")
_VCPU_PREFIX = ("VMCS.", "MSR_STORE")


def per_cpu_slot(name: str, owner: str) -> bool:
    """Whether a slot is per physical CPU: hardware registers other than the VMCS and the exit
    information, perf's and the NMI path's per-CPU variables, and the ghost's view of them."""
    if owner == "hw":
        return name not in _VCPU_HW and not name.startswith(_VCPU_PREFIX)
    if owner == "host":
        return True
    if owner == "ghost":
        return name.startswith("ghost.")
    return False


class Smp:
    """The pCPUs of a world with several: their state blocks and the migration move."""

    def __init__(self, system: System) -> None:
        self.system = system
        L, world = system.layout, system.world
        self.ncpus = world.cpus
        self.per_cpu = tuple(i for i, sl in enumerate(L.slots) if per_cpu_slot(sl.name, sl.owner))
        boot = system.initial()
        base = len(L)
        self.shadow: list[int] = []  # first slot of each pCPU's shadow block
        for c in range(self.ncpus):
            self.shadow.append(len(L))
            for i in self.per_cpu:
                sl = L.slots[i]
                L.field(f"cpu{c}.{sl.name}", "smp", fmt=sl.fmt)
        self.vcpu_cpu = L.field("ctx.vcpu.cpu", "ctx", fmt="int")  # the pCPU the vCPU is on
        self.migrations_left = L.field("budget.migrations", "ctx", init=world.bounds.migrations, fmt="int")
        init = list(boot) + [0] * (len(L) - base)
        for c in range(1, self.ncpus):  # every pCPU booted like pCPU 0 (perf_events_lapic_init, events, SVM)
            for k, i in enumerate(self.per_cpu):
                init[self.shadow[c] + k] = boot[i]
        init[self.migrations_left] = world.bounds.migrations
        self.initial = tuple(init)
        self._again = frozenset(pc for pc, ins in enumerate(system.task.code) if ins.qualified == "vcpu_run:again")

    def can_migrate(self, s: State | list[int]) -> bool:
        """The vCPU task is preemptible: between two vcpu_enter_guest() calls, IRQs on, nothing
        pending or running in interrupt context, the guest PMU put."""
        system = self.system
        cpu, env = system.cpu, system.env
        return (
            s[self.migrations_left] > 0
            and s[system.task_pc] in self._again
            and s[system.nmi_pc] < 0
            and s[system.irq_pc] < 0
            and not s[cpu.mode]
            and s[cpu.host_if] == 1
            and not s[cpu.nmi_pending]
            and not s[cpu.irr]
            and not s[env.guest_ctx_loaded]
        )

    def migrations(self, s: State) -> list[tuple[int, int]]:
        """The migration moves enabled in ``s`` (after the one-CPU moves)."""
        if s[self.system.ghost.violation] or not self.can_migrate(s):
            return []
        return [(MIGRATE, c) for c in range(self.ncpus) if c != s[self.vcpu_cpu]]

    def migrate(self, state: State, move: tuple[int, int], record: bool) -> tuple[State, StepRecord | None]:
        """The vCPU task moves to pCPU ``move[1]``: the pCPU blocks are swapped."""
        s = list(state)
        src, dst = s[self.vcpu_cpu], move[1]
        for k, i in enumerate(self.per_cpu):
            s[self.shadow[src] + k] = s[i]
            s[i] = s[self.shadow[dst] + k]
            s[self.shadow[dst] + k] = 0  # the running pCPU's block lives in the live slots
        s[self.vcpu_cpu] = dst
        s[self.migrations_left] -= 1
        if not record:
            return tuple(s), None
        text = (
            f"the vCPU task is preempted on pCPU {src} (kvm_sched_out -> kvm_arch_vcpu_put) and "
            f"scheduled in on pCPU {dst} (kvm_sched_in -> kvm_arch_vcpu_load)"
        )
        return tuple(s), StepRecord(move, "task", "migrate", text, [])
