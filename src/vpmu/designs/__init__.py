"""Named designs: the merged code, the v5 posting, the seed thread's proposal, ablations.

Each design states what it changes and where the fact comes from. A variant
is its base plus edits by label (:class:`vpmu.kernel.lang.Edit`), so
``vpmu show`` and ``vpmu diff`` can print exactly what differs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from vpmu.errors import VpmuError
from vpmu.hw import msr as M
from vpmu.hw import virt as V
from vpmu.hw.virt import Cpu
from vpmu.kernel import kvm, kvm_legacy, nmi, perf
from vpmu.kernel.env import KernelEnv
from vpmu.kernel.lang import WARN, Action, Design, Edit, Function, Step

#: The program each host context runs.
ENTRIES = {
    "task": "vcpu_run",
    "nmi": "default_do_nmi",
    "irq": "kvm_handle_guest_mediated_pmi",
    "ipi": "perf_event_ipi",
    "timer": "perf_mux_hrtimer_handler",
}

UPSTREAM = Design(
    name="upstream",
    summary="The merged mediated vPMU as released in Linux v7.0 (v6 as applied; anchors: vpmu source check)",
    builders={**perf.BUILDERS, **kvm.BUILDERS, **nmi.BUILDERS},
    source="kernel-mediated-pmu.md §1.2, §1.3, §2.3, §2.4; App. B.1-B.4; Linux v7.0 (src/vpmu/source/anchors.py)",
    entries=ENTRIES,
)


# --- v5 (Appendix B.5) ------------------------------------------------------------------


def _v5_load_lvtpc(env: KernelEnv) -> Step:
    cpu, vl = env.cpu, env.vlvtpc
    return Step(
        "arch_load_lvtpc",
        "arch_perf_load_guest_context(data): apic_write(APIC_LVTPC, APIC_DM_FIXED | 0xF5 | (data & APIC_LVT_MASKED))",
        lambda s: cpu.write_lvtpc(s, M.APIC_DM_FIXED | M.PERF_GUEST_MEDIATED_PMI_VECTOR | (s[vl] & M.APIC_LVT_MASKED)),
        source="B.5; v5 09/44",
    )


def _v5_load_flag(env: KernelEnv) -> Step:
    return perf.flag_step(
        "arch_set_flag",
        env.guest_lvtpc_loaded,
        1,
        "__this_cpu_write(x86_guest_ctx_loaded, true)",
        "B.5; v5 09/44 (order inferred, as in v6)",
    )


def _v5_put_flag(env: KernelEnv) -> Step:
    return perf.flag_step(
        "arch_clear_flag",
        env.guest_lvtpc_loaded,
        0,
        "arch_perf_put_guest_context(): __this_cpu_write(x86_guest_ctx_loaded, false)",
        "B.5; v5 09/44 (order inferred, as in v6)",
    )


def _v5_put_lvtpc(env: KernelEnv) -> Step:
    cpu = env.cpu
    return Step(
        "arch_put_lvtpc",
        "apic_write(APIC_LVTPC, APIC_DM_NMI)",
        lambda s: cpu.write_lvtpc(s, M.APIC_DM_NMI),
        source="B.5; v5 09/44",
    )


def _write_slot(cpu: Cpu, msr: int, slot: int) -> Action:
    def do(s: list[int]) -> None:
        cpu.wrmsr(s, msr, s[slot])

    return do


def _v5_load_pmcs(env: KernelEnv) -> Function:
    """v5 37/44: counters written unconditionally (the elision came later)."""
    fn = kvm.kvm_pmu_load_guest_pmcs(env)
    cpu = env.cpu
    steps = []
    for st in fn.steps:
        if st.label.startswith("load_pmc"):
            i = int(st.label[len("load_pmc") :])
            ctr = env.pmc_counter + i
            st = Step(
                st.label,
                f"wrmsrq(GP_COUNTER_BASE + {i}, pmc->counter)",
                _write_slot(cpu, env.GP_COUNTER(i), ctr),
                source="B.5 (v5 37/44)",
            )
        elif st.label.startswith("load_fixed"):
            j = int(st.label[len("load_fixed") :])
            ctr = env.fixed_counter + j
            st = Step(
                st.label,
                f"wrmsrq(FIXED_COUNTER_BASE + {j}, pmc->counter)",
                _write_slot(cpu, env.FIXED_COUNTER(j), ctr),
                source="B.5 (v5 37/44)",
            )
        steps.append(st)
    return Function(fn.name, tuple(steps), fn.doc, "B.5 (v5 37/44)")


V5 = UPSTREAM.with_builders(
    "v5",
    "The v5 posting: LVTPC switched inside perf's context load/put, then KVM clears PERF_GLOBAL_CTRL",
    {"kvm_pmu_load_guest_pmcs": _v5_load_pmcs},
    source="kernel-mediated-pmu.md App. B.5, §1.5; v5 09/44 and 37/44 (2025-08-06)",
)
V5 = V5.derive(
    "v5",
    V5.summary,
    [
        Edit(
            "insert_after",
            "perf_load_guest_context",
            "ctx_sched_out",
            step=_v5_load_lvtpc,
            note="LVTPC switch inside perf's ctx-disabled window",
        ),
        Edit("insert_after", "perf_load_guest_context", "arch_load_lvtpc", step=_v5_load_flag),
        Edit("delete", "kvm_mediated_pmu_load", "load_lvtpc"),
        Edit(
            "insert_after",
            "perf_put_guest_context",
            "ctx_sched_in",
            step=_v5_put_flag,
            note="LVTPC restore inside perf's ctx-disabled window",
        ),
        Edit("insert_after", "perf_put_guest_context", "arch_clear_flag", step=_v5_put_lvtpc),
        Edit("delete", "kvm_mediated_pmu_put", "put_lvtpc"),
    ],
    source=V5.source,
)


# --- the seed thread's proposal ------------------------------------------------------------


def _assert_global_ctrl_zero(env: KernelEnv) -> Step:
    cpu, gc = env.cpu, env.PERF_GLOBAL_CTRL
    return Step(
        "assert_global_ctrl",
        "WARN_ON_ONCE(rdmsrq(kvm_pmu_ops.PERF_GLOBAL_CTRL))",
        kind=WARN,
        when=lambda s: bool(cpu.rdmsr(s, gc)),
        when_text="rdmsrq(PERF_GLOBAL_CTRL) != 0",
        source="seed thread: Sean 2025-08-18 (aKNF7jc4qr9ab-Es), H2",
    )


SEED_ASSERT = UPSTREAM.derive(
    "seed-assert",
    "The seed thread's proposal: assert PERF_GLOBAL_CTRL is 0 after perf_load_guest_context instead of clearing it",
    [Edit("replace", "kvm_mediated_pmu_load", "clear_global_ctrl", step=_assert_global_ctrl_zero)],
    source="seed-thread.txt; kernel-mediated-pmu.md H2, S1",
    notes="Sean's objection (2025-11-19): perf only disables events; amd_pmu_reload_virt() sets every GlobalCtl bit.",
)

LVTPC_BEFORE_CLEAR = UPSTREAM.derive(
    "lvtpc-before-clear",
    "H1 ablation: switch LVTPC to 0xF5 before clearing PERF_GLOBAL_CTRL",
    [Edit("swap", "kvm_mediated_pmu_load", "clear_global_ctrl", other="load_lvtpc")],
    source="kernel-mediated-pmu.md H1, S13; PeterZ 2025-08-18",
)

FLAG_FIRST = UPSTREAM.derive(
    "flag-first",
    "Proposed fix: perf_load_guest_lvtpc() sets guest_lvtpc_loaded before it rewrites LVTPC",
    [Edit("swap", "perf_load_guest_lvtpc", "write_lvtpc", other="set_flag")],
    source="vpmu finding (docs/findings.md): an NMI between the LVTPC write and the flag runs the "
    "whole Intel PMI handler, whose ack rewrites LVTPC to NMI and whose enable_all re-enables the PMU",
    notes="With the flag set first, an NMI in the window is ignored by the guest_lvtpc_loaded gate; "
    "host events are already scheduled out, so no host PMI can be lost there.",
)

PERF_STAYS_DISABLED = FLAG_FIRST.derive(
    "perf-stays-disabled",
    "Proposed fix: flag-first, and perf_load_guest_context() leaves the PMU disabled (cpuc->enabled = 0) "
    "until perf_put_guest_context()",
    [Edit("delete", "perf_load_guest_context", "perf_ctx_enable")],
    source="vpmu finding (docs/findings.md): an NMI between KVM's PERF_GLOBAL_CTRL clear and the guest's "
    "selectors being loaded re-enables every counter (the handler restores cpuc->enabled)",
    notes="PeterZ's suggestion in the seed thread (an empty PMU should leave GLOBAL_CTRL at 0), made "
    "robust against NMIs by keeping cpuc->enabled clear; KVM still clears PERF_GLOBAL_CTRL itself.",
)
PERF_PMU_DISABLED = FLAG_FIRST.derive(
    "perf-pmu-disabled",
    "Proposed fix (V18): flag-first, and perf_load_guest_context() disables the x86 PMU itself "
    "(perf_pmu_disable, cpuc->enabled = 0) whether or not this CPU has an x86 event, until "
    "perf_put_guest_context() enables it again",
    [
        Edit("insert_before", "perf_load_guest_context", "perf_ctx_disable", step=perf.x86_pmu_disable_step),
        Edit("delete", "perf_load_guest_context", "perf_ctx_enable"),
        Edit("insert_after", "perf_put_guest_context", "perf_ctx_enable", step=perf.x86_pmu_enable_step),
    ],
    source="verified-facts.md V18; docs/findings.md F1: perf_ctx_{disable,enable}() reach the x86 PMU only "
    "through a context of this CPU, so perf-stays-disabled leaves cpuc->enabled = 1 when the only x86 "
    "event is bound to another CPU",
    notes="Holds on a world whose only host event is on another CPU, where perf-stays-disabled does not.",
)

# --- ablations used to show each property can fail -------------------------------------------

NO_CLEAR = UPSTREAM.derive(
    "no-clear",
    "H2 ablation: drop KVM's explicit PERF_GLOBAL_CTRL clear in load",
    [Edit("delete", "kvm_mediated_pmu_load", "clear_global_ctrl")],
    source="kernel-mediated-pmu.md H2",
)
NO_NMI_GATE = UPSTREAM.derive(
    "no-nmi-gate",
    "H5 ablation: perf's NMI handler ignores guest_lvtpc_loaded",
    [Edit("delete", "perf_event_nmi_handler", "guest_lvtpc_gate")],
    source="kernel-mediated-pmu.md H5, S8",
)
PUT_KEEPS_EVENTSEL = UPSTREAM.derive(
    "put-keeps-eventsel",
    "H9 ablation: put leaves guest selectors (and fixed control) in hardware",
    [
        Edit("delete", "kvm_pmu_put_guest_pmcs", "clear_eventsel*"),
        Edit("delete", "intel_mediated_pmu_put", "clear_fixed_ctrl*"),
    ],
    source="kernel-mediated-pmu.md H9",
)
NO_STATUS_RESTORE = UPSTREAM.derive(
    "no-status-restore",
    "H10 ablation: load does not restore the guest's GLOBAL_STATUS",
    [
        Edit("delete", "intel_mediated_pmu_load", "set_guest_status"),
        Edit("delete", "amd_mediated_pmu_load", "set_guest_status"),
    ],
    source="kernel-mediated-pmu.md H10",
)
NO_FASTPATH_GUARD = UPSTREAM.derive(
    "no-fastpath-guard",
    "H11 ablation: emulate (skip) instructions in the fastpath while PMCs count instructions",
    [Edit("replace", "vcpu_enter_guest", "fastpath", step=lambda env: kvm.fastpath_step(env, guard=False))],
    source="kernel-mediated-pmu.md H11; v6 28/44",
)

# --- ablations added for the scenario catalog (vpmu scenarios) --------------------------------


def _raw_eventsel_load_pmcs(env: KernelEnv) -> Function:
    """Before v6 24/44 and 26/44: the guest's selector goes to hardware as the guest wrote it."""
    fn = kvm.kvm_pmu_load_guest_pmcs(env)
    steps = []
    for st in fn.steps:
        if st.label.startswith("load_eventsel"):
            i = int(st.label[len("load_eventsel") :])
            st = Step(
                st.label,
                f"wrmsrq(GP_EVENTSEL_BASE + {i}, pmc->eventsel)",
                _write_slot(env.cpu, env.GP_EVENTSEL(i), env.pmc_eventsel + i),
                source="H8 ablation (before v6 26/44)",
            )
        steps.append(st)
    return Function(fn.name, tuple(steps), fn.doc, "H8 ablation (before v6 24/44, 26/44)")


