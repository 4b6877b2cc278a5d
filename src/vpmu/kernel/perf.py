"""Host perf in the step language: the x86 core PMU driver as the mediated vPMU uses it.

Facts: kernel-mediated-pmu.md §2.3 (perf_{load,put}_guest_context), §2.4
(perf_{load,put}_guest_lvtpc, the guest_lvtpc_loaded NMI gate), §3.1 (the
Intel PMI handler with early/mid/late ack, the AMD PerfMonV2 handler,
amd_pmu_reload_virt). perf's internal MSR sequence inside context load/put is
summarized as B.1 step 1 describes it (disable, sched out/in, enable);
docs/fidelity.md lists what that summary leaves out.
"""

from __future__ import annotations

from vpmu.hw import msr as M
from vpmu.kernel.env import KernelEnv
from vpmu.kernel.lang import CALL, IRET, RETURN, WARN, Builder, Function, Step


def _x86_pmu_disable(env: KernelEnv, label: str = "perf_ctx_disable") -> Step:
    """perf_ctx_disable() -> x86_pmu_disable(): if enabled, clear cpuc->enabled and
    disable_all (GLOBAL_CTRL := 0). Until a host event of the core PMU is opened on this CPU
    there is no PMU context to disable and this does nothing (Sean, seed thread: "one big
    nop"; V18: an event bound to another CPU does not count here)."""
    cpu, en, gc = env.cpu, env.cpuc_enabled, env.PERF_GLOBAL_CTRL

    def do(s: list[int]) -> None:
        if s[en] and env.pmu_ctx_here(s):
            s[en] = 0
            cpu.wrmsr(s, gc, 0)

    return Step(label, "x86_pmu_disable(): wrmsr(PERF_GLOBAL_CTRL, 0)", do, source="§2.3 step 3")


def amd_pmu_check_overflow(env: KernelEnv) -> Step:
    """amd_pmu_v2_disable_all() -> amd_pmu_check_overflow() (arch/x86/events/amd/core.c): after
    GlobalCtl = 0, wait while an active counter's GlobalStatus bit is set, so that the NMI its
    overflow raised runs (and resets it) before perf goes on; up to 50 us, then give up. The
    model spins while that NMI is pending (its delivery may skid, pmi_skid); without a pending
    NMI the wait would time out, and it goes on at once. amd_pmu_disable_event()'s
    amd_pmu_wait_on_overflow() after x86_pmu_stop() needs no step of its own here: the model
    stops events only after this disable (GlobalCtl = 0, so no new overflow)."""
    cpu, gs = env.cpu, env.cpu.global_status

    def waiting(s: list[int]) -> bool:
        if not s[cpu.nmi_pending]:
            return False
        status = s[gs]
        return any(s[env.ev_active[e]] and (status >> ev.counter) & 1 for e, ev in enumerate(env.host_events))

    return Step(
        "amd_pmu_check_overflow",
        "udelay(1)  // amd_pmu_wait_on_overflow(idx): the overflow's NMI has not run yet",
        when=waiting,
        when_text="an active counter's GlobalStatus bit is set (amd_pmu_test_overflow_status)",
        goto="amd_pmu_check_overflow",
        source="amd_pmu_v2_disable_all(), amd_pmu_check_overflow() (arch/x86/events/amd/core.c)",
    )


def _x86_pmu_disable_steps(env: KernelEnv, label: str = "perf_ctx_disable") -> tuple[Step, ...]:
    """x86_pmu_disable(), and on AMD the wait for a pending overflow's NMI in its disable_all.
    Without PMI skid a pending NMI is taken before any next step, so the wait can never spin:
    the step is left out there (the checker pays nothing for it)."""
    disable = _x86_pmu_disable(env, label)
    if env.cpu.cfg.amd and env.cpu.cfg.pmi_skid:
        return (disable, amd_pmu_check_overflow(env))
    return (disable,)


