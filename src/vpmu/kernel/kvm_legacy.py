"""KVM's legacy, perf-based vPMU in the step language (Linux v7.0, without the mediated PMU).

Every guest PMU MSR and RDPMC is intercepted (kvm_need_any_pmc_intercept() is
true without the mediated PMU, :func:`vpmu.kernel.kvm.passthrough_msrs`). A
guest counter lives in ``pmc->counter`` plus the count of the host perf event
that backs it (:mod:`vpmu.kernel.perf_events`), plus ``pmc->emulated_counter``
for instructions KVM emulated. The code paths, all from arch/x86/kvm/pmu.c v7.0:

* a guest write to a selector, FIXED_CTR_CTRL or GLOBAL_CTRL marks the PMC in
  ``reprogram_pmi`` and raises KVM_REQ_PMU (same emulation as the mediated
  vPMU, :func:`vpmu.kernel.kvm.emulated_wrmsr`); before the next VM-entry
  kvm_pmu_handle_event() runs reprogram_counter() on every marked PMC:
  pmc_pause_counter() (perf_event_pause(), count folded into pmc->counter,
  emulated counts added, overflow by emulation detected), then, if the PMC is
  enabled and allowed by the filter, pmc_resume_counter() (perf_event_period()
  with get_sample_period(), perf_event_enable()) when the config is unchanged,
  else pmc_release_perf_event() and pmc_reprogram_counter();
* a counter overflow is a host PMI (an NMI): perf's handler updates and re-arms
  the event and calls its overflow handler kvm_perf_overflow(), which sets the
  guest's GLOBAL_STATUS bit, raises KVM_REQ_PMI (if the guest asked for a PMI)
  and KVM_REQ_PMU; the PMI reaches the guest through the vLAPIC on the next
  entry (kvm_pmu_deliver_pmi);
* a counter read (RDPMC, RDMSR) is pmc_read_counter(): counter + emulated +
  perf_event_read_value(); a counter write is pmc_write_counter(), which
  offsets pmc->counter and updates the sample period;
* on Intel, atomic_switch_perf_msrs() (vmx.c) puts perf's guest and host
  PERF_GLOBAL_CTRL values (intel_guest_get_msrs()) into the VMCS before each
  entry.

Builders take flags only ablations use (``exclude_host``, ``fold``,
``filter``, ``refuse``, ``overflow``): each removes one mechanism so that a
property of the legacy vPMU can be shown to fail.
"""

from __future__ import annotations

from functools import partial

from vpmu.hw import msr as M
from vpmu.hw import virt as V
from vpmu.kernel import kvm, perf
from vpmu.kernel import perf_events as P
from vpmu.kernel.env import KernelEnv
from vpmu.kernel.lang import CALL, Action, Builder, Function, Step

# --- the PMC as KVM sees it ---------------------------------------------------------------


def _counter_slot(env: KernelEnv, k: int) -> int:
    j = P.fixed(env, k)
    return env.pmc_counter + k if j < 0 else env.fixed_counter + j


def get_sample_period(env: KernelEnv, counter: int, k: int) -> int:
    """get_sample_period(): the events left to the counter's overflow (a full range at 0)."""
    mask = P.width_mask(env, k)
    return (-counter) & mask or mask + 1


def pmc_read_counter(env: KernelEnv, s: list[int], k: int) -> int:
    """pmc_read_counter(): counter + emulated_counter + the perf count of an unpaused event."""
    value = s[_counter_slot(env, k)] + s[env.lpmc_emulated + k]
    if s[env.lpmc_state + k] in (P.ACTIVE, P.ERROR):
        value += P.read_value(env, s, k)
    return value & P.width_mask(env, k)


def pmc_write_counter(env: KernelEnv, s: list[int], k: int, value: int) -> None:
    """pmc_write_counter(): drop emulated counts, offset pmc->counter against the current read,
    then pmc_update_sample_period() from pmc->counter (not the value the guest wrote: with
    events counted since the last pause, the period is off by that many)."""
    s[env.lpmc_emulated + k] = 0
    slot = _counter_slot(env, k)
    s[slot] = (s[slot] + value - pmc_read_counter(env, s, k)) & P.width_mask(env, k)
    if s[env.lpmc_state + k] in (P.ACTIVE, P.ERROR):  # an event that is not paused
        if s[env.lpmc_count + k] & P.width_mask(env, k):
            P.note("period-offset")
        P.period(env, s, k, get_sample_period(env, s[slot], k))