RAW_EVENTSEL = UPSTREAM.with_builders(
    "raw-eventsel",
    "H8 ablation: load writes the guest's own selector (pmc->eventsel), not eventsel_hw: no GuestOnly "
    "stuffing on AMD, no event filter",
    {"kvm_pmu_load_guest_pmcs": _raw_eventsel_load_pmcs},
    source="kernel-mediated-pmu.md H8, §4.2, H19; v6 26/44 and 24/44",
)
NO_LVTPC_SWITCH = UPSTREAM.derive(
    "no-lvtpc-switch",
    "H6 ablation: the host LVTPC stays NMI while the guest context is loaded (no mediated PMI vector)",
    [Edit("delete", "kvm_mediated_pmu_load", "load_lvtpc"), Edit("delete", "kvm_mediated_pmu_put", "put_lvtpc")],
    source="kernel-mediated-pmu.md H6, §2.5 (RFC design open #3)",
)
NO_SCHED_OUT = UPSTREAM.derive(
    "no-sched-out",
    "H9 ablation: perf_load_guest_context() leaves the exclude_guest host events scheduled in",
    [Edit("delete", "perf_load_guest_context", "ctx_sched_out")],
    source="kernel-mediated-pmu.md §2.3 load step 4, H9",
)
LVTPC_BEFORE_CLEAR_EVENT_RUNNING = LVTPC_BEFORE_CLEAR.derive(
    "lvtpc-first-running",
    "S13: the H1 swap while a host event still runs at the switch (perf leaves it scheduled in)",
    [Edit("delete", "perf_load_guest_context", "ctx_sched_out")],
    source="kernel-mediated-pmu.md App. C S13, H1",
)
NO_GLOBAL_CTRL_REFRESH = UPSTREAM.derive(
    "no-global-ctrl-refresh",
    "H12 ablation: KVM does not re-read the guest's PERF_GLOBAL_CTRL after each VM-exit",
    [Edit("delete", "vcpu_enter_guest", "refresh_global_ctrl*")],
    source="kernel-mediated-pmu.md H12, H13, §1.4; v6 44/44",
    notes="A glob: the step exists only when guest writes to PERF_GLOBAL_CTRL are not intercepted.",
)

