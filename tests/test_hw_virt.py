"""VMX and SVM transitions as the PMU sees them (virt.py), against §4 and §5 facts."""

from __future__ import annotations

from typing import Any

import pytest

from vpmu.config import MachineConfig
from vpmu.errors import Fault
from vpmu.hw import msr as M
from vpmu.hw.layout import Layout
from vpmu.hw.virt import EXIT_EXTINT, EXIT_NMI, EXIT_NONE, EXIT_TIMER, Cpu

EN, OS, USR, INT = M.EVENTSEL_EN, M.EVENTSEL_OS, M.EVENTSEL_USR, M.EVENTSEL_INT
FX = 1 << M.FIXED_IDX_BASE
NMI, MASKED = M.APIC_DM_NMI, M.APIC_LVT_MASKED
VEC = M.PERF_GUEST_MEDIATED_PMI_VECTOR
FREEZE = M.DEBUGCTL_FREEZE_PERFMON_ON_PMI | M.DEBUGCTL_FREEZE_LBRS_ON_PMI


def make(**kw: Any) -> tuple[Cpu, list[int]]:
    L = Layout()
    cpu = Cpu(MachineConfig(**kw), L)
    return cpu, L.initial()


def changed(cpu: Cpu, before: list[int], after: list[int]) -> set[str]:
    return {name for name, _, _ in cpu.layout.diff(before, after)}


def pmu_changed(cpu: Cpu, before: list[int], after: list[int]) -> set[str]:
    """Changed slots of the PMU and local APIC (claimed before the CPU's own slots)."""
    diff = cpu.layout.diff(before, after)
    return {name for name, _, _ in diff if cpu.layout.index(name) < cpu.mode}


# -- VMX entry (F-4.2) ---------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 0b01, 0b10 | FX, 0b11 | FX])
def test_vmentry_loads_guest_global_ctrl_from_vmcs(value: int) -> None:
    """F-4.2.1: VM-entry loads GUEST_IA32_PERF_GLOBAL_CTRL."""
    cpu, s = make(vendor="intel")
    s[cpu.vmcs_guest_pgc] = value
    cpu.vmx_vmentry(s)
    assert s[cpu.global_ctrl] == value
    assert cpu.guest_mode(s)
    assert s[cpu.exit_reason] == EXIT_NONE
    assert ("vmcs_load_pgc", value, 1) in cpu.log


def test_vmentry_without_the_load_control_keeps_global_ctrl() -> None:
    cpu, s = make(vendor="intel")
    s[cpu.vmcs_guest_pgc] = 0b10
    cpu.vmx_vmentry(s, load_pgc=False)
    assert s[cpu.global_ctrl] == 0b11  # power-up value (F-1.5.7)
    assert cpu.guest_mode(s)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(1 << 2, id="F-4.2.2 bit of a missing GP counter"),
        pytest.param(1 << 33, id="F-4.2.2 bit of a missing fixed counter"),
        pytest.param(1 << 48 | 1, id="F-4.2.2 bit 48 without PERF_METRICS"),
        pytest.param(1 << 63, id="F-4.2.2 bit 63"),
    ],
)
def test_vmentry_fails_on_reserved_guest_global_ctrl(value: int) -> None:
    """F-4.2.2: reserved bits in the guest field are a VM-entry failure; nothing loads."""
    cpu, s = make(vendor="intel", num_gp=2, num_fixed=1)
    s[cpu.vmcs_guest_pgc] = value
    before = list(s)
    with pytest.raises(Fault) as info:
        cpu.vmx_vmentry(s)
    assert info.value.vector == "VM-entry failure"
    assert str(info.value) == (f"VM-entry failure: GUEST_PERF_GLOBAL_CTRL {value:#x} has reserved bits")
    assert s == before
    assert not cpu.guest_mode(s)


# -- VMX exit (F-4.3, H13) -----------------------------------------------------------


def _in_guest(cpu: Cpu, s: list[int], guest_pgc: int) -> None:
    s[cpu.vmcs_guest_pgc] = guest_pgc
    cpu.vmx_vmentry(s)
    cpu.wrmsr(s, M.MSR_IA32_DEBUGCTLMSR, FREEZE | 1)  # guest DEBUGCTL in force