def _has_global_ctrl(env: KernelEnv) -> bool:
    """kvm_pmu_has_perf_global_ctrl(): Intel v2+ (the model's Intel guests), AMD PerfMonV2."""
    return env.cpu.cfg.intel or env.cpu.cfg.pmu_version == "perfmonv2"


def _enabled(env: KernelEnv, s: list[int], k: int, filter: bool = True) -> tuple[bool, int, bool]:
    """(globally and locally enabled and allowed, new_config, intr) for reprogram_counter()."""
    j = P.fixed(env, k)
    idx = P.pmc_idx(env, k)
    glob = not _has_global_ctrl(env) or bool(s[env.pmu_global_ctrl] >> idx & 1)
    if j < 0:
        sel = s[env.pmc_eventsel + k]
        local = bool(sel & M.EVENTSEL_EN)
        allowed = kvm.event_allowed(env, sel, s)
        config, intr = sel, bool(sel & M.EVENTSEL_INT)
    else:
        nib = (s[env.fixed_ctr_ctrl] >> (4 * j)) & 0xF
        local = bool(nib & (M.FIXED_OS | M.FIXED_USR))
        allowed = kvm.fixed_allowed(env, j, s)
        config, intr = nib, bool(nib & M.FIXED_PMI)
    return glob and local and (allowed or not filter), config, intr


def kvm_perf_overflow_set(env: KernelEnv, s: list[int], k: int) -> None:
    """__kvm_perf_overflow(): set the guest's GLOBAL_STATUS bit; KVM_REQ_PMI if pmc->intr."""
    s[env.pmu_global_status] |= 1 << P.pmc_idx(env, k)
    if s[env.lpmc_intr + k]:
        s[env.req_pmi] = 1


def kvm_perf_overflow(env: KernelEnv, s: list[int], k: int, raise_pmi: bool = True) -> None:
    """kvm_perf_overflow(), perf's overflow handler for KVM's event (in the host PMI, an NMI):
    ignored if the PMC is already marked for reprogramming (test_and_set_bit)."""
    bit = 1 << P.pmc_idx(env, k)
    if s[env.reprogram_pmi] & bit:
        P.note("overflow-ignored")
        return
    s[env.reprogram_pmi] |= bit
    if raise_pmi:
        kvm_perf_overflow_set(env, s, k)
    s[env.req_pmu] = 1


def reprogram_counter(
    env: KernelEnv,
    s: list[int],
    k: int,
    *,
    exclude_host: bool = True,
    fold: bool = True,
    filter: bool = True,
    refuse: bool = True,
) -> None:
    """reprogram_counter() without the mediated PMU (pmc_pause_counter, then resume or recreate)."""
    slot, mask = _counter_slot(env, k), P.width_mask(env, k)
    # pmc_pause_counter()
    value = s[slot]
    if s[env.lpmc_state + k] in (P.ACTIVE, P.ERROR):
        paused = P.pause(env, s, k)
        if fold:
            value += paused
    prev = value & mask
    value += s[env.lpmc_emulated + k]
    s[slot] = value & mask
    s[env.lpmc_emulated + k] = 0
    emulate_overflow = s[slot] < prev
    ok, config, intr = _enabled(env, s, k, filter)
    if not ok:
        return
    if emulate_overflow:
        P.note("emulated-overflow")
        kvm_perf_overflow_set(env, s, k)
    period = get_sample_period(env, s[slot], k)
    if s[env.lpmc_config + k] == config and s[env.lpmc_state + k] != P.NONE:  # pmc_resume_counter()
        P.period(env, s, k, period)
        P.enable(env, s, k, refuse)
        return
    P.release(env, s, k)  # pmc_release_perf_event()
    s[env.lpmc_config + k] = config
    P.create(env, s, k, period, exclude_host, refuse)  # pmc_reprogram_counter()
    s[env.lpmc_intr + k] = int(intr)