NO_NMI_SWALLOW = PERF_STAYS_DISABLED.derive(
    "no-nmi-swallow",
    "V6 ablation: perf-stays-disabled with default_do_nmi() lacking the back-to-back swallow heuristic "
    "(an NMI that handled several events does not excuse the next, empty one)",
    [Edit("replace", "default_do_nmi", "iret", step=lambda env: nmi.nmi_exit_step(env, swallow_b2b=False))],
    source="default_do_nmi() (arch/x86/kernel/nmi.c): swallow_nmi, b2b",
)


def _amd_no_nmi_window(env: KernelEnv) -> Step:
    base = next(st for st in perf.amd_pmu_v2_handle_irq(env).steps if st.label == "done")
    assert base.do is not None
    base_do, window = base.do, env.perf_nmi_window

    def do(s: list[int]) -> None:
        s[window] = 0  # perf_nmi_tstamp never set: every unhandled NMI is NMI_DONE
        base_do(s)

    return replace(base, text=base.text.replace("return amd_pmu_adjust_nmi_window(handled)", "return handled"), do=do)


AMD_NO_NMI_WINDOW = PERF_STAYS_DISABLED.derive(
    "amd-no-nmi-window",
    "AMD ablation: perf-stays-disabled with amd_pmu_v2_handle_irq() returning handled as is, without "
    "amd_pmu_adjust_nmi_window() claiming latent NMIs",
    [Edit("replace", "amd_pmu_v2_handle_irq", "done", step=_amd_no_nmi_window)],
    source="amd_pmu_adjust_nmi_window() (arch/x86/events/amd/core.c)",
)

