"""The reference: a native CPU running the guest's own PMU programming.

A second copy of the hardware PMU model (:class:`vpmu.hw.pmu.Pmu`) that sees
only guest-mode events and the guest's own MSR writes, with the guest's LVTPC
as its LVTPC. What the guest reads from the virtualized PMU must equal what
this CPU shows (guest transparency). Its PMU is the one KVM exposes: the
host's counters, Intel architectural version 2 (KVM caps the guest's version
at 2, §2.1) or AMD PerfMonV2 — or what the guest's CPUID says (fewer counters,
narrower widths, version 1, no PerfMonV2).
"""

from __future__ import annotations

from dataclasses import replace

from vpmu.config import MachineConfig
from vpmu.hw import msr as M
from vpmu.hw.layout import Layout
from vpmu.hw.pmu import Pmu
from vpmu.kernel.env import VcpuSpec


def guest_machine(host: MachineConfig, vcpu: VcpuSpec) -> MachineConfig:
    """The PMU a mediated guest is shown."""
    if host.intel:
        version: int | str = max(1, min(int(host.pmu_version), 2, vcpu.version))
    else:
        version = host.pmu_version if vcpu.version >= 2 else "perfctrextcore"
    cfg = replace(
        host,
        pmu_version=version,
        num_gp=max(1, vcpu.num_gp),
        num_fixed=vcpu.num_fixed,
        gp_width=vcpu.gp_width or host.gp_width,
        fixed_width=vcpu.fixed_width or host.fixed_width,
    )
    if not vcpu.num_gp:
        # A guest's CPUID may enumerate no GP counter (conform's CPUID matrix); no physical host
        # does, so MachineConfig refuses 0 and the value is set past its validation here.
        object.__setattr__(cfg, "num_gp", 0)
    return cfg


class RefPmu(Pmu):
    """The native CPU the guest believes it runs on."""

    def __init__(self, host: MachineConfig, vcpu: VcpuSpec, layout: Layout) -> None:
        super().__init__(guest_machine(host, vcpu), layout, prefix="ref.", owner="ghost")
        self.vcpu = vcpu
        self.lvtpc = layout.field("ref.LVTPC", "ghost", init=vcpu.lvtpc)
        #: A PMI this CPU raised and the guest has not yet taken.
        self.pmi_pending = layout.field("ref.pmi_pending", "ghost", fmt="bool")
        self.pmi_latched = layout.field("ref.pmi_latched", "ghost", fmt="bool") if host.masked_pmi == "latch" else -1

    def guest_mode(self, s: list[int]) -> bool:
        return True

    def svme(self, s: list[int]) -> bool:
        return False  # the guest does not enable SVM itself

    def lvtpc_signal(self, s: list[int]) -> None:
        lvt = s[self.lvtpc]
        if lvt & M.APIC_LVT_MASKED:
            if self.pmi_latched >= 0:
                s[self.pmi_latched] = 1
            return
        s[self.pmi_pending] = 1
        if self.vcpu.intel_compatible:
            s[self.lvtpc] = lvt | M.APIC_LVT_MASKED  # F-2.5 (as KVM emulates for Intel-compatible guests)

    def write_lvtpc(self, s: list[int], value: int) -> None:
        s[self.lvtpc] = value & 0x1_07FF
        if self.pmi_latched >= 0 and s[self.pmi_latched] and not value & M.APIC_LVT_MASKED:
            s[self.pmi_latched] = 0
            self.lvtpc_signal(s)