def kvm_pmu_handle_event(env: KernelEnv, **ablate: bool) -> Function:
    """kvm_pmu_handle_event(): copy and clear reprogram_pmi, reprogram each PMC it marked."""
    bm = env.handle_event_bitmap

    def take(s: list[int]) -> None:
        s[env.req_pmu] = 0
        s[bm] = s[env.reprogram_pmi]
        s[env.reprogram_pmi] &= ~s[bm]

    steps = [
        Step(
            "take_bitmap",
            "bitmap_copy(bitmap, pmu->reprogram_pmi); atomic64_andnot(bitmap, &pmu->__reprogram_pmi)",
            take,
            source="pmu.c kvm_pmu_handle_event (v7.0)",
        )
    ]
    for k in range(P.count(env)):
        idx = P.pmc_idx(env, k)
        name = f"pmc{k}" if P.fixed(env, k) < 0 else f"fixed{P.fixed(env, k)}"
        steps.append(
            Step(
                f"reprogram_{name}",
                f"reprogram_counter({name}): pmc_pause_counter(); resume or release + pmc_reprogram_counter()",
                partial(_reprogram_step, env, k, ablate),
                when=partial(_marked, bm, idx),
                when_text=f"test_bit({idx}, bitmap)",
                source="pmu.c reprogram_counter, pmc_pause_counter, pmc_resume_counter, pmc_reprogram_counter (v7.0)",
            )
        )
    return Function(
        "kvm_pmu_handle_event",
        tuple(steps),
        doc="Reprogram the perf events of every PMC the guest (or an overflow) marked.",
        source="arch/x86/kvm/pmu.c (v7.0)",
        locals=(bm,),
    )


def _marked(bm: int, idx: int, s: list[int]) -> bool:
    return bool(s[bm] >> idx & 1)


def _reprogram_step(env: KernelEnv, k: int, ablate: dict[str, bool], s: list[int]) -> None:
    reprogram_counter(env, s, k, **ablate)


# --- emulation -------------------------------------------------------------------------------


def counter_pmc(env: KernelEnv, msr: int) -> int:
    """The PMC whose counter ``msr`` is, or -1."""
    cfg = env.cpu.cfg
    for i in range(env.vcpu.num_gp):
        if msr == env.GP_COUNTER(i):
            return i
        if cfg.intel and msr == M.MSR_IA32_PERFCTR0 + i:
            return i
        if cfg.amd and i < 4 and msr == M.MSR_K7_PERFCTR0 + i:
            return i
    for j in range(env.vcpu.num_fixed):
        if msr == env.FIXED_COUNTER(j):
            return env.vcpu.num_gp + j
    return -1


def kvm_pmu_incr_counter(env: KernelEnv, s: list[int], cpl: int) -> None:
    """kvm_pmu_instruction_retired() without the mediated PMU: every PMC counting instructions at
    this CPL, globally enabled and allowed, gets emulated_counter++ and is marked (KVM_REQ_PMU)."""
    glob = s[env.pmu_global_ctrl] if _has_global_ctrl(env) else -1
    for i in range(env.vcpu.num_gp):
        sel = s[env.pmc_eventsel + i]
        if not sel & M.EVENTSEL_EN or not (glob >> i) & 1 or not kvm._is_instructions(env, sel):
            continue
        if sel & (M.EVENTSEL_OS if cpl == 0 else M.EVENTSEL_USR) and kvm.event_allowed(env, sel, s):
            P.note("emulated-count")
            s[env.lpmc_emulated + i] += 1
            kvm.request_counter_reprogram(env, s, i)
    fixed0 = env.vcpu.num_fixed and kvm.fixed_allowed(env, 0, s) and (glob >> M.FIXED_IDX_BASE) & 1
    if fixed0 and s[env.fixed_ctr_ctrl] & (M.FIXED_OS if cpl == 0 else M.FIXED_USR):
        P.note("emulated-count")
        s[env.lpmc_emulated + env.vcpu.num_gp] += 1
        kvm.request_counter_reprogram(env, s, M.FIXED_IDX_BASE)