AMD_NO_OVERFLOW_WAIT = UPSTREAM.derive(
    "amd-no-overflow-wait",
    "AMD ablation: amd_pmu_v2_disable_all() does not wait for a pending overflow's NMI (no amd_pmu_check_overflow())",
    [
        Edit("delete", fn, "amd_pmu_check_overflow*")
        for fn in ("perf_load_guest_context", "perf_put_guest_context", "perf_event_ipi", "perf_mux_hrtimer_handler")
    ],
    source="amd_pmu_v2_disable_all(), amd_pmu_check_overflow() (arch/x86/events/amd/core.c)",
    notes="The wait exists only on AMD worlds with pmi_skid >= 1; elsewhere this design is upstream.",
)


def _precreate_unchecked(env: KernelEnv) -> Step:
    vm = env.mediated_vm
    return Step(
        "kvm_arch_vcpu_precreate",
        "perf_create_mediated_pmu() without the nr_include_guest_events check",
        lambda s: s.__setitem__(vm, 1),
        source="H14 ablation",
    )


NO_MEDIATED_EXCLUSION = UPSTREAM.derive(
    "no-mediated-exclusion",
    "H14 ablation: perf_create_mediated_pmu() creates the mediated VM even while include-guest events exist",
    [Edit("replace", "vcpu_run", "kvm_arch_vcpu_precreate", step=_precreate_unchecked)],
    source="kernel-mediated-pmu.md H14, §2.2; perf_create_mediated_pmu() (kernel/events/core.c)",
    notes="Needs a world with [vm] lifecycle = true (elsewhere vcpu_run has no such step).",
)


