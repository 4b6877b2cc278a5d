"""KVM's mediated vPMU in the step language (final code: v6 as merged).

Facts: kernel-mediated-pmu.md §1.1 (vcpu_enter_guest), §1.2 and §1.3 (load
and put with the Intel and AMD hooks), §1.4 (PERF_GLOBAL_CTRL refresh per
exit), §2.6 (the 0xF5 handler), §3.2 (injection through the virtual LVTPC),
§5.1-§5.6 (interception, emulated accesses, event filter, emulated counting
and the fastpath guard). Golden traces: Appendix B.1-B.4.
"""

from __future__ import annotations

from vpmu.hw import msr as M
from vpmu.hw import virt as V
from vpmu.hw.virt import Cpu
from vpmu.kernel import perf
from vpmu.kernel.env import KernelEnv
from vpmu.kernel.lang import CALL, END, IRET, VMENTER, WARN, Action, Builder, Cond, Function, Step
from vpmu.kernel.pmu_filter import PreparedFilter

#: An MSR whose guest writes KVM handles in the VM-exit fastpath (x2APIC
#: TSC_DEADLINE, §1.1); the guest uses it to exercise H11.
MSR_IA32_TSC_DEADLINE = 0x6E0
INTR = "intr"  # step kind: dispatch the interrupt captured at VM-exit (handle_exit_irqoff)


# --- interception policy (§5.1-§5.3) ------------------------------------------------


def need_any_pmc_intercept(env: KernelEnv) -> bool:
    """kvm_need_any_pmc_intercept(): guest counter numbers differ from the host's (always true
    without the mediated PMU: the legacy vPMU intercepts every PMU MSR and RDPMC)."""
    if env.perf_based:
        return True
    cfg = env.cpu.cfg
    return env.vcpu.num_gp != cfg.num_gp or env.vcpu.num_fixed != cfg.num_fixed


def has_perf_global_ctrl(env: KernelEnv) -> bool:
    """kvm_pmu_has_perf_global_ctrl(): Intel guest version > 1; AMD PerfMonV2 (guest CPUID)."""
    if env.cpu.cfg.intel:
        return env.vcpu.version > 1
    return env.vcpu.version >= 2 and env.cpu.cfg.pmu_version == "perfmonv2"


def need_perf_global_ctrl_intercept(env: KernelEnv) -> bool:
    """kvm_need_perf_global_ctrl_intercept() (v7.0 pmu.c)."""
    return need_any_pmc_intercept(env) or not has_perf_global_ctrl(env)


def need_rdpmc_intercept(env: KernelEnv) -> bool:
    """kvm_need_rdpmc_intercept(): counter numbers or widths differ from the host's."""
    cfg, v = env.cpu.cfg, env.vcpu
    return (
        need_any_pmc_intercept(env)
        or (v.gp_width or cfg.gp_width) != cfg.gp_width
        or (v.fixed_width or cfg.fixed_width) != cfg.fixed_width
    )


#: MSRs whose accesses KVM drops (writes) or answers 0 (reads) without #GP when the counter is
#: absent (kvm_set_msr_common()/kvm_get_msr_common(): the K7 and P6 PERFCTR/EVNTSEL quirk).
PERFCTR_QUIRK_MSRS = frozenset(
    (
        *range(M.MSR_K7_EVNTSEL0, M.MSR_K7_EVNTSEL0 + 4),
        *range(M.MSR_K7_PERFCTR0, M.MSR_K7_PERFCTR0 + 4),
        *range(M.MSR_IA32_PERFCTR0, M.MSR_IA32_PERFCTR0 + 2),
        *range(M.MSR_P6_EVNTSEL0, M.MSR_P6_EVNTSEL0 + 2),
    )
)


def rsvd_write(env: KernelEnv, msr: int, value: int) -> bool:
    """Does an intercepted write set reserved bits KVM refuses with #GP? (Intel: global_ctrl_rsvd,
    global_status_rsvd and fixed_ctr_ctrl_rsvd of intel_pmu_refresh(); kvm_pmu_set_msr())."""
    if not env.cpu.cfg.intel:
        return False
    v = env.vcpu
    counters = ((1 << v.num_gp) - 1) | (((1 << v.num_fixed) - 1) << M.FIXED_IDX_BASE)
    if msr == M.MSR_CORE_PERF_GLOBAL_CTRL:
        return bool(value & ~counters)
    if msr == M.MSR_CORE_PERF_GLOBAL_OVF_CTRL:
        return bool(value & ~(counters | M.STATUS_OVF_BUF | M.STATUS_COND_CHGD))
    if msr == M.MSR_CORE_PERF_FIXED_CTR_CTRL:
        allowed = sum((M.FIXED_OS | M.FIXED_USR | M.FIXED_PMI) << (4 * j) for j in range(v.num_fixed))
        return bool(value & ~allowed)
    return False


def passthrough_msrs(env: KernelEnv) -> frozenset[int]:
    """MSRs the guest accesses without exiting (VMX bitmap §5.2 / SVM MSRPM §5.3)."""
    cfg, v = env.cpu.cfg, env.vcpu
    out: set[int] = set()
    if env.perf_based:  # legacy vPMU: nothing passes through (pmu_intel.c / svm pmu.c, v7.0)
        return frozenset()
    if cfg.intel:
        for i in range(v.num_gp):
            out.add(M.MSR_IA32_PERFCTR0 + i)
            if cfg.full_width_writes:
                out.add(M.MSR_IA32_PMC0 + i)
        for j in range(v.num_fixed):
            out.add(M.MSR_CORE_PERF_FIXED_CTR0 + j)
        if not need_perf_global_ctrl_intercept(env):
            out |= {M.MSR_CORE_PERF_GLOBAL_STATUS, M.MSR_CORE_PERF_GLOBAL_CTRL, M.MSR_CORE_PERF_GLOBAL_OVF_CTRL}
    else:
        for i in range(v.num_gp):
            if i < 4:
                out.add(M.MSR_K7_PERFCTR0 + i)
            out.add(M.MSR_F15H_PERF_CTR0 + 2 * i)
        if not need_perf_global_ctrl_intercept(env):
            out |= {
                M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS,
                M.MSR_AMD64_PERF_CNTR_GLOBAL_CTL,
                M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_CLR,
                M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_SET,
            }
    return frozenset(out)


# --- emulation helpers ----------------------------------------------------------------


def eventsel_hw_for(env: KernelEnv, value: int) -> int:
    """What KVM puts in hardware for a guest selector value (§4.2, §5.5, H8)."""
    if env.cpu.cfg.amd:
        # v6 26/44: always stuff GuestOnly=1, HostOnly=0.
        return (value & ~M.AMD64_EVENTSEL_HOSTONLY) | M.AMD64_EVENTSEL_GUESTONLY
    return value


def current_filter(env: KernelEnv, s: list[int]) -> PreparedFilter | None:
    """kvm->arch.pmu_event_filter: the VM's filter now (None: no filter)."""
    return env.filters[s[env.filter_slot] if env.filter_slot >= 0 else 0]


