"""Counting, overflow, PMI delivery through LVTPC and freeze-on-PMI (pmu.py, apic.py).

Table rows cite the fact ids of x86-pmu-hardware.md; the property tests at the
end check the bulk-retire contract of :meth:`Pmu.retire` and an independent
oracle of the counting rules on both vendors.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from vpmu.config import MachineConfig
from vpmu.hw import msr as M
from vpmu.hw.layout import Layout
from vpmu.hw.virt import EXIT_TIMER, Cpu

EN, OS, USR, INT = M.EVENTSEL_EN, M.EVENTSEL_OS, M.EVENTSEL_USR, M.EVENTSEL_INT
GO, HO = M.AMD64_EVENTSEL_GUESTONLY, M.AMD64_EVENTSEL_HOSTONLY
FRZ, LBR_FRZ = M.STATUS_CTR_FRZ, M.STATUS_LBR_FRZ
FX = 1 << M.FIXED_IDX_BASE
FREEZE_PERFMON = M.DEBUGCTL_FREEZE_PERFMON_ON_PMI
FREEZE_LBRS = M.DEBUGCTL_FREEZE_LBRS_ON_PMI
NMI, MASKED = M.APIC_DM_NMI, M.APIC_LVT_MASKED
FIXED_VEC = 0xF5  # LVTPC Fixed mode, the mediated PMI vector (§0.3)
DEBUGCTL = M.MSR_IA32_DEBUGCTLMSR

INTEL = {"vendor": "intel", "num_gp": 2, "num_fixed": 2}
AMD = {"vendor": "amd", "num_gp": 2}


def make(**kw: Any) -> tuple[Cpu, list[int]]:
    L = Layout()
    cpu = Cpu(MachineConfig(**kw), L)
    return cpu, L.initial()


def ev(cpu: Cpu, name: str) -> int:
    """Event-select encoding of a named event stream on this CPU's vendor."""
    return M.EVENT_ENCODINGS[cpu.cfg.vendor][name]


def sel_msr(cpu: Cpu, i: int) -> int:
    if cpu.cfg.intel:
        return M.MSR_P6_EVNTSEL0 + i
    if cpu.cfg.pmu_version == "legacy":
        return M.MSR_K7_EVNTSEL0 + i
    return M.MSR_F15H_PERF_CTL0 + 2 * i


def ctr_msr(cpu: Cpu, i: int) -> int:
    if cpu.cfg.intel:
        return M.MSR_IA32_PMC0 + i
    if cpu.cfg.pmu_version == "legacy":
        return M.MSR_K7_PERFCTR0 + i
    return M.MSR_F15H_PERF_CTR0 + 2 * i


def ctrl_msr(cpu: Cpu) -> int:
    return M.MSR_CORE_PERF_GLOBAL_CTRL if cpu.cfg.intel else M.MSR_AMD64_PERF_CNTR_GLOBAL_CTL


def clear_msr(cpu: Cpu) -> int:
    if cpu.cfg.intel:
        return M.MSR_CORE_PERF_GLOBAL_OVF_CTRL
    return M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_CLR


def program(cpu: Cpu, s: list[int], i: int, event: str, flags: int, value: int = 0) -> None:
    cpu.wrmsr(s, ctr_msr(cpu, i), value)
    cpu.wrmsr(s, sel_msr(cpu, i), flags | ev(cpu, event))


def pmis(cpu: Cpu) -> list[tuple[str, int, int]]:
    return [e for e in cpu.log if e[0] == "pmi"]


# -- which counters count (F-1.4, F-1.6.1, F-1.7.2, F-3.3.1, F-3.5.1) -----------------
# A setup step: ("sel", i, event, flags) programs GP counter i; ("msr", msr, value) is a
# WRMSR; ("svme", on) sets EFER.SVME. Retire 5 instructions, 2 branches, 7 cycles.
Step = tuple[Any, ...]

