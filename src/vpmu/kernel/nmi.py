"""The x86 NMI path in the step language: default_do_nmi() and its NMI_LOCAL handlers.

Facts (Linux v7.0): default_do_nmi() calls nmi_handle(NMI_LOCAL), which runs every
registered handler and sums what they claim; if none claims the NMI (and no
NMI_UNKNOWN handler, none registered here), unknown_nmi_error() prints "Uhhuh. NMI
received for unknown reason" and panics with unknown_nmi_panic or
panic_on_unrecovered_nmi (arch/x86/kernel/nmi.c; V6). The handlers modelled are
perf's perf_event_nmi_handler() ("PMI", arch/x86/events/core.c) and the
backtrace handler nmi_cpu_backtrace_handler() ("arch_bt", arch/x86/kernel/apic/hw_nmi.c
-> nmi_cpu_backtrace(), lib/nmi_backtrace.c), which claims an NMI when this CPU's bit
is set in backtrace_mask: the source of the checker's unrelated NMIs. Reading the
NMI reason port (SERR/IOCHK), the back-to-back "swallow" heuristic and
microcode's handler are not modelled (docs/fidelity.md).
"""

from __future__ import annotations

from vpmu.kernel.env import KernelEnv
from vpmu.kernel.lang import CALL, IRET, Builder, Function, Step


def nmi_cpu_backtrace_handler(env: KernelEnv, s: list[int]) -> None:
    """nmi_cpu_backtrace(): if this CPU's bit is set in backtrace_mask, print its registers,
    clear the bit and claim the NMI (lib/nmi_backtrace.c)."""
    if s[env.nmi_backtrace]:
        s[env.nmi_backtrace] = 0
        s[env.nmi_handled] += 1


def nmi_exit_step(env: KernelEnv, swallow_b2b: bool = True) -> Step:
    """The rest of default_do_nmi() after perf's handler: the backtrace handler, the verdict
    (an NMI nobody claimed is unknown, unless it is the back-to-back NMI a multi-event NMI
    announced) and IRET. ``swallow_b2b=False`` is the ablation without the swallow heuristic."""
    panic = env.cpu.cfg.unknown_nmi_panic
    handled, swallow, b2b, pending = env.nmi_handled, env.swallow_nmi, env.nmi_b2b, env.cpu.nmi_pending

    def rest(s: list[int]) -> None:
        nmi_cpu_backtrace_handler(env, s)
        # The entry's "if (b2b) ... else swallow_nmi = false" is folded in here: nothing in
        # between reads swallow_nmi.
        if not s[b2b]:
            s[swallow] = 0
        if s[handled]:
            if s[handled] > 1 and swallow_b2b:  # one NMI handled several events: the next may find none
                s[swallow] = 1
        elif not (s[b2b] and s[swallow]):
            env.obs.unknown_nmi(s, panic)
        # A latched NMI is taken at once after IRET: same regs->ip, back to back. Any other NMI
        # resets swallow_nmi first, so its value is dead then: kept at 0 (fewer states).
        s[b2b] = s[pending]
        if not s[pending]:
            s[swallow] = 0

    after = 'nmi_panic(regs, "NMI: Not continuing")' if panic else '"Dazed and confused, but trying to continue"'
    return Step(
        "iret",
        "nmi_handle(NMI_LOCAL): nmi_cpu_backtrace_handler(); "
        + ("if (handled > 1) swallow_nmi = true; else " if swallow_b2b else "")
        + "if (!handled && !(b2b && swallow_nmi)) "
        f'{{ pr_emerg("Uhhuh. NMI received for unknown reason"); {after}; }} iret',
        rest,
        kind=IRET,
        source="nmi_handle(), default_do_nmi(), unknown_nmi_error() (arch/x86/kernel/nmi.c), "
        "nmi_cpu_backtrace() (lib/nmi_backtrace.c), V6",
    )


def default_do_nmi(env: KernelEnv) -> Function:
    return Function(
        "default_do_nmi",
        (
            Step(
                "perf_event_nmi_handler",
                "nmi_handle(NMI_LOCAL): perf_event_nmi_handler()",
                kind=CALL,
                call="perf_event_nmi_handler",
                source="nmi_handle() (arch/x86/kernel/nmi.c)",
            ),
            nmi_exit_step(env),
        ),
        doc="The NMI entry: every NMI_LOCAL handler runs; an NMI none claims is an unknown NMI.",
        source="default_do_nmi() (arch/x86/kernel/nmi.c), V6",
        locals=(env.nmi_handled,),
    )


BUILDERS: dict[str, Builder] = {"default_do_nmi": default_do_nmi}