def event_allowed(env: KernelEnv, sel: int, s: list[int]) -> bool:
    """pmc_is_event_allowed() for a GP selector (§5.5; kernel/pmu_filter.py)."""
    f = current_filter(env, s)
    return f is None or f.gp_allowed(sel, env.cpu.cfg.vendor)


def fixed_allowed(env: KernelEnv, j: int, s: list[int]) -> bool:
    """pmc_is_event_allowed() for fixed counter ``j``: the filter's fixed-counter bitmap."""
    f = current_filter(env, s)
    return f is None or f.fixed_allowed(j)


def set_pmu_event_filter(env: KernelEnv, s: list[int], idx: int, mark_all: bool = True) -> None:
    """kvm_vm_ioctl_set_pmu_event_filter() (v7.0 pmu.c), issued by userspace between two KVM_RUNs:
    a filter the checks refuse changes nothing; an accepted one replaces the VM's filter, every
    vCPU's __reprogram_pmi is set to all ones and KVM_REQ_PMU is raised, so the next entry's
    kvm_pmu_handle_event() refreshes every PMC's hardware controls (§5.5).
    ``mark_all=False`` is the broken refresh of design ``filter-no-reprogram``."""
    if idx == 0:  # a ucall after which userspace sets no filter
        return
    f = env.filters[idx]
    if f is None:  # refused by the ioctl (pmu_filter.EventFilter.ioctl_error)
        return
    s[env.filter_slot] = idx
    env.obs.filter_changed(s)
    if mark_all:
        s[env.reprogram_pmi] = env.cpu.counter_bits  # all ones, as far as the model has PMCs
    s[env.req_pmu] = 1


def request_counter_reprogram(env: KernelEnv, s: list[int], idx: int) -> None:
    """kvm_pmu_request_counter_reprogram() / reprogram_counters(): mark the PMC, raise KVM_REQ_PMU."""
    s[env.reprogram_pmi] |= 1 << idx
    s[env.req_pmu] = 1


def refresh_event_filter(env: KernelEnv, s: list[int]) -> None:
    """kvm_pmu_handle_event(): kvm_mediated_pmu_refresh_event_filter() for each marked PMC (§5.5).

    GP: only the EN bit of ``eventsel_hw`` changes (cleared, then copied back
    from the guest's selector if the filter allows the event); the rest of
    ``eventsel_hw`` is what the guest's last selector write made it (AMD: the
    GuestOnly stuffing happens on that write, v6 26/44), so a selector the
    guest never wrote stays 0 and put does not clear it (B.3.4, B.4.4).
    Fixed: the counter's 4-bit field of ``fixed_ctr_ctrl_hw`` is cleared, then
    copied back from the guest's FIXED_CTR_CTRL if the filter allows it. PMCs
    not marked keep what the last write left in ``*_hw`` (finding F2).
    """
    marked = s[env.reprogram_pmi]
    s[env.reprogram_pmi] = 0
    for i in range(env.vcpu.num_gp):
        if not marked >> i & 1:
            continue
        sel = s[env.pmc_eventsel + i]
        hw = s[env.pmc_eventsel_hw + i] & ~M.EVENTSEL_EN
        if event_allowed(env, sel, s):
            hw |= sel & M.EVENTSEL_EN
        s[env.pmc_eventsel_hw + i] = hw
    for j in range(env.vcpu.num_fixed):
        if not marked >> (M.FIXED_IDX_BASE + j) & 1:
            continue
        mask = 0xF << (4 * j)
        hw = s[env.fixed_ctr_ctrl_hw] & ~mask
        if fixed_allowed(env, j, s):
            hw |= s[env.fixed_ctr_ctrl] & mask
        s[env.fixed_ctr_ctrl_hw] = hw


def _is_instructions(env: KernelEnv, sel: int, stream: str = M.INSTRUCTIONS) -> bool:
    """pmc_is_event_match(pmc, INSTRUCTIONS_RETIRED) (or BRANCH_INSTRUCTIONS_RETIRED): event
    select and unit mask (AMD: with EventSelect[11:8] in bits 35:32) equal the architectural
    event; the other selector bits (CMASK, INV, EDGE) are not looked at."""
    vendor = "intel" if env.cpu.cfg.intel else "amd"
    code = M.EVENT_ENCODINGS[vendor][stream]
    match = 0xFFFF | (0xF << 32 if env.cpu.cfg.amd else 0)
    return sel & match == code


def kvm_pmu_incr_counter(env: KernelEnv, s: list[int], cpl: int, stream: str = M.INSTRUCTIONS) -> None:
    """kvm_pmu_instruction_retired() (kvm_pmu_branch_retired() for ``stream`` BRANCHES) ->
    kvm_pmu_trigger_event() -> kvm_pmu_incr_counter() for the mediated PMU (§5.6).

    Every PMC that is locally enabled, globally enabled in pmu->global_ctrl,
    counts the event at this CPL and is allowed by the filter advances by
    one in pmc->counter; a wrap sets the bit in pmu->global_status and, with
    the PMI enabled, raises KVM_REQ_PMI. Fixed counter 0 counts instructions.
    """
    gctrl = s[env.pmu_global_ctrl]
    mask = env.cpu.gp_mask  # the guest's width is the host's (§5.1)
    for i in range(env.vcpu.num_gp):
        sel = s[env.pmc_eventsel + i]
        if not sel & M.EVENTSEL_EN or not (gctrl >> i) & 1 or not _is_instructions(env, sel, stream):
            continue
        if not sel & (M.EVENTSEL_OS if cpl == 0 else M.EVENTSEL_USR):
            continue
        if not event_allowed(env, sel, s):
            continue
        v = (s[env.pmc_counter + i] + 1) & mask
        s[env.pmc_counter + i] = v
        if v == 0:
            s[env.pmu_global_status] |= 1 << i
            if sel & M.EVENTSEL_INT:
                s[env.req_pmi] = 1
    if stream == M.INSTRUCTIONS and env.vcpu.num_fixed and fixed_allowed(env, 0, s):
        nib = s[env.fixed_ctr_ctrl] & 0xF
        if nib & (M.FIXED_OS if cpl == 0 else M.FIXED_USR) and (gctrl >> M.FIXED_IDX_BASE) & 1:
            v = (s[env.fixed_counter] + 1) & env.cpu.fixed_mask
            s[env.fixed_counter] = v
            if v == 0:
                s[env.pmu_global_status] |= 1 << M.FIXED_IDX_BASE
                if nib & M.FIXED_PMI:
                    s[env.req_pmi] = 1


def counting_instructions_enabled(env: KernelEnv, s: list[int]) -> bool:
    """pmc_counting_instructions overlaps pmu->global_ctrl (§5.6)."""
    gctrl = s[env.pmu_global_ctrl]
    for i in range(env.vcpu.num_gp):
        sel = s[env.pmc_eventsel + i]
        if sel & M.EVENTSEL_EN and _is_instructions(env, sel) and (gctrl >> i) & 1:
            return True
    return bool(env.vcpu.num_fixed and s[env.fixed_ctr_ctrl] & 0x3 and (gctrl >> M.FIXED_IDX_BASE) & 1)