def _x86_pmu_enable(env: KernelEnv, label: str = "perf_ctx_enable") -> Step:
    """perf_ctx_enable() -> x86_pmu_enable(): set cpuc->enabled and enable_all, which
    writes every counter bit (a nop with no host event, like the disable)."""
    cpu, en, gc, bits = env.cpu, env.cpuc_enabled, env.PERF_GLOBAL_CTRL, env.host_global_enable

    def do(s: list[int]) -> None:
        if not s[en] and env.pmu_ctx_here(s):
            s[en] = 1
            cpu.wrmsr(s, gc, env.enable_all_bits(s))

    return Step(label, f"x86_pmu_enable(): wrmsr(PERF_GLOBAL_CTRL, {bits:#x})", do, source="§2.3 step 7, H2")


def x86_pmu_disable_step(env: KernelEnv, label: str = "perf_pmu_disable") -> Step:
    """perf_pmu_disable(&pmu) on the x86 core PMU itself, not through a context: reaches
    x86_pmu_disable() whether or not an event of this CPU exists (arch/x86/events/core.c:
    if cpuc->enabled, clear it and disable_all). For the V18 fix (docs/findings.md F1)."""
    cpu, en, gc = env.cpu, env.cpuc_enabled, env.PERF_GLOBAL_CTRL

    def do(s: list[int]) -> None:
        if s[en]:
            s[en] = 0
            cpu.wrmsr(s, gc, 0)

    return Step(label, "perf_pmu_disable(x86 pmu): cpuc->enabled = 0; disable_all()", do, source="V18, F1 fix")


def x86_pmu_enable_step(env: KernelEnv, label: str = "perf_pmu_enable") -> Step:
    """perf_pmu_enable(&pmu) on the x86 core PMU itself: x86_pmu_enable() sets cpuc->enabled
    and enable_all, with or without an event on this CPU."""
    cpu, en, gc, bits = env.cpu, env.cpuc_enabled, env.PERF_GLOBAL_CTRL, env.host_global_enable

    def do(s: list[int]) -> None:
        if not s[en]:
            s[en] = 1
            cpu.wrmsr(s, gc, bits)

    return Step(
        label,
        f"perf_pmu_enable(x86 pmu): cpuc->enabled = 1; wrmsr(PERF_GLOBAL_CTRL, {bits:#x})",
        do,
        source="V18, F1 fix",
    )


def mediated_pmu_account_event(env: KernelEnv, s: list[int], e: int) -> bool:
    """perf_event_alloc() -> mediated_pmu_account_event() (kernel/events/core.c, v7.0): an
    include-guest event of the core PMU is refused (-EOPNOTSUPP) while a mediated VM exists.
    True: refused. Without a modelled VM life the VM always exists."""
    if env.host_events[e].exclude_guest:
        return False
    return env.mediated_vm < 0 or bool(s[env.mediated_vm])


def event_update(env: KernelEnv, s: list[int], e: int) -> None:
    """x86_perf_event_update(): fold the counter's advance since prev_count into the count."""
    ctr = env.cpu.pmc + env.host_events[e].counter
    new = s[ctr]
    delta = (new - s[env.ev_prev[e]]) & env.cpu.gp_mask
    s[env.ev_prev[e]] = new
    env.obs.host_count(s, e, delta)


def x86_pmu_start(env: KernelEnv, s: list[int], e: int) -> None:
    """Program a host event's counter (-left, kept as prev_count) and selector."""
    ev, cpu = env.host_events[e], env.cpu
    cpu.wrmsr(s, env.GP_COUNTER(ev.counter), s[env.ev_prev[e]])
    cpu.wrmsr(s, env.GP_EVENTSEL(ev.counter), env.host_eventsel(ev))
    s[env.ev_active[e]] = 1


def x86_pmu_stop(env: KernelEnv, s: list[int], e: int) -> None:
    """Clear the selector's EN, then fold the final count (x86_pmu_stop + update)."""
    ev = env.host_events[e]
    env.cpu.wrmsr(s, env.GP_EVENTSEL(ev.counter), env.host_eventsel(ev) & ~M.EVENTSEL_EN)
    event_update(env, s, e)
    s[env.ev_active[e]] = 0


def _counter_free(env: KernelEnv, s: list[int], e: int) -> bool:
    c = env.host_events[e].counter
    if env.guest_counters(s) >> c & 1:  # legacy vPMU: KVM's pinned task event holds it
        return False
    return not any(s[env.ev_active[o]] for o, ev in enumerate(env.host_events) if ev.counter == c)


