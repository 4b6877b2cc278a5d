"""Golden traces: the MSR/LVTPC/RDPMC traffic of kvm_mediated_pmu_load / _put against Appendix B.

Every test runs a small world deterministically (``simulate`` with no scheduled
events, so the only exits are the guest's own intercepted instructions), cuts the
hardware log of the vCPU task into one trace per call of the function, and compares
it, step by step, with a table transcribed from kernel-mediated-pmu.md Appendix B
in its own notation: ``W(msr, v)`` = WRMSR, ``R(msr, v)`` = RDMSR, ``P(i, v)`` =
RDPMC, ``L(v)`` = host LVTPC write. The perf-internal traffic inside
perf_{load,put}_guest_context (B.1.1, B.2.9) is the model's summary of it:
disable (GLOBAL_CTRL := 0), stop/start the host event, enable (every counter bit).

Values are derived from the guest program in the comments next to each table.
Values that only depend on how many host instructions ran (the host event's
count) are ``ANY``; a separate test checks perf restores exactly what it saved.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from typing import Any

import pytest

from vpmu.check.simulate import Plan, SimResult, simulate
from vpmu.check.system import DELIVER, STEP, TASK, System
from vpmu.check.world import parse_world
from vpmu.designs import get_design
from vpmu.hw import msr as M
from vpmu.hw.pmu import HwEvent

# --- notation (Appendix B) ------------------------------------------------------------


class _Any:
    """Matches any value: a host-dependent count."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, int)

    def __hash__(self) -> int:  # pragma: no cover - not used as a key
        return 0

    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()


def W(msr: int, v: int) -> tuple[str, int, int]:
    return ("W", msr, v)


def R(msr: int, v: int) -> tuple[str, int, int]:
    return ("R", msr, v)


def P(ecx: int, v: int) -> tuple[str, int, int]:
    return ("P", ecx, v)


def L(v: int) -> tuple[str, int]:
    return ("L", v)


def notation(e: HwEvent) -> tuple[Any, ...] | None:
    kind, a, b = e
    if kind == "wrmsr":
        return W(a, b)
    if kind == "rdmsr":
        return R(a, b)
    if kind == "rdpmc":
        return P(a, b)
    if kind == "lvtpc":
        return L(a)
    return None  # overflow/pmi/vmexit entries are not load/put traffic


# Event-select bits (§0.1) and encodings.
USR, OS, INT, EN = M.EVENTSEL_USR, M.EVENTSEL_OS, M.EVENTSEL_INT, M.EVENTSEL_EN
GUESTONLY, HOSTONLY = M.AMD64_EVENTSEL_GUESTONLY, M.AMD64_EVENTSEL_HOSTONLY
NMI, MASKED, F5 = M.APIC_DM_NMI, M.APIC_LVT_MASKED, M.APIC_DM_FIXED | M.PERF_GUEST_MEDIATED_PMI_VECTOR

# Intel (§0.1, kvm_pmu_ops §4.1): full-width counters 0x4C1+i, selectors 0x186+i.
GC, ST, OVF, SET, FCC = 0x38F, 0x38E, 0x390, 0x391, 0x38D


def PMC(i: int) -> int:
    return 0x4C1 + i


def SEL(i: int) -> int:
    return 0x186 + i


def FIX(j: int) -> int:
    return 0x309 + j


def FIXED(j: int) -> int:
    return (1 << 30) | j  # RDPMC index of fixed counter j (§0.1)


# AMD PerfMonV2 (§0.2, kvm_pmu_ops §4.2): selectors 0xC0010200+2i, counters +1.
A_GC, A_ST, A_CLR, A_SET = 0xC0000301, 0xC0000300, 0xC0000302, 0xC0000303


def A_SEL(i: int) -> int:
    return 0xC0010200 + 2 * i


def A_CTR(i: int) -> int:
    return 0xC0010201 + 2 * i


# --- worlds --------------------------------------------------------------------------------

