"""VMX and SVM: what entering and leaving a guest does to the PMU.

Facts: x86-pmu-hardware.md §4 (VMX: F-4.2 entry, F-4.3 exit order, F-4.4 PMI
in guest mode) and §5 (SVM: GIF, no PMU switching, F-5.x). The CPU is in one
of two modes, host or guest; an NMI or interrupt that arrives in guest mode
makes the guest exit (the VMM always sets NMI and interrupt exiting).
"""

from __future__ import annotations

from collections.abc import Sequence

from vpmu.config import MachineConfig
from vpmu.errors import Fault
from vpmu.hw import msr as M
from vpmu.hw.apic import Apic
from vpmu.hw.layout import Layout

# Exit reasons the model distinguishes (VMX basic exit reasons; SVM exit codes
# are mapped onto the same names).
EXIT_NONE = 0
EXIT_NMI = 1  # VMX reason 0 (NMI) / SVM 0x61
EXIT_EXTINT = 2  # VMX reason 1 / SVM 0x60
EXIT_TIMER = 3  # VMX preemption timer: a fastpath exit in KVM
EXIT_CPUID = 4
EXIT_RDMSR = 5
EXIT_WRMSR = 6
EXIT_RDPMC = 7
EXIT_APIC_WRITE = 8  # guest LVTPC / APIC register write
EXIT_HLT = 9
EXIT_IRQ_WINDOW = 10
EXIT_EXTINT_HOST = 11  # an external interrupt for the host (e.g. its timer tick), not a PMI
EXIT_IO = 12  # port I/O (a selftest ucall: KVM_EXIT_IO to userspace)
EXIT_UD = 13  # #UD intercepted (KVM's forced-emulation prefix: ud2; .ascii "kvm")
EXIT_NAMES = {
    EXIT_NONE: "none",
    EXIT_NMI: "NMI",
    EXIT_EXTINT: "external interrupt",
    EXIT_TIMER: "preemption timer",
    EXIT_CPUID: "CPUID",
    EXIT_RDMSR: "RDMSR",
    EXIT_WRMSR: "WRMSR",
    EXIT_RDPMC: "RDPMC",
    EXIT_APIC_WRITE: "APIC write",
    EXIT_HLT: "HLT",
    EXIT_IRQ_WINDOW: "interrupt window",
    EXIT_EXTINT_HOST: "host interrupt",
    EXIT_IO: "I/O",
    EXIT_UD: "#UD",
}