COUNTING: list[Any] = [
    pytest.param(INTEL, [("sel", 0, "instructions", OS)], False, 0, {"PMC0": 0}, id="F-1.4 EN clear: no count"),
    pytest.param(INTEL, [("sel", 0, "instructions", EN | OS)], False, 0, {"PMC0": 5}, id="F-1.4 OS counts at CPL 0"),
    pytest.param(
        INTEL, [("sel", 0, "instructions", EN | OS)], False, 3, {"PMC0": 0}, id="F-1.4 OS does not count at CPL 3"
    ),
    pytest.param(INTEL, [("sel", 0, "instructions", EN | USR)], False, 3, {"PMC0": 5}, id="F-1.4 USR counts at CPL 3"),
    pytest.param(
        INTEL, [("sel", 0, "instructions", EN | USR)], False, 1, {"PMC0": 5}, id="F-1.4 USR counts at CPL 1 (CPL > 0)"
    ),
    pytest.param(
        INTEL, [("sel", 0, "instructions", EN | USR)], False, 0, {"PMC0": 0}, id="F-1.4 USR does not count at CPL 0"
    ),
    pytest.param(
        INTEL, [("sel", 0, "instructions", EN)], False, 0, {"PMC0": 0}, id="F-1.4 neither OS nor USR: no count"
    ),
    pytest.param(
        INTEL, [("sel", 1, "cycles", EN | OS | USR)], False, 3, {"PMC1": 7}, id="F-1.4 cycles event counts cycles"
    ),
    pytest.param(
        INTEL, [("sel", 1, "branches", EN | OS | USR)], False, 3, {"PMC1": 2}, id="F-1.4 branches event counts branches"
    ),
    pytest.param(
        INTEL,
        [("msr", M.MSR_P6_EVNTSEL0, EN | OS | 0x2E)],
        False,
        0,
        {"PMC0": 0},
        id="F-1.2.2 unmodelled event counts nothing",
    ),
    # CMASK/INV (F-1.4.1, F-3.3.2), one event per cycle at most in this model.
    pytest.param(
        INTEL,
        [("sel", 0, "branches", EN | OS | M.EVENTSEL_INV)],
        False,
        0,
        {"PMC0": 2},
        id="F-1.4 INV is ignored with CMASK=0",
    ),
    pytest.param(
        INTEL,
        [("sel", 0, "branches", EN | OS | 1 << 24)],
        False,
        0,
        {"PMC0": 2},
        id="F-1.4.1 CMASK=1: cycles with >= 1 event",
    ),
    pytest.param(
        INTEL,
        [("sel", 0, "branches", EN | OS | 1 << 24 | M.EVENTSEL_INV)],
        False,
        0,
        {"PMC0": 5},
        id="F-1.4 CMASK=1 INV: cycles with no event",
    ),
    pytest.param(
        INTEL,
        [("sel", 0, "branches", EN | OS | 2 << 24)],
        False,
        0,
        {"PMC0": 0},
        id="F-1.4 CMASK=2: no cycle has 2 events",
    ),
    pytest.param(
        INTEL,
        [("sel", 0, "branches", EN | OS | 2 << 24 | M.EVENTSEL_INV)],
        False,
        0,
        {"PMC0": 7},
        id="F-1.4 CMASK=2 INV: every cycle",
    ),
    pytest.param(
        INTEL, [("sel", 0, "instructions", EN | OS)], True, 0, {"PMC0": 5}, id="F-1.7.2 Intel has no host/guest filter"
    ),
    pytest.param(
        INTEL,
        [
            ("sel", 0, "instructions", EN | OS),
            ("sel", 1, "instructions", EN | OS),
            ("msr", M.MSR_CORE_PERF_GLOBAL_CTRL, 0b10),
        ],
        False,
        0,
        {"PMC0": 0, "PMC1": 5},
        id="F-1.7.2 GLOBAL_CTRL gates GP counters (v2+)",
    ),
    pytest.param(
        {**INTEL, "pmu_version": 2},
        [("sel", 0, "instructions", EN | OS), ("msr", M.MSR_CORE_PERF_GLOBAL_CTRL, 0)],
        False,
        0,
        {"PMC0": 0},
        id="F-1.7.2 GLOBAL_CTRL gates on v2",
    ),
    pytest.param(
        {"vendor": "intel", "pmu_version": 1},
        [("sel", 0, "instructions", EN | OS), ("sel", 1, "cycles", EN | USR)],
        False,
        0,
        {"PMC0": 5, "PMC1": 0},
        id="F-1.7.2 v1: EN and CPL only, no gate",
    ),
    pytest.param(
        INTEL,
        [("msr", M.MSR_CORE_PERF_FIXED_CTR_CTRL, M.FIXED_OS), ("msr", M.MSR_CORE_PERF_GLOBAL_CTRL, FX)],
        False,
        0,
        {"FIXED_CTR0": 5},
        id="F-1.6.1 fixed OS nibble counts at CPL 0",
    ),
    pytest.param(
        INTEL,
        [("msr", M.MSR_CORE_PERF_FIXED_CTR_CTRL, M.FIXED_OS), ("msr", M.MSR_CORE_PERF_GLOBAL_CTRL, FX)],
        False,
        3,
        {"FIXED_CTR0": 0},
        id="F-1.6.1 fixed OS nibble not at CPL 3",
    ),
    pytest.param(
        INTEL,
        [("msr", M.MSR_CORE_PERF_FIXED_CTR_CTRL, M.FIXED_USR << 4), ("msr", M.MSR_CORE_PERF_GLOBAL_CTRL, FX << 1)],
        False,
        3,
        {"FIXED_CTR1": 7, "FIXED_CTR0": 0},
        id="F-1.6.1 F-1.6.5 fixed 1 USR counts cycles",
    ),
    pytest.param(
        INTEL,
        [("msr", M.MSR_CORE_PERF_FIXED_CTR_CTRL, M.FIXED_USR << 4), ("msr", M.MSR_CORE_PERF_GLOBAL_CTRL, FX << 1)],
        False,
        0,
        {"FIXED_CTR1": 0},
        id="F-1.6.1 fixed USR nibble not at CPL 0",
    ),
    pytest.param(
        INTEL,
        [("msr", M.MSR_CORE_PERF_FIXED_CTR_CTRL, 0x33), ("msr", M.MSR_CORE_PERF_GLOBAL_CTRL, FX | FX << 1)],
        False,
        3,
        {"FIXED_CTR0": 5, "FIXED_CTR1": 7},
        id="F-1.6.1 fixed 11b counts all rings",
    ),
    pytest.param(
        INTEL,
        [("msr", M.MSR_CORE_PERF_FIXED_CTR_CTRL, M.FIXED_PMI), ("msr", M.MSR_CORE_PERF_GLOBAL_CTRL, FX)],
        False,
        0,
        {"FIXED_CTR0": 0},
        id="F-1.6.1 fixed nibble 00b is stopped",
    ),
    pytest.param(
        INTEL,
        [("msr", M.MSR_CORE_PERF_FIXED_CTR_CTRL, 0x3)],
        False,
        0,
        {"FIXED_CTR0": 0},
        id="F-1.7.2 GLOBAL_CTRL gates fixed counters (reset: off)",
    ),
    pytest.param(
        INTEL,
        [
            ("sel", 0, "instructions", EN | OS),
            ("msr", M.MSR_CORE_PERF_FIXED_CTR_CTRL, 0x3),
            ("msr", M.MSR_CORE_PERF_GLOBAL_CTRL, FX | 1),
            ("msr", M.MSR_CORE_PERF_GLOBAL_STATUS_SET, FRZ),
        ],
        False,
        0,
        {"PMC0": 0, "FIXED_CTR0": 0},
        id="F-1.7.2 v4+ CTR_Frz stops GP and fixed",
    ),
    # AMD
    pytest.param(
        AMD, [("sel", 0, "instructions", EN | OS)], False, 0, {"PMC0": 5}, id="F-3.3.1 AMD OS counts at CPL 0"
    ),
    pytest.param(AMD, [("sel", 0, "instructions", EN | OS)], False, 3, {"PMC0": 0}, id="F-3.3.1 AMD OS not at CPL 3"),
    pytest.param(
        AMD, [("sel", 0, "instructions", EN | USR)], False, 3, {"PMC0": 5}, id="F-3.3.1 AMD USR counts at CPL 3"
    ),
    pytest.param(AMD, [("sel", 0, "instructions", EN)], False, 0, {"PMC0": 0}, id="F-3.3.1 AMD 00b: no counting"),
    pytest.param(AMD, [("sel", 0, "instructions", OS | USR)], False, 0, {"PMC0": 0}, id="F-3.5.1 AMD EN clear"),
    pytest.param(
        AMD,
        [("sel", 1, "cycles", EN | OS), ("sel", 0, "branches", EN | OS)],
        False,
        0,
        {"PMC1": 7, "PMC0": 2},
        id="F-3.3 AMD cycles and branches events",
    ),
    pytest.param(
        AMD,
        [("sel", 0, "branches", EN | OS | 1 << 24 | M.EVENTSEL_INV)],
        False,
        0,
        {"PMC0": 5},
        id="F-3.3.2 AMD CntMask=1 INV",
    ),
    pytest.param(
        AMD,
        [("sel", 0, "branches", EN | OS | 2 << 24 | M.EVENTSEL_INV)],
        False,
        0,
        {"PMC0": 7},
        id="F-3.3.2 AMD CntMask=2 INV",
    ),
    pytest.param(
        AMD,
        [("msr", M.MSR_F15H_PERF_CTL0, EN | OS | 0xC0 | 1 << 32)],
        False,
        0,
        {"PMC0": 0},
        id="F-3.3 AMD EventSelect[11:8] is part of the event",
    ),
    pytest.param(
        AMD,
        [
            ("sel", 0, "instructions", EN | OS),
            ("sel", 1, "instructions", EN | OS),
            ("msr", M.MSR_AMD64_PERF_CNTR_GLOBAL_CTL, 0b10),
        ],
        False,
        0,
        {"PMC0": 0, "PMC1": 5},
        id="F-3.5.1 PerfMonV2 GlobalCtl gates",
    ),
    pytest.param(
        AMD,
        [("sel", 0, "instructions", EN | OS), ("msr", M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_SET, FRZ)],
        False,
        0,
        {"PMC0": 0},
        id="F-3.5.1 PMCF stops counting",
    ),
    pytest.param(
        {"vendor": "amd", "pmu_version": "legacy"},
        [("sel", 0, "instructions", EN | OS)],
        False,
        0,
        {"PMC0": 5},
        id="F-3.5.1 AMD legacy: no global gate",
    ),
]