#: Two 48-bit GP counters and one fixed counter; host perf has one exclude_guest cycles
#: event on PMC1; the guest counts instructions on PMC0 and FIXED_CTR0.
INTEL_WORLD = """
[machine]
vendor = "intel"
pmu_version = 5
num_gp = 2
gp_width = 48
num_fixed = 1
fixed_width = 48
vmx_save_global_ctrl = {save}

[[host_event]]
name = "cycles"
event = "cycles"
counter = 1

[guest]
program = [
  "wrmsr EVTSEL0 INSTRUCTIONS|USR|OS|EN",     # exit 1: selectors are always intercepted (§5.2)
  "wrmsr FIXED_CTR_CTRL FC0_OS|FC0_USR",       # exit 2: FIXED_CTR_CTRL too
  "wrmsr GLOBAL_CTRL GP0|FIXED0",              # passed through
  "wrmsr PMC0 -50",                            # passed through (FW_WRITES)
  "loop 100",                                  # PMC0 wraps: GLOBAL_STATUS bit 0, no PMI (INT=0)
  "cpuid",                                     # exit 3
  "rdpmc 0",
  "hlt",                                       # exit 4
]
"""

AMD_WORLD = """
[machine]
vendor = "amd"
pmu_version = "perfmonv2"
num_gp = 2
gp_width = 48

[[host_event]]
name = "cycles"
event = "cycles"
counter = 1

[guest]
program = [
  "wrmsr EVTSEL0 INSTRUCTIONS|USR|OS|EN",     # exit 1
  "wrmsr GLOBAL_CTRL GP0",                     # passed through
  "wrmsr PMC0 -50",                            # passed through
  "loop 100",                                  # PerfCtr0 wraps: GlobalStatus bit 0
  "cpuid",                                     # exit 2
  "rdpmc 0",
  "hlt",                                       # exit 3
]
"""

GUEST_SEL = 0xC0 | USR | OS | EN  # INSTRUCTIONS|USR|OS|EN as the guest wrote it
INTEL_HOST_SEL = 0x3C | USR | OS | INT | EN  # perf's cycles event
INTEL_PERF_ENABLE = 0b11 | 1 << 32  # enable_all: every counter bit (§2.3 step 7)
AMD_HOST_SEL = 0x76 | USR | OS | INT | EN | HOSTONLY  # exclude_guest -> HostOnly
AMD_PERF_ENABLE = 0b11


def world(text: str) -> Any:
    return parse_world(tomllib.loads(text), "test_golden_traces")


def run(design: str, text: str) -> tuple[System, SimResult]:
    system = System(get_design(design), world(text))
    result = simulate(system, Plan("none"))
    assert result.finished
    return system, result


def task_steps(system: System, result: SimResult) -> Iterator[tuple[int, int, list[HwEvent], tuple[int, ...]]]:
    """(record index, task pc before the step, hw log, state after) of every vCPU-task step."""
    for i, rec in enumerate(result.records):
        if rec.context == TASK and rec.move == (STEP, 0):
            yield i, result.states[i][system.task_pc], rec.hw, result.states[i + 1]


def calls(system: System, result: SimResult, fn: str, raw: bool = False) -> list[list[Any]]:
    """One trace per dynamic call of ``fn`` (in the vCPU task), in Appendix B notation."""
    spans = system.task.spans(fn)
    starts = {a for a, _ in spans}
    inside = {pc for a, b in spans for pc in range(a, b)}
    out: list[list[Any]] = []
    for _, pc, hw, _ in task_steps(system, result):
        if pc in starts:
            out.append([])
        if pc in inside:
            out[-1].extend(hw if raw else [t for t in map(notation, hw) if t is not None])
    return out


def perf_load(v: str) -> list[Any]:
    """B.1.1 / B.3.1 summary: disable, stop the host event (EN cleared), enable all."""
    if v == "intel":
        return [W(GC, 0), W(SEL(1), INTEL_HOST_SEL & ~EN), W(GC, INTEL_PERF_ENABLE)]
    return [W(A_GC, 0), W(A_SEL(1), AMD_HOST_SEL & ~EN), W(A_GC, AMD_PERF_ENABLE)]