def skip_emulated_instruction(env: KernelEnv, s: list[int], branch: bool = False) -> None:
    """kvm_skip_emulated_instruction(): advance the guest RIP, count the instruction.
    ``branch``: x86_emulate_instruction() completed an instruction the emulator marks
    IsBranch (Jcc, LOOP, CALL, ...; taken or not), which kvm_pmu_branch_retired() also counts."""
    rip = env.guest_irq_rip if s[env.guest_irq_rip] >= 0 else env.guest_rip
    s[rip] += 1
    cpl = s[env.cpu.exit_cpl]
    env.obs.guest_emulated(s, cpl, 1 if branch else 0)
    kvm_pmu_incr_counter(env, s, cpl)
    if branch:
        kvm_pmu_incr_counter(env, s, cpl, M.BRANCHES)


def kvm_pmu_msr_valid(env: KernelEnv, msr: int, write: bool) -> bool:
    """Is ``msr`` one the vCPU has (kvm_pmu_is_valid_msr() plus the x2APIC LVTPC and TSC
    deadline the guest programs use)? An intercepted access to anything else gets #GP.
    Reserved-bit checks on valid MSRs are not modelled (docs/fidelity.md)."""
    cfg, v = env.cpu.cfg, env.vcpu
    if msr in (M.MSR_X2APIC_LVTPC, MSR_IA32_TSC_DEADLINE):
        return True
    valid: set[int] = set()
    for i in range(v.num_gp):
        valid |= {env.GP_EVENTSEL(i), env.GP_COUNTER(i)}
        if cfg.intel:
            valid.add(M.MSR_IA32_PERFCTR0 + i)
        elif i < 4:
            valid |= {M.MSR_K7_EVNTSEL0 + i, M.MSR_K7_PERFCTR0 + i}
    valid |= {env.FIXED_COUNTER(j) for j in range(v.num_fixed)}
    if cfg.intel:
        if v.version >= 2:  # intel_is_valid_msr(): FIXED_CTR_CTRL with v2+ (zero fixed counters too)
            valid.add(M.MSR_CORE_PERF_FIXED_CTR_CTRL)
        # The guest is shown PMU v2 (§2.1): no STATUS_SET; GLOBAL_STATUS is read-only.
        if has_perf_global_ctrl(env):
            valid |= {M.MSR_CORE_PERF_GLOBAL_CTRL, M.MSR_CORE_PERF_GLOBAL_OVF_CTRL}
            if not write:
                valid.add(M.MSR_CORE_PERF_GLOBAL_STATUS)
    elif has_perf_global_ctrl(env):
        valid |= {
            M.MSR_AMD64_PERF_CNTR_GLOBAL_CTL,
            M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_CLR,
            M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_SET,
        }
        if not write:
            valid.add(M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS)
    return msr in valid


def emulated_rdmsr(env: KernelEnv, s: list[int], msr: int) -> int:
    """kvm_pmu_get_msr() for an intercepted access with the PMU put (§5.4)."""
    cfg = env.cpu.cfg
    for i in range(env.vcpu.num_gp):
        if msr in (env.GP_COUNTER(i), M.MSR_IA32_PERFCTR0 + i if cfg.intel else M.MSR_K7_PERFCTR0 + i):
            return s[env.pmc_counter + i]
        if msr == env.GP_EVENTSEL(i) or (cfg.amd and i < 4 and msr == M.MSR_K7_EVNTSEL0 + i):
            return s[env.pmc_eventsel + i]
    for j in range(env.vcpu.num_fixed):
        if msr == env.FIXED_COUNTER(j):
            return s[env.fixed_counter + j]
    if msr == M.MSR_CORE_PERF_FIXED_CTR_CTRL and cfg.intel:
        return s[env.fixed_ctr_ctrl]
    if msr == env.PERF_GLOBAL_CTRL:
        return s[env.pmu_global_ctrl]
    if msr == env.PERF_GLOBAL_STATUS:
        return s[env.pmu_global_status]
    if msr == M.MSR_X2APIC_LVTPC:
        return s[env.vlvtpc]
    return 0


def emulated_wrmsr(env: KernelEnv, s: list[int], msr: int, value: int) -> None:
    """kvm_pmu_set_msr() / kvm_lapic_reg_write() for an intercepted write (§5.4, §1.4)."""
    cfg, cpu = env.cpu.cfg, env.cpu
    for i in range(env.vcpu.num_gp):
        if msr == env.GP_EVENTSEL(i) or (cfg.amd and i < 4 and msr == M.MSR_K7_EVNTSEL0 + i):
            if cfg.amd:
                value &= ~M.AMD_PMU_RESERVED_BITS  # amd_pmu_set_msr(): dropped, no #GP
            if value != s[env.pmc_eventsel + i]:
                s[env.pmc_eventsel + i] = value
                s[env.pmc_eventsel_hw + i] = eventsel_hw_for(env, value)
                request_counter_reprogram(env, s, i)
            return
        if msr in (env.GP_COUNTER(i), M.MSR_IA32_PERFCTR0 + i if cfg.intel else M.MSR_K7_PERFCTR0 + i):
            s[env.pmc_counter + i] = value & cpu.gp_mask
            return
    for j in range(env.vcpu.num_fixed):
        if msr == env.FIXED_COUNTER(j):
            s[env.fixed_counter + j] = value & cpu.fixed_mask
            return
    if cfg.intel and msr == M.MSR_CORE_PERF_FIXED_CTR_CTRL:
        old = s[env.fixed_ctr_ctrl]
        if value != old:  # reprogram_fixed_counters(): all of it to hw, only changed fields marked
            s[env.fixed_ctr_ctrl] = s[env.fixed_ctr_ctrl_hw] = value
            for j in range(env.vcpu.num_fixed):
                if (old ^ value) >> (4 * j) & 0xF:
                    request_counter_reprogram(env, s, M.FIXED_IDX_BASE + j)
    elif msr == env.PERF_GLOBAL_CTRL:
        diff = s[env.pmu_global_ctrl] ^ value
        s[env.pmu_global_ctrl] = value
        for idx in range(diff.bit_length()):  # reprogram_counters()
            if diff >> idx & 1:
                request_counter_reprogram(env, s, idx)
        if cfg.intel:  # write_global_ctrl: always forwarded to the VMCS (v6, §1.4)
            s[cpu.vmcs_guest_pgc] = value
    elif msr in (M.MSR_CORE_PERF_GLOBAL_OVF_CTRL, M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_CLR):
        s[env.pmu_global_status] &= ~value
    elif msr == M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_SET:  # PerfMonV2 guests only (kvm_pmu_msr_valid)
        s[env.pmu_global_status] |= value & cpu.gp_bits
    elif msr == M.MSR_X2APIC_LVTPC:
        s[env.vlvtpc] = value & 0x1_07FF