def sched_in(env: KernelEnv, s: list[int], *, pinned: bool = True, flexible: bool = True) -> None:
    """ctx_sched_in(): pinned groups, then flexible groups in flexible_groups order.

    merge_sched_in() starts each enabled, inactive event whose counter is free
    (each event has a fixed counter in the model; docs/fidelity.md); once a
    flexible event finds its counter taken, no later flexible event is tried
    in this pass (can_add_hw = 0), and rotate_necessary arms the multiplexing
    hrtimer."""
    if pinned:
        for e, ev in enumerate(env.host_events):
            if ev.pinned and s[env.ev_enabled[e]] and not s[env.ev_active[e]]:
                if env.guest_counters(s) >> ev.counter & 1:
                    env.preempt_guest(s, ev.counter)  # legacy vPMU: CPU pinned before task pinned
                x86_pmu_start(env, s, e)  # world validation keeps pinned counters exclusive
    if flexible:
        can_add_hw = True
        for slot in env.flexible_order:
            e = s[slot]
            if s[env.ev_enabled[e]] and not s[env.ev_active[e]]:
                if can_add_hw and _counter_free(env, s, e):
                    x86_pmu_start(env, s, e)
                else:
                    can_add_hw = False
                    s[env.rotate_necessary] = 1


def sched_out(env: KernelEnv, s: list[int], *, pinned: bool = True, flexible: bool = True) -> None:
    """ctx_sched_out(): stop the active events of the chosen kinds."""
    for e, ev in enumerate(env.host_events):
        if s[env.ev_active[e]] and (pinned if ev.pinned else flexible):
            x86_pmu_stop(env, s, e)


def _sched_out(env: KernelEnv) -> Step:
    return Step(
        "ctx_sched_out",
        "ctx_sched_out(EVENT_GUEST): stop every host event of the core PMU",
        lambda s: sched_out(env, s),
        source="§2.3 step 4, EVENT_GUEST",
    )


def _sched_in(env: KernelEnv) -> Step:
    return Step(
        "ctx_sched_in",
        "perf_event_sched_in(EVENT_GUEST): pinned, then flexible",
        lambda s: sched_in(env, s),
        source="§2.3 put step 3",
    )


def to_tail(env: KernelEnv, s: list[int], e: int) -> None:
    """Move flexible event ``e`` to the end of the flexible_groups order."""
    order = [s[slot] for slot in env.flexible_order]
    order.remove(e)
    order.append(e)
    for slot, f in zip(env.flexible_order, order, strict=True):
        s[slot] = f


def ctx_resched(env: KernelEnv, s: list[int], e: int) -> None:
    """ctx_resched() for a CPU event ``e``: schedule out the flexible groups (and the pinned
    ones too if ``e`` is pinned), then schedule everything in again. While the guest context
    is loaded the core PMU's context is skipped: merge_sched_in() only takes exclude_guest
    events with EVENT_GUEST then (H15), so ``e`` waits for perf_put_guest_context()."""
    if s[env.guest_ctx_loaded]:
        return
    sched_out(env, s, pinned=env.host_events[e].pinned)
    sched_in(env, s)


def flag_step(label: str, slot: int, value: int, text: str, source: str) -> Step:
    """A step that sets a per-CPU flag (a kernel variable) to ``value``."""

    def do(s: list[int]) -> None:
        s[slot] = value

    return Step(label, text, do, source=source)


def perf_load_guest_context(env: KernelEnv) -> Function:
    loaded = env.guest_ctx_loaded
    return Function(
        "perf_load_guest_context",
        (
            Step(
                "warn_loaded",
                "WARN_ON_ONCE(__this_cpu_read(guest_ctx_loaded))",
                kind=WARN,
                when=lambda s: bool(s[loaded]),
                when_text="guest_ctx_loaded",
                source="§2.3 load step 2",
            ),
            *_x86_pmu_disable_steps(env),
            _sched_out(env),
            _x86_pmu_enable(env),
            flag_step("set_loaded", loaded, 1, "__this_cpu_write(guest_ctx_loaded, true)", "§2.3 step 8"),
        ),
        doc="Schedule out every host event of the core PMU (they are all exclude_guest).",
        source="§2.3",
    )