def perf_put(v: str) -> list[Any]:
    """B.2.9 / B.4.6 summary: disable, restore the host count and selector, enable all."""
    if v == "intel":
        return [W(GC, 0), W(PMC(1), ANY), W(SEL(1), INTEL_HOST_SEL), W(GC, INTEL_PERF_ENABLE)]
    return [W(A_GC, 0), W(A_CTR(1), ANY), W(A_SEL(1), AMD_HOST_SEL), W(A_GC, AMD_PERF_ENABLE)]


# --- B.1 / B.2: Intel --------------------------------------------------------------------------
#
# Guest counter values (§5.6: KVM counts every instruction it emulates in the
# enabled instruction counters; pmu->global_ctrl starts at GENMASK(1, 0) = 0x3, §1.4):
#   exit 1 (WRMSR EVTSEL0, CPL0, now enabled): pmc0 = 1
#   exit 2 (WRMSR FIXED_CTR_CTRL): pmc0 = 2; fixed0 not in global_ctrl yet -> 0
#   guest: WRMSR GLOBAL_CTRL (counts itself) pmc0 = 3, fixed0 = 1; WRMSR PMC0 -50 then
#          counts itself: 2^48-49, fixed0 = 2; loop 100: pmc0 wraps to 51 (status bit 0),
#          fixed0 = 102; CPUID exits (not counted in guest mode, F-1.8.6)
#   exit 3 (CPUID, emulated): pmc0 = 52 (0x34), fixed0 = 103 (0x67)
#   guest: RDPMC 0 reads 52 and retires: pmc0 = 53 (0x35), fixed0 = 104 (0x68)

INTEL_LOADS = [
    # L0: first entry. Guest state all zero: counter writes elided where P(i) == 0 (B.1.4);
    # PMC1 holds the host event's count, so it is written back to the guest's 0.
    [
        *perf_load("intel"),
        W(GC, 0),
        L(F5),
        P(0, 0),
        W(SEL(0), 0),
        P(1, ANY),
        W(PMC(1), 0),
        W(SEL(1), 0),
        P(FIXED(0), 0),
        R(ST, 0),
        W(FCC, 0),
    ],
    # L1: after exit 1.
    [
        *perf_load("intel"),
        W(GC, 0),
        L(F5),
        P(0, 0),
        W(PMC(0), 1),
        W(SEL(0), GUEST_SEL),
        P(1, ANY),
        W(PMC(1), 0),
        W(SEL(1), 0),
        P(FIXED(0), 0),
        R(ST, 0),
        W(FCC, 0),
    ],
    # L2: after exit 2; fixed_ctr_ctrl_hw = OS|USR of FC0.
    [
        *perf_load("intel"),
        W(GC, 0),
        L(F5),
        P(0, 0),
        W(PMC(0), 2),
        W(SEL(0), GUEST_SEL),
        P(1, ANY),
        W(PMC(1), 0),
        W(SEL(1), 0),
        P(FIXED(0), 0),
        R(ST, 0),
        W(FCC, 0x3),
    ],
    # L3: after CPUID; the guest's overflow bit was saved by put: hw = 0, toggle = 1,
    # so only STATUS_SET is written (B.1.6).
    [
        *perf_load("intel"),
        W(GC, 0),
        L(F5),
        P(0, 0),
        W(PMC(0), 52),
        W(SEL(0), GUEST_SEL),
        P(1, ANY),
        W(PMC(1), 0),
        W(SEL(1), 0),
        P(FIXED(0), 0),
        W(FIX(0), 103),
        R(ST, 0),
        W(SET, 0x1),
        W(FCC, 0x3),
    ],
]

