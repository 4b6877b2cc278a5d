"""Anchors: where every modelled kernel function lives and which C statement each step stands for.

This is data. Each :class:`CFunction` names a function of a kernel tree (path
relative to the tree's root) and the model function it is transcribed in.
Its ``body`` lists the C statements in kernel order, in the flattened form of
:mod:`vpmu.source.cparse` (one ``if`` with a simple body is one statement; a
block's header is a statement and its contents follow one level deeper):

- a statement with ``step`` stands for that model step (an unrolled step is a
  glob: ``load_pmc*`` is ``load_pmc0``, ``load_pmc1``, ...);
- a statement with ``why`` is deliberately left out of the model, for that reason;
- ``only``/``unless`` restrict a statement form to some designs: the design
  ``linux-next`` expects another ``old_fixed_ctr_ctrl`` line than ``upstream``.

``...`` in a statement matches any run of tokens (a message string, say).

Kinds: ``complete`` functions list every statement (anchored or left out);
``partial`` ones list only anchors, checked in order. :data:`NOT_C` lists the
model steps that stand for no statement of their function (hardware, the
caller's or callee's code, the model's own bookkeeping), :data:`COMPOSITE` the
model functions that are not one kernel function.

Version: ``upstream`` is Linux v7.0 (tag v7.0); every statement below was
checked against that release tree. The ``linux-next`` forms are from
linux-next's arch/x86/kvm/vmx/pmu_intel.c (commit 0614c238aa16, V9).
"""

from __future__ import annotations

from dataclasses import dataclass

COMPLETE = "complete"
PARTIAL = "partial"

#: What ``upstream`` models: the release and the tree the anchors were checked on.
UPSTREAM_VERSION = "Linux v7.0 (tag v7.0)"


@dataclass(frozen=True)
class Stmt:
    """One C statement of a function, anchored to a step or left out with a reason."""

    c: str
    step: str = ""
    why: str = ""
    depth: int = 0
    only: tuple[str, ...] = ()  # designs that have this form (empty: every design)
    unless: tuple[str, ...] = ()  # designs that do not have it

    def applies(self, lineage: tuple[str, ...]) -> bool:
        """Is this form the one a design has? ``lineage``: the design's name and its bases' names."""
        if self.only and not set(lineage) & set(self.only):
            return False
        return not set(lineage) & set(self.unless)


@dataclass(frozen=True)
class CFunction:
    """A kernel function, where it lives and its statements."""

    model: str  # the model function (vpmu show upstream MODEL)
    path: str
    name: str
    kind: str
    signature: str  # for generated C
    body: tuple[Stmt, ...]
    cite: str = ""


def S(c: str, step: str, depth: int = 0, only: tuple[str, ...] = (), unless: tuple[str, ...] = ()) -> Stmt:
    """An anchored statement."""
    return Stmt(c, step=step, depth=depth, only=only, unless=unless)


def O(c: str, why: str, depth: int = 0) -> Stmt:  # noqa: E743 - short, like S
    """A statement the model leaves out, with the reason."""
    return Stmt(c, why=why, depth=depth)


# Reasons shared by many functions.
LOCAL = "a local the model keeps in a state slot, or a pointer to this CPU's or vCPU's data"
LOCKDEP = "lockdep check: IRQs are off by construction in the model (vcpu_enter_guest disables them)"
NO_TASK_CTX = "no task context: host events are CPU events in the model (docs/fidelity.md)"
MEDIATED_ON = "the model's vCPU always has a mediated PMU and an in-kernel LAPIC"
MEDIATED_CHECK = "if (!kvm_vcpu_has_mediated_pmu(vcpu) || KVM_BUG_ON(!lapic_in_kernel(vcpu), vcpu->kvm)) return;"
NMI_STATS = "NMI statistics (nmi_stats, irq_stat): counters nothing in the model reads"
WARN_ONCE = "warn-once bookkeeping (status_warned): the model's first WARN already is a violation"
NO_REASON_PORT = "the NMI reason port (SERR/IOCHK, external NMIs) is not modelled: the model has no such NMI source"
UNROLLED = "loop over counters: the model unrolls it per counter of the configured vCPU"

EVENTS_CORE = "kernel/events/core.c"
X86_EVENTS = "arch/x86/events/core.c"
INTEL_EVENTS = "arch/x86/events/intel/core.c"
AMD_EVENTS = "arch/x86/events/amd/core.c"
KVM_PMU = "arch/x86/kvm/pmu.c"
KVM_X86 = "arch/x86/kvm/x86.c"
VMX_PMU = "arch/x86/kvm/vmx/pmu_intel.c"
SVM_PMU = "arch/x86/kvm/svm/pmu.c"
SVM = "arch/x86/kvm/svm/svm.c"
NMI = "arch/x86/kernel/nmi.c"