def _setup(cpu: Cpu, s: list[int], steps: list[Step]) -> None:
    for step in steps:
        if step[0] == "sel":
            _, i, event, flags = step
            program(cpu, s, i, event, flags)
        elif step[0] == "msr":
            cpu.wrmsr(s, step[1], step[2])
        else:
            cpu.set_svme(s, step[1])


@pytest.mark.parametrize(("cfg", "steps", "guest", "cpl", "expected"), COUNTING)
def test_counting_rules(
    cfg: dict[str, Any], steps: list[Step], guest: bool, cpl: int, expected: dict[str, int]
) -> None:
    cpu, s = make(**cfg)
    _setup(cpu, s, steps)
    cpu.retire(s, guest=guest, cpl=cpl, instructions=5, branches=2, cycles=7)
    got = {name: s[cpu.layout.index(name)] for name in expected}
    assert got == expected


# -- AMD Host/GuestOnly (F-3.4): (HO, GO) -> counts in (host, guest) ---------------------
SVME_ON = {(0, 0): (True, True), (0, 1): (False, True), (1, 0): (True, False), (1, 1): (True, True)}
# EFER.SVME=0 (there is no guest mode): open point 6.
SVME_OFF = {
    "linux": {(0, 0): True, (0, 1): False, (1, 0): False, (1, 1): False},  # F-3.4.1 (default)
    "apm": {(0, 0): True, (0, 1): False, (1, 0): True, (1, 1): True},  # the APM table reading
}

HG_ROWS = [
    pytest.param(
        policy,
        ho,
        go,
        1,
        guest,
        SVME_ON[ho, go][guest],
        id=f"F-3.4 SVME=1 HO={ho} GO={go} {'guest' if guest else 'host'} ({policy})",
    )
    for policy in ("linux", "apm")
    for ho in (0, 1)
    for go in (0, 1)
    for guest in (False, True)
] + [
    pytest.param(
        policy, ho, go, 0, False, SVME_OFF[policy][ho, go], id=f"F-3.4.1 SVME=0 HO={ho} GO={go} host ({policy})"
    )
    for policy in ("linux", "apm")
    for ho in (0, 1)
    for go in (0, 1)
]


@pytest.mark.parametrize(("policy", "ho", "go", "svme", "guest", "counts"), HG_ROWS)
def test_amd_host_guest_only(policy: str, ho: int, go: int, svme: int, guest: bool, counts: bool) -> None:
    cpu, s = make(vendor="amd", svme_off_filter=policy)
    cpu.set_svme(s, bool(svme))
    program(cpu, s, 0, "instructions", EN | OS | USR | (HO if ho else 0) | (GO if go else 0))
    cpu.retire(s, guest=guest, cpl=0, instructions=4)
    assert s[cpu.pmc] == (4 if counts else 0)