INTEL_PUTS = [
    # P0: nothing of the guest's in hardware: only reads (B.2.4-B.2.7), LVTPC, perf.
    [R(ST, 0), P(0, 0), P(1, 0), P(FIXED(0), 0), L(NMI), *perf_put("intel")],
    # P1: the enabling WRMSR was counted by KVM, then loaded: PMC0 = 1, EVTSEL0 set.
    [R(ST, 0), P(0, 1), W(PMC(0), 0), W(SEL(0), 0), P(1, 0), P(FIXED(0), 0), L(NMI), *perf_put("intel")],
    # P2: status bit 0 saved and cleared, fixed control cleared (B.2.5), counters saved.
    [
        R(ST, 1),
        W(OVF, 1),
        W(FCC, 0),
        P(0, 51),
        W(PMC(0), 0),
        W(SEL(0), 0),
        P(1, 0),
        P(FIXED(0), 102),
        W(FIX(0), 0),
        L(NMI),
        *perf_put("intel"),
    ],
    # P3: at HLT.
    [
        R(ST, 1),
        W(OVF, 1),
        W(FCC, 0),
        P(0, 53),
        W(PMC(0), 0),
        W(SEL(0), 0),
        P(1, 0),
        P(FIXED(0), 104),
        W(FIX(0), 0),
        L(NMI),
        *perf_put("intel"),
    ],
]


@pytest.mark.parametrize("save", [True, False], ids=["B.1-SPR-save-control", "B.1-preSPR-msr-store-H13"])
def test_B1_intel_load_trace(save: bool) -> None:
    """B.1 (SPR+ and pre-SPR identical): perf summary, W(0x38F,0), L(0xF5), PMCs (elided if equal),
    status toggle via 0x390/0x391, W(0x38D)."""
    system, result = run("upstream", INTEL_WORLD.format(save=str(save).lower()))
    assert result.violations == []
    assert calls(system, result, "kvm_mediated_pmu_load") == INTEL_LOADS


@pytest.mark.parametrize("save", [True, False], ids=["B.2-SPR-save-control", "B.2-preSPR-msr-store-H13"])
def test_B2_intel_put_trace(save: bool) -> None:
    """B.2.4-B.2.9: save/clear status, clear FIXED_CTR_CTRL if set, save+zero PMCs, L(NMI), perf."""
    system, result = run("upstream", INTEL_WORLD.format(save=str(save).lower()))
    assert calls(system, result, "kvm_mediated_pmu_put") == INTEL_PUTS


def test_B2_1_intel_vmexit_zeroes_global_ctrl_and_entry_loads_guest_value() -> None:
    """B.2.1 / B.1.8: VM-exit loads HOST_IA32_PERF_GLOBAL_CTRL (0); VM-entry loads the guest value."""
    _, result = run("upstream", INTEL_WORLD.format(save="true"))
    exits = [e for rec in result.records for e in rec.hw if e[0] == "vmexit"]
    entries = [e for rec in result.records for e in rec.hw if e[0] == "vmcs_load_pgc"]
    assert [gc for _, _, gc in exits] == [0, 0, 0, 0]
    # Reset value GENMASK(1,0) until the guest's own write of GP0|FIXED0 is captured at exit 3.
    assert [v for _, v, _ in entries] == [0x3, 0x3, 0x3, 0x1 | 1 << 32]


@pytest.mark.parametrize("save", [True, False], ids=["sec1.4-save-control", "sec1.4-H13-msr-store-writeback"])
def test_1_4_guest_global_ctrl_captured_at_exit(save: bool) -> None:
    """§1.4, H12, H13: after the CPUID exit, pmu->global_ctrl holds the guest's direct write. With the
    "save" exit control the VM-exit writes the VMCS field; pre-SPR the MSR-store slot captures it and
    KVM writes it back to GUEST_IA32_PERF_GLOBAL_CTRL before any fastpath re-entry."""
    system, result = run("upstream", INTEL_WORLD.format(save=str(save).lower()))
    lay, guest_gc = system.layout, 0x1 | 1 << 32
    vmcs, kvm_gc = lay.index("VMCS.GUEST_PERF_GLOBAL_CTRL"), lay.index("pmu.global_ctrl")
    i = next(i for i, rec in enumerate(result.records) if rec.label == "guest_main:cpuid0")
    after_exit = result.states[i + 1]
    j = next(j for j in range(i, len(result.records)) if result.records[j].label.endswith(":refresh_global_ctrl"))
    after_refresh = result.states[j + 1]
    assert all(result.records[k].context == TASK for k in range(i + 1, j + 1))
    if save:
        assert after_exit[vmcs] == guest_gc
    else:
        store = lay.index("MSR_STORE[PERF_GLOBAL_CTRL]")
        assert after_exit[store] == guest_gc
        assert after_exit[vmcs] == 0x3  # hardware did not touch the VMCS field
    assert after_refresh[kvm_gc] == guest_gc
    assert after_refresh[vmcs] == guest_gc  # what the next VM-entry loads