def skip_emulated_instruction(env: KernelEnv, s: list[int]) -> None:
    """kvm_skip_emulated_instruction(): advance the guest RIP, count the instruction."""
    rip = env.guest_irq_rip if s[env.guest_irq_rip] >= 0 else env.guest_rip
    s[rip] += 1
    env.obs.guest_emulated(s, s[env.cpu.exit_cpl])
    kvm_pmu_incr_counter(env, s, s[env.cpu.exit_cpl])


def _sign_extend_32(value: int) -> int:
    value &= 0xFFFF_FFFF
    return value - (1 << 32) if value >> 31 else value


def handle_exit_step(env: KernelEnv) -> Step:
    """The slow-path exit handler: every PMU access is emulated (kvm_pmu_get_msr /
    kvm_pmu_set_msr / kvm_pmu_rdpmc, v7.0); counters through pmc_read_counter() and
    pmc_write_counter(), everything else as :mod:`vpmu.kernel.kvm` emulates it."""
    cpu = env.cpu

    def handle_exit(s: list[int]) -> None:
        reason, qual, data = s[cpu.exit_reason], s[cpu.exit_qual], s[cpu.exit_data]
        if reason in (V.EXIT_WRMSR, V.EXIT_RDMSR) and not kvm.kvm_pmu_msr_valid(env, qual, reason == V.EXIT_WRMSR):
            env.inject_gp(s, f"{'WRMSR' if reason == V.EXIT_WRMSR else 'RDMSR'} {qual:#x}: not a vCPU MSR")
        elif reason == V.EXIT_WRMSR:
            k = counter_pmc(env, qual)
            gp_intel = env.cpu.cfg.intel and k >= 0 and k < env.vcpu.num_gp
            if gp_intel and qual == M.MSR_IA32_PMC0 + k and data & ~env.cpu.gp_mask:
                env.inject_gp(s, f"WRMSR {qual:#x}: {data:#x} is wider than the counter")  # intel_pmu_set_msr()
                return
            if k >= 0:
                if gp_intel and qual == M.MSR_IA32_PERFCTR0 + k:
                    data = _sign_extend_32(data)  # intel_pmu_set_msr(): the legacy alias, (s64)(s32)data
                pmc_write_counter(env, s, k, data)
            else:
                kvm.emulated_wrmsr(env, s, qual, data)
            skip_emulated_instruction(env, s)
        elif reason == V.EXIT_RDMSR:
            k = counter_pmc(env, qual)
            s[env.guest_rax] = pmc_read_counter(env, s, k) if k >= 0 else kvm.emulated_rdmsr(env, s, qual)
            env.obs.guest_read(s, "rdmsr", qual, s[env.guest_rax])
            skip_emulated_instruction(env, s)
        elif reason == V.EXIT_RDPMC:
            idx = qual & ~M.RDPMC_FIXED
            limit = env.vcpu.num_fixed if qual & M.RDPMC_FIXED else env.vcpu.num_gp
            if qual & M.RDPMC_FAST or idx >= limit:  # kvm_pmu_rdpmc(): no such PMC, #GP (F-1.11.2)
                env.inject_gp(s, f"RDPMC {qual:#x}: no such counter")
                return
            k = env.vcpu.num_gp + idx if qual & M.RDPMC_FIXED else idx
            value = pmc_read_counter(env, s, k)
            s[env.guest_rax] = value
            env.obs.guest_read(s, "rdpmc", qual, value)
            skip_emulated_instruction(env, s)
        elif reason == V.EXIT_CPUID:
            skip_emulated_instruction(env, s)
        elif reason == V.EXIT_HLT:
            s[env.guest_done] = 1

    return Step(
        "handle_exit",
        "kvm_x86_call(handle_exit)(vcpu, exit_fastpath): emulate (kvm_pmu_{get,set}_msr, kvm_pmu_rdpmc) and skip",
        handle_exit,
        when=lambda s: s[env.exit_fastpath] == kvm.EXIT_FASTPATH_NONE,
        when_text="exit_fastpath == EXIT_FASTPATH_NONE",
        source="pmu.c kvm_pmu_rdpmc, pmc_read_counter, pmc_write_counter; pmu_intel.c/svm pmu.c set_msr (v7.0)",
    )