def test_vmexit_saves_global_ctrl_to_the_vmcs_field() -> None:
    """F-4.3.1 step 2 with "save IA32_PERF_GLOBAL_CTRL" (SPR+); then load host 0,
    clear DEBUGCTL (F-4.3.3)."""
    cpu, s = make(vendor="intel", vmx_save_global_ctrl=True)
    assert cpu.msr_store_pgc == -1
    _in_guest(cpu, s, 0b01 | FX)
    cpu.wrmsr(s, M.MSR_CORE_PERF_GLOBAL_CTRL, 0b10 | FX)  # the guest changed it (passthrough)
    before = list(s)
    cpu.vmx_vmexit(s, EXIT_TIMER)
    assert s[cpu.vmcs_guest_pgc] == 0b10 | FX
    assert s[cpu.global_ctrl] == 0
    assert s[cpu.debugctl] == 0
    assert s[cpu.exit_reason] == EXIT_TIMER
    assert not cpu.guest_mode(s)
    assert pmu_changed(cpu, before, s) == {"GLOBAL_CTRL", "DEBUGCTL"}
    assert {"VMCS.GUEST_PERF_GLOBAL_CTRL", "MODE", "EXIT_REASON"} <= changed(cpu, before, s)


def test_vmexit_without_save_control_uses_the_msr_store_list() -> None:
    """H13, F-4.3.1 step 3, F-4.3.2: pre-SPR the MSR-store list captures the guest
    value before the host load; the VMCS field is not written."""
    cpu, s = make(vendor="intel", pmu_version=4, vmx_save_global_ctrl=False)
    assert cpu.layout.has("MSR_STORE[PERF_GLOBAL_CTRL]")
    _in_guest(cpu, s, 0b11)
    cpu.wrmsr(s, M.MSR_CORE_PERF_GLOBAL_CTRL, 0b01)
    cpu.vmx_vmexit(s, EXIT_TIMER)
    assert s[cpu.msr_store_pgc] == 0b01
    assert s[cpu.vmcs_guest_pgc] == 0b11, "the VMCS field keeps the value loaded at entry"
    assert s[cpu.global_ctrl] == 0
    assert s[cpu.debugctl] == 0


@pytest.mark.parametrize(("save", "load"), [(False, True), (True, False), (False, False)])
def test_vmexit_controls_are_independent(save: bool, load: bool) -> None:
    cpu, s = make(vendor="intel")
    _in_guest(cpu, s, 0b01)
    cpu.vmx_vmexit(s, EXIT_TIMER, save_pgc=save, load_pgc=load)
    assert s[cpu.vmcs_guest_pgc] == 0b01  # loaded at entry, re-saved only if save
    assert s[cpu.global_ctrl] == (0 if load else 0b01)
    assert s[cpu.debugctl] == 0, "F-4.3.3 DEBUGCTL is cleared on every exit"


def test_transition_cycles_count_with_the_guest_global_ctrl() -> None:
    """F-4.3.2 (open point 3): guest-enabled cycle counters count exit micro-ops
    before GLOBAL_CTRL is saved and cleared; instructions do not (F-1.8.6)."""
    cpu, s = make(vendor="intel", num_gp=3, transition_cycles=2)
    for i, (event, flags) in enumerate([(0x3C, EN | OS), (0x3C, EN | OS), (0xC0, EN | OS)]):
        cpu.wrmsr(s, M.MSR_P6_EVNTSEL0 + i, flags | event)
    _in_guest(cpu, s, 0b101)
    cpu.vmx_vmexit(s, EXIT_TIMER)
    assert [s[cpu.pmc + i] for i in range(3)] == [2, 0, 0]
    assert s[cpu.vmcs_guest_pgc] == 0b101