# --- B.3 / B.4: AMD -----------------------------------------------------------------------------
#
# Boot: KVM enables SVM -> amd_pmu_reload_virt() leaves GlobalCtl = all ones (H2).
# Guest counter: exit 1 counts the enabling WRMSR (pmc0 = 1); guest: WRMSR GlobalCtl counts
# itself (2), WRMSR PerfCtr0 -50 then counts itself (2^48-49), loop 100 wraps to 51
# (status bit 0); exit 2 (CPUID, emulated): 52; RDPMC reads 52 and retires: 53.

AMD_LOADS = [
    # L0: eventsel_hw is 0 for both PMCs (never written); GlobalCtl := reset value GENMASK(1,0).
    [
        *perf_load("amd"),
        W(A_GC, 0),
        L(F5),
        P(0, 0),
        W(A_SEL(0), 0),
        P(1, ANY),
        W(A_CTR(1), 0),
        W(A_SEL(1), 0),
        R(A_ST, 0),
        W(A_SET, 0),
        W(A_GC, 0x3),
    ],
    # L1: eventsel_hw = the guest's selector with GuestOnly=1, HostOnly=0 (B.3.4, v6 26/44).
    [
        *perf_load("amd"),
        W(A_GC, 0),
        L(F5),
        P(0, 0),
        W(A_CTR(0), 1),
        W(A_SEL(0), GUEST_SEL | GUESTONLY),
        P(1, ANY),
        W(A_CTR(1), 0),
        W(A_SEL(1), 0),
        R(A_ST, 0),
        W(A_SET, 0),
        W(A_GC, 0x3),
    ],
    # L2: StatusSet restores the guest's bit unconditionally (B.3.6); GlobalCtl = the guest's GP0.
    [
        *perf_load("amd"),
        W(A_GC, 0),
        L(F5),
        P(0, 0),
        W(A_CTR(0), 52),
        W(A_SEL(0), GUEST_SEL | GUESTONLY),
        P(1, ANY),
        W(A_CTR(1), 0),
        W(A_SEL(1), 0),
        R(A_ST, 0),
        W(A_SET, 0x1),
        W(A_GC, 0x1),
    ],
]

AMD_PUTS = [
    # B.4.3: GlobalCtl := 0 FIRST (no hardware switch at #VMEXIT, H8).
    [W(A_GC, 0), R(A_ST, 0), P(0, 0), P(1, 0), L(NMI), *perf_put("amd")],
    [W(A_GC, 0), R(A_ST, 1), W(A_CLR, 1), P(0, 51), W(A_CTR(0), 0), W(A_SEL(0), 0), P(1, 0), L(NMI), *perf_put("amd")],
    [W(A_GC, 0), R(A_ST, 1), W(A_CLR, 1), P(0, 53), W(A_CTR(0), 0), W(A_SEL(0), 0), P(1, 0), L(NMI), *perf_put("amd")],
]


def test_B3_amd_load_trace() -> None:
    """B.3: perf summary, W(GlobalCtl,0), L(0xF5), PMCs (elided if equal) + GuestOnly selectors,
    StatusClr if HW has bits, StatusSet (unconditional), GlobalCtl = guest value last."""
    system, result = run("upstream", AMD_WORLD)
    assert result.violations == []
    assert calls(system, result, "kvm_mediated_pmu_load") == AMD_LOADS