def test_amd_guest_only_stops_at_vmexit_without_software() -> None:
    """F-3.4.3: a GuestOnly counter follows VMRUN/#VMEXIT by itself."""
    cpu, s = make(vendor="amd")
    cpu.set_svme(s, True)
    program(cpu, s, 0, "instructions", EN | OS | USR | GO)
    cpu.svm_vmrun(s)
    cpu.retire(s, guest=cpu.guest_mode(s), cpl=3, instructions=3)
    cpu.svm_vmexit(s, EXIT_TIMER)
    cpu.retire(s, guest=cpu.guest_mode(s), cpl=0, instructions=10)
    assert s[cpu.pmc] == 3


# -- overflow and status (F-1.7.3, F-1.8.1, F-3.5.3) ----------------------------------


@pytest.mark.parametrize("int_bit", [0, INT], ids=["INT=0", "INT=1"])
@pytest.mark.parametrize(
    "cfg",
    [
        pytest.param({**INTEL, "gp_width": 3}, id="F-1.7.3 Intel"),
        pytest.param({**AMD, "gp_width": 3}, id="F-3.5.3 AMD PerfMonV2"),
    ],
)
def test_wrap_sets_status_with_and_without_int(cfg: dict[str, Any], int_bit: int) -> None:
    cpu, s = make(**cfg)
    cpu.write_lvtpc(s, NMI)
    program(cpu, s, 1, "instructions", EN | OS | int_bit, value=6)
    cpu.retire(s, guest=False, cpl=0, instructions=1)
    assert (s[cpu.pmc + 1], s[cpu.global_status]) == (7, 0)
    cpu.retire(s, guest=False, cpl=0, instructions=3)
    assert s[cpu.pmc + 1] == 2, "F-1.8.1 the counter keeps counting after the wrap"
    assert s[cpu.global_status] == 0b10
    assert s[cpu.nmi_pending] == (1 if int_bit else 0)
    assert len(pmis(cpu)) == (1 if int_bit else 0)
    cpu.wrmsr(s, clear_msr(cpu), 0b10)
    cpu.retire(s, guest=False, cpl=0, instructions=1)
    assert s[cpu.global_status] == 0, "F-1.7.4 sticky until cleared; no new wrap"


@pytest.mark.parametrize("pmi_bit", [0, M.FIXED_PMI], ids=["PMI=0", "PMI=1"])
def test_fixed_wrap_sets_status(pmi_bit: int) -> None:
    """F-1.7.3, F-1.6.3: fixed counter wrap sets bit 32+i; PMI only with the PMI bit."""
    cpu, s = make(**INTEL, fixed_width=2)
    cpu.write_lvtpc(s, NMI)
    cpu.wrmsr(s, M.MSR_CORE_PERF_FIXED_CTR0 + 1, 3)
    cpu.wrmsr(s, M.MSR_CORE_PERF_FIXED_CTR_CTRL, (M.FIXED_OS | pmi_bit) << 4)
    cpu.wrmsr(s, M.MSR_CORE_PERF_GLOBAL_CTRL, FX << 1)
    cpu.retire(s, guest=False, cpl=0, instructions=2)
    assert s[cpu.fixed_ctr + 1] == 1
    assert s[cpu.global_status] == FX << 1
    assert s[cpu.nmi_pending] == (1 if pmi_bit else 0)


def test_amd_without_perfmonv2_wraps_without_status() -> None:
    """F-3.5.3: no status register without PerfMonV2; the counter just wraps."""
    cpu, s = make(vendor="amd", pmu_version="perfctrextcore", gp_width=3)
    cpu.write_lvtpc(s, NMI)
    program(cpu, s, 0, "instructions", EN | OS | INT, value=7)
    cpu.retire(s, guest=False, cpl=0, instructions=1)
    assert s[cpu.pmc] == 0
    assert cpu.global_status == -1
    assert s[cpu.nmi_pending] == 1, "F-3.5.4 INT still raises the PMI"


def test_simultaneous_overflows_raise_one_pmi() -> None:
    """F-1.8.4: simultaneous overflows produce one PMI; status shows every source."""
    cpu, s = make(**INTEL, gp_width=3, fixed_width=3)
    cpu.write_lvtpc(s, M.APIC_DM_FIXED | FIXED_VEC)
    program(cpu, s, 0, "instructions", EN | OS | INT, value=7)
    program(cpu, s, 1, "cycles", EN | OS | INT, value=7)
    cpu.wrmsr(s, M.MSR_CORE_PERF_FIXED_CTR0, 7)
    cpu.wrmsr(s, M.MSR_CORE_PERF_FIXED_CTR_CTRL, M.FIXED_OS | M.FIXED_PMI)
    cpu.wrmsr(s, M.MSR_CORE_PERF_GLOBAL_CTRL, FX | 0b11)
    cpu.retire(s, guest=False, cpl=0, instructions=1)
    assert s[cpu.global_status] == FX | 0b11
    assert len(pmis(cpu)) == 1
    assert s[cpu.irr] == 1 << FIXED_VEC


# -- PMI through LVTPC (F-2.3 - F-2.8) ------------------------------------------------
# (vendor, LVTPC, NMI_PENDING after, IRR after, LVTPC after)
LVTPC_ROWS = [
    pytest.param("intel", NMI, 1, 0, NMI | MASKED, id="F-2.4 F-2.5 Intel NMI mode, auto-masked"),
    pytest.param(
        "intel",
        FIXED_VEC,
        0,
        1 << FIXED_VEC,
        FIXED_VEC | MASKED,
        id="F-2.4 F-2.5 Intel Fixed mode sets IRR, auto-masked",
    ),
    pytest.param("amd", NMI, 1, 0, NMI, id="F-2.6 AMD NMI mode, not masked"),
    pytest.param("amd", FIXED_VEC, 0, 1 << FIXED_VEC, FIXED_VEC, id="F-2.6 AMD Fixed mode sets IRR, not masked"),
    pytest.param("intel", NMI | MASKED, 0, 0, NMI | MASKED, id="F-2.8 Intel masked: dropped"),
    pytest.param("amd", FIXED_VEC | MASKED, 0, 0, FIXED_VEC | MASKED, id="F-2.8 AMD masked: dropped"),
]