# --- load / put (§1.2, §1.3) -----------------------------------------------------------


def _wrmsr_slot(cpu: Cpu, msr: int, slot: int) -> Action:
    """An action writing the value of a state slot (a kernel variable) to an MSR."""

    def do(s: list[int]) -> None:
        cpu.wrmsr(s, msr, s[slot])

    return do


def _wrmsr_const(cpu: Cpu, msr: int, value: int) -> Action:
    def do(s: list[int]) -> None:
        cpu.wrmsr(s, msr, value)

    return do


def _slot_set(slot: int) -> Cond:
    return lambda s: bool(s[slot])


def kvm_mediated_pmu_load(env: KernelEnv) -> Function:
    cpu, gc = env.cpu, env.PERF_GLOBAL_CTRL
    vendor_load = "intel_mediated_pmu_load" if env.cpu.cfg.intel else "amd_mediated_pmu_load"
    return Function(
        "kvm_mediated_pmu_load",
        (
            Step(
                "perf_load_guest_context",
                "perf_load_guest_context()",
                kind=CALL,
                call="perf_load_guest_context",
                source="§1.2 step 2",
            ),
            Step(
                "clear_global_ctrl",
                "wrmsrq(kvm_pmu_ops.PERF_GLOBAL_CTRL, 0)",
                lambda s: cpu.wrmsr(s, gc, 0),
                source="§1.2 step 3, H2 (seed thread)",
            ),
            Step(
                "load_lvtpc",
                "perf_load_guest_lvtpc(kvm_lapic_get_reg(apic, APIC_LVTPC))",
                kind=CALL,
                call="perf_load_guest_lvtpc",
                source="§1.2 step 4, H1",
            ),
            Step(
                "load_pmcs",
                "kvm_pmu_load_guest_pmcs(vcpu)",
                kind=CALL,
                call="kvm_pmu_load_guest_pmcs",
                source="§1.2 step 5",
            ),
            Step(
                "vendor_load",
                f"kvm_pmu_call(mediated_load)(vcpu) = {vendor_load}",
                kind=CALL,
                call=vendor_load,
                source="§1.2 step 6",
            ),
        ),
        doc="Load the guest's PMU context into hardware (IRQs disabled).",
        source="§1.2; v6 27/44 (final 56bb27369750)",
    )


def kvm_pmu_load_guest_pmcs(env: KernelEnv) -> Function:
    cpu = env.cpu
    steps: list[Step] = []
    for i in range(env.vcpu.num_gp):
        ctr, sel = env.pmc_counter + i, env.pmc_eventsel_hw + i

        def load_ctr(s: list[int], i: int = i, ctr: int = ctr) -> None:
            if cpu.rdpmc(s, i) != s[ctr]:  # elided when equal (v6 34/44, H23)
                cpu.wrmsr(s, env.GP_COUNTER(i), s[ctr])

        steps.append(
            Step(
                f"load_pmc{i}",
                f"if (rdpmc({i}) != pmc->counter) wrmsrq(GP_COUNTER_BASE + {i}, pmc->counter)",
                load_ctr,
                source="§1.2 step 5, B.1.4",
            )
        )
        steps.append(
            Step(
                f"load_eventsel{i}",
                f"wrmsrq(GP_EVENTSEL_BASE + {i}, pmc->eventsel_hw)",
                _wrmsr_slot(cpu, env.GP_EVENTSEL(i), sel),
                source="§1.2 step 5, B.1.4",
            )
        )
    for j in range(env.vcpu.num_fixed):
        ctr = env.fixed_counter + j

        def load_fixed(s: list[int], j: int = j, ctr: int = ctr) -> None:
            if cpu.rdpmc(s, M.RDPMC_FIXED | j) != s[ctr]:
                cpu.wrmsr(s, env.FIXED_COUNTER(j), s[ctr])

        steps.append(
            Step(
                f"load_fixed{j}",
                f"if (rdpmc(INTEL_PMC_FIXED_RDPMC_BASE | {j}) != pmc->counter) "
                f"wrmsrq(FIXED_COUNTER_BASE + {j}, pmc->counter)",
                load_fixed,
                source="§1.2 step 5, B.1.5",
            )
        )
    return Function(
        "kvm_pmu_load_guest_pmcs",
        tuple(steps),
        doc="Counters (if changed) and hardware selectors.",
        source="§1.2 step 5",
    )


def intel_mediated_pmu_load(env: KernelEnv) -> Function:
    cpu, hw, gs = env.cpu, env.tmp_hw_status, env.pmu_global_status

    def read(s: list[int]) -> None:
        s[hw] = cpu.rdmsr(s, M.MSR_CORE_PERF_GLOBAL_STATUS)

    def clear_stale(s: list[int]) -> None:
        toggle = s[gs] ^ s[hw]
        if s[hw] & toggle:
            cpu.wrmsr(s, M.MSR_CORE_PERF_GLOBAL_OVF_CTRL, s[hw] & toggle)

    def set_guest(s: list[int]) -> None:
        toggle = s[gs] ^ s[hw]
        if s[gs] & toggle:
            cpu.wrmsr(s, M.MSR_CORE_PERF_GLOBAL_STATUS_SET, s[gs] & toggle)

    steps = [
        Step(
            "read_status",
            "hw = rdmsrq(MSR_CORE_PERF_GLOBAL_STATUS); toggle = pmu->global_status ^ hw",
            read,
            source="§1.2 step 6, B.1.6",
        ),
        Step(
            "clear_stale_status",
            "if (hw & toggle) wrmsrq(MSR_CORE_PERF_GLOBAL_OVF_CTRL, hw & toggle)",
            clear_stale,
            source="§1.2 step 6, H10",
        ),
        Step(
            "set_guest_status",
            "if (pmu->global_status & toggle) wrmsrq(MSR_CORE_PERF_GLOBAL_STATUS_SET, pmu->global_status & toggle)",
            set_guest,
            source="§1.2 step 6, H10",
        ),
    ]
    if env.vcpu.num_fixed:
        fcc = env.fixed_ctr_ctrl_hw
        steps.append(
            Step(
                "load_fixed_ctrl",
                "wrmsrq(MSR_CORE_PERF_FIXED_CTR_CTRL, pmu->fixed_ctr_ctrl_hw)",
                lambda s: cpu.wrmsr(s, M.MSR_CORE_PERF_FIXED_CTR_CTRL, s[fcc]),
                source="§1.2 step 6, B.1.7",
            )
        )
    return Function(
        "intel_mediated_pmu_load",
        tuple(steps),
        doc="Status toggle via OVF_CTRL/STATUS_SET; GLOBAL_CTRL is loaded by VM-entry.",
        source="§1.2 step 6, §4.1",
        locals=(hw,),
    )