def test_vmexit_on_v1_touches_no_global_ctrl() -> None:
    """F-4.1.1: without IA32_PERF_GLOBAL_CTRL (v1) there are no load/save controls;
    entry and exit must not write a GLOBAL_CTRL slot (regression: they wrote s[-1],
    losing the acknowledged vector)."""
    cpu, s = make(vendor="intel", pmu_version=1)
    assert cpu.global_ctrl == -1
    cpu.write_lvtpc(s, VEC)
    s[cpu.irr] |= 1 << VEC
    before = list(s)
    cpu.vmx_vmentry(s)
    assert pmu_changed(cpu, before, s) == set()
    assert "VMCS.GUEST_PERF_GLOBAL_CTRL" not in changed(cpu, before, s)
    cpu.vmx_vmexit(s, EXIT_EXTINT)
    assert s[cpu.exit_vector] == VEC
    assert s[cpu.exit_reason] == EXIT_EXTINT
    assert pmu_changed(cpu, before, s) == {"IRR", "ISR"}  # acknowledged: IRR -> ISR (F-4.4.2)
    assert "VMCS.GUEST_PERF_GLOBAL_CTRL" not in changed(cpu, before, s)


@pytest.mark.parametrize(
    ("version", "ctrl", "status"),
    [
        pytest.param(3, 0, 0b01, id="F-4.4.4 legacy freeze clears the live GLOBAL_CTRL"),
        pytest.param(
            4, 0b11, 0b01 | M.STATUS_CTR_FRZ | M.STATUS_LBR_FRZ, id="F-4.4.4 streamlined CTR_Frz persists into the host"
        ),
    ],
)
def test_guest_freeze_is_visible_after_exit(version: int, ctrl: int, status: int) -> None:
    cpu, s = make(vendor="intel", pmu_version=version, gp_width=2)
    cpu.write_lvtpc(s, NMI)
    cpu.wrmsr(s, M.MSR_P6_EVNTSEL0, EN | USR | INT | 0xC0)
    cpu.wrmsr(s, M.MSR_IA32_PMC0, 3)
    _in_guest(cpu, s, 0b11)
    cpu.retire(s, guest=True, cpl=3, instructions=1)
    assert cpu.guest_exit_pending(s) == EXIT_NMI
    cpu.vmx_vmexit(s, EXIT_NMI)
    assert s[cpu.vmcs_guest_pgc] == ctrl
    assert s[cpu.global_status] == status, "GLOBAL_STATUS is not switched (F-4.1.2)"


# -- PMI while the guest runs (F-4.4) -----------------------------------------------


def test_ext_interrupt_exit_acks_the_vector() -> None:
    """F-4.4.2: with "acknowledge interrupt on exit" the vector moves from the IRR to
    the exit information; lower-priority vectors stay pending."""
    cpu, s = make(vendor="intel", gp_width=2)
    cpu.write_lvtpc(s, VEC)
    cpu.wrmsr(s, M.MSR_P6_EVNTSEL0, EN | USR | INT | 0xC0)
    cpu.wrmsr(s, M.MSR_IA32_PMC0, 3)
    s[cpu.irr] |= 1 << 0x30
    _in_guest(cpu, s, 0b01)
    assert cpu.guest_exit_pending(s) == EXIT_EXTINT
    cpu.retire(s, guest=True, cpl=3, instructions=1)
    assert s[cpu.irr] == 1 << VEC | 1 << 0x30
    assert cpu.guest_exit_pending(s) == EXIT_EXTINT
    cpu.vmx_vmexit(s, EXIT_EXTINT)
    assert s[cpu.exit_reason] == EXIT_EXTINT
    assert s[cpu.exit_vector] == VEC
    assert s[cpu.irr] == 1 << 0x30


@pytest.mark.parametrize(
    ("nmi", "irr", "expected"),
    [
        pytest.param(0, 0, EXIT_NONE, id="nothing pending: no exit"),
        pytest.param(1, 0, EXIT_NMI, id="F-4.4.1 NMI: NMI exit"),
        pytest.param(0, 1 << VEC, EXIT_EXTINT, id="F-4.4.2 interrupt: external-interrupt exit"),
        pytest.param(1, 1 << VEC, EXIT_NMI, id="NMI before interrupt"),
    ],
)
@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_guest_exit_pending(vendor: str, nmi: int, irr: int, expected: int) -> None:
    cpu, s = make(vendor=vendor)
    s[cpu.nmi_pending] = nmi
    s[cpu.irr] = irr
    assert cpu.guest_exit_pending(s) == expected