@pytest.mark.parametrize(("vendor", "lvtpc", "nmi", "irr", "after"), LVTPC_ROWS)
def test_overflow_pmi_through_lvtpc(vendor: str, lvtpc: int, nmi: int, irr: int, after: int) -> None:
    cpu, s = make(vendor=vendor, gp_width=2)
    cpu.write_lvtpc(s, lvtpc)
    program(cpu, s, 0, "instructions", EN | OS | INT, value=3)
    cpu.retire(s, guest=False, cpl=0, instructions=1)
    assert (s[cpu.nmi_pending], s[cpu.irr], s[cpu.lvtpc]) == (nmi, irr, after)
    assert s[cpu.global_status] & 1, "F-2.8 the status bit is authoritative either way"
    route = -1 if lvtpc & MASKED else (2 if lvtpc == NMI else FIXED_VEC)
    assert pmis(cpu) == [("pmi", route, lvtpc)]


@pytest.mark.parametrize(
    ("vendor", "second"),
    [("intel", 0), ("amd", 1)],
    ids=["F-2.5 Intel: second PMI lost until unmask", "F-2.6 AMD: second PMI delivered"],
)
def test_second_pmi_after_auto_mask(vendor: str, second: int) -> None:
    cpu, s = make(vendor=vendor, gp_width=2)
    cpu.write_lvtpc(s, NMI)
    program(cpu, s, 0, "instructions", EN | OS | INT, value=3)
    cpu.retire(s, guest=False, cpl=0, instructions=1)
    cpu.take_nmi(s)
    cpu.iret_nmi(s)
    cpu.retire(s, guest=False, cpl=0, instructions=4)
    assert s[cpu.nmi_pending] == second
    cpu.write_lvtpc(s, NMI)  # the handler's unmask ("ack")
    assert s[cpu.nmi_pending] == second, "drop policy: unmask does not replay"


@pytest.mark.parametrize(
    ("lvtpc", "nmi", "irr"),
    [
        pytest.param(NMI, 1, 0, id="F-2.8 latch: NMI delivered on unmask"),
        pytest.param(FIXED_VEC, 0, 1 << FIXED_VEC, id="F-2.8 latch: Fixed delivered on unmask"),
    ],
)
@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_masked_pmi_latch_policy(vendor: str, lvtpc: int, nmi: int, irr: int) -> None:
    cpu, s = make(vendor=vendor, gp_width=2, masked_pmi="latch")
    cpu.write_lvtpc(s, lvtpc | MASKED)
    program(cpu, s, 0, "instructions", EN | OS | INT, value=3)
    cpu.retire(s, guest=False, cpl=0, instructions=1)
    assert (s[cpu.nmi_pending], s[cpu.irr], s[cpu.pmi_latched]) == (0, 0, 1)
    cpu.write_lvtpc(s, lvtpc | MASKED | 0x20)  # still masked: stays latched
    assert (s[cpu.nmi_pending], s[cpu.irr], s[cpu.pmi_latched]) == (0, 0, 1)
    cpu.write_lvtpc(s, lvtpc)
    assert (s[cpu.nmi_pending], s[cpu.irr], s[cpu.pmi_latched]) == (nmi, irr, 0)
    cpu.take_nmi(s)
    cpu.take_irq(s, FIXED_VEC)
    cpu.write_lvtpc(s, lvtpc)
    assert (s[cpu.nmi_pending], s[cpu.irr]) == (0, 0), "delivered once"


def test_drop_policy_has_no_latch() -> None:
    cpu, s = make(vendor="intel", gp_width=2)
    assert cpu.pmi_latched == -1
    cpu.write_lvtpc(s, NMI | MASKED)
    program(cpu, s, 0, "instructions", EN | OS | INT, value=3)
    cpu.retire(s, guest=False, cpl=0, instructions=1)
    cpu.write_lvtpc(s, NMI)
    assert s[cpu.nmi_pending] == 0


def test_write_lvtpc_ignores_reserved_and_delivery_status() -> None:
    """F-2.2: only vector, delivery mode and mask are writable."""
    cpu, s = make(vendor="intel")
    assert s[cpu.lvtpc] == M.LVTPC_RESET == MASKED
    cpu.write_lvtpc(s, 0xFFFF_FFFF)
    assert s[cpu.lvtpc] == 0x1_07FF


# -- freeze on PMI (F-1.9, F-3.7) ---------------------------------------------------


@pytest.mark.parametrize("version", [2, 3])
def test_legacy_freeze_clears_global_ctrl(version: int) -> None:
    """F-1.9.1: legacy Freeze_PerfMon_On_PMI clears GLOBAL_CTRL at the PMI."""
    cpu, s = make(**INTEL, pmu_version=version, gp_width=3)
    cpu.write_lvtpc(s, NMI)
    cpu.wrmsr(s, DEBUGCTL, FREEZE_PERFMON | FREEZE_LBRS | 1)
    program(cpu, s, 0, "instructions", EN | OS | INT, value=7)
    program(cpu, s, 1, "cycles", EN | OS)
    cpu.retire(s, guest=False, cpl=0, instructions=1)
    assert s[cpu.global_ctrl] == 0
    assert s[cpu.global_status] == 0b01, "F-1.9.3 CTR_Frz is v4+ only"
    assert s[cpu.debugctl] & 1 == 0, "F-1.9.2 legacy LBR freeze clears DEBUGCTL.LBR"
    cpu.retire(s, guest=False, cpl=0, instructions=5)
    assert (s[cpu.pmc], s[cpu.pmc + 1]) == (0, 1)
    cpu.wrmsr(s, M.MSR_CORE_PERF_GLOBAL_CTRL, 0b11)
    cpu.retire(s, guest=False, cpl=0, instructions=2)
    assert (s[cpu.pmc], s[cpu.pmc + 1]) == (2, 3)