def amd_mediated_pmu_load(env: KernelEnv) -> Function:
    cpu, hw, gs, gctl = env.cpu, env.tmp_hw_status, env.pmu_global_status, env.pmu_global_ctrl

    def read(s: list[int]) -> None:
        s[hw] = cpu.rdmsr(s, M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS)

    def clear(s: list[int]) -> None:
        if s[hw]:
            cpu.wrmsr(s, M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_CLR, s[hw])

    return Function(
        "amd_mediated_pmu_load",
        (
            Step("read_status", "hw = rdmsrq(MSR_AMD64_PERF_CNTR_GLOBAL_STATUS)", read, source="B.3.5"),
            Step("clear_status", "if (hw) wrmsrq(MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_CLR, hw)", clear, source="B.3.5"),
            Step(
                "set_guest_status",
                "wrmsrq(MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_SET, pmu->global_status)",
                lambda s: cpu.wrmsr(s, M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_SET, s[gs]),
                source="B.3.6, H10",
            ),
            Step(
                "load_global_ctrl",
                "wrmsrq(MSR_AMD64_PERF_CNTR_GLOBAL_CTL, pmu->global_ctrl)",
                lambda s: cpu.wrmsr(s, M.MSR_AMD64_PERF_CNTR_GLOBAL_CTL, s[gctl]),
                source="B.3.7, §4.2",
            ),
        ),
        doc="Clear host status, set guest status, load guest GlobalCtl (selectors are GuestOnly).",
        source="§1.2 step 6, §4.2",
        locals=(hw,),
    )


def kvm_mediated_pmu_put(env: KernelEnv) -> Function:
    vendor_put = "intel_mediated_pmu_put" if env.cpu.cfg.intel else "amd_mediated_pmu_put"
    return Function(
        "kvm_mediated_pmu_put",
        (
            Step(
                "vendor_put",
                f"kvm_pmu_call(mediated_put)(vcpu) = {vendor_put}",
                kind=CALL,
                call=vendor_put,
                source="§1.3 step 2",
            ),
            Step(
                "put_pmcs",
                "kvm_pmu_put_guest_pmcs(vcpu)",
                kind=CALL,
                call="kvm_pmu_put_guest_pmcs",
                source="§1.3 step 3, H9",
            ),
            Step(
                "put_lvtpc", "perf_put_guest_lvtpc()", kind=CALL, call="perf_put_guest_lvtpc", source="§1.3 step 4, H1"
            ),
            Step(
                "perf_put_guest_context",
                "perf_put_guest_context()",
                kind=CALL,
                call="perf_put_guest_context",
                source="§1.3 step 5",
            ),
        ),
        doc="Save the guest's PMU context and give the PMU back to host perf (IRQs disabled).",
        source="§1.3; v6 27/44 (final 56bb27369750)",
    )


def intel_mediated_pmu_put(env: KernelEnv) -> Function:
    cpu, gs = env.cpu, env.pmu_global_status

    def save(s: list[int]) -> None:
        s[gs] = cpu.rdmsr(s, M.MSR_CORE_PERF_GLOBAL_STATUS)

    def clear(s: list[int]) -> None:
        if s[gs]:
            cpu.wrmsr(s, M.MSR_CORE_PERF_GLOBAL_OVF_CTRL, s[gs])

    steps = [
        Step("save_status", "pmu->global_status = rdmsrq(MSR_CORE_PERF_GLOBAL_STATUS)", save, source="B.2.4"),
        Step(
            "clear_status",
            "if (pmu->global_status) wrmsrq(MSR_CORE_PERF_GLOBAL_OVF_CTRL, pmu->global_status)",
            clear,
            source="B.2.4, H10",
        ),
    ]
    if env.vcpu.num_fixed:
        fcc = env.fixed_ctr_ctrl_hw
        steps.append(
            Step(
                "clear_fixed_ctrl",
                "wrmsrq(MSR_CORE_PERF_FIXED_CTR_CTRL, 0)",
                lambda s: cpu.wrmsr(s, M.MSR_CORE_PERF_FIXED_CTR_CTRL, 0),
                when=lambda s: bool(s[fcc]),
                when_text="pmu->fixed_ctr_ctrl_hw",
                source="B.2.5, H9",
            )
        )
    return Function(
        "intel_mediated_pmu_put",
        tuple(steps),
        doc="GLOBAL_CTRL was saved and zeroed by VM-exit; save and clear status, stop fixed counters.",
        source="§1.3 step 2, §4.1",
    )


def amd_mediated_pmu_put(env: KernelEnv) -> Function:
    cpu, gs = env.cpu, env.pmu_global_status

    def save(s: list[int]) -> None:
        s[gs] = cpu.rdmsr(s, M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS)

    def clear(s: list[int]) -> None:
        if s[gs]:
            cpu.wrmsr(s, M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_CLR, s[gs])

    return Function(
        "amd_mediated_pmu_put",
        (
            Step(
                "clear_global_ctrl",
                "wrmsrq(MSR_AMD64_PERF_CNTR_GLOBAL_CTL, 0)",
                lambda s: cpu.wrmsr(s, M.MSR_AMD64_PERF_CNTR_GLOBAL_CTL, 0),
                source="B.4.3, H8",
            ),
            Step("save_status", "pmu->global_status = rdmsrq(MSR_AMD64_PERF_CNTR_GLOBAL_STATUS)", save, source="B.4.3"),
            Step(
                "clear_status",
                "if (pmu->global_status) wrmsrq(MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_CLR, pmu->global_status)",
                clear,
                source="B.4.3, H10",
            ),
        ),
        doc="Clear GlobalCtl first (no hardware switch on SVM), then save and clear status.",
        source="§1.3 step 2, §4.2",
    )


def kvm_pmu_put_guest_pmcs(env: KernelEnv) -> Function:
    cpu = env.cpu
    steps: list[Step] = []
    for i in range(env.vcpu.num_gp):
        ctr, sel = env.pmc_counter + i, env.pmc_eventsel_hw + i

        def save_ctr(s: list[int], i: int = i, ctr: int = ctr) -> None:
            s[ctr] = cpu.rdpmc(s, i)
            if s[ctr]:
                cpu.wrmsr(s, env.GP_COUNTER(i), 0)

        steps.append(
            Step(
                f"save_pmc{i}",
                f"pmc->counter = rdpmc({i}); if (pmc->counter) wrmsrq(GP_COUNTER_BASE + {i}, 0)",
                save_ctr,
                source="§1.3 step 3, B.2.6",
            )
        )
        steps.append(
            Step(
                f"clear_eventsel{i}",
                f"wrmsrq(GP_EVENTSEL_BASE + {i}, 0)",
                _wrmsr_const(cpu, env.GP_EVENTSEL(i), 0),
                when=_slot_set(sel),
                when_text="pmc->eventsel_hw",
                source="§1.3 step 3, B.2.6, H9",
            )
        )
    for j in range(env.vcpu.num_fixed):
        ctr = env.fixed_counter + j

        def save_fixed(s: list[int], j: int = j, ctr: int = ctr) -> None:
            s[ctr] = cpu.rdpmc(s, M.RDPMC_FIXED | j)
            if s[ctr]:
                cpu.wrmsr(s, env.FIXED_COUNTER(j), 0)

        steps.append(
            Step(
                f"save_fixed{j}",
                f"pmc->counter = rdpmc(INTEL_PMC_FIXED_RDPMC_BASE | {j}); "
                f"if (pmc->counter) wrmsrq(FIXED_COUNTER_BASE + {j}, 0)",
                save_fixed,
                source="§1.3 step 3, B.2.7",
            )
        )
    return Function(
        "kvm_pmu_put_guest_pmcs",
        tuple(steps),
        doc="Save counters and zero counters and selectors so host perf never counts with guest controls.",
        source="§1.3 step 3",
    )


