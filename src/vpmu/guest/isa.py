"""Guest instructions that touch the PMU, as the virtualized CPU executes them.

A guest instruction either runs on the hardware (passed-through MSRs, RDPMC
when not intercepted) or makes the CPU exit to KVM with the exit information
KVM needs (the MSR, the value, the guest's CPL). Which one is decided by the
MSR bitmap / MSRPM KVM programmed (kernel-mediated-pmu.md §5.2, §5.3).

Each instruction reports what the guest did and saw to the observer, so the
checker's reference PMU sees exactly the guest's own programming.

Two optional guest facilities serve test programs (``vpmu conform``):

* **#GP fixup** — a guest that installed an exception handler (the ``.gp_fixup``
  directive; kvm-unit-tests' ``*_safe`` accessors, the selftests'
  ``rdmsr_safe``) survives a #GP: the faulting instruction does not retire,
  the handler records the vector in the guest variable ``gp`` and resumes at
  the next instruction (:meth:`GuestIsa.fault_fixup`, called by the system);
* **a probe** (:class:`Probe`) — whoever runs the program may attach one to
  see every guest access with its tag and its outcome, including #GP.
"""

from __future__ import annotations

from typing import Protocol

from vpmu.errors import Fault
from vpmu.hw import msr as M
from vpmu.hw import virt as V
from vpmu.kernel import kvm
from vpmu.kernel.env import KernelEnv

GP_VECTOR = 13


class Probe(Protocol):
    """Sees the guest's accesses and their outcomes (attached by a test runner)."""

    def wrote(self, s: list[int]) -> None:
        """The current passed-through WRMSR completed without a fault."""

    def faulted(self, s: list[int], fault: Fault) -> None:
        """The current access raised #GP and the guest's fixup skipped it."""

    def irq_check(self, s: list[int], tag: str, count: int) -> None:
        """The guest checked how many PMIs its handler took since the last check."""


class GuestIsa:
    """Executes guest PMU instructions against the CPU under KVM's interception policy."""

    def __init__(self, env: KernelEnv) -> None:
        self.env = env
        self.cpu = env.cpu
        self.passthrough = kvm.passthrough_msrs(env)
        self.rdpmc_exits = kvm.need_rdpmc_intercept(env)
        #: The guest installed a #GP handler that records the vector and skips the instruction.
        self.gp_fixup = False
        #: The guest's PMI handler: "linux" (shaped like Linux's) or "count" (counts, defers the rest).
        self.pmi_handler = "linux"
        #: Guest variables (name -> state slot); ``rax`` is the register reads return into.
        self.vars: dict[str, int] = {"rax": env.guest_rax}
        #: The tag of the access in progress (set by the instruction before it runs), and the access.
        self.tag = ""
        self.access: tuple[str, int, int] = ("", 0, 0)
        self.probe: Probe | None = None

    def var(self, name: str) -> int:
        """The state slot of guest variable ``name``, claimed on first use (only while the
        program is assembled: the layout is frozen once the initial state exists)."""
        if name not in self.vars:
            self.vars[name] = self.env.layout.field(f"guest.var.{name}", "guest")
        return self.vars[name]

    def wrmsr(self, s: list[int], msr: int, value: int, ring: int = 0) -> None:
        self.access = ("wrmsr", msr, value)
        self.env.obs.guest_write(s, msr, value)
        if msr in self.passthrough:
            self.cpu.wrmsr(s, msr, value)
            if self.probe is not None:
                self.probe.wrote(s)
        else:
            self.cpu.vmexit(s, V.EXIT_WRMSR, msr, value, ring)

    def rdmsr(self, s: list[int], msr: int, ring: int = 0) -> int | None:
        """The value read, or None when the read exits (KVM reports it on emulation)."""
        self.access = ("rdmsr", msr, 0)
        if msr in self.passthrough:
            return self._read(s, "rdmsr", msr, self.cpu.rdmsr(s, msr))
        self.cpu.vmexit(s, V.EXIT_RDMSR, msr, 0, ring)
        return None

    def rdpmc(self, s: list[int], ecx: int, ring: int = 0) -> int | None:
        self.access = ("rdpmc", ecx, 0)
        if not self.rdpmc_exits:
            return self._read(s, "rdpmc", ecx, self.cpu.rdpmc(s, ecx))
        self.cpu.vmexit(s, V.EXIT_RDPMC, ecx, 0, ring)
        return None

    def _read(self, s: list[int], kind: str, index: int, value: int) -> int:
        """A read that completed in guest mode: the value lands in RAX and is observed."""
        s[self.env.guest_rax] = value
        self.env.obs.guest_read(s, kind, index, value)
        return value

    def exit(self, s: list[int], reason: int, ring: int = 0, qual: int = 0) -> None:
        """An instruction that always exits (CPUID, HLT; ``qual``: the exit qualification)."""
        self.cpu.vmexit(s, reason, qual, 0, ring)

    def forced_emulation(self, s: list[int], branch: bool, ring: int = 0) -> None:
        """KVM_FEP (ud2; .ascii "kvm") before an instruction: #UD is intercepted and KVM's
        emulator runs the instruction (handle_ud(), kvm.force_emulation_prefix=1)."""
        self.cpu.vmexit(s, V.EXIT_UD, 1 if branch else 0, 0, ring)

    def ucall(self, s: list[int], arg: int, ring: int = 0) -> None:
        """A selftest ucall (GUEST_SYNC): port I/O that exits to userspace; ``arg`` says what
        userspace does before the next KVM_RUN (an index into ``env.filters``)."""
        self.cpu.vmexit(s, V.EXIT_IO, arg, 0, ring)

    def lvtpc_write(self, s: list[int], value: int, ring: int = 0) -> None:
        """x2APIC WRMSR to LVTPC: always intercepted, handled in KVM's slow path (§3.2 step 9)."""
        self.wrmsr(s, M.MSR_X2APIC_LVTPC, value, ring)

    def fault_fixup(self, s: list[int], fault: Fault) -> bool:
        """A guest instruction faulted: with a #GP handler installed, record the vector in
        ``gp`` and tell the probe (the caller then skips the instruction without retiring
        it); without one, return False (the fault is an error in the guest program)."""
        if not self.gp_fixup or fault.vector != "#GP":
            return False
        s[self.vars["gp"]] = GP_VECTOR  # claimed when the program declared .gp_fixup
        if self.probe is not None:
            self.probe.faulted(s, fault)
        return True