@pytest.mark.parametrize("version", [4, 5, 6])
def test_streamlined_freeze_sets_ctr_frz(version: int) -> None:
    """F-1.9.3, F-1.9.4, F-1.7.6: v4+ sets CTR_Frz/LBR_Frz; OVF_CTRL unfreezes."""
    cpu, s = make(**INTEL, pmu_version=version, gp_width=3)
    cpu.write_lvtpc(s, NMI)
    cpu.wrmsr(s, DEBUGCTL, FREEZE_PERFMON | FREEZE_LBRS | 1)
    program(cpu, s, 0, "instructions", EN | OS | INT, value=7)
    program(cpu, s, 1, "cycles", EN | OS)
    cpu.wrmsr(s, M.MSR_CORE_PERF_FIXED_CTR_CTRL, M.FIXED_OS)
    cpu.wrmsr(s, M.MSR_CORE_PERF_GLOBAL_CTRL, FX | 0b11)
    cpu.retire(s, guest=False, cpl=0, instructions=1)
    assert s[cpu.global_ctrl] == FX | 0b11, "GLOBAL_CTRL untouched"
    assert s[cpu.global_status] == FRZ | LBR_FRZ | 0b01
    assert s[cpu.debugctl] & 1 == 1, "F-1.9.4 DEBUGCTL.LBR left alone"
    cpu.retire(s, guest=False, cpl=0, instructions=5)
    assert (s[cpu.pmc], s[cpu.pmc + 1], s[cpu.fixed_ctr]) == (0, 1, 1)
    cpu.wrmsr(s, M.MSR_CORE_PERF_GLOBAL_OVF_CTRL, FRZ | LBR_FRZ | 0b01)
    assert s[cpu.global_status] == 0
    cpu.retire(s, guest=False, cpl=0, instructions=2)
    assert (s[cpu.pmc], s[cpu.pmc + 1], s[cpu.fixed_ctr]) == (2, 3, 3)


def test_amd_fpmci_sets_pmcf() -> None:
    """F-3.7.1: DebugCtl FPMCI sets PMCF, FLBRI sets LBRSF; StatusClr unfreezes."""
    cpu, s = make(**AMD, gp_width=3)
    cpu.write_lvtpc(s, NMI)
    cpu.wrmsr(s, DEBUGCTL, FREEZE_PERFMON | FREEZE_LBRS)
    program(cpu, s, 0, "instructions", EN | OS | INT, value=7)
    program(cpu, s, 1, "cycles", EN | OS)
    cpu.retire(s, guest=False, cpl=0, instructions=1)
    assert s[cpu.global_status] == FRZ | LBR_FRZ | 0b01
    assert s[cpu.global_ctrl] == 0b11
    cpu.retire(s, guest=False, cpl=0, instructions=5)
    assert (s[cpu.pmc], s[cpu.pmc + 1]) == (0, 1)
    cpu.wrmsr(s, M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_CLR, FRZ)
    cpu.retire(s, guest=False, cpl=0, instructions=2)
    assert (s[cpu.pmc], s[cpu.pmc + 1]) == (2, 3)


@pytest.mark.parametrize("cfg", [pytest.param(INTEL, id="intel"), pytest.param(AMD, id="amd")])
def test_freeze_happens_at_raise_even_if_lvtpc_masked(cfg: dict[str, Any]) -> None:
    """F-1.9.5: the freeze takes effect when the PMI is raised, not delivered."""
    cpu, s = make(**cfg, gp_width=2)
    cpu.write_lvtpc(s, NMI | MASKED)
    cpu.wrmsr(s, DEBUGCTL, FREEZE_PERFMON)
    program(cpu, s, 0, "instructions", EN | OS | INT, value=3)
    cpu.retire(s, guest=False, cpl=0, instructions=1)
    assert s[cpu.global_status] & FRZ
    assert s[cpu.nmi_pending] == 0


@pytest.mark.parametrize("cfg", [pytest.param(INTEL, id="intel"), pytest.param(AMD, id="amd")])
def test_no_freeze_without_int_or_without_debugctl(cfg: dict[str, Any]) -> None:
    """F-1.9 trigger: a counter *with PMI enabled* overflows, with the freeze bit set."""
    cpu, s = make(**cfg, gp_width=2)
    cpu.write_lvtpc(s, NMI)
    cpu.wrmsr(s, DEBUGCTL, FREEZE_PERFMON)
    program(cpu, s, 0, "instructions", EN | OS, value=3)  # no INT
    cpu.retire(s, guest=False, cpl=0, instructions=1)
    assert s[cpu.global_status] == 0b01
    cpu.wrmsr(s, DEBUGCTL, 0)
    program(cpu, s, 1, "instructions", EN | OS | INT, value=3)
    cpu.retire(s, guest=False, cpl=0, instructions=1)
    assert s[cpu.global_status] == 0b11
    assert s[cpu.nmi_pending] == 1


# -- properties ---------------------------------------------------------------------
PROPS = settings(max_examples=60, deadline=None)
EVENTS = ("instructions", "cycles", "branches", "unknown")