def perf_put_guest_context(env: KernelEnv) -> Function:
    loaded = env.guest_ctx_loaded
    return Function(
        "perf_put_guest_context",
        (
            Step(
                "warn_not_loaded",
                "WARN_ON_ONCE(!__this_cpu_read(guest_ctx_loaded))",
                kind=WARN,
                when=lambda s: not s[loaded],
                when_text="!guest_ctx_loaded",
                source="§2.3 put step 1",
            ),
            *_x86_pmu_disable_steps(env),
            _sched_in(env),
            _x86_pmu_enable(env),
            flag_step("clear_loaded", loaded, 0, "__this_cpu_write(guest_ctx_loaded, false)", "§2.3 put step 6"),
        ),
        doc="Re-schedule host events and re-enable the PMU.",
        source="§2.3",
    )


def perf_load_guest_lvtpc(env: KernelEnv) -> Function:
    cpu, vl = env.cpu, env.vlvtpc

    def write(s: list[int]) -> None:
        cpu.write_lvtpc(s, M.APIC_DM_FIXED | M.PERF_GUEST_MEDIATED_PMI_VECTOR | (s[vl] & M.APIC_LVT_MASKED))

    return Function(
        "perf_load_guest_lvtpc",
        (
            Step(
                "write_lvtpc",
                "apic_write(APIC_LVTPC, APIC_DM_FIXED | PERF_GUEST_MEDIATED_PMI_VECTOR | "
                "(guest_lvtpc & APIC_LVT_MASKED))",
                write,
                source="§2.4",
            ),
            flag_step("set_flag", env.guest_lvtpc_loaded, 1, "__this_cpu_write(guest_lvtpc_loaded, true)", "§2.4"),
        ),
        doc="Route PMIs to the mediated vector 0xF5, mirroring the guest's mask bit.",
        source="§2.4 (tip 560ac136f25d)",
    )


def perf_put_guest_lvtpc(env: KernelEnv) -> Function:
    cpu = env.cpu
    return Function(
        "perf_put_guest_lvtpc",
        (
            flag_step("clear_flag", env.guest_lvtpc_loaded, 0, "__this_cpu_write(guest_lvtpc_loaded, false)", "§2.4"),
            Step(
                "write_lvtpc",
                "apic_write(APIC_LVTPC, APIC_DM_NMI)",
                lambda s: cpu.write_lvtpc(s, M.APIC_DM_NMI),
                source="§2.4",
            ),
        ),
        doc="Route PMIs back to the host NMI.",
        source="§2.4 (tip 560ac136f25d)",
    )


def perf_event_nmi_handler(env: KernelEnv) -> Function:
    """perf's NMI_LOCAL handler, gated while the guest LVTPC is loaded (H5); it claims the NMI
    when the vendor handler handled something (perf_event_nmi_handler(), arch/x86/events/core.c)."""
    flag = env.guest_lvtpc_loaded
    handler = "intel_pmu_handle_irq" if env.cpu.cfg.intel else "amd_pmu_v2_handle_irq"
    return Function(
        "perf_event_nmi_handler",
        (
            Step(
                "guest_lvtpc_gate",
                "return NMI_DONE",
                when=lambda s: bool(s[flag]),
                when_text="this_cpu_read(guest_lvtpc_loaded)",
                goto=RETURN,
                source="§2.4, H5",
            ),
            Step(
                "no_active_events",
                "return NMI_DONE",
                when=lambda s: not env.active_events(s),
                when_text="!atomic_read(&active_events)",
                goto=RETURN,
                source="§2.4 (perf_event_nmi_handler), V2, V3",
            ),
            Step("handle_irq", f"static_call(x86_pmu_handle_irq) = {handler}", kind=CALL, call=handler),
        ),
        doc="perf's NMI handler: the gate, the active_events check, then the vendor PMI handler.",
        source="§2.4, §3.1",
    )


