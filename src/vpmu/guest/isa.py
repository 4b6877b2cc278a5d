"""Guest instructions that touch the PMU, as the virtualized CPU executes them.

A guest instruction either runs on the hardware (passed-through MSRs, RDPMC
when not intercepted) or makes the CPU exit to KVM with the exit information
KVM needs (the MSR, the value, the guest's CPL). Which one is decided by the
MSR bitmap / MSRPM KVM programmed (kernel-mediated-pmu.md §5.2, §5.3).

Each instruction reports what the guest did and saw to the observer, so the
checker's reference PMU sees exactly the guest's own programming.
"""

from __future__ import annotations

from vpmu.hw import msr as M
from vpmu.hw import virt as V
from vpmu.kernel import kvm
from vpmu.kernel.env import KernelEnv


class GuestIsa:
    """Executes guest PMU instructions against the CPU under KVM's interception policy."""

    def __init__(self, env: KernelEnv) -> None:
        self.env = env
        self.cpu = env.cpu
        self.passthrough = kvm.passthrough_msrs(env)
        self.rdpmc_exits = kvm.need_rdpmc_intercept(env)

    def wrmsr(self, s: list[int], msr: int, value: int, ring: int = 0) -> None:
        self.env.obs.guest_write(s, msr, value)
        if msr in self.passthrough:
            self.cpu.wrmsr(s, msr, value)
        else:
            self.cpu.vmexit(s, V.EXIT_WRMSR, msr, value, ring)

    def rdmsr(self, s: list[int], msr: int, ring: int = 0) -> int | None:
        """The value read, or None when the read exits (KVM reports it on emulation)."""
        if msr in self.passthrough:
            value = self.cpu.rdmsr(s, msr)
            s[self.env.guest_rax] = value
            self.env.obs.guest_read(s, "rdmsr", msr, value)
            return value
        self.cpu.vmexit(s, V.EXIT_RDMSR, msr, 0, ring)
        return None

    def rdpmc(self, s: list[int], ecx: int, ring: int = 0) -> int | None:
        if not self.rdpmc_exits:
            value = self.cpu.rdpmc(s, ecx)
            s[self.env.guest_rax] = value
            self.env.obs.guest_read(s, "rdpmc", ecx, value)
            return value
        self.cpu.vmexit(s, V.EXIT_RDPMC, ecx, 0, ring)
        return None

    def exit(self, s: list[int], reason: int, ring: int = 0) -> None:
        """An instruction that always exits (CPUID, HLT)."""
        self.cpu.vmexit(s, reason, 0, 0, ring)

    def lvtpc_write(self, s: list[int], value: int, ring: int = 0) -> None:
        """x2APIC WRMSR to LVTPC: always intercepted, handled in KVM's slow path (§3.2 step 9)."""
        self.wrmsr(s, M.MSR_X2APIC_LVTPC, value, ring)