def fastpath_step(env: KernelEnv) -> Step:
    """The exit fastpath without the mediated PMU: kvm_pmu_is_fastpath_emulation_allowed() is
    always true, and the emulated TSC_DEADLINE WRMSR is counted in emulated_counter (which
    raises KVM_REQ_PMU, so kvm_vcpu_exit_request() then sends the exit to the slow path)."""
    cpu, ef = env.cpu, env.exit_fastpath
    handlers = "vmx_exit_handlers_fastpath" if env.cpu.cfg.intel else "svm_exit_handlers_fastpath"

    def fast(s: list[int]) -> bool:
        reason = s[cpu.exit_reason]
        return reason == V.EXIT_TIMER or (reason == V.EXIT_WRMSR and s[cpu.exit_qual] == kvm.MSR_IA32_TSC_DEADLINE)

    def handle(s: list[int]) -> None:
        if s[cpu.exit_reason] == V.EXIT_WRMSR:
            skip_emulated_instruction(env, s)
        s[ef] = kvm.EXIT_FASTPATH_REENTER_GUEST

    return Step(
        "fastpath",
        f"exit_fastpath = {handlers}(vcpu): handle the exit, EXIT_FASTPATH_REENTER_GUEST",
        handle,
        when=fast,
        when_text="fastpath exit (kvm_pmu_is_fastpath_emulation_allowed() is true without the mediated PMU)",
        source="§1.1; pmu.h kvm_pmu_is_fastpath_emulation_allowed (v7.0)",
    )


def atomic_switch_step(env: KernelEnv, exclude_host: bool = True) -> Step:
    """atomic_switch_perf_msrs() (vmx.c, v7.0) with intel_guest_get_msrs(): guest
    PERF_GLOBAL_CTRL = intel_ctrl & ~intel_ctrl_host_mask (no exclude_guest host event), host
    = intel_ctrl & ~intel_ctrl_guest_mask (no exclude_host event), loaded by VM-entry / exit."""
    cpu = env.cpu
    intel_ctrl = env.host_global_enable

    def switch(s: list[int]) -> None:
        host_mask = sum(
            1 << ev.counter for e, ev in enumerate(env.host_events) if s[env.ev_active[e]] and ev.exclude_guest
        )
        s[cpu.vmcs_guest_pgc] = intel_ctrl & ~host_mask
        s[cpu.vmcs_host_pgc] = intel_ctrl & ~s[env.cpuc_guest_mask] if exclude_host else intel_ctrl

    return Step(
        "atomic_switch_perf_msrs",
        "perf_guest_get_msrs(): VMCS guest/host PERF_GLOBAL_CTRL = intel_ctrl & ~host_mask / & ~guest_mask",
        switch,
        source="vmx.c atomic_switch_perf_msrs; events/intel/core.c intel_guest_get_msrs (v7.0)",
    )


def vcpu_enter_guest(env: KernelEnv, exclude_host: bool = True) -> Function:
    """vcpu_enter_guest() without the mediated PMU: the mediated run loop minus load/put, with
    KVM_REQ_PMU running the legacy kvm_pmu_handle_event() and, on Intel, the atomic switch."""
    base = kvm.vcpu_enter_guest(env)
    steps: list[Step] = []
    for st in base.steps:
        if st.label in ("mediated_load", "mediated_put", "refresh_global_ctrl"):
            continue
        if st.label == "kvm_pmu_handle_event":
            st = Step(
                "kvm_pmu_handle_event",
                "kvm_pmu_handle_event(vcpu)",
                kind=CALL,
                call="kvm_pmu_handle_event",
                when=lambda s: bool(s[env.req_pmu]),
                when_text="kvm_check_request(KVM_REQ_PMU)",
                source="§1.1; pmu.c (v7.0)",
            )
        elif st.label == "fastpath":
            st = fastpath_step(env)
        elif st.label == "handle_exit":
            st = handle_exit_step(env)
        elif st.label == "vmenter" and env.cpu.cfg.intel:
            steps.append(atomic_switch_step(env, exclude_host))
        steps.append(st)
    return Function(
        "vcpu_enter_guest",
        tuple(steps),
        doc="One trip into the guest and back (legacy vPMU: nothing is loaded or put).",
        source="x86.c vcpu_enter_guest; vmx.c vmx_vcpu_run (v7.0)",
        locals=base.locals,
    )