def test_B4_amd_put_trace() -> None:
    """B.4.3-B.4.6: W(GlobalCtl,0) first, save/clear status, save+zero PMCs, L(NMI), perf."""
    system, result = run("upstream", AMD_WORLD)
    assert calls(system, result, "kvm_mediated_pmu_put") == AMD_PUTS


def test_B4_1_amd_vmexit_keeps_globalctl_and_svm_run_rereads_it() -> None:
    """B.4.1-B.4.2: #VMEXIT changes nothing in the PMU (GlobalCtl keeps the guest value);
    svm_vcpu_run re-reads it with RDMSR since GlobalCtl is passed through."""
    _, result = run("upstream", AMD_WORLD)
    exits = [gc for rec in result.records for kind, _, gc in rec.hw if kind == "vmexit"]
    assert exits == [0x3, 0x1, 0x1]
    rereads = [[notation(e) for e in rec.hw] for rec in result.records if rec.label.endswith(":refresh_global_ctrl")]
    assert rereads == [[R(A_GC, 0x3)], [R(A_GC, 0x1)], [R(A_GC, 0x1)]]


# --- properties of every trace (B.1.2/B.3.2, H1, B.1.4, B.1.6) -------------------------------------


@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_B1_2_B3_2_clear_precedes_lvtpc_and_selector_writes(vendor: str) -> None:
    """B.1.2/B.3.2 (H1, H2): after perf's summary KVM writes PERF_GLOBAL_CTRL = 0 before the LVTPC
    write and before any selector/counter write; every load/put LVTPC write sees GLOBAL_CTRL == 0 (I1)."""
    text = INTEL_WORLD.format(save="true") if vendor == "intel" else AMD_WORLD
    gc = GC if vendor == "intel" else A_GC
    system, result = run("upstream", text)
    sel0 = SEL(0) if vendor == "intel" else A_SEL(0)
    for trace in calls(system, result, "kvm_mediated_pmu_load"):
        kvm = trace[3:]  # after the three-write perf summary, which ends by re-enabling the PMU
        assert trace[2][:2] == ("W", gc) and trace[2][2] != 0
        assert kvm[0] == W(gc, 0)
        assert kvm[1] == L(F5)
        assert any(t[:2] == ("W", sel0) for t in kvm[2:])  # selectors are always written, after the clear
        later = [t for t in kvm[1:] if t[:2] == ("W", gc)]
        # Intel: nothing re-enables before VM-entry (B.1.8); AMD: the guest value is the last write (B.3.7).
        assert later == ([] if vendor == "intel" else [kvm[-1]])
    for fn in ("kvm_mediated_pmu_load", "kvm_mediated_pmu_put"):
        for raw in calls(system, result, fn, raw=True):
            assert [gc_at for kind, _, gc_at in raw if kind == "lvtpc"] == [0]


@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_B1_4_counter_write_elided_iff_hardware_matches(vendor: str) -> None:
    """B.1.4/B.3.4 (v6 34/44, H23): on load, counter i is written exactly when RDPMC(i) differs from
    pmc->counter, and then with pmc->counter."""
    text = INTEL_WORLD.format(save="true") if vendor == "intel" else AMD_WORLD
    ctr = PMC if vendor == "intel" else A_CTR
    system, result = run("upstream", text)
    counter = system.layout.index("pmc.counter0")
    starts = {a for a, _ in system.task.spans("kvm_mediated_pmu_load")}
    at_load = [result.states[i] for i, pc, _, _ in task_steps(system, result) if pc in starts]
    loads = calls(system, result, "kvm_mediated_pmu_load")
    assert len(at_load) == len(loads) > 1
    elided = written = 0
    for s, trace in zip(at_load, loads, strict=True):
        for i in (0, 1):
            k = next(k for k, t in enumerate(trace) if t[:2] == ("P", i))
            want = s[counter + i]
            if trace[k][2] == want:
                assert trace[k + 1][:2] != ("W", ctr(i))
                elided += 1
            else:
                assert trace[k + 1] == W(ctr(i), want)
                written += 1
    assert elided and written


