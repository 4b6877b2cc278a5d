"""What host kernel code sees: the CPU, its own variables, and observation hooks.

:class:`KernelEnv` claims the state slots of host perf (per-CPU flags, one
record per host event) and of KVM (the vCPU's ``struct kvm_pmu``, its PMCs,
the virtual LVTPC, pending requests). Function builders in
:mod:`vpmu.kernel.perf` and :mod:`vpmu.kernel.kvm` read slot indices from it.

:class:`Observer` is how the model reports what a party *observed* (a guest
read, a PMI, a host count update, a WARN) to whoever watches: the checker's
properties, the simulator's report. The kernel does not know who listens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vpmu.config import MachineConfig
from vpmu.errors import VpmuError
from vpmu.hw import msr as M
from vpmu.hw.layout import Layout
from vpmu.hw.virt import Cpu
from vpmu.kernel.pmu_filter import PreparedFilter, from_deny_lists


@dataclass(frozen=True)
class HostEvent:
    """A host perf event on the core PMU (perf_event_attr, reduced).

    perf arms the counter to ``-period`` and re-arms it after each overflow
    (x86_perf_event_set_period); a counting event uses x86_pmu.max_period,
    half the counter range, so its overflows are never more than one apart.
    """

    name: str
    event: str = M.CYCLES  # one of msr.EVENT_STREAMS
    exclude_guest: bool = True
    pinned: bool = True
    period: int = 1
    counter: int = 0  # the GP counter perf assigns
    #: False: the event does not exist at boot; another CPU opens it (perf_event_open) when the
    #: checker chooses, within bounds.perf_ops.
    opened: bool = True
    #: The CPU the event is bound to: 0 is the vCPU's CPU (the one modelled), 1 another CPU.
    #: An event on another CPU is never scheduled here; it only exists, and so counts in the
    #: system-wide active_events (__x86_pmu_event_init() to hw_perf_event_destroy(), V3).
    cpu: int = 0
    #: True: another CPU may also close the event (perf_event_release_kernel(): removed from its
    #: context, then freed; the free drops active_events), within bounds.perf_ops.
    close: bool = False


@dataclass(frozen=True)
class VcpuSpec:
    """The vCPU's PMU as userspace configured it (CPUID, filter)."""

    num_gp: int
    num_fixed: int
    #: Guest CPUID vendor is Intel-compatible: KVM emulates LVTPC auto-mask (§3.2 step 5).
    intel_compatible: bool = True
    #: Event selects the VM's PMU event filter denies (deny list, §5.5).
    deny_events: tuple[int, ...] = ()
    #: Fixed counters the filter denies.
    deny_fixed: tuple[int, ...] = ()
    #: The guest's LVTPC when the world starts (Linux guests use NMI delivery).
    lvtpc: int = M.APIC_DM_NMI
    #: Guest CPUID: Intel CPUID.0AH:EAX version (0: no architectural PMU; KVM keeps what userspace
    #: set, kvm_pmu_refresh/intel_pmu_refresh), or on AMD 2 = PerfMonV2 (global registers), 1 = none.
    version: int = 2
    #: Guest CPUID counter widths (0: the host's); a narrower width makes KVM intercept RDPMC.
    gp_width: int = 0
    fixed_width: int = 0
    #: CPUID.0AH:ECX fixed-counter bitmap (v5+); v7.0 intel_pmu_refresh() does not read it.
    fixed_bitmap: int = 0


class Observer:
    """Receives observations; the default ignores them (plain simulation)."""

    def warn(self, s: list[int], what: str) -> None:
        """A WARN_ON_ONCE fired in host code."""

    def guest_read(self, s: list[int], kind: str, index: int, value: int) -> None:
        """The guest read a PMU value: kind "rdpmc" (index = ECX) or "rdmsr" (index = MSR)."""

    def guest_pmi(self, s: list[int]) -> None:
        """A PMI was delivered into the guest (its handler starts)."""

    def host_count(self, s: list[int], event: int, delta: int) -> None:
        """Host perf folded ``delta`` into event's count (x86_perf_event_update)."""

    def host_pmi_handled(self, s: list[int], event: int) -> None:
        """Host perf's PMI handler processed an overflow of ``event``."""

    def guest_write(self, s: list[int], msr: int, value: int) -> None:
        """A guest WRMSR took architectural effect from the guest's point of view."""

    def guest_emulated(self, s: list[int], cpl: int, branches: int = 0) -> None:
        """KVM completed (skipped) an emulated guest instruction at ``cpl`` (a branch: ``branches``)."""

    def filter_changed(self, s: list[int]) -> None:
        """Userspace installed a new PMU event filter on the VM (KVM_SET_PMU_EVENT_FILTER)."""

    def unknown_nmi(self, s: list[int], panic: bool) -> None:
        """No NMI_LOCAL handler claimed an NMI: unknown_nmi_error() ("Uhhuh. NMI received for
        unknown reason"), a panic with ``unknown_nmi_panic``."""