# --- the run loop (§1.1) -------------------------------------------------------------------


#: fastpath_t values the model uses (kvm.exit_fastpath): the exit went to the slow path, or the
#: fastpath handler handled it and asks to re-enter the guest.
EXIT_FASTPATH_NONE = 0
EXIT_FASTPATH_REENTER_GUEST = 1
EXIT_FASTPATH_EXIT_HANDLED = 2
#: exit qualification of the guest's last HLT (the end of its program); any other HLT is a
#: literal HLT the guest wakes from (guest/program.py).
HLT_FINAL = 1


def fastpath_step(env: KernelEnv, guard: bool = True) -> Step:
    """The vendor run function's fastpath handler (vmx/svm_exit_handlers_fastpath, §1.1).

    It runs right after the VM-exit, before the inner run loop looks at
    pending requests: a preemption-timer exit is handled (nothing to emulate);
    a WRMSR to TSC_DEADLINE or a literal HLT (handle_fastpath_hlt()) is
    handled, i.e. the instruction is skipped and counted, only when
    kvm_pmu_is_fastpath_emulation_allowed() (v6 28/44, §5.6, H11), else the
    handler returns EXIT_FASTPATH_NONE and the exit goes to the slow path after
    put. A handled HLT halts the vCPU (EXIT_FASTPATH_EXIT_HANDLED: break out to
    put; an interrupt the model does not show wakes it at once). Another
    handled exit sets ``exit_fastpath`` to EXIT_FASTPATH_REENTER_GUEST; :func:`exit_request_step` then decides between
    re-entering and breaking out. ``guard=False`` is the design before v6 28/44.
    """
    cpu, ef = env.cpu, env.exit_fastpath
    handlers = "vmx_exit_handlers_fastpath" if env.cpu.cfg.intel else "svm_exit_handlers_fastpath"

    def fastpath(s: list[int]) -> bool:
        reason = s[cpu.exit_reason]
        if reason == V.EXIT_TIMER:
            return True
        if reason == V.EXIT_WRMSR and s[cpu.exit_qual] == MSR_IA32_TSC_DEADLINE:
            return not guard or not counting_instructions_enabled(env, s)
        if reason == V.EXIT_HLT and s[cpu.exit_qual] != HLT_FINAL:  # handle_fastpath_hlt() (v7.0 x86.c)
            return not guard or not counting_instructions_enabled(env, s)
        return False

    def handle(s: list[int]) -> None:
        reason = s[cpu.exit_reason]
        if reason in (V.EXIT_WRMSR, V.EXIT_HLT):
            skip_emulated_instruction(env, s)
        # kvm_emulate_halt() halts the vCPU: not kvm_vcpu_running(), so EXIT_FASTPATH_EXIT_HANDLED.
        s[ef] = EXIT_FASTPATH_EXIT_HANDLED if reason == V.EXIT_HLT else EXIT_FASTPATH_REENTER_GUEST

    cond = "fastpath exit"
    if guard:
        cond += " && kvm_pmu_is_fastpath_emulation_allowed()"
    return Step(
        "fastpath",
        f"exit_fastpath = {handlers}(vcpu): handle the exit, EXIT_FASTPATH_REENTER_GUEST",
        handle,
        when=fastpath,
        when_text=cond,
        source="§1.1, §5.6, H11",
    )


def exit_request_step(env: KernelEnv) -> Step:
    """The inner run loop after the fastpath handler (§1.1): re-enter the guest without put/load
    when the handler asked to and kvm_vcpu_exit_request() is false (no KVM_REQ_PMI/KVM_REQ_PMU
    pending, even one the handler itself raised); otherwise break out to put.

    Breaking out after a handled exit leaves ``exit_fastpath`` != EXIT_FASTPATH_NONE (KVM sets
    EXIT_FASTPATH_EXIT_HANDLED there), so the slow-path handle_exit does not emulate the
    instruction a second time. On re-entry the step resets ``exit_fastpath``: the next VM-exit
    assigns it anew, and a stale value would only split states. (The PIR->IRR sync before the
    check is not modelled: the model has no posted interrupts.)
    """
    ef, pmi, pmu = env.exit_fastpath, env.req_pmi, env.req_pmu

    def reenter(s: list[int]) -> bool:
        return s[ef] == EXIT_FASTPATH_REENTER_GUEST and not (s[pmi] or s[pmu])

    return Step(
        "kvm_vcpu_exit_request",
        "",
        lambda s: s.__setitem__(ef, EXIT_FASTPATH_NONE),
        when=reenter,
        when_text="exit_fastpath == EXIT_FASTPATH_REENTER_GUEST && !kvm_vcpu_exit_request(vcpu)",
        goto="vmenter",
        source="§1.1",
    )