def _handle_overflows(env: KernelEnv) -> Step:
    """handle_pmi_common(): update and re-arm every active event whose status bit is set. Every
    counter bit counts as handled, of an active event or not (arch/x86/events/intel/core.c)."""
    cpu, st, handled = env.cpu, env.nmi_status, env.nmi_handled

    def do(s: list[int]) -> None:
        status = s[st]
        s[handled] += (status & cpu.counter_bits).bit_count()
        for e, ev in enumerate(env.host_events):
            if s[env.ev_active[e]] and (status >> ev.counter) & 1:
                event_update(env, s, e)
                value = env.armed_value(e)  # x86_perf_event_set_period()
                cpu.wrmsr(s, env.GP_COUNTER(ev.counter), value)
                s[env.ev_prev[e]] = value
                env.obs.host_pmi_handled(s, e)

    return Step(
        "handle_pmi_common",
        "for_each_set_bit(bit, status): x86_perf_event_update(); x86_perf_event_set_period()",
        do,
        source="§3.1 step 5",
    )


def _lvtpc_nmi(env: KernelEnv, label: str, source: str) -> Step:
    cpu = env.cpu
    return Step(
        label, "apic_write(APIC_LVTPC, APIC_DM_NMI)", lambda s: cpu.write_lvtpc(s, M.APIC_DM_NMI), source=source
    )


def _handler_disable(env: KernelEnv, gc: int, text: str) -> Step:
    """PMI handler entry: save cpuc->enabled, clear it, disable_all (§3.1 steps 1, 3)."""
    cpu, en, saved = env.cpu, env.cpuc_enabled, env.nmi_pmu_enabled

    def do(s: list[int]) -> None:
        s[saved] = s[en]
        s[en] = 0
        cpu.wrmsr(s, gc, 0)

    return Step("disable_all", text, do, source="§3.1 steps 1, 3")


def _handler_enable(env: KernelEnv, gc: int, text: str, label: str, source: str) -> Step:
    """PMI handler exit: restore cpuc->enabled; enable_all only if perf had the PMU enabled."""
    cpu, en, saved = env.cpu, env.cpuc_enabled, env.nmi_pmu_enabled

    def do(s: list[int]) -> None:
        s[en] = s[saved]
        if s[saved]:
            cpu.wrmsr(s, gc, env.enable_all_bits(s))

    return Step(label, text, do, source=source)


def intel_pmu_handle_irq(env: KernelEnv) -> Function:
    cpu, st = env.cpu, env.nmi_status
    gs, gc = M.MSR_CORE_PERF_GLOBAL_STATUS, M.MSR_CORE_PERF_GLOBAL_CTRL
    ack = env.cpu.cfg.host_ack
    bits = env.host_global_enable

    def read_status(s: list[int]) -> None:
        s[st] = cpu.rdmsr(s, gs)

    steps = []
    if ack == "early":
        steps.append(_lvtpc_nmi(env, "early_ack", "§3.1 step 2 (early ack)"))
    steps += [
        _handler_disable(env, gc, "cpuc->enabled = 0; __intel_pmu_disable_all(): wrmsr(PERF_GLOBAL_CTRL, 0)"),
        Step("read_status", "status = rdmsr(PERF_GLOBAL_STATUS)", read_status, source="§3.1 step 4"),
        Step("no_status", "", when=lambda s: not s[st], when_text="!status", goto="done"),
        Step(
            "ack_status",
            "wrmsr(PERF_GLOBAL_OVF_CTRL, status)",
            lambda s: cpu.wrmsr(s, M.MSR_CORE_PERF_GLOBAL_OVF_CTRL, s[st]),
            source="§3.1 step 5",
        ),
        _handle_overflows(env),
        Step("reread_status", "status = rdmsr(PERF_GLOBAL_STATUS)", read_status, source="§3.1 step 5 (loop)"),
        Step(
            "loop", "", when=lambda s: bool(s[st]), when_text="status", goto="ack_status", source="§3.1 step 5 (loop)"
        ),
    ]
    steps.append(Step("done", "done:", lambda s: None))
    if ack == "mid":
        steps.append(_lvtpc_nmi(env, "mid_ack", "§3.1 step 6 (mid ack)"))
    steps.append(
        _handler_enable(
            env,
            gc,
            f"cpuc->enabled = pmu_enabled; "
            f"if (pmu_enabled) __intel_pmu_enable_all(): wrmsr(PERF_GLOBAL_CTRL, {bits:#x})",
            "enable_all",
            "§3.1 step 7",
        )
    )
    if ack == "late":
        steps.append(_lvtpc_nmi(env, "late_ack", "§3.1 step 8 (late ack)"))
    return Function(
        "intel_pmu_handle_irq",
        tuple(steps),
        doc=f"Intel PMI handler, {ack} ack (host_ack in the machine config).",
        source="§3.1",
        locals=(st, env.nmi_pmu_enabled),
    )