def _unhandled_gp(s: list[int], why: str) -> None:
    raise VpmuError(f"KVM injected #GP into the guest ({why}) and the guest program has no #GP fixup")


@dataclass
class KernelEnv:
    """Host kernel state slots and the machine they run on."""

    cpu: Cpu
    layout: Layout
    vcpu: VcpuSpec
    host_events: tuple[HostEvent, ...] = ()
    obs: Observer = field(default_factory=Observer)
    #: Model the VM's creation and destruction (perf_create/release_mediated_pmu, S4, H14).
    lifecycle: bool = False
    #: How the guest takes a #GP KVM injects (kvm_inject_gp): set by whoever runs the guest.
    #: The default treats it as an error in the guest program.
    inject_gp: Callable[[list[int], str], None] = field(default=None)  # type: ignore[assignment]
    #: The legacy perf-based vPMU (design ``legacy``): every guest counter is backed by a host
    #: perf event (vpmu.kernel.perf_events, vpmu.kernel.kvm_legacy), whose slots are claimed here.
    perf_based: bool = False

    def __post_init__(self) -> None:
        if self.inject_gp is None:
            self.inject_gp = _unhandled_gp
        L, cfg = self.layout, self.cpu.cfg
        # perf core / x86 per-CPU state (§2.3, §2.4)
        self.cpuc_enabled = L.field("perf.cpuc_enabled", "host", init=1, fmt="bool")
        self.guest_ctx_loaded = L.field("perf.guest_ctx_loaded", "host", fmt="bool")
        self.guest_lvtpc_loaded = L.field("perf.guest_lvtpc_loaded", "host", fmt="bool")
        self.ev_active: list[int] = []
        self.ev_prev: list[int] = []
        self.ev_enabled: list[int] = []  # attr.disabled == 0 (PERF_EVENT_STATE >= INACTIVE)
        # An event opened on another CPU counts in active_events and puts the core PMU's
        # context on this CPU's list at once (perf_event_open); it joins the context when
        # its install IPI runs (__perf_install_in_context).
        self.ev_opened: list[int] = []
        self.ev_installed: list[int] = []
        for e in self.host_events:
            on = int(e.opened)
            here = on if e.cpu == 0 else 0  # an event on another CPU never joins this CPU's context
            self.ev_active.append(L.field(f"perf.{e.name}.active", "host", fmt="bool"))  # boot schedules in
            self.ev_prev.append(L.field(f"perf.{e.name}.prev_count", "host"))
            self.ev_enabled.append(L.field(f"perf.{e.name}.enabled", "host", init=here, fmt="bool"))
            self.ev_opened.append(L.field(f"perf.{e.name}.opened", "host", init=on, fmt="bool"))
            self.ev_installed.append(L.field(f"perf.{e.name}.installed", "host", init=here, fmt="bool"))
        # Events of this CPU's context (perf_ctx_{disable,enable}() reach the x86 PMU only through
        # them, V18) and all of them (active_events is system-wide, V3).
        self.ev_here = tuple(o for o, e in zip(self.ev_opened, self.host_events, strict=True) if e.cpu == 0)
        # Flexible events in the context's flexible_groups order (rotation moves one to the
        # tail), and epc->rotate_necessary (a flexible event found no free counter).
        self.flexible = tuple(i for i, e in enumerate(self.host_events) if not e.pinned)
        self.flexible_order = [
            L.field(f"perf.flexible_groups[{n}]", "host", init=e, fmt="int") for n, e in enumerate(self.flexible)
        ]
        self.rotate_necessary = L.field("perf.rotate_necessary", "host", fmt="bool")
        # H14 (§2.2): include-guest core events (nr_include_guest_events counts the opened
        # ones) and this VM's share of nr_mediated_pmu_vms (kvm->arch.created_mediated_pmu).
        self.include_guest = tuple(
            o for o, e in zip(self.ev_opened, self.host_events, strict=True) if not e.exclude_guest
        )
        self.mediated_vm = L.field("kvm.created_mediated_pmu", "kvm", fmt="bool") if self.lifecycle else -1
        self.rotate_event = L.field("perf.rotate.event", "host", fmt="int")  # a local of the rotation
        # The payload of a perf IPI (event_function_call): which event to toggle, -1 none.
        self.ipi_event = L.field("perf.ipi.event", "host", init=-1, fmt="int")
        # Locals of the PMI handler: the status it read, and cpuc->enabled as it found it.
        self.nmi_status = L.field("perf.nmi.status", "host")
        self.nmi_pmu_enabled = L.field("perf.nmi.pmu_enabled", "host", fmt="bool")
        # default_do_nmi(): whether some NMI_LOCAL handler claimed this NMI (nmi_handle()'s
        # sum, a local), and this CPU's bit in backtrace_mask (the backtrace NMI IPI's source,
        # claimed by nmi_cpu_backtrace_handler(); arch/x86/kernel/nmi.c, lib/nmi_backtrace.c).
        self.nmi_handled = L.field("nmi.handled", "host", fmt="int")
        self.nmi_backtrace = L.field("nmi.backtrace_mask", "host", fmt="bool")
        # The back-to-back NMI heuristic: swallow_nmi (per CPU), and whether the next NMI is
        # back to back (an NMI was latched at the last NMI's IRET, no instruction ran since).
        self.swallow_nmi = L.field("nmi.swallow_nmi", "host", fmt="bool")
        self.nmi_b2b = L.field("nmi.b2b", "host", fmt="bool")
        # AMD: perf_nmi_tstamp is in the future (a PMI was handled within perf_nmi_window):
        # amd_pmu_adjust_nmi_window() claims an NMI it did not handle (docs/fidelity.md).
        self.perf_nmi_window = L.field("perf.nmi_window_open", "host", fmt="bool") if cfg.amd else -1
        # KVM struct kvm_pmu and the vLAPIC (§1, §3.2, App. A.1)
        v = self.vcpu
        self.running_vcpu = L.field("kvm.running_vcpu", "kvm", init=1, fmt="bool")
        self.req_pmi = L.field("kvm.KVM_REQ_PMI", "kvm", fmt="bool")
        self.req_pmu = L.field("kvm.KVM_REQ_PMU", "kvm", fmt="bool")
        # pmu->reprogram_pmi: PMCs whose controls changed (GP i: bit i; fixed j: bit 32 + j).
        self.reprogram_pmi = L.field("pmu.reprogram_pmi", "kvm")
        gp_reset = (1 << v.num_gp) - 1  # kvm_pmu_refresh: GENMASK(nr_gp - 1, 0) (§1.4)
        self.pmu_global_ctrl = L.field("pmu.global_ctrl", "kvm", init=gp_reset)
        self.pmu_global_status = L.field("pmu.global_status", "kvm")
        self.pmc_counter = L.array("pmc.counter", v.num_gp, "kvm")
        self.pmc_eventsel = L.array("pmc.eventsel", v.num_gp, "kvm")
        self.pmc_eventsel_hw = L.array("pmc.eventsel_hw", v.num_gp, "kvm")
        self.fixed_counter = L.array("fixed.counter", v.num_fixed, "kvm")
        if v.num_fixed:
            self.fixed_ctr_ctrl = L.field("pmu.fixed_ctr_ctrl", "kvm")
            self.fixed_ctr_ctrl_hw = L.field("pmu.fixed_ctr_ctrl_hw", "kvm")
        else:
            self.fixed_ctr_ctrl = self.fixed_ctr_ctrl_hw = -1
        self.vlvtpc = L.field("vlapic.LVTPC", "kvm", init=v.lvtpc)
        self.virr = L.field("vlapic.pmi_pending", "kvm", fmt="bool")
        # Locals of kvm_mediated_pmu_load's vendor hook (B.1 step 6 / B.3 step 5).
        self.tmp_hw_status = L.field("kvm.load.hw_status", "kvm")
        # vcpu_enter_guest's exit_fastpath (fastpath_t: 0 EXIT_FASTPATH_NONE, 1 EXIT_FASTPATH_REENTER_GUEST):
        # whether the fastpath handler handled the last VM-exit (§1.1).
        self.exit_fastpath = L.field("kvm.exit_fastpath", "kvm", fmt="int")
        # The guest's instruction pointers, one per guest context: main program
        # and PMI handler (-1: not running). KVM advances them when it skips an
        # emulated instruction (kvm_skip_emulated_instruction).
        self.guest_rip = L.field("guest.rip", "guest", fmt="int")
        self.guest_irq_rip = L.field("guest.irq_rip", "guest", init=-1, fmt="int")
        self.guest_done = L.field("guest.halted", "guest", fmt="bool")
        # The guest register an RDMSR returns into (EDX:EAX); KVM writes it when it emulates.
        self.guest_rax = L.field("guest.rax", "guest")
        if self.perf_based:
            self._claim_legacy(L)
        # The VM's PMU event filters (kvm->arch.pmu_event_filter): [0] the one it starts with (None:
        # no filter), then those a guest program's set_filter installs on the running VM; the slot
        # holding the current one is claimed by the first set_filter (-1: the filter never changes).
        self.filters: list[PreparedFilter | None] = [from_deny_lists(v.deny_events, v.deny_fixed, cfg.vendor)]
        self.filter_slot = -1
        del cfg

    def _claim_legacy(self, L: Layout) -> None:
        """The legacy vPMU's state: per guest PMC (GP i, then fixed j) its perf event (state,
        event->count, hw.prev_count, hw.period_left, hw.sample_period, attr.exclude_host, the host
        counter perf gave it) and KVM's side of it (pmc->current_config, pmc->emulated_counter,
        pmc->intr, kvm_pmu_handle_event's bitmap); perf's per-CPU mask of the counters that
        exclude_host events hold (Intel: cpuc->intel_ctrl_guest_mask); on Intel the VMCS host
        PERF_GLOBAL_CTRL field of the atomic switch (vmx atomic_switch_perf_msrs)."""
        n = self.vcpu.num_gp + self.vcpu.num_fixed
        self.lpmc_state = L.array("lpmc.perf_event.state", n, "kvm", fmt="int")
        self.lpmc_count = L.array("lpmc.perf_event.count", n, "kvm")
        self.lpmc_prev = L.array("lpmc.perf_event.prev_count", n, "kvm")
        self.lpmc_left = L.array("lpmc.perf_event.period_left", n, "kvm", fmt="int")
        self.lpmc_period = L.array("lpmc.perf_event.sample_period", n, "kvm")
        self.lpmc_config = L.array("lpmc.current_config", n, "kvm")
        self.lpmc_emulated = L.array("lpmc.emulated_counter", n, "kvm")
        self.lpmc_intr = L.array("lpmc.intr", n, "kvm", fmt="bool")
        self.lpmc_attr = L.array("lpmc.perf_event.attr", n, "kvm")  # bit 0: exclude_host
        self.lpmc_hw = L.array("lpmc.perf_event.hw_idx", n, "kvm", fmt="int")  # the host GP counter perf chose
        self.handle_event_bitmap = L.field("kvm.handle_event.bitmap", "kvm")  # kvm_pmu_handle_event's local copy
        self.cpuc_guest_mask = L.field("perf.cpuc_guest_mask", "host")
        if self.cpu.cfg.intel:
            self.cpu.vmcs_host_pgc = L.field("VMCS.HOST_PERF_GLOBAL_CTRL", "hw")

    def armed_value(self, e: int) -> int:
        """x86_perf_event_set_period(): the counter value that leaves ``period`` events to the
        overflow; perf never leaves fewer than 2 ("certain CPUs don't like it if just 1 hw_event
        is left")."""
        return -max(self.host_events[e].period, 2) & self.cpu.gp_mask

    def active_events(self, s: list[int]) -> bool:
        """atomic_read(&active_events) != 0: some x86 event exists, bound to any CPU (V3;
        __x86_pmu_event_init() and hw_perf_event_destroy(), arch/x86/events/core.c)."""
        if any(s[o] for o in self.ev_opened):
            return True
        # Legacy vPMU: KVM's perf events count too (x86_reserve_hardware at creation).
        return self.perf_based and any(s[self.lpmc_state + k] for k in range(self.vcpu.num_gp + self.vcpu.num_fixed))

    def guest_counters(self, s: list[int]) -> int:
        """Bits of the host GP counters that KVM's perf events hold (legacy vPMU; 0 otherwise).
        Host perf cannot schedule a host event there."""
        if not self.perf_based:
            return 0
        active = 1  # perf_events.ACTIVE (that module imports this one)
        return sum(1 << s[self.lpmc_hw + k] for k in range(self.vcpu.num_gp) if s[self.lpmc_state + k] == active)

    def preempt_guest(self, s: list[int], counter: int) -> None:
        """A CPU-pinned host event takes GP ``counter`` from KVM's task-pinned event (legacy vPMU)."""
        from vpmu.kernel import perf_events  # the legacy vPMU's perf side imports this module

        perf_events.preempt(self, s, counter)

    def enable_all_bits(self, s: list[int]) -> int:
        """What perf's enable_all writes to PERF_GLOBAL_CTRL: every counter bit (§2.3 step 7,
        H2), on Intel without the counters of exclude_host events (__intel_pmu_enable_all:
        intel_ctrl & ~cpuc->intel_ctrl_guest_mask; only the legacy vPMU has such events)."""
        if self.perf_based and self.cpu.cfg.intel:
            return self.host_global_enable & ~s[self.cpuc_guest_mask]
        return self.host_global_enable

    def nr_include_guest_events(self, s: list[int]) -> int:
        """atomic_read(&nr_include_guest_events) (kernel/events/core.c)."""
        return sum(s[o] for o in self.include_guest)

    def pmu_ctx_here(self, s: list[int]) -> bool:
        """The core PMU has a perf_event_pmu_context on this CPU's context list: an event bound
        to this CPU exists (perf_event_open() attaches it at once, find_get_pmu_context()).
        Only then do perf_ctx_{disable,enable}() reach x86_pmu_{disable,enable}() (V18)."""
        return any(s[o] for o in self.ev_here)

    @property
    def cfg(self) -> MachineConfig:
        return self.cpu.cfg

    # -- vendor constants of kvm_pmu_ops (§4.1, §4.2) ------------------------------
    @property
    def PERF_GLOBAL_CTRL(self) -> int:
        return M.MSR_CORE_PERF_GLOBAL_CTRL if self.cpu.cfg.intel else M.MSR_AMD64_PERF_CNTR_GLOBAL_CTL

    @property
    def PERF_GLOBAL_STATUS(self) -> int:
        return M.MSR_CORE_PERF_GLOBAL_STATUS if self.cpu.cfg.intel else M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS

    def GP_EVENTSEL(self, i: int) -> int:
        return M.MSR_P6_EVNTSEL0 + i if self.cpu.cfg.intel else M.MSR_F15H_PERF_CTL0 + 2 * i

    def GP_COUNTER(self, i: int) -> int:
        return M.MSR_IA32_PMC0 + i if self.cpu.cfg.intel else M.MSR_F15H_PERF_CTR0 + 2 * i

    def FIXED_COUNTER(self, j: int) -> int:
        return M.MSR_CORE_PERF_FIXED_CTR0 + j

    @property
    def host_global_enable(self) -> int:
        """What perf's enable_all writes: every counter bit (§2.3 step 7, H2)."""
        return self.cpu.counter_bits

    def host_eventsel(self, e: HostEvent) -> int:
        """The selector perf programs for a host event (EN|INT|OS|USR + event)."""
        vendor = "intel" if self.cpu.cfg.intel else "amd"
        code = M.EVENT_ENCODINGS[vendor][e.event]
        sel = code | M.EVENTSEL_OS | M.EVENTSEL_USR | M.EVENTSEL_INT | M.EVENTSEL_EN
        if self.cpu.cfg.amd and e.exclude_guest:
            sel |= M.AMD64_EVENTSEL_HOSTONLY  # exclude_guest -> HostOnly (§7)
        return sel