FUNCTIONS: tuple[CFunction, ...] = (
    CFunction(
        "perf_load_guest_context",
        EVENTS_CORE,
        "perf_load_guest_context",
        COMPLETE,
        "void perf_load_guest_context(void)",
        (
            O("struct perf_cpu_context *cpuctx = this_cpu_ptr(&perf_cpu_context);", LOCAL),
            O("lockdep_assert_irqs_disabled();", LOCKDEP),
            O("guard(perf_ctx_lock)(cpuctx, cpuctx->task_ctx);", "perf_ctx_lock: each step is atomic in the model"),
            S("if (WARN_ON_ONCE(__this_cpu_read(guest_ctx_loaded))) return;", "warn_loaded"),
            S("perf_ctx_disable(&cpuctx->ctx, EVENT_GUEST);", "perf_ctx_disable"),
            S("ctx_sched_out(&cpuctx->ctx, NULL, EVENT_GUEST);", "ctx_sched_out"),
            O("if (cpuctx->task_ctx)", NO_TASK_CTX),
            O("perf_ctx_disable(cpuctx->task_ctx, EVENT_GUEST);", NO_TASK_CTX, 1),
            O("task_ctx_sched_out(cpuctx->task_ctx, NULL, EVENT_GUEST);", NO_TASK_CTX, 1),
            S("perf_ctx_enable(&cpuctx->ctx, EVENT_GUEST);", "perf_ctx_enable"),
            O("if (cpuctx->task_ctx) perf_ctx_enable(cpuctx->task_ctx, EVENT_GUEST);", NO_TASK_CTX),
            S("__this_cpu_write(guest_ctx_loaded, true);", "set_loaded"),
        ),
        "§2.3",
    ),
    CFunction(
        "perf_put_guest_context",
        EVENTS_CORE,
        "perf_put_guest_context",
        COMPLETE,
        "void perf_put_guest_context(void)",
        (
            O("struct perf_cpu_context *cpuctx = this_cpu_ptr(&perf_cpu_context);", LOCAL),
            O("lockdep_assert_irqs_disabled();", LOCKDEP),
            O("guard(perf_ctx_lock)(cpuctx, cpuctx->task_ctx);", "perf_ctx_lock: each step is atomic in the model"),
            S("if (WARN_ON_ONCE(!__this_cpu_read(guest_ctx_loaded))) return;", "warn_not_loaded"),
            S("perf_ctx_disable(&cpuctx->ctx, EVENT_GUEST);", "perf_ctx_disable"),
            O("if (cpuctx->task_ctx) perf_ctx_disable(cpuctx->task_ctx, EVENT_GUEST);", NO_TASK_CTX),
            S("perf_event_sched_in(cpuctx, cpuctx->task_ctx, NULL, EVENT_GUEST);", "ctx_sched_in"),
            O("if (cpuctx->task_ctx) perf_ctx_enable(cpuctx->task_ctx, EVENT_GUEST);", NO_TASK_CTX),
            S("perf_ctx_enable(&cpuctx->ctx, EVENT_GUEST);", "perf_ctx_enable"),
            S("__this_cpu_write(guest_ctx_loaded, false);", "clear_loaded"),
        ),
        "§2.3",
    ),
    CFunction(
        "perf_load_guest_lvtpc",
        X86_EVENTS,
        "perf_load_guest_lvtpc",
        COMPLETE,
        "void perf_load_guest_lvtpc(u32 guest_lvtpc)",
        (
            O("u32 masked = guest_lvtpc & APIC_LVT_MASKED;", "a local: write_lvtpc's step computes the mask bit"),
            S("apic_write(APIC_LVTPC, APIC_DM_FIXED | PERF_GUEST_MEDIATED_PMI_VECTOR | masked);", "write_lvtpc"),
            S("this_cpu_write(guest_lvtpc_loaded, true);", "set_flag"),
        ),
        "§2.4",
    ),
    CFunction(
        "perf_put_guest_lvtpc",
        X86_EVENTS,
        "perf_put_guest_lvtpc",
        COMPLETE,
        "void perf_put_guest_lvtpc(void)",
        (
            S("apic_write(APIC_LVTPC, APIC_DM_FIXED | PERF_GUEST_MEDIATED_PMI_VECTOR);", "drain_latched"),
            S("this_cpu_write(guest_lvtpc_loaded, false);", "clear_flag"),
            S("apic_write(APIC_LVTPC, APIC_DM_NMI);", "write_lvtpc"),
        ),
        "§2.4; drain_latched is put-drains-latch's step (F3)",
    ),
    CFunction(
        "default_do_nmi",
        NMI,
        "default_do_nmi",
        COMPLETE,
        "static noinstr void default_do_nmi(struct pt_regs *regs)",
        (
            O("unsigned char reason = 0;", NO_REASON_PORT),
            O("bool b2b = false;", LOCAL),
            # the back-to-back test runs first here; the model folds it into its last step, as
            # nothing in between reads swallow_nmi (kernel/nmi.py)
            S("if (regs->ip == __this_cpu_read(last_nmi_rip))", "iret"),
            S("b2b = true;", "iret", 1),
            S("else", "iret"),
            S("__this_cpu_write(swallow_nmi, false);", "iret", 1),
            # the model's stand-in for last_nmi_rip: the next NMI is back to back iff it is latched now
            S("__this_cpu_write(last_nmi_rip, regs->ip);", "iret"),
            O("instrumentation_begin();", "an instrumentation marker, no code"),
            O(
                "if (microcode_nmi_handler_enabled() && microcode_nmi_handler()) goto out;",
                "microcode's NMI handler (late loading) is not modelled",
            ),
            # NMI_LOCAL: perf's handler here; the backtrace handler is in the iret step
            S("handled = nmi_handle(NMI_LOCAL, regs);", "perf_event_nmi_handler"),
            O("__this_cpu_add(nmi_stats.normal, handled);", NMI_STATS),
            S("if (handled)", "iret"),
            S("if (handled > 1) __this_cpu_write(swallow_nmi, true);", "iret", 1, unless=("no-nmi-swallow",)),
            S("goto out;", "iret", 1),
            O("while (!raw_spin_trylock(&nmi_reason_lock))", NO_REASON_PORT),
            O("run_crash_ipi_callback(regs);", "crash dumps are not modelled", 1),
            O("cpu_relax();", NO_REASON_PORT, 1),
            O("reason = x86_platform.get_nmi_reason();", NO_REASON_PORT),
            O("if (reason & NMI_REASON_MASK)", NO_REASON_PORT),
            O("if (reason & NMI_REASON_SERR)", NO_REASON_PORT, 1),
            O("pci_serr_error(reason, regs);", NO_REASON_PORT, 2),
            O("else", NO_REASON_PORT, 1),
            O("if (reason & NMI_REASON_IOCHK) io_check_error(reason, regs);", NO_REASON_PORT, 2),
            O("if (IS_ENABLED(CONFIG_X86_32)) reassert_nmi();", "32-bit hosts are not modelled", 1),
            O("__this_cpu_add(nmi_stats.external, 1);", NMI_STATS, 1),
            O("raw_spin_unlock(&nmi_reason_lock);", NO_REASON_PORT, 1),
            O("goto out;", NO_REASON_PORT, 1),
            O("raw_spin_unlock(&nmi_reason_lock);", NO_REASON_PORT),
            S("if (b2b && __this_cpu_read(swallow_nmi))", "iret"),
            O("__this_cpu_add(nmi_stats.swallow, 1);", NMI_STATS, 1),
            S("else", "iret"),
            S("unknown_nmi_error(reason, regs);", "iret", 1),
            S("out:", "iret"),
            O("instrumentation_end();", "an instrumentation marker, no code"),
        ),
        "V6; every NMI enters here (designs.ENTRIES)",
    ),
    CFunction(
        "default_do_nmi",
        NMI,
        "unknown_nmi_error",
        COMPLETE,
        "static void unknown_nmi_error(unsigned char reason, struct pt_regs *regs)",
        (
            O("handled = nmi_handle(NMI_UNKNOWN, regs);", "no NMI_UNKNOWN handler is registered in the model"),
            O("if (handled)", "no NMI_UNKNOWN handler is registered in the model"),
            O("__this_cpu_add(nmi_stats.unknown, handled);", NMI_STATS, 1),
            O("return;", "no NMI_UNKNOWN handler is registered in the model", 1),
            O("__this_cpu_add(nmi_stats.unknown, 1);", NMI_STATS),
            S("pr_emerg_ratelimited(...);", "iret"),
            S("if (unknown_nmi_panic || panic_on_unrecovered_nmi) nmi_panic(regs, ...);", "iret"),
            S("pr_emerg_ratelimited(...);", "iret"),
        ),
        "V6; the machine's unknown_nmi_panic switch",
    ),
    CFunction(
        "perf_event_nmi_handler",
        X86_EVENTS,
        "perf_event_nmi_handler",
        COMPLETE,
        "static int perf_event_nmi_handler(unsigned int cmd, struct pt_regs *regs)",
        (
            S("if (this_cpu_read(guest_lvtpc_loaded)) return NMI_DONE;", "guest_lvtpc_gate"),
            S("if (!atomic_read(&active_events)) return NMI_DONE;", "no_active_events"),
            O("start_clock = sched_clock();", "NMI duration accounting (perf_sample_event_took): no time in the model"),
            S("ret = static_call(x86_pmu_handle_irq)(regs);", "handle_irq"),
            O("finish_clock = sched_clock();", "NMI duration accounting: no time in the model"),
            O("perf_sample_event_took(finish_clock - start_clock);", "NMI duration accounting: no time in the model"),
            S("return ret;", "handle_irq"),
        ),
        "§2.4, H5; the vendor handler adds what it handled to the model's nmi.handled (default_do_nmi sums it)",
    ),
    CFunction(
        "intel_pmu_handle_irq",
        INTEL_EVENTS,
        "intel_pmu_handle_irq",
        COMPLETE,
        "static int intel_pmu_handle_irq(struct pt_regs *regs)",
        (
            O("struct cpu_hw_events *cpuc = this_cpu_ptr(&cpu_hw_events);", LOCAL),
            O("bool late_ack = hybrid_bit(cpuc->pmu, late_ack);", "ack placement is the machine's host_ack switch"),
            O("bool mid_ack = hybrid_bit(cpuc->pmu, mid_ack);", "ack placement is the machine's host_ack switch"),
            S("pmu_enabled = cpuc->enabled;", "disable_all"),
            S("if (!late_ack && !mid_ack) apic_write(APIC_LVTPC, APIC_DM_NMI);", "early_ack"),
            O("intel_bts_disable_local();", "BTS is not modelled"),
            S("cpuc->enabled = 0;", "disable_all"),
            S("__intel_pmu_disable_all(true);", "disable_all"),
            O("handled = intel_pmu_drain_bts_buffer();", "BTS is not modelled"),
            O("handled += intel_bts_interrupt();", "BTS is not modelled"),
            S("status = intel_pmu_get_status();", "read_status"),
            S("if (!status) goto done;", "no_status"),
            O("loops = 0;", "the stuck-loop bound: the model's status has a few bits, the loop ends"),
            O("again:", "the loop step jumps to ack_status"),
            O("intel_pmu_lbr_read();", "LBR is not modelled"),
            S("intel_pmu_ack_status(status);", "ack_status"),
            O("if (++loops > 100)", "the stuck-loop bound is never reached in the model"),
            O("if (!warned)", "the stuck-loop bound is never reached in the model", 1),
            O("WARN(1, ...);", "the stuck-loop bound is never reached in the model", 2),
            O("perf_event_print_debug();", "the stuck-loop bound is never reached in the model", 2),
            O("warned = true;", "the stuck-loop bound is never reached in the model", 2),
            O("intel_pmu_reset();", "the stuck-loop bound is never reached in the model", 1),
            O("goto done;", "the stuck-loop bound is never reached in the model", 1),
            S("handled += handle_pmi_common(regs, status);", "handle_pmi_common"),
            S("status = intel_pmu_get_status();", "reread_status"),
            S("if (status) goto again;", "loop"),
            S("done:", "done"),
            S("if (mid_ack) apic_write(APIC_LVTPC, APIC_DM_NMI);", "mid_ack"),
            S("cpuc->enabled = pmu_enabled;", "enable_all"),
            S("if (pmu_enabled) __intel_pmu_enable_all(0, true);", "enable_all"),
            O("intel_bts_enable_local();", "BTS is not modelled"),
            S("if (late_ack) apic_write(APIC_LVTPC, APIC_DM_NMI);", "late_ack"),
            O("return handled;", "a return: handle_pmi_common adds each status bit to the model's nmi.handled, "
              "which default_do_nmi reads"),
        ),
        "§3.1",
    ),
    CFunction(
        "amd_pmu_v2_handle_irq",
        AMD_EVENTS,
        "amd_pmu_v2_handle_irq",
        COMPLETE,
        "static int amd_pmu_v2_handle_irq(struct pt_regs *regs)",
        (
            O("struct cpu_hw_events *cpuc = this_cpu_ptr(&cpu_hw_events);", LOCAL),
            O("static atomic64_t status_warned = ATOMIC64_INIT(0);", WARN_ONCE),
            O("int handled = 0, idx;", LOCAL),
            S("pmu_enabled = cpuc->enabled;", "disable_all"),
            S("cpuc->enabled = 0;", "disable_all"),
            S("amd_pmu_core_disable_all();", "disable_all"),
            S("status = amd_pmu_get_global_status();", "read_status"),
            S("if (!status) goto done;", "no_status"),
            O("if (x86_pmu.lbr_nr)", "LBR is not modelled"),
            O("amd_pmu_lbr_read();", "LBR is not modelled", 1),
            O("status &= ~GLOBAL_STATUS_LBRS_FROZEN;", "LBR is not modelled", 1),
            O("reserved = status & ~amd_pmu_global_cntr_mask;", "reserved bits only feed the pr_warn_once below"),
            O("if (reserved) pr_warn_once(...);", "a log message, not PMU state"),
            S("status &= amd_pmu_global_cntr_mask;", "handle_overflows"),
            S("for_each_set_bit(idx, x86_pmu.cntr_mask, X86_PMC_IDX_MAX)", "handle_overflows"),
            S("if (!test_bit(idx, cpuc->active_mask)) continue;", "handle_overflows", 1),
            O("event = cpuc->events[idx];", LOCAL, 1),
            O("hwc = &event->hw;", LOCAL, 1),
            S("x86_perf_event_update(event);", "handle_overflows", 1),
            O("mask = BIT_ULL(idx);", LOCAL, 1),
            S("if (!(status & mask)) continue;", "handle_overflows", 1),
            S("handled++;", "handle_overflows", 1),
            S("status &= ~mask;", "handle_overflows", 1),
            O("perf_sample_data_init(&data, 0, hwc->last_period);", "the sample itself is not modelled", 1),
            S("if (!x86_perf_event_set_period(event)) continue;", "handle_overflows", 1),
            O("perf_sample_save_brstack(&data, event, &cpuc->lbr_stack, NULL);", "LBR is not modelled", 1),
            O("perf_event_overflow(event, &data, regs);", "the sample is not modelled; obs counts the PMI", 1),
            S("if (status > 0)", "ack_status"),
            O("prev_bits = atomic64_fetch_or(status, &status_warned);", WARN_ONCE, 1),
            O("new_bits = status & ~prev_bits;", WARN_ONCE, 1),
            S("WARN(new_bits, ...);", "ack_status", 1),
            S("amd_pmu_ack_global_status(~status);", "ack_status"),
            O("inc_irq_stat(apic_perf_irqs);", NMI_STATS),
            S("done:", "done"),
            S("cpuc->enabled = pmu_enabled;", "done"),
            S("if (pmu_enabled) amd_pmu_core_enable_all();", "done"),
            S("return amd_pmu_adjust_nmi_window(handled);", "done", unless=("amd-no-nmi-window",)),
            S("return handled;", "done", only=("amd-no-nmi-window",)),
        ),
        "§3.1 AMD; the WARN on inactive counters and the ack of ~status are v7.0's",
    ),
    CFunction(
        "amd_pmu_v2_handle_irq",
        AMD_EVENTS,
        "amd_pmu_adjust_nmi_window",
        COMPLETE,
        "static inline int amd_pmu_adjust_nmi_window(int handled)",
        (
            S("if (handled)", "done"),
            S("this_cpu_write(perf_nmi_tstamp, jiffies + perf_nmi_window);", "done", 1),
            S("return handled;", "done", 1),
            # no time in the model: a window, once open, stays open (docs/fidelity.md §7)
            S("if (time_after(jiffies, this_cpu_read(perf_nmi_tstamp))) return NMI_DONE;", "done"),
            S("return NMI_HANDLED;", "done"),
        ),
        "§3.1 AMD; the done step's return value",
    ),
    CFunction(
        "perf_load_guest_context",
        AMD_EVENTS,
        "amd_pmu_v2_disable_all",
        COMPLETE,
        "static void amd_pmu_v2_disable_all(void)",
        (
            O("amd_pmu_core_disable_all();", "GlobalCtl = 0: the caller's perf_ctx_disable step (x86_pmu_disable)"),
            O("amd_pmu_lbr_disable_all();", "LBR is not modelled"),
            S("amd_pmu_check_overflow();", "amd_pmu_check_overflow"),
        ),
        # amd_pmu_check_overflow() itself is not anchored: amd_pmu_disable_all() (pre-PerfMonV2) calls it too,
        # so its body stays in a tree whose v2 disable_all does not wait; the call stands for the step.
        "x86_pmu_disable() on AMD; the wait is the same step in perf_put_guest_context and the mux handler",
    ),
    CFunction(
        "amd_pmu_reload_virt",
        AMD_EVENTS,
        "amd_pmu_reload_virt",
        COMPLETE,
        "static inline void amd_pmu_reload_virt(void)",
        (
            O("if (x86_pmu.version >= 2)", "the model's AMD host is PerfMonV2 (the mediated vPMU requires it)"),
            S("amd_pmu_v2_disable_all();", "disable_all", 1),
            S("amd_pmu_enable_all(0);", "reprogram", 1),
            S("amd_pmu_v2_enable_all(0);", "enable_all", 1),
            O("return;", "the model's AMD host is PerfMonV2", 1),
            O("amd_pmu_disable_all();", "pre-PerfMonV2 hosts are not modelled"),
            O("amd_pmu_enable_all(0);", "pre-PerfMonV2 hosts are not modelled"),
        ),
        "§3.1 AMD, H2",
    ),
    CFunction(
        "perf_mux_hrtimer_handler",
        EVENTS_CORE,
        "perf_rotate_context",
        PARTIAL,
        "static bool perf_rotate_context(struct perf_cpu_pmu_context *cpc)",
        (
            S("if (!(cpu_rotate || task_rotate)) return false;", "no_rotation"),
            S("perf_pmu_disable(pmu);", "perf_pmu_disable"),
            S("if (cpu_rotate) cpu_event = ctx_event_to_rotate(cpu_epc);", "ctx_event_to_rotate"),
            S("__pmu_ctx_sched_out(cpu_epc, EVENT_FLEXIBLE);", "sched_out_flexible", 1),
            S("rotate_ctx(&cpuctx->ctx, cpu_event);", "rotate_ctx", 1),
            S("__pmu_ctx_sched_in(cpu_epc, EVENT_FLEXIBLE);", "sched_in_flexible", 1),
            S("perf_pmu_enable(pmu);", "perf_pmu_enable"),
        ),
        "perf_rotate_context",
    ),
    CFunction(
        "kvm_mediated_pmu_load",
        KVM_PMU,
        "kvm_mediated_pmu_load",
        COMPLETE,
        "void kvm_mediated_pmu_load(struct kvm_vcpu *vcpu)",
        (
            O(MEDIATED_CHECK, MEDIATED_ON),
            O("lockdep_assert_irqs_disabled();", LOCKDEP),
            S("perf_load_guest_context();", "perf_load_guest_context"),
            S("wrmsrq(kvm_pmu_ops.PERF_GLOBAL_CTRL, 0);", "clear_global_ctrl"),
            S("perf_load_guest_lvtpc(kvm_lapic_get_reg(vcpu->arch.apic, APIC_LVTPC));", "load_lvtpc"),
            S("kvm_pmu_load_guest_pmcs(vcpu);", "load_pmcs"),
            S("kvm_pmu_call(mediated_load)(vcpu);", "vendor_load"),
        ),
        "§1.2",
    ),
    CFunction(
        "kvm_pmu_load_guest_pmcs",
        KVM_PMU,
        "kvm_pmu_load_guest_pmcs",
        COMPLETE,
        "static void kvm_pmu_load_guest_pmcs(struct kvm_vcpu *vcpu)",
        (
            O("struct kvm_pmu *pmu = vcpu_to_pmu(vcpu);", LOCAL),
            O("for (i = 0; i < pmu->nr_arch_gp_counters; i++)", UNROLLED),
            O("pmc = &pmu->gp_counters[i];", LOCAL, 1),
            S("if (pmc->counter != rdpmc(i)) wrmsrl(gp_counter_msr(i), pmc->counter);", "load_pmc*", 1),
            S("wrmsrl(gp_eventsel_msr(i), pmc->eventsel_hw);", "load_eventsel*", 1),
            O("for (i = 0; i < pmu->nr_arch_fixed_counters; i++)", UNROLLED),
            O("pmc = &pmu->fixed_counters[i];", LOCAL, 1),
            S(
                "if (pmc->counter != rdpmc(INTEL_PMC_FIXED_RDPMC_BASE | i)) "
                "wrmsrl(fixed_counter_msr(i), pmc->counter);",
                "load_fixed*",
                1,
            ),
        ),
        "§1.2 step 5",
    ),
    CFunction(
        "intel_mediated_pmu_load",
        VMX_PMU,
        "intel_mediated_pmu_load",
        COMPLETE,
        "static void intel_mediated_pmu_load(struct kvm_vcpu *vcpu)",
        (
            O("struct kvm_pmu *pmu = vcpu_to_pmu(vcpu);", LOCAL),
            S("rdmsrq(MSR_CORE_PERF_GLOBAL_STATUS, global_status);", "read_status"),
            S("toggle = pmu->global_status ^ global_status;", "read_status"),
            S("if (global_status & toggle) wrmsrq(MSR_CORE_PERF_GLOBAL_OVF_CTRL, global_status & toggle);",
              "clear_stale_status"),
            S("if (pmu->global_status & toggle) "
              "wrmsrq(MSR_CORE_PERF_GLOBAL_STATUS_SET, pmu->global_status & toggle);", "set_guest_status"),
            S("wrmsrq(MSR_CORE_PERF_FIXED_CTR_CTRL, pmu->fixed_ctr_ctrl_hw);", "load_fixed_ctrl"),
        ),
        "§1.2 step 6",
    ),
    CFunction(
        "amd_mediated_pmu_load",
        SVM_PMU,
        "amd_mediated_pmu_load",
        COMPLETE,
        "static void amd_mediated_pmu_load(struct kvm_vcpu *vcpu)",
        (
            O("struct kvm_pmu *pmu = vcpu_to_pmu(vcpu);", LOCAL),
            S("rdmsrq(MSR_AMD64_PERF_CNTR_GLOBAL_STATUS, global_status);", "read_status"),
            S("if (global_status) wrmsrq(MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_CLR, global_status);", "clear_status"),
            S("wrmsrq(MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_SET, pmu->global_status);", "set_guest_status"),
            S("wrmsrq(MSR_AMD64_PERF_CNTR_GLOBAL_CTL, pmu->global_ctrl);", "load_global_ctrl"),
        ),
        "§1.2 step 6",
    ),
    CFunction(
        "kvm_mediated_pmu_put",
        KVM_PMU,
        "kvm_mediated_pmu_put",
        COMPLETE,
        "void kvm_mediated_pmu_put(struct kvm_vcpu *vcpu)",
        (
            O(MEDIATED_CHECK, MEDIATED_ON),
            O("lockdep_assert_irqs_disabled();", LOCKDEP),
            S("kvm_pmu_call(mediated_put)(vcpu);", "vendor_put"),
            S("kvm_pmu_put_guest_pmcs(vcpu);", "put_pmcs"),
            S("perf_put_guest_lvtpc();", "put_lvtpc"),
            S("perf_put_guest_context();", "perf_put_guest_context"),
        ),
        "§1.3",
    ),
    CFunction(
        "kvm_pmu_put_guest_pmcs",
        KVM_PMU,
        "kvm_pmu_put_guest_pmcs",
        COMPLETE,
        "static void kvm_pmu_put_guest_pmcs(struct kvm_vcpu *vcpu)",
        (
            O("struct kvm_pmu *pmu = vcpu_to_pmu(vcpu);", LOCAL),
            O("for (i = 0; i < pmu->nr_arch_gp_counters; i++)", UNROLLED),
            O("pmc = &pmu->gp_counters[i];", LOCAL, 1),
            S("pmc->counter = rdpmc(i);", "save_pmc*", 1),
            S("if (pmc->counter) wrmsrq(gp_counter_msr(i), 0);", "save_pmc*", 1),
            S("if (pmc->eventsel_hw) wrmsrq(gp_eventsel_msr(i), 0);", "clear_eventsel*", 1),
            O("for (i = 0; i < pmu->nr_arch_fixed_counters; i++)", UNROLLED),
            O("pmc = &pmu->fixed_counters[i];", LOCAL, 1),
            S("pmc->counter = rdpmc(INTEL_PMC_FIXED_RDPMC_BASE | i);", "save_fixed*", 1),
            S("if (pmc->counter) wrmsrq(fixed_counter_msr(i), 0);", "save_fixed*", 1),
        ),
        "§1.3 step 3",
    ),
    CFunction(
        "intel_mediated_pmu_put",
        VMX_PMU,
        "intel_mediated_pmu_put",
        COMPLETE,
        "static void intel_mediated_pmu_put(struct kvm_vcpu *vcpu)",
        (
            O("struct kvm_pmu *pmu = vcpu_to_pmu(vcpu);", LOCAL),
            S("rdmsrq(MSR_CORE_PERF_GLOBAL_STATUS, pmu->global_status);", "save_status"),
            S("if (pmu->global_status) wrmsrq(MSR_CORE_PERF_GLOBAL_OVF_CTRL, pmu->global_status);", "clear_status"),
            S("if (pmu->fixed_ctr_ctrl_hw) wrmsrq(MSR_CORE_PERF_FIXED_CTR_CTRL, 0);", "clear_fixed_ctrl"),
        ),
        "§1.3 step 2",
    ),
    CFunction(
        "amd_mediated_pmu_put",
        SVM_PMU,
        "amd_mediated_pmu_put",
        COMPLETE,
        "static void amd_mediated_pmu_put(struct kvm_vcpu *vcpu)",
        (
            O("struct kvm_pmu *pmu = vcpu_to_pmu(vcpu);", LOCAL),
            S("wrmsrq(MSR_AMD64_PERF_CNTR_GLOBAL_CTL, 0);", "clear_global_ctrl"),
            S("rdmsrq(MSR_AMD64_PERF_CNTR_GLOBAL_STATUS, pmu->global_status);", "save_status"),
            S("if (pmu->global_status) wrmsrq(MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_CLR, pmu->global_status);",
              "clear_status"),
        ),
        "§1.3 step 2",
    ),
    CFunction(
        "kvm_handle_guest_mediated_pmi",
        KVM_PMU,
        "kvm_handle_guest_mediated_pmi",
        COMPLETE,
        "void kvm_handle_guest_mediated_pmi(void)",
        (
            S("struct kvm_vcpu *vcpu = kvm_get_running_vcpu();", "warn_no_vcpu"),
            S("if (WARN_ON_ONCE(!vcpu || !kvm_vcpu_has_mediated_pmu(vcpu))) return;", "warn_no_vcpu"),
            S("kvm_make_request(KVM_REQ_PMI, vcpu);", "request_pmi"),
        ),
        "§2.6",
    ),
    CFunction(
        "vcpu_enter_guest",
        KVM_X86,
        "vcpu_enter_guest",
        PARTIAL,
        "static int vcpu_enter_guest(struct kvm_vcpu *vcpu)",
        (
            S("if (kvm_check_request(KVM_REQ_PMU, vcpu)) kvm_pmu_handle_event(vcpu);", "kvm_pmu_handle_event", 2),
            S("if (kvm_check_request(KVM_REQ_PMI, vcpu)) kvm_pmu_deliver_pmi(vcpu);", "kvm_pmu_deliver_pmi", 2),
            S("r = kvm_check_and_inject_events(vcpu, &req_immediate_exit);", "inject_pending_event", 2),
            S("local_irq_disable();", "local_irq_disable"),
            S("kvm_mediated_pmu_load(vcpu);", "mediated_load"),
            S("exit_fastpath = kvm_x86_call(vcpu_run)(vcpu, run_flags);", "vmenter", 1),
            S("if (unlikely(kvm_vcpu_exit_request(vcpu)))", "kvm_vcpu_exit_request", 1),
            S("kvm_mediated_pmu_put(vcpu);", "mediated_put"),
            S("kvm_x86_call(handle_exit_irqoff)(vcpu);", "handle_exit_irqoff"),
            S("local_irq_enable();", "local_irq_enable"),
            S("r = kvm_x86_call(handle_exit)(vcpu, exit_fastpath);", "handle_exit"),
        ),
        "§1.1",
    ),
    CFunction(
        "vcpu_enter_guest",
        VMX_PMU,
        "reprogram_fixed_counters",
        PARTIAL,
        "static void reprogram_fixed_counters(struct kvm_pmu *pmu, u64 data)",
        (
            S("u64 old_fixed_ctr_ctrl = pmu->fixed_ctr_ctrl;", "handle_exit", unless=("linux-next",)),
            S("u64 old_fixed_ctr_ctrl = pmu->fixed_ctr_ctrl_hw;", "handle_exit", only=("linux-next",)),
            S("pmu->fixed_ctr_ctrl = data;", "handle_exit"),
            S("pmu->fixed_ctr_ctrl_hw = data;", "handle_exit"),
            S("if (old_ctrl == new_ctrl) continue;", "handle_exit", 1, unless=("fixed-refilter",)),
            S("kvm_pmu_request_counter_reprogram(pmc);", "handle_exit", 1),
        ),
        "§5.5, H19, F2; reached from handle_exit (intel_pmu_set_msr, MSR_CORE_PERF_FIXED_CTR_CTRL)",
    ),
    CFunction(
        "vcpu_enter_guest",
        KVM_PMU,
        "kvm_vm_ioctl_set_pmu_event_filter",
        PARTIAL,
        "int kvm_vm_ioctl_set_pmu_event_filter(struct kvm *kvm, void __user *argp)",
        (
            S("r = prepare_filter_lists(filter);", "handle_exit"),
            S(
                "filter = rcu_replace_pointer(kvm->arch.pmu_event_filter, filter, mutex_is_locked(&kvm->lock));",
                "handle_exit",
            ),
            S(
                "atomic64_set(&vcpu_to_pmu(vcpu)->__reprogram_pmi, -1ull);",
                "handle_exit",
                unless=("filter-no-reprogram",),
            ),
            S("kvm_make_all_cpus_request(kvm, KVM_REQ_PMU);", "handle_exit"),
        ),
        "§5.5, H19; userspace's ioctl at a ucall exit, modelled in handle_exit (kernel/pmu_filter.py)",
    ),
    CFunction(
        "vcpu_enter_guest",
        KVM_X86,
        "__handle_fastpath_wrmsr",
        PARTIAL,
        "static fastpath_t __handle_fastpath_wrmsr(struct kvm_vcpu *vcpu, u32 msr, u64 data)",
        (
            S(
                "if (!kvm_pmu_is_fastpath_emulation_allowed(vcpu)) return EXIT_FASTPATH_NONE;",
                "fastpath",
                unless=("no-fastpath-guard",),
            ),
            S("if (!kvm_skip_emulated_instruction(vcpu)) return EXIT_FASTPATH_EXIT_USERSPACE;", "fastpath"),
            S("return EXIT_FASTPATH_REENTER_GUEST;", "fastpath"),
        ),
        "§1.1, §5.6, H11: the TSC_DEADLINE write the guest uses",
    ),
    CFunction(
        "vcpu_enter_guest",
        KVM_X86,
        "handle_fastpath_hlt",
        COMPLETE,
        "fastpath_t handle_fastpath_hlt(struct kvm_vcpu *vcpu)",
        (
            S(
                "if (!kvm_pmu_is_fastpath_emulation_allowed(vcpu)) return EXIT_FASTPATH_NONE;",
                "fastpath",
                unless=("no-fastpath-guard",),
            ),
            S("if (!kvm_emulate_halt(vcpu)) return EXIT_FASTPATH_EXIT_USERSPACE;", "fastpath"),
            O(
                "if (kvm_vcpu_running(vcpu)) return EXIT_FASTPATH_REENTER_GUEST;",
                "the model shows no wake event for a literal HLT: the vCPU is halted here",
            ),
            S("return EXIT_FASTPATH_EXIT_HANDLED;", "fastpath"),
        ),
        "§1.1, §5.6, H11: a literal HLT (guest/program.py)",
    ),
    CFunction(
        "vcpu_run",
        KVM_X86,
        "vcpu_run",
        PARTIAL,
        "static int vcpu_run(struct kvm_vcpu *vcpu)",
        (S("r = vcpu_enter_guest(vcpu);", "enter_guest", 2),),
        "§1.1",
    ),
    CFunction(
        "vcpu_run",
        KVM_X86,
        "kvm_arch_vcpu_precreate",
        PARTIAL,
        "int kvm_arch_vcpu_precreate(struct kvm *kvm, unsigned int id)",
        (
            S("r = perf_create_mediated_pmu();", "kvm_arch_vcpu_precreate", 2),
            S("if (r)", "created", 2),
            S("pr_warn_ratelimited(PERF_MEDIATED_PMU_MSG);", "create_failed", 3),
        ),
        "§2.1, H14, S4: KVM_CREATE_VCPU (worlds with [vm] lifecycle = true)",
    ),
    CFunction(
        "vcpu_run",
        EVENTS_CORE,
        "perf_create_mediated_pmu",
        COMPLETE,
        "int perf_create_mediated_pmu(void)",
        (
            O("if (atomic_inc_not_zero(&nr_mediated_pmu_vms)) return 0;", "one VM in the model: none exists before it"),
            O("guard(mutex)(&perf_mediated_pmu_mutex);", "perf_mediated_pmu_mutex: each step is atomic in the model"),
            S(
                "if (atomic_read(&nr_include_guest_events)) return -EBUSY;",
                "kvm_arch_vcpu_precreate",
                unless=("no-mediated-exclusion",),
            ),
            S("atomic_inc(&nr_mediated_pmu_vms);", "kvm_arch_vcpu_precreate"),
            S("return 0;", "kvm_arch_vcpu_precreate"),
        ),
        "§2.2, H14",
    ),
    CFunction(
        "vcpu_run",
        KVM_X86,
        "kvm_arch_destroy_vm",
        PARTIAL,
        "void kvm_arch_destroy_vm(struct kvm *kvm)",
        (S("if (kvm->arch.created_mediated_pmu) perf_release_mediated_pmu();", "kvm_destroy_vm"),),
        "§2.1, H14, S4",
    ),
    CFunction(
        "vcpu_run",
        EVENTS_CORE,
        "perf_release_mediated_pmu",
        COMPLETE,
        "void perf_release_mediated_pmu(void)",
        (
            O(
                "if (WARN_ON_ONCE(!atomic_read(&nr_mediated_pmu_vms))) return;",
                "cannot fire: kvm_arch_destroy_vm() calls it only for the VM that created the mediated PMU",
            ),
            S("atomic_dec(&nr_mediated_pmu_vms);", "kvm_destroy_vm"),
        ),
        "§2.1, H14",
    ),
    CFunction(
        "kvm_enable_virtualization_cpu",
        SVM,
        "svm_enable_virtualization_cpu",
        PARTIAL,
        "static int svm_enable_virtualization_cpu(void)",
        (
            S("wrmsrq(MSR_EFER, efer | EFER_SVME);", "svm_enable"),
            S("amd_pmu_enable_virt();", "amd_pmu_enable_virt"),
        ),
        "§3.1 AMD, H2",
    ),
)