# --- perf's PMI handler with KVM's events ----------------------------------------------------


def handle_guest_overflows(env: KernelEnv, s: list[int], status: int, overflow: bool = True) -> None:
    """handle_pmi_common() for KVM's events: update, re-arm, and when a whole sample period
    elapsed perf_event_overflow() -> kvm_perf_overflow()."""
    for k in range(P.count(env)):
        if s[env.lpmc_state + k] == P.ACTIVE and status & P.hw_bit(env, s, k):
            P.event_update(env, s, k)
            if P.set_period(env, s, k):
                kvm_perf_overflow(env, s, k, raise_pmi=overflow)


def amd_guest_overflows(env: KernelEnv, s: list[int], overflow: bool = True) -> None:
    """amd_pmu_v2_handle_irq()'s loop for KVM's events (arch/x86/events/amd/core.c, v7.0): they
    are in cpuc->active_mask like any event, so each is updated; an overflowed one is handled
    (handled++, its bit leaves ``status``, so it is acked and not WARNed as inactive)."""
    status = s[env.nmi_status]
    for k in range(P.count(env)):
        if s[env.lpmc_state + k] != P.ACTIVE:
            continue
        P.event_update(env, s, k)
        bit = P.hw_bit(env, s, k)
        if status & bit:
            s[env.nmi_handled] += 1
            status &= ~bit
            if P.set_period(env, s, k):
                kvm_perf_overflow(env, s, k, raise_pmi=overflow)
    s[env.nmi_status] = status


def _with_guest_overflows(env: KernelEnv, host_do: Action, overflow: bool) -> Action:
    amd = env.cpu.cfg.amd

    def do(s: list[int]) -> None:
        if amd:
            # The host loop leaves only the bits of counters it does not own in status.
            host_do(s)
            amd_guest_overflows(env, s, overflow)
            return
        # intel handle_pmi_common() counts every status bit as handled (the host step does).
        host_do(s)
        handle_guest_overflows(env, s, s[env.nmi_status], overflow)

    return do


def _handle_irq(env: KernelEnv, base: Function, overflow: bool) -> Function:
    steps = []
    for st in base.steps:
        if st.label in ("handle_pmi_common", "handle_overflows"):
            assert st.do is not None
            st = Step(
                st.label,
                f"{st.text}; for KVM's events: perf_event_overflow() -> kvm_perf_overflow()",
                _with_guest_overflows(env, st.do, overflow),
                source=f"{st.source}; pmu.c kvm_perf_overflow (v7.0)",
            )
        steps.append(st)
    return Function(base.name, tuple(steps), base.doc, base.source, base.locals)


def intel_pmu_handle_irq(env: KernelEnv, overflow: bool = True) -> Function:
    return _handle_irq(env, perf.intel_pmu_handle_irq(env), overflow)


def amd_pmu_v2_handle_irq(env: KernelEnv, overflow: bool = True) -> Function:
    return _handle_irq(env, perf.amd_pmu_v2_handle_irq(env), overflow)


#: KVM functions of the legacy vPMU (the checker's ghost counts their writes as the guest's).
KVM_BUILDERS: dict[str, Builder] = {
    "kvm_enable_virtualization_cpu": kvm.kvm_enable_virtualization_cpu,
    "vcpu_run": kvm.vcpu_run,
    "vcpu_enter_guest": vcpu_enter_guest,
    "kvm_pmu_handle_event": kvm_pmu_handle_event,
    "kvm_handle_guest_mediated_pmi": kvm.kvm_handle_guest_mediated_pmi,
}
#: Host perf with KVM's events: the PMI handlers call kvm_perf_overflow().
PERF_BUILDERS: dict[str, Builder] = {
    **{k: v for k, v in perf.BUILDERS.items() if "guest_context" not in k and "guest_lvtpc" not in k},
    "intel_pmu_handle_irq": intel_pmu_handle_irq,
    "amd_pmu_v2_handle_irq": amd_pmu_v2_handle_irq,
}