def _directed(system: System, inject_label: str, bit: int) -> list[list[Any]]:
    """Run the world step by step; right before the last load's status read, leave a stale
    host bit in hardware GLOBAL_STATUS (as a host overflow whose NMI perf ignored would, H10)."""
    s = system.initial()
    st_slot = system.cpu.global_status
    target = next(pc for pc, ins in enumerate(system.task.code) if ins.qualified == inject_label)
    gs = system.layout.index("pmu.global_status")
    traces: list[list[Any]] = []
    load_spans = system.task.spans("kvm_mediated_pmu_load")
    starts = {a for a, _ in load_spans}
    inside = {pc for a, b in load_spans for pc in range(a, b)}
    injected = False
    while not system.finished(s):
        moves = system.moves(s)
        move = (DELIVER, 0) if (DELIVER, 0) in moves else (STEP, 0)
        ctx, _, _ = system.running(s)
        pc = s[system.task_pc]
        if ctx == TASK and pc == target and s[gs] and not injected:
            lst = list(s)
            lst[st_slot] |= bit
            s = tuple(lst)
            injected = True
        s2, rec = system.apply(s, move)
        if ctx == TASK and move == (STEP, 0):
            if pc in starts:
                traces.append([])
            if pc in inside:
                traces[-1].extend(t for t in map(notation, rec.hw) if t is not None)
        s = s2
    assert injected
    return traces


def test_B1_6_status_toggle_clears_stale_and_sets_guest_bits() -> None:
    """B.1.6 (H10): hw = 0x2 (stale host bit), guest_status = 0x1 -> toggle = 0x3:
    W(0x390, hw & toggle = 0x2) then W(0x391, guest & toggle = 0x1)."""
    system = System(get_design("upstream"), world(INTEL_WORLD.format(save="true")))
    traces = _directed(system, "intel_mediated_pmu_load:read_status", 0x2)
    assert traces[-1][-4:] == [R(ST, 0x2), W(OVF, 0x2), W(SET, 0x1), W(FCC, 0x3)]


def test_B3_5_amd_status_clear_then_set() -> None:
    """B.3.5-B.3.7: hw = 0x2 -> W(StatusClr, 0x2); W(StatusSet, guest 0x1); W(GlobalCtl, guest)."""
    system = System(get_design("upstream"), world(AMD_WORLD))
    traces = _directed(system, "amd_mediated_pmu_load:read_status", 0x2)
    assert traces[-1][-4:] == [R(A_ST, 0x2), W(A_CLR, 0x2), W(A_SET, 0x1), W(A_GC, 0x1)]


@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_B2_9_perf_restores_the_host_count_it_saved(vendor: str) -> None:
    """B.1.1/B.2.9 (H9, host isolation): perf re-programs PMC1 with exactly the count its sched-out
    left there; KVM's load had zeroed it for the guest (the value P(1) read)."""
    text = INTEL_WORLD.format(save="true") if vendor == "intel" else AMD_WORLD
    ctr = PMC if vendor == "intel" else A_CTR
    system, result = run("upstream", text)
    loads = calls(system, result, "kvm_mediated_pmu_load")
    puts = calls(system, result, "kvm_mediated_pmu_put")
    for load, put in zip(loads, puts, strict=True):
        left = next(t[2] for t in load if t[:2] == ("P", 1))
        restored = next(t[2] for t in put if t[:2] == ("W", ctr(1)))
        assert left == restored != 0


# --- B.5: v5 -------------------------------------------------------------------------------------------