def test_nmi_exit_leaves_the_nmi_for_the_host() -> None:
    """F-4.4.1: the NMI causes the exit and is not consumed; the VMM handles it."""
    cpu, s = make(vendor="intel", gp_width=2)
    cpu.write_lvtpc(s, NMI)
    cpu.wrmsr(s, M.MSR_P6_EVNTSEL0, EN | USR | INT | 0xC0)
    cpu.wrmsr(s, M.MSR_IA32_PMC0, 3)
    _in_guest(cpu, s, 0b01)
    cpu.retire(s, guest=True, cpl=3, instructions=1)
    assert cpu.guest_exit_pending(s) == EXIT_NMI
    cpu.vmx_vmexit(s, EXIT_NMI)
    assert s[cpu.exit_reason] == EXIT_NMI
    assert s[cpu.nmi_pending] == 1
    assert cpu.host_nmi_deliverable(s), "no GIF on Intel"
    cpu.take_nmi(s)
    s[cpu.nmi_pending] = 1
    assert not cpu.host_nmi_deliverable(s), "blocked by NMI until IRET"
    cpu.iret_nmi(s)
    assert cpu.host_nmi_deliverable(s)


def test_vendor_neutral_vmexit_dispatches() -> None:
    intel, si = make(vendor="intel")
    intel.vmx_vmentry(si)
    intel.vmexit(si, EXIT_TIMER)
    assert (si[intel.global_ctrl], si[intel.exit_reason], intel.guest_mode(si)) == (0, 3, False)
    amd, sa = make(vendor="amd")
    amd.svm_vmrun(sa)
    amd.vmexit(sa, EXIT_TIMER)
    assert (sa[amd.global_ctrl], sa[amd.gif], amd.guest_mode(sa)) == (0b11, 0, False)


# -- SVM (F-5.x) ---------------------------------------------------------------------


def _busy_amd_pmu(cpu: Cpu, s: list[int]) -> None:
    cpu.set_svme(s, True)
    cpu.wrmsr(s, M.MSR_F15H_PERF_CTL0, EN | OS | USR | INT | M.AMD64_EVENTSEL_GUESTONLY | 0xC0)
    cpu.wrmsr(s, M.MSR_F15H_PERF_CTR0, 0x1234)
    cpu.wrmsr(s, M.MSR_F15H_PERF_CTL0 + 2, EN | OS | 0x76)
    cpu.wrmsr(s, M.MSR_AMD64_PERF_CNTR_GLOBAL_CTL, 0b01)
    cpu.wrmsr(s, M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_SET, 0b10)
    cpu.wrmsr(s, M.MSR_IA32_DEBUGCTLMSR, FREEZE)
    cpu.write_lvtpc(s, NMI)


def test_vmrun_sets_gif_and_changes_nothing_in_the_pmu() -> None:
    """F-5.2 VMRUN sets GIF=1; F-5.5 no PMU register is switched."""
    cpu, s = make(vendor="amd")
    _busy_amd_pmu(cpu, s)
    cpu.clgi(s)
    assert s[cpu.gif] == 0
    before = list(s)
    cpu.svm_vmrun(s)
    assert s[cpu.gif] == 1
    assert cpu.guest_mode(s)
    assert pmu_changed(cpu, before, s) == set()


def test_vmexit_clears_gif_and_changes_nothing_in_the_pmu() -> None:
    """F-5.2 #VMEXIT clears GIF; F-5.5 GlobalCtl, status, selectors, counters and
    DebugCtl are untouched (unlike VMX, F-4.3.3)."""
    cpu, s = make(vendor="amd")
    _busy_amd_pmu(cpu, s)
    cpu.svm_vmrun(s)
    before = list(s)
    cpu.svm_vmexit(s, EXIT_TIMER)
    assert s[cpu.gif] == 0
    assert not cpu.guest_mode(s)
    assert s[cpu.exit_reason] == EXIT_TIMER
    assert pmu_changed(cpu, before, s) == set()


