"""The NMI path as the kernel has it (issue 13 parts 2 and 3): default_do_nmi() runs every
NMI_LOCAL handler, an NMI none claims is unknown (V6), the back-to-back swallow heuristic,
VMX NMI exits handled before put (V7), and AMD's PMI handler details."""

from __future__ import annotations

import dataclasses

from vpmu.check.explore import check
from vpmu.check.system import DELIVER, NMI, NMI_CTX, STEP, System
from vpmu.check.world import resolve_world
from vpmu.designs import get_design
from vpmu.hw import virt as V
from vpmu.scenarios import load_catalog


def _scenario_system(scenario_id: str, design: str = "upstream") -> System:
    world = load_catalog().select([scenario_id])[0].world
    assert world is not None
    return System(get_design(design), world)


def _run_nmi(system: System, s: tuple[int, ...]) -> tuple[tuple[int, ...], list[str]]:
    s, rec = system.apply(s, (DELIVER, 0))
    labels = [rec.label]
    while s[system.nmi_pc] >= 0:
        s, rec = system.apply(s, (STEP, 0))
        labels.append(rec.label)
    return s, labels


def test_a_backtrace_nmi_is_claimed_by_its_own_handler() -> None:
    """With no x86 event perf_event_nmi_handler() returns NMI_DONE at active_events; the backtrace
    handler (nmi_cpu_backtrace(), lib/nmi_backtrace.c) claims the NMI: no unknown NMI."""
    system = _scenario_system("F1-no-event")
    env = system.env
    s, rec = system.apply(system.initial(), (NMI, 0))
    assert s[env.nmi_backtrace] and "backtrace" in rec.text
    assert (NMI, 0) not in system.moves(s)  # one backtrace request at a time
    s, labels = _run_nmi(system, s)
    assert labels[1:] == [
        "perf_event_nmi_handler:guest_lvtpc_gate",
        "perf_event_nmi_handler:no_active_events",
        "default_do_nmi:iret",
    ]
    assert not s[env.nmi_backtrace] and not system.violation(s)


def test_an_nmi_nobody_claims_is_unknown_and_panics_with_unknown_nmi_panic() -> None:
    """unknown_nmi_error() (arch/x86/kernel/nmi.c): "Uhhuh", then "Dazed and confused" or, with
    unknown_nmi_panic, a panic (V6)."""
    for panic in (False, True):
        system = _scenario_system("F1-no-event")
        w = system.world
        system = System(
            system.design, dataclasses.replace(w, machine=dataclasses.replace(w.machine, unknown_nmi_panic=panic))
        )
        s = list(system.initial())
        s[system.cpu.nmi_pending] = 1  # an NMI with no source any handler knows
        s2, _ = _run_nmi(system, tuple(s))
        assert system.violation(s2)
        msg = system.ghost.message
        assert "Uhhuh. NMI received for unknown reason" in msg
        assert ("Not continuing" in msg) == panic and ("Dazed and confused" in msg) != panic


def test_without_the_swallow_heuristic_a_latched_pmi_is_an_unknown_nmi() -> None:
    """A backtrace NMI whose handler also handles a host overflow (handled = 2) sets swallow_nmi;
    the overflow's own NMI, latched meanwhile, comes back to back and finds nothing: default_do_nmi()
    swallows it. Without the heuristic it is an unknown NMI (design no-nmi-swallow)."""
    world = resolve_world("intel-default")
    world = dataclasses.replace(world, bounds=dataclasses.replace(world.bounds, exits=0, nmis=1))
    r = check(System(get_design("no-nmi-swallow"), world, ("no-unknown-nmi",)))
    assert (r.verdict, r.prop) == ("violated", "no-unknown-nmi")
    r = check(System(get_design("perf-stays-disabled"), world, ("no-unknown-nmi",)))
    assert r.verdict == "holds"


def test_vmx_nmi_exit_runs_the_host_handler_before_anything_else() -> None:
    """vmx_vcpu_enter_exit() -> vmx_handle_nmi() -> vmx_do_nmi_irqoff() (arch/x86/kvm/vmx/vmx.c, V7):
    the NMI is handled right after the VM-exit, before put, even when PMI delivery may skid."""
    w = resolve_world("intel-default")
    system = System(get_design("upstream"), dataclasses.replace(w, machine=dataclasses.replace(w.machine, pmi_skid=2)))
    cpu = system.cpu
    s = system.initial()
    while not s[cpu.mode]:
        s, _ = system.apply(s, (STEP, 0))
    s, _ = system.apply(s, (NMI, 0))
    s, rec = system.apply(s, (DELIVER, 0))
    assert rec.text == "VM-exit: NMI" and s[cpu.exit_reason] == V.EXIT_NMI
    assert system.moves(s)[0] == (DELIVER, 0) and (STEP, 0) not in system.moves(s)
    s, rec = system.apply(s, (DELIVER, 0))
    assert "vmx_do_nmi_irqoff" in rec.text and system.running(s)[0] == NMI_CTX


def test_amd_handler_acks_not_status_and_warns_on_inactive_counters() -> None:
    """amd_pmu_v2_handle_irq() (arch/x86/events/amd/core.c): a status bit of an inactive counter
    is not handled, WARNs ("New overflows for inactive PMCs"), and stays set: the ack writes
    ~status. The perf_nmi_window then claims an NMI that handled nothing."""
    system = System(get_design("upstream"), resolve_world("amd-default"))
    env, cpu = system.env, system.cpu
    s = list(system.initial())
    s[env.ev_active[0]] = 0
    s[cpu.global_status] = 1
    s[cpu.nmi_pending] = 1
    s2, labels = _run_nmi(system, tuple(s))
    assert "amd_pmu_v2_handle_irq:ack_status" in labels
    assert "New overflows for inactive PMCs: 0x1" in system.ghost.message
    assert s2[cpu.global_status] & 1  # acked ~status: the unexplained bit is left
    # The window: armed by a handled PMI, it claims an NMI that handled nothing.
    s = list(system.initial())
    s[env.perf_nmi_window] = 1
    s[cpu.nmi_pending] = 1
    s2, _ = _run_nmi(system, tuple(s))
    assert not system.violation(s2)
    s[env.perf_nmi_window] = 0
    s2, _ = _run_nmi(system, tuple(s))
    assert "Uhhuh" in system.ghost.message


def test_amd_disable_all_waits_for_a_skidding_overflow_nmi() -> None:
    """amd_pmu_v2_disable_all() -> amd_pmu_check_overflow(): with the overflow's NMI pending, the
    wait spins; the step exists only with pmi_skid (without skid it could never spin)."""
    skid = _scenario_system("H5-amd-skid")
    labels = skid.functions["perf_load_guest_context"].labels()
    assert labels[labels.index("perf_ctx_disable") + 1] == "amd_pmu_check_overflow"
    plain = System(get_design("upstream"), resolve_world("amd-default"))
    assert "amd_pmu_check_overflow" not in plain.functions["perf_load_guest_context"].labels()
    wait = next(i for i in skid.task.code if i.step.label == "amd_pmu_check_overflow")
    s = list(skid.initial())
    assert wait.when is not None and not wait.when(s)
    s[skid.cpu.global_status] = 1
    s[skid.cpu.nmi_pending] = 1
    assert wait.when(s) and wait.step.goto == "amd_pmu_check_overflow"