DESIGNS: dict[str, Design] = {
    d.name: d
    for d in (
        UPSTREAM,
        V5,
        SEED_ASSERT,
        LVTPC_BEFORE_CLEAR,
        FLAG_FIRST,
        PERF_STAYS_DISABLED,
        PERF_PMU_DISABLED,
        NO_CLEAR,
        NO_NMI_GATE,
        PUT_KEEPS_EVENTSEL,
        NO_STATUS_RESTORE,
        NO_FASTPATH_GUARD,
        RAW_EVENTSEL,
        NO_LVTPC_SWITCH,
        NO_SCHED_OUT,
        LVTPC_BEFORE_CLEAR_EVENT_RUNNING,
        NO_GLOBAL_CTRL_REFRESH,
        NO_NMI_SWALLOW,
        AMD_NO_NMI_WINDOW,
        AMD_NO_OVERFLOW_WAIT,
        NO_MEDIATED_EXCLUSION,
    )
}


def get_design(name: str) -> Design:
    try:
        return DESIGNS[name]
    except KeyError:
        raise VpmuError(f"unknown design {name!r}; known designs: {', '.join(DESIGNS)}") from None


# --- ablations added for the conformance suite (vpmu conform) ------------------------------------


def _handle_exit_then(env: KernelEnv, text: str, source: str, then: Callable[[list[int], int, int, int], None]) -> Step:
    """upstream's handle_exit step (its guard included), then ``then(s, reason, msr, value)``
    with the exit's reason, qualification (the MSR) and data as they were before it ran."""
    base = next(st for st in kvm.vcpu_enter_guest(env).steps if st.label == "handle_exit")
    assert base.do is not None
    base_do, cpu = base.do, env.cpu

    def do(s: list[int]) -> None:
        reason, msr, value = s[cpu.exit_reason], s[cpu.exit_qual], s[cpu.exit_data]
        base_do(s)
        then(s, reason, msr, value)

    return replace(base, text=f"{base.text}; {text}", do=do, source=source)