def vcpu_enter_guest(env: KernelEnv) -> Function:
    cpu, cfg = env.cpu, env.cpu.cfg
    intercepted_gc = need_perf_global_ctrl_intercept(env)

    def handle_event(s: list[int]) -> None:
        s[env.req_pmu] = 0
        refresh_event_filter(env, s)

    def deliver_pmi(s: list[int]) -> None:
        s[env.req_pmi] = 0
        lvt = s[env.vlvtpc]
        if not lvt & M.APIC_LVT_MASKED:  # kvm_apic_local_deliver(apic, APIC_LVTPC)
            s[env.virr] = 1
            if env.vcpu.intel_compatible:  # emulate Intel auto-mask (a16eb25b09c0)
                s[env.vlvtpc] = lvt | M.APIC_LVT_MASKED

    def inject(s: list[int]) -> None:
        if s[env.virr] and s[env.guest_irq_rip] < 0:
            s[env.virr] = 0
            s[env.guest_irq_rip] = 0
            env.obs.guest_pmi(s)

    def irq_disable(s: list[int]) -> None:
        s[cpu.host_if] = 0

    def irq_enable(s: list[int]) -> None:
        s[cpu.host_if] = 1

    def enter(s: list[int]) -> None:
        if cfg.intel:
            cpu.vmx_vmentry(s)
        else:
            cpu.svm_vmrun(s)

    def refresh_gc(s: list[int]) -> None:
        if cfg.intel:
            if cfg.vmx_save_global_ctrl:
                s[env.pmu_global_ctrl] = s[cpu.vmcs_guest_pgc]
            else:  # pre-SPR: MSR-store slot, written back to the VMCS (v6 44/44, H13)
                s[env.pmu_global_ctrl] = s[cpu.msr_store_pgc]
                s[cpu.vmcs_guest_pgc] = s[cpu.msr_store_pgc]
        else:
            s[env.pmu_global_ctrl] = cpu.rdmsr(s, M.MSR_AMD64_PERF_CNTR_GLOBAL_CTL)

    def handle_exit(s: list[int]) -> None:
        reason, qual, data = s[cpu.exit_reason], s[cpu.exit_qual], s[cpu.exit_data]
        if (
            reason in (V.EXIT_WRMSR, V.EXIT_RDMSR)
            and qual in PERFCTR_QUIRK_MSRS
            and not kvm_pmu_msr_valid(env, qual, reason == V.EXIT_WRMSR)
        ):  # an absent K7/P6 counter: the write is dropped, a read returns 0, no #GP
            if reason == V.EXIT_RDMSR:
                s[env.guest_rax] = 0
                env.obs.guest_read(s, "rdmsr", qual, 0)
            skip_emulated_instruction(env, s)
        elif reason in (V.EXIT_WRMSR, V.EXIT_RDMSR) and not kvm_pmu_msr_valid(env, qual, reason == V.EXIT_WRMSR):
            env.inject_gp(s, f"{'WRMSR' if reason == V.EXIT_WRMSR else 'RDMSR'} {qual:#x}: not a vCPU MSR")
        elif reason == V.EXIT_WRMSR and rsvd_write(env, qual, data):
            env.inject_gp(s, f"WRMSR {qual:#x} <- {data:#x}: reserved bits")
        elif reason == V.EXIT_WRMSR:
            emulated_wrmsr(env, s, qual, data)
            skip_emulated_instruction(env, s)
        elif reason == V.EXIT_RDMSR:
            s[env.guest_rax] = emulated_rdmsr(env, s, qual)
            env.obs.guest_read(s, "rdmsr", qual, s[env.guest_rax])
            skip_emulated_instruction(env, s)
        elif reason == V.EXIT_RDPMC:
            idx = qual & ~M.RDPMC_FIXED
            limit = env.vcpu.num_fixed if qual & M.RDPMC_FIXED else env.vcpu.num_gp
            if qual & M.RDPMC_FAST or idx >= limit:  # kvm_rdpmc_ecx_to_pmc() fails: #GP (F-1.11.2)
                env.inject_gp(s, f"RDPMC {qual:#x}: no such counter")
                return
            value = s[env.fixed_counter + idx] if qual & M.RDPMC_FIXED else s[env.pmc_counter + idx]
            width = (
                (env.vcpu.fixed_width or cfg.fixed_width)
                if qual & M.RDPMC_FIXED
                else (env.vcpu.gp_width or cfg.gp_width)
            )
            value &= (1 << width) - 1  # kvm_pmu_rdpmc(): pmc_read_counter() & counter_bitmask
            s[env.guest_rax] = value
            env.obs.guest_read(s, "rdpmc", qual, value)
            skip_emulated_instruction(env, s)
        elif reason == V.EXIT_CPUID:
            skip_emulated_instruction(env, s)
        elif reason == V.EXIT_HLT and qual == HLT_FINAL:
            s[env.guest_done] = 1
        elif reason == V.EXIT_HLT:  # kvm_emulate_halt(): skip and count, halt until an interrupt
            skip_emulated_instruction(env, s)
        elif reason == V.EXIT_UD:  # handle_ud(): the forced-emulation prefix; x86_emulate_instruction()
            skip_emulated_instruction(env, s, branch=bool(qual))
        elif reason == V.EXIT_IO:  # a ucall: KVM completes the I/O instruction, userspace runs
            skip_emulated_instruction(env, s)
            set_pmu_event_filter(env, s, qual)

    steps = [
        Step(
            "kvm_pmu_handle_event",
            "kvm_pmu_handle_event(vcpu)",
            handle_event,
            when=lambda s: bool(s[env.req_pmu]),
            when_text="kvm_check_request(KVM_REQ_PMU)",
            source="§1.1, §5.5",
        ),
        Step(
            "kvm_pmu_deliver_pmi",
            "kvm_pmu_deliver_pmi(vcpu)",
            deliver_pmi,
            when=lambda s: bool(s[env.req_pmi]),
            when_text="kvm_check_request(KVM_REQ_PMI)",
            source="§3.2 step 5",
        ),
        Step(
            "inject_pending_event",
            "kvm_check_and_inject_events(): inject the vLAPIC's PMI",
            inject,
            when=lambda s: bool(s[env.virr]),
            when_text="PMI pending in the vLAPIC",
            source="§3.2 steps 5, 7",
        ),
        Step("local_irq_disable", "local_irq_disable()", irq_disable, source="§1.1"),
        Step("mediated_load", "kvm_mediated_pmu_load(vcpu)", kind=CALL, call="kvm_mediated_pmu_load", source="§1.1"),
    ]
    if cfg.amd:
        steps.append(Step("clgi", "clgi()", lambda s: cpu.clgi(s), source="F-5.2"))
    steps.append(
        Step(
            "vmenter",
            "VMLAUNCH/VMRESUME" if cfg.intel else "VMRUN",
            enter,
            kind=VMENTER,
            source="F-4.2.1 (guest PERF_GLOBAL_CTRL from the VMCS)" if cfg.intel else "F-5.2, F-5.5",
        )
    )
    if cfg.amd:
        steps.append(Step("stgi", "stgi(): any pending NMI will happen here", lambda s: cpu.stgi(s), source="F-5.2"))
    if not intercepted_gc:
        steps.append(
            Step(
                "refresh_global_ctrl",
                (
                    "pmu->global_ctrl = vmcs_read64(GUEST_IA32_PERF_GLOBAL_CTRL)"
                    if cfg.vmx_save_global_ctrl
                    else "pmu->global_ctrl = msr_autostore[PERF_GLOBAL_CTRL]; "
                    "vmcs_write64(GUEST_IA32_PERF_GLOBAL_CTRL, pmu->global_ctrl)"
                )
                if cfg.intel
                else "pmu->global_ctrl = rdmsrq(MSR_AMD64_PERF_CNTR_GLOBAL_CTL)",
                refresh_gc,
                source="§1.4, H12, H13",
            )
        )
    steps += [
        fastpath_step(env),
        exit_request_step(env),
        Step("mediated_put", "kvm_mediated_pmu_put(vcpu)", kind=CALL, call="kvm_mediated_pmu_put", source="§1.1"),
    ]
    if cfg.intel:
        steps.append(
            Step(
                "handle_exit_irqoff",
                "handle_exit_irqoff(): dispatch the acked interrupt",
                kind=INTR,
                when=lambda s: s[cpu.exit_reason] == V.EXIT_EXTINT,
                when_text="EXIT_REASON_EXTERNAL_INTERRUPT",
                source="§3.2 step 4, F-4.4.2",
            )
        )
    steps += [
        Step("local_irq_enable", "local_irq_enable()", irq_enable, source="§1.1, §3.2 step 4"),
        Step(
            "handle_exit",
            "kvm_x86_call(handle_exit)(vcpu, exit_fastpath): emulate and skip",
            handle_exit,
            when=lambda s: s[env.exit_fastpath] == EXIT_FASTPATH_NONE,
            when_text="exit_fastpath == EXIT_FASTPATH_NONE",
            source="§1.1, §5.4, §5.6",
        ),
    ]
    return Function(
        "vcpu_enter_guest",
        tuple(steps),
        doc="One trip into the guest and back.",
        source="§1.1, App. A.2",
        locals=(env.exit_fastpath,),
    )