def amd_pmu_v2_handle_irq(env: KernelEnv) -> Function:
    """amd_pmu_v2_handle_irq() (arch/x86/events/amd/core.c, v7.0): update every active event,
    re-arm the overflowed ones, WARN on status bits of inactive counters, ack ``~status`` (so
    exactly those bits stay set), no LVTPC write, and amd_pmu_adjust_nmi_window()."""
    cpu, st, handled, window = env.cpu, env.nmi_status, env.nmi_handled, env.perf_nmi_window
    gs, gc = M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS, M.MSR_AMD64_PERF_CNTR_GLOBAL_CTL
    bits = env.host_global_enable
    clr_bits = cpu.gp_bits | M.STATUS_LBR_FRZ | M.STATUS_CTR_FRZ  # StatusClr's defined bits (F-3.6.2)

    def read_status(s: list[int]) -> None:
        s[st] = cpu.rdmsr(s, gs)

    def overflows(s: list[int]) -> None:
        status = s[st] & cpu.gp_bits  # reserved bits: pr_warn_once and masked off
        for e, ev in enumerate(env.host_events):
            if not s[env.ev_active[e]]:
                continue
            event_update(env, s, e)
            if (status >> ev.counter) & 1:
                s[handled] += 1
                status &= ~(1 << ev.counter)
                value = env.armed_value(e)  # x86_perf_event_set_period()
                cpu.wrmsr(s, env.GP_COUNTER(ev.counter), value)
                s[env.ev_prev[e]] = value
                env.obs.host_pmi_handled(s, e)
        s[st] = status  # what is left: bits of inactive counters

    enable = _handler_enable(env, gc, "", "done", "").do
    assert enable is not None

    def ack(s: list[int]) -> None:
        if s[st]:  # bits of inactive counters: WARN once per new bit (status_warned)
            env.obs.warn(s, f"amd_pmu_v2_handle_irq: New overflows for inactive PMCs: {s[st]:#x}")
        cpu.wrmsr(s, M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_CLR, ~s[st] & clr_bits)

    def done(s: list[int]) -> None:
        enable(s)
        if s[handled]:
            s[window] = 1  # perf_nmi_tstamp = jiffies + perf_nmi_window
        elif s[window]:
            s[handled] = 1  # an unhandled NMI inside the window is claimed (NMI_HANDLED)

    return Function(
        "amd_pmu_v2_handle_irq",
        (
            _handler_disable(env, gc, "cpuc->enabled = 0; amd_pmu_core_disable_all(): wrmsr(GlobalCtl, 0)"),
            Step("read_status", "status = rdmsr(GlobalStatus)", read_status, source="§3.1 AMD"),
            Step("no_status", "", when=lambda s: not s[st], when_text="!status", goto="done"),
            Step(
                "handle_overflows",
                "for each active idx: x86_perf_event_update(); if (status & BIT(idx)) { handled++; "
                "status &= ~BIT(idx); x86_perf_event_set_period(); }",
                overflows,
                source="amd_pmu_v2_handle_irq() (arch/x86/events/amd/core.c)",
            ),
            Step(
                "ack_status",
                'WARN(new_bits, "New overflows for inactive PMCs: %llx\\n", new_bits); '
                "amd_pmu_ack_global_status(~status): wrmsr(GlobalStatusClr, ~status)",
                ack,
                source="amd_pmu_v2_handle_irq() (arch/x86/events/amd/core.c)",
            ),
            Step(
                "done",
                f"done: cpuc->enabled = pmu_enabled; if (pmu_enabled) amd_pmu_core_enable_all(): "
                f"wrmsr(GlobalCtl, {bits:#x}); return amd_pmu_adjust_nmi_window(handled)",
                done,
                source="§3.1 AMD (no LVTPC write: AMD never sets Mask, F-2.6); amd_pmu_adjust_nmi_window()",
            ),
        ),
        doc="AMD PerfMonV2 PMI handler: no LVTPC write at all.",
        source="§3.1; amd_pmu_v2_handle_irq() (arch/x86/events/amd/core.c, v7.0)",
        locals=(st, env.nmi_pmu_enabled),
    )