@st.composite
def worlds(draw: st.DrawFn, vendor: str, pmi: bool = True, cmask: bool = True) -> Any:
    """A CPU of ``vendor`` with random narrow counters, programming and mode."""
    if vendor == "intel":
        version: int | str = draw(st.sampled_from([1, 2, 3, 4, 5]))
        num_fixed = 0 if version == 1 else draw(st.integers(0, 2))
        kw: dict[str, Any] = {"num_fixed": num_fixed, "fixed_width": draw(st.integers(2, 4))}
    else:
        version = draw(st.sampled_from(["legacy", "perfctrextcore", "perfmonv2"]))
        kw = {"svme_off_filter": draw(st.sampled_from(["linux", "apm"]))}
    cpu, s = make(
        vendor=vendor,
        pmu_version=version,
        num_gp=draw(st.integers(1, 3)),
        gp_width=draw(st.integers(2, 4)),
        **kw,
    )
    for i in range(cpu.cfg.num_gp):
        event = draw(st.sampled_from(EVENTS))
        sel = ev(cpu, event) if event != "unknown" else 0x2E
        sel |= draw(st.sampled_from([EN, EN, EN, EN, 0]))
        sel |= draw(st.sampled_from([OS, USR, OS | USR, OS | USR, 0]))
        if pmi and draw(st.integers(0, 3)):
            sel |= INT
        if cmask:
            sel |= draw(st.sampled_from([0, 0, 0, 1, 2])) << 24
            sel |= draw(st.sampled_from([0, M.EVENTSEL_INV]))
        if cpu.cfg.amd:
            sel |= draw(st.sampled_from([0, 0, 0, GO, HO, GO | HO]))
        cpu.wrmsr(s, sel_msr(cpu, i), sel)
        cpu.wrmsr(s, ctr_msr(cpu, i), draw(st.integers(0, cpu.gp_mask)))
    if cpu.cfg.num_fixed:
        nib = st.integers(0, 15).map(lambda n: n & ~M.FIXED_ANY & ~(0 if pmi else M.FIXED_PMI))
        fcc = sum(draw(nib) << (4 * j) for j in range(cpu.cfg.num_fixed))
        cpu.wrmsr(s, M.MSR_CORE_PERF_FIXED_CTR_CTRL, fcc)
        for j in range(cpu.cfg.num_fixed):
            cpu.wrmsr(s, M.MSR_CORE_PERF_FIXED_CTR0 + j, draw(st.integers(0, cpu.fixed_mask)))
    if cpu.cfg.has_global_regs:
        bits = [1 << i for i in range(cpu.cfg.num_gp)]
        bits += [FX << j for j in range(cpu.cfg.num_fixed)]
        cpu.wrmsr(s, ctrl_msr(cpu), sum(b for b in bits if draw(st.integers(0, 3))))
        status = sum(b for b in bits if draw(st.booleans()))
        if cpu.cfg.has_status_set and draw(st.integers(0, 5)) == 0:
            status |= FRZ
        s[cpu.global_status] = status
    cpu.wrmsr(s, DEBUGCTL, draw(st.sampled_from([0, FREEZE_PERFMON, FREEZE_LBRS | 1])))
    cpu.write_lvtpc(s, draw(st.sampled_from([NMI, FIXED_VEC, NMI | MASKED, FIXED_VEC | MASKED])))
    if cpu.cfg.amd:
        cpu.set_svme(s, draw(st.booleans()))
    guest = draw(st.booleans()) if cpu.cfg.amd and cpu.svme(s) else False
    cpl = draw(st.sampled_from([0, 3]))
    cpu.log.clear()
    return cpu, s, guest, cpl


def _singles(cpu: Cpu, s: list[int], guest: bool, cpl: int, n: int, b: int, i: int = 1) -> int | None:
    """Retire ``n`` units of ``i`` instructions and ``b`` branches one unit at a
    time; return the 1-based index of the unit that raised the first PMI."""
    first = None
    for k in range(1, n + 1):
        before = len(cpu.log)
        cpu.retire(s, guest=guest, cpl=cpl, instructions=i, branches=b)
        if first is None and any(e[0] == "pmi" for e in cpu.log[before:]):
            first = k
    return first


@pytest.mark.parametrize("vendor", ["intel", "amd"])
@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=st.integers(1, 24), i=st.integers(1, 3), b=st.integers(0, 3))
def test_bulk_retire_equals_single_retires_until_pmi(vendor: str, data: st.DataObject, n: int, i: int, b: int) -> None:
    """retire(n units) == n x retire(1 unit) when units_until_pmi says no INT wrap
    within n; otherwise the first PMI comes exactly at that unit. A unit is ``i``
    instructions with ``b`` of them branches (i = 1: single instructions)."""
    b = min(b, i)
    cpu, s, guest, cpl = data.draw(worlds(vendor))
    u = cpu.units_until_pmi(s, guest, cpl, i, b)
    bulk = list(s)
    cpu.retire(bulk, guest=guest, cpl=cpl, instructions=n * i, branches=n * b)
    bulk_pmi = bool(pmis(cpu))
    cpu.log.clear()
    event("no INT wrap in the batch" if u is None or u > n else "INT wrap in the batch")
    if u is None or u > n:
        single = list(s)
        assert _singles(cpu, single, guest, cpl, n, b, i) is None
        assert not bulk_pmi
        assert cpu.layout.diff(single, bulk) == []
    else:
        assert u >= 1
        assert bulk_pmi
        single = list(s)
        assert _singles(cpu, single, guest, cpl, u, b, i) == u
        # Up to the unit before the PMI, bulk and single retirement agree.
        before_single, before_bulk = list(s), list(s)
        _singles(cpu, before_single, guest, cpl, u - 1, b, i)
        k = u - 1
        cpu.retire(before_bulk, guest=guest, cpl=cpl, instructions=k * i, branches=k * b)
        assert cpu.layout.diff(before_single, before_bulk) == []