def kvm_enable_virtualization_cpu(env: KernelEnv) -> Function:
    """Boot-time: KVM enables virtualization on the CPU; on AMD that sets EFER.SVME and
    calls amd_pmu_enable_virt() -> amd_pmu_reload_virt() (H2). Run once, before the world starts."""
    cpu = env.cpu
    steps: list[Step] = []
    if env.cpu.cfg.amd:
        steps += [
            Step("svm_enable", "EFER.SVME = 1", lambda s: cpu.set_svme(s, True), source="F-3.4, §4.2"),
            Step(
                "amd_pmu_enable_virt",
                "amd_pmu_enable_virt() -> amd_pmu_reload_virt()",
                kind=CALL,
                call="amd_pmu_reload_virt",
                source="§3.1 AMD, H2",
            ),
        ]
    else:
        steps.append(Step("vmxon", "VMXON", lambda s: None, source="§4"))
    steps.append(Step("end", "return", kind=END))
    return Function(
        "kvm_enable_virtualization_cpu", tuple(steps), doc="Boot-time virtualization enable.", source="§3.1, §4.2"
    )


def vcpu_run(env: KernelEnv) -> Function:
    """The vCPU task: loop vcpu_enter_guest until the guest halts, then a final perf read."""

    def final_read(s: list[int]) -> None:
        for e in range(len(env.host_events)):
            if s[env.ev_active[e]]:
                perf.event_update(env, s, e)

    steps: list[Step] = []
    vm = env.mediated_vm
    if vm >= 0:
        steps.append(
            Step(
                "kvm_arch_vcpu_precreate",
                "if (perf_create_mediated_pmu()) goto create_failed;  // -EBUSY: nr_include_guest_events",
                lambda s: s.__setitem__(vm, 1),
                when=lambda s: not env.nr_include_guest_events(s),
                when_text="!atomic_read(&nr_include_guest_events)",
                source="kvm_arch_vcpu_precreate() (arch/x86/kvm/x86.c), perf_create_mediated_pmu() "
                "(kernel/events/core.c), §2.1, §2.2, H14",
            )
        )
        steps.append(
            Step("created", "", when=lambda s: not s[vm], when_text="!created_mediated_pmu", goto="create_failed")
        )
    steps += [
        Step("enter_guest", "vcpu_enter_guest(vcpu)", kind=CALL, call="vcpu_enter_guest", source="§1.1"),
        Step("again", "", when=lambda s: not s[env.guest_done], when_text="!guest halted", goto="enter_guest"),
        Step(
            "vcpu_put",
            "vcpu_put(): kvm_get_running_vcpu() = NULL",
            lambda s: s.__setitem__(env.running_vcpu, 0),
            source="§2.6",
        ),
        Step("perf_read", "perf_event_read() of every host event", final_read, source="host isolation"),
    ]
    if vm >= 0:
        steps += [
            Step(
                "kvm_destroy_vm",
                "kvm_arch_destroy_vm(): perf_release_mediated_pmu()",
                lambda s: s.__setitem__(vm, 0),
                when=lambda s: bool(s[vm]),
                when_text="kvm->arch.created_mediated_pmu",
                source="kvm_arch_destroy_vm() (arch/x86/kvm/x86.c), §2.1, H14",
            ),
            Step("end", "exit to userspace; the VM is gone", kind=END),
            Step(
                "create_failed",
                'pr_warn_ratelimited("Failed to enable mediated vPMU, try disabling system wide perf events '
                'and nmi_watchdog."); KVM_CREATE_VCPU returns -EBUSY',
                lambda s: None,
                source="kvm_arch_vcpu_precreate() (arch/x86/kvm/x86.c), S4",
            ),
            Step("end_failed", "exit to userspace: no vCPU", kind=END),
        ]
    else:
        steps.append(Step("end", "exit to userspace", kind=END))
    return Function("vcpu_run", tuple(steps), doc="The vCPU thread.", source="§1.1")


def kvm_handle_guest_mediated_pmi(env: KernelEnv) -> Function:
    """IRQ context for vector 0xF5: sysvec handler -> kvm_handle_guest_mediated_pmi (§2.5, §2.6)."""
    rv, cpu = env.running_vcpu, env.cpu
    return Function(
        "kvm_handle_guest_mediated_pmi",
        (
            Step("apic_eoi", "apic_eoi()", lambda s: cpu.eoi(s), source="§2.5 (sysvec handler)"),
            Step(
                "warn_no_vcpu",
                "WARN_ON_ONCE(!vcpu || !kvm_vcpu_has_mediated_pmu(vcpu)); return",
                kind=WARN,
                when=lambda s: not s[rv],
                when_text="!kvm_get_running_vcpu()",
                goto="iret",
                source="§2.6, I8",
            ),
            Step(
                "request_pmi",
                "kvm_make_request(KVM_REQ_PMI, vcpu)",
                lambda s: s.__setitem__(env.req_pmi, 1),
                source="§2.6",
            ),
            Step("iret", "iret", kind=IRET),
        ),
        doc="sysvec_perf_guest_mediated_pmi_handler: EOI, count, then KVM's handler.",
        source="§2.5, §2.6 (v6 19/44)",
    )


BUILDERS: dict[str, Builder] = {
    "kvm_enable_virtualization_cpu": kvm_enable_virtualization_cpu,
    "vcpu_run": vcpu_run,
    "vcpu_enter_guest": vcpu_enter_guest,
    "kvm_mediated_pmu_load": kvm_mediated_pmu_load,
    "kvm_pmu_load_guest_pmcs": kvm_pmu_load_guest_pmcs,
    "intel_mediated_pmu_load": intel_mediated_pmu_load,
    "amd_mediated_pmu_load": amd_mediated_pmu_load,
    "kvm_mediated_pmu_put": kvm_mediated_pmu_put,
    "intel_mediated_pmu_put": intel_mediated_pmu_put,
    "amd_mediated_pmu_put": amd_mediated_pmu_put,
    "kvm_pmu_put_guest_pmcs": kvm_pmu_put_guest_pmcs,
    "kvm_handle_guest_mediated_pmi": kvm_handle_guest_mediated_pmi,
}