def amd_pmu_reload_virt(env: KernelEnv) -> Function:
    """Run when KVM enables SVM on the CPU: leaves GlobalCtl = every counter bit (H2)."""
    cpu, gc, bits = env.cpu, M.MSR_AMD64_PERF_CNTR_GLOBAL_CTL, env.host_global_enable

    def reprogram(s: list[int]) -> None:
        for e, ev in enumerate(env.host_events):
            if s[env.ev_active[e]]:
                cpu.wrmsr(s, env.GP_EVENTSEL(ev.counter), env.host_eventsel(ev))

    return Function(
        "amd_pmu_reload_virt",
        (
            Step(
                "disable_all",
                "amd_pmu_v2_disable_all(): wrmsr(GlobalCtl, 0)",
                lambda s: cpu.wrmsr(s, gc, 0),
                source="§3.1 AMD reload_virt",
            ),
            Step(
                "reprogram",
                "amd_pmu_enable_event() for each active event (perf_ctr_virt_mask applied)",
                reprogram,
                source="§3.1 AMD reload_virt",
            ),
            Step(
                "enable_all",
                f"amd_pmu_v2_enable_all(): wrmsr(GlobalCtl, {bits:#x})",
                lambda s: cpu.wrmsr(s, gc, bits),
                source="§3.1 AMD reload_virt, H2",
            ),
        ),
        doc="amd_pmu_enable_virt() -> amd_pmu_reload_virt(): GlobalCtl ends all-ones even with no events.",
        source="§3.1, H2, seed thread",
    )


#: perf.ipi.event values from here on remove event (value - IPI_REMOVE) from the context.
IPI_REMOVE = 0x100


def perf_event_ipi(env: KernelEnv) -> Function:
    """IRQ context for CALL_FUNCTION_SINGLE: another CPU's perf_install_in_context() or
    perf_event_{enable,disable}() for this CPU.

    The event function runs inside the context's PMU disable/enable bracket.
    Installing or enabling reschedules the context (ctx_resched); while the
    guest context is loaded merge_sched_in() refuses the core PMU's events
    (H15): they stay inactive until perf_put_guest_context() schedules them in.
    """
    cpu, ev_slot = env.cpu, env.ipi_event

    def event_function(s: list[int]) -> None:
        e = s[ev_slot]
        if e >= IPI_REMOVE:  # __perf_remove_from_context(), then the closer frees it
            e -= IPI_REMOVE
            if s[env.ev_active[e]]:
                x86_pmu_stop(env, s, e)
            s[env.ev_installed[e]] = s[env.ev_enabled[e]] = 0
            s[env.ev_opened[e]] = 0  # _free_event() -> hw_perf_event_destroy(): active_events--
        elif not s[env.ev_installed[e]]:  # __perf_install_in_context(): add_event_to_ctx()
            s[env.ev_installed[e]] = s[env.ev_enabled[e]] = 1
            s[env.ev_prev[e]] = env.armed_value(e)  # x86_perf_event_set_period()
            if not env.host_events[e].pinned:
                to_tail(env, s, e)  # perf_event_groups_insert(): group_index = ++index, the rightmost group
            ctx_resched(env, s, e)
        elif s[env.ev_enabled[e]]:  # __perf_event_disable()
            if s[env.ev_active[e]]:
                x86_pmu_stop(env, s, e)
            s[env.ev_enabled[e]] = 0
        else:  # __perf_event_enable()
            s[env.ev_enabled[e]] = 1
            ctx_resched(env, s, e)

    def done(s: list[int]) -> None:
        s[ev_slot] = -1

    return Function(
        "perf_event_ipi",
        (
            Step("apic_eoi", "apic_eoi()", lambda s: cpu.eoi(s), source="sysvec_call_function_single"),
            *_x86_pmu_disable_steps(env),
            Step(
                "event_function",
                "remove ? __perf_remove_from_context() : !installed ? __perf_install_in_context() : "
                "enabled ? __perf_event_disable() : "
                "__perf_event_enable() (ctx_resched(); merge_sched_in() refuses while guest_ctx_loaded)",
                event_function,
                source="§2.3 merge_sched_in, H15",
            ),
            _x86_pmu_enable(env),
            Step("iret", "iret", done, kind=IRET),
        ),
        doc="A host perf event is installed, disabled or enabled by IPI.",
        source="§2.3, H15",
    )