def _handle_exit_guest_selector(env: KernelEnv) -> Step:
    """handle_exit, but an emulated selector write leaves eventsel_hw as the guest wrote it."""
    sels = {env.GP_EVENTSEL(i): i for i in range(env.vcpu.num_gp)}
    if env.cpu.cfg.amd:
        sels.update({M.MSR_K7_EVNTSEL0 + i: i for i in range(min(4, env.vcpu.num_gp))})

    def then(s: list[int], reason: int, msr: int, value: int) -> None:
        if reason == V.EXIT_WRMSR and msr in sels:
            s[env.pmc_eventsel_hw + sels[msr]] = value  # no GuestOnly=1 / HostOnly=0 stuffing

    return _handle_exit_then(
        env, "pmc->eventsel_hw = the guest's selector as written", "H8 ablation (before v6 26/44)", then
    )


NO_GUESTONLY_AMD = UPSTREAM.derive(
    "no-guestonly-amd",
    "H8 ablation: KVM does not force GuestOnly=1 / HostOnly=0 in the AMD hardware selector "
    "(eventsel_hw is the guest's selector; the event filter still applies)",
    [Edit("replace", "vcpu_enter_guest", "handle_exit", step=_handle_exit_guest_selector)],
    source="kernel-mediated-pmu.md H8, §4.2; v6 26/44",
    notes="A no-op on Intel. Unlike raw-eventsel, load still writes eventsel_hw, so the filter still works.",
)
DESIGNS[NO_GUESTONLY_AMD.name] = NO_GUESTONLY_AMD


# --- F2: a FIXED_CTR_CTRL write re-enables a denied fixed counter (docs/findings.md) ------------


def _handle_exit_refilter_fixed(env: KernelEnv) -> Step:
    every_fixed = sum(1 << (M.FIXED_IDX_BASE + j) for j in range(env.vcpu.num_fixed))

    def then(s: list[int], reason: int, msr: int, value: int) -> None:
        # A change marked at least the fields that changed: mark them all.
        if reason == V.EXIT_WRMSR and msr == M.MSR_CORE_PERF_FIXED_CTR_CTRL and s[env.reprogram_pmi] & every_fixed:
            s[env.reprogram_pmi] |= every_fixed

    return _handle_exit_then(
        env, "a FIXED_CTR_CTRL change marks every fixed counter for reprogramming", "F2 fix (docs/findings.md)", then
    )


FIXED_REFILTER = UPSTREAM.derive(
    "fixed-refilter",
    "F2 fix: reprogram_fixed_counters() marks every fixed counter when FIXED_CTR_CTRL changes, so "
    "kvm_mediated_pmu_refresh_event_filter() re-applies the filter to every field of fixed_ctr_ctrl_hw",
    [Edit("replace", "vcpu_enter_guest", "handle_exit", step=_handle_exit_refilter_fixed)],
    source="docs/findings.md F2; kernel-mediated-pmu.md §5.5, H19",
)
DESIGNS[FIXED_REFILTER.name] = FIXED_REFILTER


# --- F3: a latched guest PMI replayed as a host NMI at put (docs/findings.md) ------------------


def _put_lvtpc_drain(env: KernelEnv) -> Function:
    cpu = env.cpu
    base = perf.perf_put_guest_lvtpc(env)
    unmask = Step(
        "drain_latched",
        "apic_write(APIC_LVTPC, APIC_DM_FIXED | PERF_GUEST_MEDIATED_PMI_VECTOR): a latched guest PMI goes to 0xF5",
        lambda s: cpu.write_lvtpc(s, M.APIC_DM_FIXED | M.PERF_GUEST_MEDIATED_PMI_VECTOR),
        source="F3 fix (docs/findings.md)",
    )
    return Function(base.name, (unmask, *base.steps), doc=base.doc, source=base.source)


PUT_DRAINS_LATCH = UPSTREAM.with_builders(
    "put-drains-latch",
    "F3 fix: perf_put_guest_lvtpc() first unmasks LVTPC on the mediated vector, so a PMI the masked "
    "LVTPC latched reaches KVM's 0xF5 handler (KVM_REQ_PMI), then routes PMIs back to NMI",
    {"perf_put_guest_lvtpc": _put_lvtpc_drain},
    source="docs/findings.md F3; x86-pmu-hardware.md F-2.8",
)
DESIGNS[PUT_DRAINS_LATCH.name] = PUT_DRAINS_LATCH


# --- linux-next: reprogram_fixed_counters() compares against fixed_ctr_ctrl_hw (V9) ------------


