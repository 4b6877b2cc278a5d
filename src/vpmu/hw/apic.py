"""The local APIC as the PMU sees it: LVTPC, NMI and fixed-vector delivery.

Facts: x86-pmu-hardware.md §2 (F-2.x), §7.3; kernel-mediated-pmu.md §0.3.
Only what PMI routing needs is modelled: the LVTPC register, one pending-NMI
latch with NMI blocking until IRET, the IRR as a bit set of vectors, and the
host's RFLAGS.IF.
"""

from __future__ import annotations

from collections.abc import Sequence

from vpmu.config import MachineConfig
from vpmu.hw import msr as M
from vpmu.hw.layout import Layout
from vpmu.hw.pmu import Pmu


class Apic(Pmu):
    def __init__(self, cfg: MachineConfig, layout: Layout) -> None:
        super().__init__(cfg, layout)
        L = layout
        self.lvtpc = L.field("LVTPC", "hw", init=M.LVTPC_RESET)
        self.nmi_pending = L.field("NMI_PENDING", "hw", fmt="bool")
        self.nmi_blocked = L.field("NMI_BLOCKED", "hw", fmt="bool")
        self.irr = L.field("IRR", "hw", fmt="vectors")  # bit v = vector v pending
        self.isr = L.field("ISR", "hw", fmt="vectors")  # bit v = vector v in service, until EOI
        self.host_if = L.field("RFLAGS.IF", "hw", init=1, fmt="bool")
        self.pmi_latched = L.field("PMI_LATCHED", "hw", fmt="bool") if cfg.masked_pmi == "latch" else -1
        self.skid = L.field("PMI_SKID", "hw", fmt="int") if cfg.pmi_skid else -1

    def lvtpc_signal(self, s: list[int]) -> None:
        """A performance-monitoring interrupt reaches the LVTPC (F-2.x, §7.3)."""
        lvt = s[self.lvtpc]
        if lvt & M.APIC_LVT_MASKED:
            # Open point 1 (F-2.8): dropped by default; "latch" replays on unmask.
            if self.pmi_latched >= 0:
                s[self.pmi_latched] = 1
            self.log.append(("pmi", -1, lvt))
            return
        self._deliver(s, lvt)

    def _deliver(self, s: list[int], lvt: int) -> None:
        dm = lvt & M.APIC_DM_MASK
        if dm == M.APIC_DM_NMI:
            s[self.nmi_pending] = 1
            route = 2
        elif dm == M.APIC_DM_FIXED:
            route = lvt & M.APIC_VECTOR_MASK
            s[self.irr] |= 1 << route
        else:  # SMI delivery is not modelled: nothing in the host or guest uses it.
            route = -2
        if self.skid >= 0:
            s[self.skid] = self.cfg.pmi_skid
        if self.cfg.intel:
            s[self.lvtpc] = lvt | M.APIC_LVT_MASKED  # Intel auto-mask (F-2.5); AMD not (F-2.6)
        self.log.append(("pmi", route, lvt))

    def write_lvtpc(self, s: list[int], value: int) -> None:
        """Software write of LVTPC (apic_write / x2APIC MSR 0x834).

        Reserved bits and the read-only delivery-status bit are ignored, as an
        APIC register write does (F-2.2).
        """
        value &= ~M.LVTPC_RESERVED & ~M.APIC_DELIVERY_STATUS & 0xFFFFFFFF
        s[self.lvtpc] = value
        self.log.append(("lvtpc", value, s[self.global_ctrl] if self.global_ctrl >= 0 else 0))
        if self.pmi_latched >= 0 and s[self.pmi_latched] and not value & M.APIC_LVT_MASKED:
            s[self.pmi_latched] = 0
            self._deliver(s, value)

    # -- delivery ---------------------------------------------------------------
    def nmi_deliverable(self, s: Sequence[int]) -> bool:
        return bool(s[self.nmi_pending]) and not s[self.nmi_blocked]

    def irq_pending(self, s: Sequence[int]) -> int:
        """Highest pending fixed vector whose priority class is above the highest
        in-service one (SDM Vol 3A §10.8.3), or 0."""
        irr = s[self.irr]
        if not irr:
            return 0
        vec = irr.bit_length() - 1
        isr = s[self.isr]
        if isr and vec >> 4 <= (isr.bit_length() - 1) >> 4:
            return 0
        return vec

    def take_nmi(self, s: list[int]) -> None:
        """The CPU takes the pending NMI; NMIs stay blocked until IRET."""
        s[self.nmi_pending] = 0
        s[self.nmi_blocked] = 1
        if self.skid >= 0:
            s[self.skid] = 0

    def take_irq(self, s: list[int], vector: int) -> None:
        """The CPU takes (acknowledges) a fixed-vector interrupt: IRR -> ISR."""
        s[self.irr] &= ~(1 << vector)
        s[self.isr] |= 1 << vector
        if self.skid >= 0:
            s[self.skid] = 0

    def eoi(self, s: list[int]) -> None:
        """EOI: the highest in-service vector is done (F-2.4: Fixed mode needs EOI, NMI mode does not)."""
        isr = s[self.isr]
        if isr:
            s[self.isr] = isr & ~(1 << (isr.bit_length() - 1))
        self.log.append(("eoi", isr.bit_length() - 1 if isr else -1, 0))

    def iret_nmi(self, s: list[int]) -> None:
        s[self.nmi_blocked] = 0