def perf_mux_hrtimer_handler(env: KernelEnv) -> Function:
    """IRQ context for the local APIC timer: perf's multiplexing hrtimer runs
    perf_rotate_context() on this CPU's context (flexible events only)."""
    cpu, pick = env.cpu, env.rotate_event

    def event_to_rotate(s: list[int]) -> None:
        order = [s[slot] for slot in env.flexible_order]
        active = [e for e in order if s[env.ev_active[e]]]
        s[pick] = active[0] if active else next(e for e in order if s[env.ev_installed[e]])
        s[env.rotate_necessary] = 0

    return Function(
        "perf_mux_hrtimer_handler",
        (
            Step("apic_eoi", "apic_eoi()", lambda s: cpu.eoi(s), source="sysvec_apic_timer_interrupt"),
            Step(
                "no_rotation",
                "return HRTIMER_NORESTART",
                when=lambda s: not s[env.rotate_necessary],
                when_text="!cpu_epc->rotate_necessary",
                goto="iret",
                source="perf_rotate_context",
            ),
            *_x86_pmu_disable_steps(env, "perf_pmu_disable"),
            Step(
                "ctx_event_to_rotate",
                "cpu_event = first active flexible event, else the first flexible group; rotate_necessary = 0",
                event_to_rotate,
                source="perf_rotate_context",
            ),
            Step(
                "sched_out_flexible",
                "__pmu_ctx_sched_out(cpu_epc, EVENT_FLEXIBLE)",
                lambda s: sched_out(env, s, pinned=False),
                source="perf_rotate_context",
            ),
            Step(
                "rotate_ctx",
                "rotate_ctx(ctx, cpu_event): move it to the tail",
                lambda s: to_tail(env, s, s[pick]),
                source="perf_rotate_context",
            ),
            Step(
                "sched_in_flexible",
                "__pmu_ctx_sched_in(cpu_epc, EVENT_FLEXIBLE)",
                lambda s: None if s[env.guest_ctx_loaded] else sched_in(env, s, pinned=False),
                source="perf_rotate_context, H15",
            ),
            _x86_pmu_enable(env, "perf_pmu_enable"),
            Step("iret", "iret", kind=IRET),
        ),
        doc="Multiplexing: rotate the flexible events when one found no free counter.",
        source="perf_rotate_context (kernel/events/core.c)",
        locals=(pick,),
    )


BUILDERS: dict[str, Builder] = {
    "perf_event_ipi": perf_event_ipi,
    "perf_mux_hrtimer_handler": perf_mux_hrtimer_handler,
    "perf_load_guest_context": perf_load_guest_context,
    "perf_put_guest_context": perf_put_guest_context,
    "perf_load_guest_lvtpc": perf_load_guest_lvtpc,
    "perf_put_guest_lvtpc": perf_put_guest_lvtpc,
    "perf_event_nmi_handler": perf_event_nmi_handler,
    "intel_pmu_handle_irq": intel_pmu_handle_irq,
    "amd_pmu_v2_handle_irq": amd_pmu_v2_handle_irq,
    "amd_pmu_reload_virt": amd_pmu_reload_virt,
}