@pytest.mark.parametrize("vendor", ["intel", "amd"])
@PROPS
@given(data=st.data(), n=st.integers(1, 40), b=st.integers(0, 1))
def test_bulk_retire_equals_single_retires_without_pmi_counters(
    vendor: str, data: st.DataObject, n: int, b: int
) -> None:
    """With no PMI-enabled counter, bulk and single retirement agree even across wraps."""
    cpu, s, guest, cpl = data.draw(worlds(vendor, pmi=False))
    assert cpu.units_until_pmi(s, guest, cpl, 1, b) is None
    bulk, single = list(s), list(s)
    cpu.retire(bulk, guest=guest, cpl=cpl, instructions=n, branches=n * b)
    assert _singles(cpu, single, guest, cpl, n, b) is None
    assert cpu.layout.diff(single, bulk) == []


def _oracle_counts(cpu: Cpu, s: list[int], i: int, guest: bool, cpl: int) -> str | None:
    """The counting rule for GP counter i, written from the facts independently of pmu.py."""
    sel = s[cpu.evtsel + i]
    if not sel & EN:  # F-1.4, F-3.5.1
        return None
    if cpu.cfg.has_global_regs:
        if not s[cpu.global_ctrl] >> i & 1:  # F-1.7.2, F-3.5.1
            return None
        if s[cpu.global_status] & FRZ:  # v4 CTR_Frz / AMD PMCF
            return None
    if not sel & (USR if cpl > 0 else OS):  # F-1.4, F-3.3.1
        return None
    if cpu.cfg.amd:  # F-3.4
        hg = (1 if sel & HO else 0, 1 if sel & GO else 0)
        if cpu.svme(s):
            if not SVME_ON[hg][guest]:
                return None
        elif not SVME_OFF[cpu.cfg.svme_off_filter][hg]:
            return None
    names = {v: k for k, v in M.EVENT_ENCODINGS[cpu.cfg.vendor].items()}
    return names.get(sel & 0xFF)


@pytest.mark.parametrize("vendor", ["intel", "amd"])
@PROPS
@given(data=st.data(), n=st.integers(1, 20), branches=st.integers(0, 20))
def test_counters_and_status_match_the_oracle(vendor: str, data: st.DataObject, n: int, branches: int) -> None:
    """Wrap and status consistency: each counter ends at (old + inc) mod 2^W and its
    status bit is set iff it was set or the counter wrapped (F-1.7.3, F-1.8.1, F-3.5.3)."""
    cpu, s, guest, cpl = data.draw(worlds(vendor, cmask=False))
    branches = min(branches, n)
    amount = {"instructions": n, "cycles": n, "branches": branches}
    after = list(s)
    cpu.retire(after, guest=guest, cpl=cpl, instructions=n, branches=branches)
    counters = [(cpu.pmc + i, i, cpu.gp_mask) for i in range(cpu.cfg.num_gp)]
    counters += [(cpu.fixed_ctr + j, M.FIXED_IDX_BASE + j, cpu.fixed_mask) for j in range(cpu.cfg.num_fixed)]
    for slot, bit, mask in counters:
        if bit < M.FIXED_IDX_BASE:
            stream = _oracle_counts(cpu, s, bit, guest, cpl)
        else:
            j = bit - M.FIXED_IDX_BASE
            nib = s[cpu.fixed_ctr_ctrl] >> (4 * j)
            on = (
                nib & (M.FIXED_USR if cpl > 0 else M.FIXED_OS)  # F-1.6.1
                and s[cpu.global_ctrl] >> bit & 1  # F-1.7.2
                and not s[cpu.global_status] & FRZ
            )
            stream = M.FIXED_EVENTS[j] if on else None
        inc = amount[stream] if stream else 0
        assert after[slot] == (s[slot] + inc) & mask, cpu.layout.slots[slot].name
        if cpu.global_status >= 0:
            wrapped = s[slot] + inc > mask
            expect = bool(s[cpu.global_status] >> bit & 1) or wrapped
            assert bool(after[cpu.global_status] >> bit & 1) == expect


@pytest.mark.parametrize("vendor", ["intel", "amd"])
@PROPS
@given(data=st.data(), n=st.integers(1, 9))
def test_global_ctrl_gating(vendor: str, data: st.DataObject, n: int) -> None:
    """F-1.7.2, F-3.5.1: with everything else enabled, exactly the counters whose
    GLOBAL_CTRL bit is set count; without global registers every counter counts."""
    versions = [1, 2, 4] if vendor == "intel" else ["legacy", "perfctrextcore", "perfmonv2"]
    version = data.draw(st.sampled_from(versions))
    kw: dict[str, Any] = {"num_fixed": 0 if version == 1 else 2} if vendor == "intel" else {}
    cpu, s = make(vendor=vendor, pmu_version=version, num_gp=3, **kw)
    for i in range(3):
        program(cpu, s, i, "instructions", EN | OS | USR)
    fixed_bits = sum(FX << j for j in range(cpu.cfg.num_fixed))
    if cpu.cfg.num_fixed:
        cpu.wrmsr(s, M.MSR_CORE_PERF_FIXED_CTR_CTRL, 0x33)
    ctrl = data.draw(st.integers(0, 7)) | (data.draw(st.integers(0, 3)) << 32 & fixed_bits)
    if cpu.cfg.has_global_regs:
        cpu.wrmsr(s, ctrl_msr(cpu), ctrl)
    cpu.retire(s, guest=False, cpl=data.draw(st.sampled_from([0, 3])), instructions=n)
    for i in range(3):
        on = not cpu.cfg.has_global_regs or ctrl >> i & 1
        assert s[cpu.pmc + i] == (n if on else 0)
    for j in range(cpu.cfg.num_fixed):
        assert s[cpu.fixed_ctr + j] == (n if ctrl >> (32 + j) & 1 else 0)