def _handle_exit_old_fixed_from_hw(env: KernelEnv) -> Step:
    """handle_exit with linux-next's reprogram_fixed_counters(): intel_pmu_set_msr() still calls it only
    when the guest's value changes, but the fields it marks for reprogramming are those that differ from
    ``fixed_ctr_ctrl_hw`` (what KVM put in hardware), not from the guest's old ``fixed_ctr_ctrl``."""
    base = next(st for st in kvm.vcpu_enter_guest(env).steps if st.label == "handle_exit")
    assert base.do is not None
    base_do, cpu = base.do, env.cpu

    def do(s: list[int]) -> None:
        reason, msr, value = s[cpu.exit_reason], s[cpu.exit_qual], s[cpu.exit_data]
        old_guest, old_hw = s[env.fixed_ctr_ctrl], s[env.fixed_ctr_ctrl_hw]
        marks, req = s[env.reprogram_pmi], s[env.req_pmu]
        base_do(s)
        written = reason == V.EXIT_WRMSR and msr == M.MSR_CORE_PERF_FIXED_CTR_CTRL and env.cpu.cfg.intel
        if written and value != old_guest and s[env.fixed_ctr_ctrl] == value:
            new = 0
            for j in range(env.vcpu.num_fixed):
                if (old_hw ^ value) >> (4 * j) & 0xF:
                    new |= 1 << (M.FIXED_IDX_BASE + j)
            s[env.reprogram_pmi] = marks | new
            s[env.req_pmu] = 1 if new else req

    return replace(
        base,
        text=f"{base.text}; reprogram_fixed_counters(): old_fixed_ctr_ctrl = pmu->fixed_ctr_ctrl_hw",
        do=do,
        source="V9; linux-next arch/x86/kvm/vmx/pmu_intel.c (intel-lab-lkp/linux 0614c238aa16)",
    )


LINUX_NEXT = UPSTREAM.derive(
    "linux-next",
    "upstream with linux-next's reprogram_fixed_counters(): the old FIXED_CTR_CTRL fields come from "
    "fixed_ctr_ctrl_hw, so a write re-applies the event filter to a denied fixed counter (fixes F2)",
    [Edit("replace", "vcpu_enter_guest", "handle_exit", step=_handle_exit_old_fixed_from_hw)],
    source="verified-facts.md V9; linux-next commit 0614c238aa16 (arch/x86/kvm/vmx/pmu_intel.c)",
    notes="upstream stays Linux v7.0, the release users run; this is the next release's fix, by name.",
)
DESIGNS[LINUX_NEXT.name] = LINUX_NEXT


# --- the legacy perf-based vPMU (KVM without the mediated PMU) ---------------------------------

LEGACY = Design(
    name="legacy",
    summary="KVM without the mediated PMU: each guest counter is a host perf event (pmc_reprogram_counter, "
    "perf_event_pause, kvm_perf_overflow -> KVM_REQ_PMI); every PMU MSR and RDPMC intercepted and emulated",
    builders={**kvm_legacy.PERF_BUILDERS, **kvm_legacy.KVM_BUILDERS, **nmi.BUILDERS},
    source="Linux v7.0 arch/x86/kvm/pmu.c (reprogram_counter, pmc_pause_counter, pmc_resume_counter, "
    "pmc_reprogram_counter, kvm_perf_overflow, pmc_read_counter, pmc_write_counter), vmx.c "
    "atomic_switch_perf_msrs; kernel/events/core.c; arch/x86/events/core.c",
    notes="Properties about the mediated load/put (LVTPC switching, clean-after-put, restored-after-load, "
    "no-emulated-count-while-loaded, nmi-handler-hands-off) do not apply: vpmu.check.properties.MEDIATED_ONLY.",
    entries=ENTRIES,
    vpmu="legacy",
)