#: Model steps that stand for no statement of their kernel function, and why.
NOT_C: dict[str, dict[str, str]] = {
    "perf_put_guest_context": {
        "amd_pmu_check_overflow": "amd_pmu_v2_disable_all() -> amd_pmu_check_overflow(), anchored under "
        "perf_load_guest_context",
    },
    "kvm_handle_guest_mediated_pmi": {
        "apic_eoi": "the sysvec_perf_guest_mediated_pmi_handler wrapper acks the APIC before calling KVM (§2.5)",
        "iret": "the interrupt return (hardware)",
    },
    "vcpu_enter_guest": {
        "clgi": "inside svm_vcpu_enter_exit() (arch/x86/kvm/svm/svm.c), F-5.2",
        "stgi": "inside svm_vcpu_enter_exit() (arch/x86/kvm/svm/svm.c), F-5.2",
        "refresh_global_ctrl*": "in the vendor run function after VM-exit (vmx/svm), §1.4",
    },
    "vcpu_run": {
        "again": "the for (;;) loop of vcpu_run: the model stops when the guest halts",
        "vcpu_put": "kvm_arch_vcpu_put() on the way out to userspace, not in vcpu_run",
        "perf_read": "the model's final read of host counts (host isolation), not kernel code",
        "end": "return to userspace",
        "end_failed": "KVM_CREATE_VCPU returns the error to userspace",
    },
    "intel_pmu_handle_irq": {},
    "kvm_enable_virtualization_cpu": {
        "vmxon": "vmx_enable_virtualization_cpu() (arch/x86/kvm/vmx/vmx.c): no PMU effect in the model",
        "end": "return",
    },
    "perf_mux_hrtimer_handler": {
        "apic_eoi": "the local APIC timer interrupt's wrapper acks the APIC",
        "iret": "the interrupt return (hardware)",
        "amd_pmu_check_overflow": "amd_pmu_v2_disable_all() -> amd_pmu_check_overflow(), anchored under "
        "perf_load_guest_context",
    },
}

#: Model functions that are not one kernel function (nothing to anchor), and why.
COMPOSITE: dict[str, str] = {
    "perf_event_ipi": "the IPI that runs __perf_install_in_context / __perf_event_{enable,disable} on this CPU: "
    "several kernel functions (kernel/events/core.c) summarized as one step",
}


def by_model() -> dict[str, list[CFunction]]:
    """The anchored kernel functions of each model function."""
    out: dict[str, list[CFunction]] = {}
    for f in FUNCTIONS:
        out.setdefault(f.model, []).append(f)
    return out