def test_nmi_held_while_gif_is_clear() -> None:
    """F-5.2, F-5.3: a PMI NMI in the guest forces #VMEXIT(NMI); it stays pending
    while GIF=0 and is taken right after STGI."""
    cpu, s = make(vendor="amd", gp_width=2)
    cpu.set_svme(s, True)
    cpu.write_lvtpc(s, NMI)
    cpu.wrmsr(s, M.MSR_F15H_PERF_CTL0, EN | USR | INT | M.AMD64_EVENTSEL_GUESTONLY | 0xC0)
    cpu.wrmsr(s, M.MSR_F15H_PERF_CTR0, 3)
    cpu.clgi(s)
    cpu.svm_vmrun(s)
    cpu.retire(s, guest=True, cpl=3, instructions=1)
    assert cpu.guest_exit_pending(s) == EXIT_NMI
    cpu.svm_vmexit(s, EXIT_NMI)
    assert s[cpu.nmi_pending] == 1
    assert not cpu.host_nmi_deliverable(s)
    assert s[cpu.lvtpc] == NMI, "F-2.6 AMD does not auto-mask"
    cpu.stgi(s)
    assert cpu.host_nmi_deliverable(s)


def test_interrupt_held_while_gif_is_clear_and_not_acked() -> None:
    """F-5.2, F-5.4: #VMEXIT(INTR) does not acknowledge the interrupt; it is taken
    after STGI when the host's RFLAGS.IF allows."""
    cpu, s = make(vendor="amd")
    cpu.write_lvtpc(s, VEC)
    cpu.svm_vmrun(s)
    s[cpu.irr] |= 1 << VEC
    assert cpu.guest_exit_pending(s) == EXIT_EXTINT
    cpu.svm_vmexit(s, EXIT_EXTINT)
    assert s[cpu.irr] == 1 << VEC
    assert cpu.host_irq_deliverable(s) == 0
    cpu.stgi(s)
    assert cpu.host_irq_deliverable(s) == VEC
    s[cpu.host_if] = 0
    assert cpu.host_irq_deliverable(s) == 0
    s[cpu.host_if] = 1
    cpu.take_irq(s, VEC)
    assert cpu.host_irq_deliverable(s) == 0


def test_intel_has_no_gif_and_amd_no_vmcs() -> None:
    intel, si = make(vendor="intel")
    assert intel.gif == -1 and intel.svme_idx == -1 and not intel.svme(si)
    amd, sa = make(vendor="amd")
    assert amd.vmcs_guest_pgc == amd.msr_store_pgc == amd.exit_vector == -1
    assert sa[amd.gif] == 1, "GIF is 1 at reset"


# --- local APIC in-service state and EOI (F-2.4; SDM Vol 3A §10.8) -------------------------


def test_fixed_vector_is_in_service_until_eoi() -> None:
    """F-2.4: a Fixed-mode interrupt is acknowledged (IRR -> ISR) and needs an EOI."""
    cpu, s = make(vendor="intel")
    s[cpu.irr] |= 1 << 0xF5
    assert cpu.host_irq_deliverable(s) == 0xF5
    cpu.take_irq(s, 0xF5)
    assert (s[cpu.irr], s[cpu.isr]) == (0, 1 << 0xF5)
    s[cpu.irr] |= 1 << 0xF5  # the same vector again: blocked while in service
    assert cpu.host_irq_deliverable(s) == 0
    cpu.eoi(s)
    assert s[cpu.isr] == 0
    assert cpu.host_irq_deliverable(s) == 0xF5


def test_higher_priority_class_preempts_in_service_vector() -> None:
    """SDM §10.8.3: only a vector of a higher priority class (vector >> 4) is delivered over an in-service one."""
    cpu, s = make(vendor="intel")
    cpu.take_irq(s, 0xE0)
    s[cpu.irr] |= 1 << 0xE5
    assert cpu.host_irq_deliverable(s) == 0
    s[cpu.irr] |= 1 << 0xF5
    assert cpu.host_irq_deliverable(s) == 0xF5