def _legacy_ablation(name: str, summary: str, source: str, **flags: bool) -> Design:
    """A legacy variant whose KVM (or perf handler) builders drop one mechanism."""
    builders: dict[str, Callable[..., object]] = {}
    handle = {k: v for k, v in flags.items() if k in ("fold", "filter", "refuse")}
    if "exclude_host" in flags:
        handle["exclude_host"] = flags["exclude_host"]
        builders["vcpu_enter_guest"] = lambda env: kvm_legacy.vcpu_enter_guest(env, exclude_host=False)
    if handle:
        builders["kvm_pmu_handle_event"] = lambda env: kvm_legacy.kvm_pmu_handle_event(env, **handle)
    if "overflow" in flags:
        builders["intel_pmu_handle_irq"] = lambda env: kvm_legacy.intel_pmu_handle_irq(env, overflow=False)
        builders["amd_pmu_v2_handle_irq"] = lambda env: kvm_legacy.amd_pmu_v2_handle_irq(env, overflow=False)
    return LEGACY.with_builders(name, summary, builders, source=source)  # type: ignore[arg-type]


LEGACY_ABLATIONS = (
    _legacy_ablation(
        "legacy-counts-host",
        "legacy ablation: KVM creates its perf events without attr.exclude_host (they count in host mode; "
        "on AMD no GuestOnly)",
        "pmu.c pmc_reprogram_counter (.exclude_host = 1); events/amd/core.c amd_core_hw_config",
        exclude_host=False,
    ),
    _legacy_ablation(
        "legacy-no-fold",
        "legacy ablation: pmc_pause_counter() drops the count perf_event_pause() returns",
        "pmu.c pmc_pause_counter",
        fold=False,
    ),
    _legacy_ablation(
        "legacy-no-filter",
        "legacy ablation: reprogram_counter() ignores pmc_is_event_allowed() (the event filter)",
        "pmu.c reprogram_counter; §5.5",
        filter=False,
    ),
    _legacy_ablation(
        "legacy-no-refuse",
        "legacy ablation: with no counter free, perf gives KVM's pinned task event one a CPU-pinned host event holds",
        "kernel/events/core.c ctx_resched, merge_sched_in (CPU pinned before task pinned)",
        refuse=False,
    ),
    _legacy_ablation(
        "legacy-no-overflow",
        "legacy ablation: kvm_perf_overflow() sets neither GLOBAL_STATUS nor KVM_REQ_PMI",
        "pmu.c kvm_perf_overflow, __kvm_perf_overflow",
        overflow=False,
    ),
)
DESIGNS[LEGACY.name] = LEGACY
for _d in LEGACY_ABLATIONS:
    DESIGNS[_d.name] = _d


# --- a broken filter refresh, caught by the running-VM filter flow (vpmu conform --mutations) -----


def _handle_exit_filter_no_reprogram(env: KernelEnv) -> Step:
    """handle_exit, but userspace's KVM_SET_PMU_EVENT_FILTER marks no PMC for reprogramming."""
    base = next(st for st in kvm.vcpu_enter_guest(env).steps if st.label == "handle_exit")
    assert base.do is not None
    base_do, cpu = base.do, env.cpu

    def do(s: list[int]) -> None:
        if s[cpu.exit_reason] != V.EXIT_IO:
            base_do(s)
            return
        kvm.skip_emulated_instruction(env, s)
        kvm.set_pmu_event_filter(env, s, s[cpu.exit_qual], mark_all=False)

    return replace(
        base,
        text=f"{base.text}; KVM_SET_PMU_EVENT_FILTER raises KVM_REQ_PMU without marking the PMCs",
        do=do,
        source="ablation of kvm_vm_ioctl_set_pmu_event_filter() (v7.0 pmu.c: __reprogram_pmi = -1)",
    )


FILTER_NO_REPROGRAM = UPSTREAM.derive(
    "filter-no-reprogram",
    "Broken filter refresh: KVM_SET_PMU_EVENT_FILTER raises KVM_REQ_PMU but does not mark every PMC, so "
    "kvm_pmu_handle_event() refreshes only counters whose controls the guest changed since",
    [Edit("replace", "vcpu_enter_guest", "handle_exit", step=_handle_exit_filter_no_reprogram)],
    source="kernel-mediated-pmu.md §5.5, H19; v7.0 pmu.c kvm_vm_ioctl_set_pmu_event_filter()",
    notes="Only a filter changed on a running VM can show it: a fresh VM's first selector write marks its PMC.",
)
DESIGNS[FILTER_NO_REPROGRAM.name] = FILTER_NO_REPROGRAM