class Cpu(Apic):
    """One physical CPU: PMU, local APIC and the virtualization extensions."""

    def __init__(self, cfg: MachineConfig, layout: Layout) -> None:
        super().__init__(cfg, layout)
        L = layout
        self.mode = L.field("MODE", "hw", fmt="int")  # 0 host, 1 guest
        self.exit_reason = L.field("EXIT_REASON", "hw", fmt="int")
        # Exit information for instruction exits: the MSR index or RDPMC ECX,
        # and the value a WRMSR wanted to write.
        self.exit_qual = L.field("EXIT_QUALIFICATION", "hw")
        self.exit_data = L.field("EXIT_DATA", "hw")
        self.exit_cpl = L.field("EXIT_GUEST_CPL", "hw", fmt="int")  # guest CS.RPL at exit
        if cfg.intel:
            self.vmcs_guest_pgc = L.field("VMCS.GUEST_PERF_GLOBAL_CTRL", "hw")
            # Pre-SPR: the guest value is captured by the VM-exit MSR-store list (H13).
            self.msr_store_pgc = -1 if cfg.vmx_save_global_ctrl else L.field("MSR_STORE[PERF_GLOBAL_CTRL]", "hw")
            self.exit_vector = L.field("EXIT_INTR_VECTOR", "hw")
            self.gif = -1
            self.svme_idx = -1
        #: VMCS HOST_IA32_PERF_GLOBAL_CTRL: the mediated vPMU keeps it 0 (§4.1), so no slot; the
        #: legacy vPMU's atomic switch sets it before each entry (KernelEnv claims the slot).
        self.vmcs_host_pgc = -1
        if cfg.amd:
            self.vmcs_guest_pgc = self.msr_store_pgc = self.exit_vector = -1
            self.gif = L.field("GIF", "hw", init=1, fmt="bool")
            self.svme_idx = L.field("EFER.SVME", "hw", fmt="bool")

    def guest_mode(self, s: list[int]) -> bool:
        return s[self.mode] == 1

    def svme(self, s: list[int]) -> bool:
        return self.svme_idx >= 0 and s[self.svme_idx] == 1

    # -- interrupt gating ---------------------------------------------------------
    def host_nmi_deliverable(self, s: Sequence[int]) -> bool:
        """Host mode: NMI pending, not blocked, and GIF=1 on AMD (F-5.2)."""
        return self.nmi_deliverable(s) and (self.gif < 0 or s[self.gif] == 1)

    def host_irq_deliverable(self, s: Sequence[int]) -> int:
        """Host mode: highest pending vector if RFLAGS.IF=1 (and GIF=1), else 0."""
        if not s[self.host_if] or (self.gif >= 0 and not s[self.gif]):
            return 0
        return self.irq_pending(s)

    def guest_exit_pending(self, s: Sequence[int]) -> int:
        """Guest mode: the exit an arriving NMI or interrupt forces, or EXIT_NONE.

        An NMI exits with the NMI still to be handled by the host (F-4.4.1,
        F-5.3); an interrupt exits and, with VMX "acknowledge interrupt on
        exit", its vector moves from the IRR to the exit information (F-4.4.2);
        on SVM it stays pending in the APIC (F-5.4).
        """
        if s[self.nmi_pending]:
            return EXIT_NMI
        if s[self.irr]:
            return EXIT_EXTINT
        return EXIT_NONE

    # -- VMX -------------------------------------------------------------------
    def vmx_vmentry(self, s: list[int], load_pgc: bool = True) -> None:
        """VM-entry: guest-state load incl. PERF_GLOBAL_CTRL if the control is set (F-4.2.1)."""
        # The PERF_GLOBAL_CTRL controls exist only with the MSR (v2+, F-4.1.1).
        if load_pgc and self.global_ctrl >= 0:
            v = s[self.vmcs_guest_pgc]
            if v & ~self.counter_bits:  # F-4.2.2
                raise Fault("VM-entry failure", f"GUEST_PERF_GLOBAL_CTRL {v:#x} has reserved bits")
            s[self.global_ctrl] = v
            self.log.append(("vmcs_load_pgc", v, 1))
        s[self.mode] = 1
        s[self.exit_reason] = s[self.exit_qual] = s[self.exit_data] = s[self.exit_cpl] = EXIT_NONE
        if self.exit_vector >= 0:
            s[self.exit_vector] = 0

    def vmx_vmexit(self, s: list[int], reason: int, save_pgc: bool = True, load_pgc: bool = True) -> None:
        """VM-exit in SDM order (F-4.3.1): record, save guest state, MSR-store
        list, load host state (PERF_GLOBAL_CTRL := host field = 0), DEBUGCTL := 0."""
        if self.cfg.transition_cycles:  # open point 3 (F-4.3.2)
            self.retire(s, True, 0, instructions=0, cycles=self.cfg.transition_cycles)
        s[self.exit_reason] = reason
        if reason == EXIT_NMI:
            # The NMI is not delivered through the IDT; KVM runs the host handler right after
            # the exit (vmx_vcpu_enter_exit -> vmx_handle_nmi -> vmx_do_nmi_irqoff, V7,
            # F-4.4.1), before any other host code: the model keeps it pending with no skid, so
            # it is taken before the vCPU task's next step.
            if self.skid >= 0:
                s[self.skid] = 0
        elif reason == EXIT_EXTINT:
            irr = s[self.irr]  # acknowledge on exit takes the highest pending vector
            vec = irr.bit_length() - 1 if irr else 0
            self.take_irq(s, vec)
            s[self.exit_vector] = vec
        has_pgc = self.global_ctrl >= 0  # F-4.1.1: no controls without the MSR
        if save_pgc and has_pgc:
            if self.cfg.vmx_save_global_ctrl:
                s[self.vmcs_guest_pgc] = s[self.global_ctrl]
            else:
                s[self.msr_store_pgc] = s[self.global_ctrl]
        if load_pgc and has_pgc:
            # HOST_IA32_PERF_GLOBAL_CTRL: 0 for the mediated vPMU (§4.1); perf's host value for legacy.
            s[self.global_ctrl] = s[self.vmcs_host_pgc] if self.vmcs_host_pgc >= 0 else 0
        s[self.debugctl] = 0  # F-4.3.3
        s[self.mode] = 0
        self.log.append(("vmexit", reason, s[self.global_ctrl] if self.global_ctrl >= 0 else 0))

    # -- SVM -------------------------------------------------------------------
    def svm_vmrun(self, s: list[int]) -> None:
        """VMRUN: guest mode, GIF=1; nothing in the PMU is switched (F-5.2, F-5.5). With
        ``vmrun_counts_branch`` VMRUN itself retires as a guest-mode branch (V13)."""
        s[self.mode] = 1
        s[self.gif] = 1
        if self.cfg.vmrun_counts_branch:
            self.retire(s, True, s[self.exit_cpl], instructions=0, branches=1, cycles=0)
        s[self.exit_reason] = s[self.exit_qual] = s[self.exit_data] = s[self.exit_cpl] = EXIT_NONE

    def svm_vmexit(self, s: list[int], reason: int) -> None:
        """#VMEXIT: host mode, GIF=0; pending NMI/INTR stay pending (F-5.2-F-5.4)."""
        s[self.exit_reason] = reason
        s[self.mode] = 0
        s[self.gif] = 0
        self.log.append(("vmexit", reason, s[self.global_ctrl] if self.global_ctrl >= 0 else 0))

    def stgi(self, s: list[int]) -> None:
        s[self.gif] = 1

    def clgi(self, s: list[int]) -> None:
        s[self.gif] = 0

    def set_svme(self, s: list[int], on: bool) -> None:
        s[self.svme_idx] = 1 if on else 0

    def vmexit(self, s: list[int], reason: int, qual: int = 0, data: int = 0, cpl: int = 0) -> None:
        """Vendor-neutral exit as KVM's mediated vPMU configures it."""
        s[self.exit_qual] = qual
        s[self.exit_data] = data
        s[self.exit_cpl] = cpl
        if self.cfg.intel:
            self.vmx_vmexit(s, reason)
        else:
            self.svm_vmexit(s, reason)

    def describe(self) -> list[str]:
        """Lines for ``vpmu info``."""
        cfg = self.cfg
        out = [
            f"vendor: {cfg.vendor}, PMU version {cfg.pmu_version}",
            f"GP counters: {cfg.num_gp} x {cfg.gp_width} bits",
        ]
        if cfg.intel:
            out.append(f"fixed counters: {cfg.num_fixed} x {cfg.fixed_width} bits")
        feats = []
        if cfg.has_global_regs:
            feats.append("global ctrl/status")
        if cfg.has_status_set:
            feats.append("status set")
        if cfg.intel and cfg.full_width_writes:
            feats.append("full-width writes")
        if cfg.intel:
            feats.append(
                "VMX save PERF_GLOBAL_CTRL" if cfg.vmx_save_global_ctrl else "VMX MSR-store list for PERF_GLOBAL_CTRL"
            )
            feats.append(f"host PMI ack: {cfg.host_ack}")
        feats.append("freeze: " + ("streamlined (v4)" if cfg.streamlined_freeze else "legacy" if cfg.intel else "PMCF"))
        out.append("features: " + ", ".join(feats))
        out.append(f"mediated vPMU capable host: {'yes' if cfg.mediated_capable else 'no'}")
        out.append(
            f"open points: masked PMI {cfg.masked_pmi}, skid {cfg.pmi_skid}, "
            f"status-set PMI {'yes' if cfg.status_set_raises_pmi else 'no'}, "
            f"transition cycles {cfg.transition_cycles}, "
            f"fixed high bits {cfg.fixed_high_bits}, SVME=0 filter {cfg.svme_off_filter}, RDPMC fast {cfg.rdpmc_fast}"
        )
        msrs = sorted(set(self._readers) | set(self._writers))
        out.append("MSRs:")
        for idx in msrs:
            access = ("R" if idx in self._readers else "") + ("W" if idx in self._writers else "")
            out.append(f"  {idx:#010x}  {M.msr_name(cfg.vendor, idx):<30} {access}")
        return out