V5_LOADS = [
    # B.5: LVTPC switched INSIDE perf's context load, after sched-out, before perf re-enables the
    # PMU; KVM's W(0x38F, 0) comes after perf returns; counters written unconditionally (no RDPMC).
    [
        W(GC, 0),
        W(SEL(1), INTEL_HOST_SEL & ~EN),
        L(F5),
        W(GC, INTEL_PERF_ENABLE),
        W(GC, 0),
        W(PMC(0), 0),
        W(SEL(0), 0),
        W(PMC(1), 0),
        W(SEL(1), 0),
        W(FIX(0), 0),
        R(ST, 0),
        W(FCC, 0),
    ],
    [
        W(GC, 0),
        W(SEL(1), INTEL_HOST_SEL & ~EN),
        L(F5),
        W(GC, INTEL_PERF_ENABLE),
        W(GC, 0),
        W(PMC(0), 1),
        W(SEL(0), GUEST_SEL),
        W(PMC(1), 0),
        W(SEL(1), 0),
        W(FIX(0), 0),
        R(ST, 0),
        W(FCC, 0),
    ],
    [
        W(GC, 0),
        W(SEL(1), INTEL_HOST_SEL & ~EN),
        L(F5),
        W(GC, INTEL_PERF_ENABLE),
        W(GC, 0),
        W(PMC(0), 2),
        W(SEL(0), GUEST_SEL),
        W(PMC(1), 0),
        W(SEL(1), 0),
        W(FIX(0), 0),
        R(ST, 0),
        W(FCC, 0x3),
    ],
    [
        W(GC, 0),
        W(SEL(1), INTEL_HOST_SEL & ~EN),
        L(F5),
        W(GC, INTEL_PERF_ENABLE),
        W(GC, 0),
        W(PMC(0), 52),
        W(SEL(0), GUEST_SEL),
        W(PMC(1), 0),
        W(SEL(1), 0),
        W(FIX(0), 103),
        R(ST, 0),
        W(SET, 0x1),
        W(FCC, 0x3),
    ],
]

V5_PUT_PERF = [W(GC, 0), W(PMC(1), ANY), W(SEL(1), INTEL_HOST_SEL), L(NMI), W(GC, INTEL_PERF_ENABLE)]
V5_PUTS = [
    # B.5: the LVTPC restore happens INSIDE perf's context put, after sched-in, before enable.
    [R(ST, 0), P(0, 0), P(1, 0), P(FIXED(0), 0), *V5_PUT_PERF],
    [R(ST, 0), P(0, 1), W(PMC(0), 0), W(SEL(0), 0), P(1, 0), P(FIXED(0), 0), *V5_PUT_PERF],
    [
        R(ST, 1),
        W(OVF, 1),
        W(FCC, 0),
        P(0, 51),
        W(PMC(0), 0),
        W(SEL(0), 0),
        P(1, 0),
        P(FIXED(0), 102),
        W(FIX(0), 0),
        *V5_PUT_PERF,
    ],
    [
        R(ST, 1),
        W(OVF, 1),
        W(FCC, 0),
        P(0, 53),
        W(PMC(0), 0),
        W(SEL(0), 0),
        P(1, 0),
        P(FIXED(0), 104),
        W(FIX(0), 0),
        *V5_PUT_PERF,
    ],
]


def test_B5_v5_load_and_put_traces() -> None:
    """B.5: v5 switches LVTPC inside perf_{load,put}_guest_context while perf has the PMU disabled
    (GLOBAL_CTRL == 0 at both LVTPC writes) and writes counters unconditionally (before 34/44).
    The model runs v5 on an SPR-like host: v5 refused pre-SPR hosts, which it does not model."""
    system, result = run("v5", INTEL_WORLD.format(save="true"))
    assert result.violations == []
    assert calls(system, result, "kvm_mediated_pmu_load") == V5_LOADS
    assert calls(system, result, "kvm_mediated_pmu_put") == V5_PUTS
    for fn in ("kvm_mediated_pmu_load", "kvm_mediated_pmu_put"):
        for raw in calls(system, result, fn, raw=True):
            assert [gc_at for kind, _, gc_at in raw if kind == "lvtpc"] == [0]
