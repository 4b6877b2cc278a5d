"""MSR and RDPMC semantics of the hardware model, row by row against the facts.

Every row cites the fact id (x86-pmu-hardware.md) it checks in its id string.
"""

from __future__ import annotations

from typing import Any

import pytest

from vpmu.config import MachineConfig
from vpmu.errors import Fault
from vpmu.hw import msr as M
from vpmu.hw.layout import Layout
from vpmu.hw.virt import Cpu

Setup = list[tuple[int | str, int]]


def make(**kw: Any) -> tuple[Cpu, list[int]]:
    L = Layout()
    cpu = Cpu(MachineConfig(**kw), L)
    return cpu, L.initial()


def apply(cpu: Cpu, s: list[int], setup: Setup) -> None:
    """Run setup steps: an int is a WRMSR, a str pokes a state slot directly."""
    for target, value in setup:
        if isinstance(target, str):
            s[cpu.layout.index(target)] = value
        else:
            cpu.wrmsr(s, target, value)


INTEL = {"vendor": "intel"}
V2 = {"vendor": "intel", "pmu_version": 2}
V3 = {"vendor": "intel", "pmu_version": 3}
V4 = {"vendor": "intel", "pmu_version": 4}
AMD = {"vendor": "amd"}
AMD6 = {"vendor": "amd", "num_gp": 6}
AMD_LEGACY = {"vendor": "amd", "pmu_version": "legacy", "num_gp": 4}
AMD_EXT = {"vendor": "amd", "pmu_version": "perfctrextcore", "num_gp": 6}

PMC0, PMC1 = M.MSR_IA32_PERFCTR0, M.MSR_IA32_PERFCTR0 + 1
A_PMC0, A_PMC1 = M.MSR_IA32_PMC0, M.MSR_IA32_PMC0 + 1
SEL0, SEL1 = M.MSR_P6_EVNTSEL0, M.MSR_P6_EVNTSEL0 + 1
FIX0 = M.MSR_CORE_PERF_FIXED_CTR0
FCC = M.MSR_CORE_PERF_FIXED_CTR_CTRL
STATUS = M.MSR_CORE_PERF_GLOBAL_STATUS
CTRL = M.MSR_CORE_PERF_GLOBAL_CTRL
OVF = M.MSR_CORE_PERF_GLOBAL_OVF_CTRL
SET = M.MSR_CORE_PERF_GLOBAL_STATUS_SET
INUSE = M.MSR_CORE_PERF_GLOBAL_INUSE
CAPS = M.MSR_IA32_PERF_CAPABILITIES
K7_SEL0, K7_CTR0 = M.MSR_K7_EVNTSEL0, M.MSR_K7_PERFCTR0
F15_SEL0, F15_CTR0 = M.MSR_F15H_PERF_CTL0, M.MSR_F15H_PERF_CTR0
A_STATUS = M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS
A_CTL = M.MSR_AMD64_PERF_CNTR_GLOBAL_CTL
A_CLR = M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_CLR
A_SET = M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_SET
FRZ = M.STATUS_CTR_FRZ
GO, HO = M.AMD64_EVENTSEL_GUESTONLY, M.AMD64_EVENTSEL_HOSTONLY
LBR_FRZ = M.STATUS_LBR_FRZ
FX = 1 << M.FIXED_IDX_BASE  # fixed counter 0's bit in GLOBAL_CTRL/STATUS
MASK48 = (1 << 48) - 1


# -- writes and reads that succeed ---------------------------------------------
# (config, setup, {msr: expected RDMSR value})
READS: list[Any] = [
    pytest.param(
        INTEL,
        [(PMC0, 0x80000000)],
        {PMC0: 0xFFFF_8000_0000, A_PMC0: 0xFFFF_8000_0000},
        id="F-1.5.2 legacy write sign-extends",
    ),
    pytest.param(INTEL, [(PMC0, 0x7FFFFFFF)], {PMC0: 0x7FFFFFFF}, id="F-1.5.2 legacy write of a positive EAX"),
    pytest.param(INTEL, [(PMC0, 0x12345678_00000001)], {PMC0: 1}, id="F-1.5.2 legacy write ignores EDX"),
    pytest.param(
        INTEL,
        [(PMC0, 0xFFFFFFFF_7FFFFFFF)],
        {PMC0: 0x7FFFFFFF},
        id="F-1.5.2 legacy write ignores EDX, sign from EAX[31]",
    ),
    pytest.param(INTEL, [(PMC0, 0x00000000_FFFFFFFF)], {PMC0: MASK48}, id="F-1.5.2 legacy write of -1 fills the width"),
    pytest.param(
        {**INTEL, "gp_width": 3},
        [(PMC0, 0xFFFFFFFE)],
        {PMC0: 6},
        id="F-1.5.2 legacy write sign-extends to a narrow width",
    ),
    pytest.param(
        {**INTEL, "gp_width": 3}, [(PMC0, 0x5)], {PMC0: 5}, id="F-1.5.2 legacy write truncates to a narrow width"
    ),
    pytest.param(INTEL, [(A_PMC0, MASK48)], {A_PMC0: MASK48, PMC0: MASK48}, id="F-1.5.3 full-width write of W bits"),
    pytest.param(
        INTEL,
        [(A_PMC1, 0x123_4567_89AB)],
        {PMC1: 0x123_4567_89AB, PMC0: 0, A_PMC0: 0},
        id="F-1.5.4 A_PMC1 and PERFCTR1 alias one counter",
    ),
    pytest.param(INTEL, [(PMC1, 0x42)], {A_PMC1: 0x42}, id="F-1.5.4 PERFCTR1 read via A_PMC1"),
    pytest.param(INTEL, [(FIX0, MASK48)], {FIX0: MASK48}, id="F-1.5.5 fixed counter full width"),
    pytest.param({**INTEL, "fixed_width": 4}, [(FIX0, 0xF)], {FIX0: 0xF}, id="F-1.5.5 fixed counter narrow width"),
    pytest.param(
        {**INTEL, "fixed_high_bits": "truncate"},
        [(FIX0, (1 << 48) | 5)],
        {FIX0: 5},
        id="F-1.5.5 open point 5 truncate policy",
    ),
    pytest.param({**INTEL, "num_gp": 3}, [], {CTRL: 0b111}, id="F-1.5.7 power-up GLOBAL_CTRL = GP enable bits only"),
    pytest.param(
        {**AMD, "num_gp": 5}, [], {A_CTL: 0b11111}, id="F-1.5.7 F-3.6.1 AMD power-up GlobalCtl = GP enable bits"
    ),
    pytest.param(
        {**INTEL, "num_gp": 3, "num_fixed": 2},
        [(CTRL, 0x3_0000_0007)],
        {CTRL: 0x3_0000_0007},
        id="F-1.7.1 GLOBAL_CTRL GP and fixed enables",
    ),
    pytest.param(
        V4, [(SET, 0b11 | FX | FRZ), (OVF, 0b01 | FRZ)], {STATUS: 0b10 | FX}, id="F-1.7.5 OVF_CTRL write-1-to-clear"
    ),
    pytest.param(V4, [(SET, 0b11 | FX), (OVF, 0)], {STATUS: 0b11 | FX}, id="F-1.7.5 OVF_CTRL zero bits have no effect"),
    pytest.param(V4, [(SET, 1 << 55), (OVF, 1 << 55)], {STATUS: 0}, id="F-1.7.5 OVF_CTRL clears Trace_ToPA_PMI (55)"),
    pytest.param(
        V4, [("GLOBAL_STATUS", 1 << 63), (OVF, 1 << 63)], {STATUS: 0}, id="F-1.7.5 F-6.3 CondChgd can be cleared"
    ),
    pytest.param(
        V3, [("GLOBAL_STATUS", 1 << 61 | 1), (OVF, 1 << 61 | 1)], {STATUS: 0}, id="F-1.7.5 Ovf_Uncore clearable from v3"
    ),
    pytest.param(V4, [(SET, 0b11), (OVF, 0b11)], {OVF: 0}, id="F-1.7.5 OVF_CTRL reads as 0"),
    pytest.param(V4, [(SET, 0b01), (SET, 0b10 | FX)], {STATUS: 0b11 | FX}, id="F-1.7.7 STATUS_SET write-1-to-set ORs"),
    pytest.param(
        V4,
        [(SET, 0b11 | FX | 1 << 55 | 0b11111 << 58)],
        {STATUS: 0b11 | FX | 1 << 55 | 0b11111 << 58},
        id="F-1.7.7 STATUS_SET every settable bit",
    ),
    pytest.param(V4, [(SET, 0b1)], {SET: 0}, id="F-1.7.8 STATUS_SET reads as 0"),
    pytest.param(
        {**V4, "num_gp": 3, "num_fixed": 2},
        [(SEL0, 0xC0), (SEL1, M.EVENTSEL_EN | M.EVENTSEL_OS), (SEL0 + 2, 0x3C)],
        {INUSE: 0b101},
        id="F-1.7.9 INUSE bit n = EVTSELn[7:0] != 0",
    ),
    pytest.param(
        {**V4, "num_fixed": 2},
        [(FCC, M.FIXED_USR << 4)],
        {INUSE: FX << 1},
        id="F-1.7.9 INUSE fixed bit = enable field != 0",
    ),
    pytest.param(V4, [(SEL1, M.EVENTSEL_INT)], {INUSE: 1 << 63}, id="F-1.7.9 INUSE PMI_InUse from EVTSEL.INT"),
    pytest.param(V4, [(FCC, M.FIXED_PMI)], {INUSE: 1 << 63}, id="F-1.7.9 INUSE PMI_InUse from a fixed PMI bit"),
    pytest.param(
        V4,
        [(SEL0, 0xC0 | M.EVENTSEL_INT), (FCC, M.FIXED_OS | M.FIXED_PMI)],
        {INUSE: 1 << 63 | FX | 1},
        id="F-1.7.9 INUSE all sources",
    ),
    pytest.param(INTEL, [(SEL0, 0x43_00C0)], {SEL0: 0x43_00C0}, id="F-1.4 PERFEVTSEL read back"),
    pytest.param(V3, [(SEL0, M.EVENTSEL_ANY)], {SEL0: M.EVENTSEL_ANY}, id="F-1.1.3 ANY allowed from v3"),
    pytest.param(INTEL, [], {CAPS: M.PERF_CAP_FW_WRITE}, id="F-1.2.7 PERF_CAPABILITIES.FW_WRITE"),
    pytest.param(
        {**INTEL, "full_width_writes": False}, [], {CAPS: 0}, id="F-1.2.7 no FW_WRITE without full-width writes"
    ),
    # AMD
    pytest.param(
        AMD, [(K7_CTR0, 0x1234)], {F15_CTR0: 0x1234, K7_CTR0: 0x1234}, id="F-3.2.1 K7 PERFCTR0 aliases PerfCtr0"
    ),
    pytest.param(AMD6, [(F15_CTR0 + 2 * 3, 0x77)], {K7_CTR0 + 3: 0x77}, id="F-3.2.1 PerfCtr3 aliases K7 PERFCTR3"),
    pytest.param(
        AMD, [(K7_SEL0 + 1, 0x43_0076)], {F15_SEL0 + 2: 0x43_0076}, id="F-3.2.1 K7 EVNTSEL1 aliases PerfEvtSel1"
    ),
    pytest.param(
        AMD6,
        [(F15_CTR0 + 2 * 4, 0x99)],
        {F15_CTR0 + 2 * 4: 0x99, K7_CTR0: 0},
        id="F-3.2.1 counter 4 has only the extended address",
    ),
    pytest.param(AMD_EXT, [(K7_CTR0 + 2, 5)], {F15_CTR0 + 4: 5}, id="F-3.2.1 PerfCtrExtCore aliases"),
    pytest.param(
        AMD_LEGACY,
        [(K7_CTR0 + 3, 9), (K7_SEL0 + 3, 0x41_0076)],
        {K7_CTR0 + 3: 9, K7_SEL0 + 3: 0x41_0076},
        id="F-3.2 legacy K7 counters",
    ),
    pytest.param(AMD, [(F15_CTR0, (1 << 63) | 7)], {F15_CTR0: 7}, id="F-3.5.6 PerfCtr write masked to the width"),
    pytest.param(
        {**AMD, "gp_width": 4}, [(K7_CTR0, 0x1F)], {K7_CTR0: 0xF}, id="F-3.5.6 PerfCtr write masked to a narrow width"
    ),
    pytest.param(
        AMD,
        [(F15_SEL0, GO | HO | 0xF << 32)],
        {F15_SEL0: 0x3 << 40 | 0xF << 32},
        id="F-3.3 PerfEvtSel Host/GuestOnly and event hi",
    ),
    pytest.param(AMD, [(A_CTL, 0b01)], {A_CTL: 0b01}, id="F-3.6.1 GlobalCtl write"),
    pytest.param(
        AMD, [(A_SET, 0b11 | FRZ | LBR_FRZ)], {A_STATUS: 0b11 | FRZ | LBR_FRZ}, id="F-3.6.4 StatusSet write-1-to-set"
    ),
    pytest.param(
        AMD,
        [(A_SET, 0b11 | FRZ | LBR_FRZ), (A_CLR, 0b01 | FRZ)],
        {A_STATUS: 0b10 | LBR_FRZ},
        id="F-3.6.3 StatusClr write-1-to-clear",
    ),
    pytest.param(AMD, [(A_SET, 0b11), (A_CLR, 0)], {A_STATUS: 0b11}, id="F-3.6.3 StatusClr zero bits have no effect"),
    pytest.param(AMD, [(A_SET, 0b11)], {A_SET: 0, A_CLR: 0}, id="F-3.6.3 F-3.6.4 WO regs read 0"),
]


@pytest.mark.parametrize(("cfg", "setup", "reads"), READS)
def test_msr_reads(cfg: dict[str, Any], setup: Setup, reads: dict[int, int]) -> None:
    cpu, s = make(**cfg)
    apply(cpu, s, setup)
    for msr, expected in reads.items():
        got = cpu.rdmsr(s, msr)
        assert got == expected, f"RDMSR {M.msr_name(cpu.cfg.vendor, msr)} = {got:#x}"


# -- writes that fault ---------------------------------------------------------------
# (config, setup, msr, value, substrings of the #GP message)
WRITE_FAULTS: list[Any] = [
    pytest.param(
        INTEL,
        [],
        A_PMC0,
        1 << 48,
        ["WRMSR IA32_PMC <- 0x1000000000000", "wider than the counter (0xffffffffffff)"],
        id="F-1.5.3 full-width write above the width",
    ),
    pytest.param(
        {**INTEL, "gp_width": 3},
        [],
        A_PMC1,
        8,
        ["IA32_PMC", "wider", "(0x7)"],
        id="F-1.5.3 full-width write above a narrow width",
    ),
    pytest.param(
        {**INTEL, "full_width_writes": False},
        [],
        A_PMC0,
        1,
        ["WRMSR IA32_PMC0 <- 0x1: no such MSR"],
        id="F-1.5.3 no A_PMC without FW_WRITE",
    ),
    pytest.param(
        INTEL,
        [],
        FIX0,
        1 << 48,
        ["IA32_FIXED_CTR", "wider than the counter"],
        id="F-1.5.5 fixed counter write above the width (open point 5 #GP)",
    ),
    pytest.param(
        INTEL,
        [],
        STATUS,
        0,
        ["WRMSR IA32_PERF_GLOBAL_STATUS <- 0x0: read-only"],
        id="F-1.7.2 table GLOBAL_STATUS is read-only",
    ),
    pytest.param(
        V4, [], STATUS, 1, ["IA32_PERF_GLOBAL_STATUS", "read-only"], id="F-1.7.2 table GLOBAL_STATUS read-only on v4"
    ),
    pytest.param(V4, [], INUSE, 0, ["WRMSR IA32_PERF_GLOBAL_INUSE <- 0x0: read-only"], id="F-1.7.9 INUSE is read-only"),
    pytest.param(
        INTEL,
        [],
        CTRL,
        0b100,
        ["WRMSR IA32_PERF_GLOBAL_CTRL <- 0x4", "reserved bits 0x4"],
        id="F-1.7.1 GLOBAL_CTRL bit of a missing GP counter",
    ),
    pytest.param(
        INTEL,
        [],
        CTRL,
        1 << 33,
        ["IA32_PERF_GLOBAL_CTRL", "reserved bits 0x200000000"],
        id="F-1.7.1 GLOBAL_CTRL bit of a missing fixed counter",
    ),
    pytest.param(
        INTEL,
        [],
        CTRL,
        1 << 48 | 1,
        ["reserved bits 0x1000000000000"],
        id="F-1.7.1 GLOBAL_CTRL bit 48 without PERF_METRICS",
    ),
    pytest.param(INTEL, [], CTRL, 1 << 63, ["reserved bits 0x8000000000000000"], id="F-1.7.1 GLOBAL_CTRL bit 63"),
    pytest.param(
        INTEL,
        [],
        OVF,
        1 << 40 | 1,
        ["WRMSR OVF_CTRL <- 0x10000000001", "reserved bits 0x10000000000"],
        id="F-1.7.5 OVF_CTRL reserved bit",
    ),
    pytest.param(
        V2,
        [],
        OVF,
        FRZ,
        ["OVF_CTRL", "reserved bits 0x800000000000000"],
        id="F-1.7.5 OVF_CTRL CTR_Frz reserved before v4",
    ),
    pytest.param(
        V2,
        [],
        OVF,
        1 << 61,
        ["OVF_CTRL", "reserved bits 0x2000000000000000"],
        id="F-1.7.5 OVF_CTRL Ovf_Uncore reserved before v3",
    ),
    pytest.param(
        V4,
        [],
        SET,
        1 << 63,
        ["WRMSR STATUS_SET <- 0x8000000000000000", "reserved bits 0x8000000000000000"],
        id="F-1.7.7 CondChgd not settable",
    ),
    pytest.param(
        V4, [], SET, 1 << 2, ["STATUS_SET", "reserved bits 0x4"], id="F-1.7.7 STATUS_SET bit of a missing counter"
    ),
    pytest.param(
        V3, [], SET, 1, ["WRMSR IA32_PERF_GLOBAL_STATUS_SET <- 0x1: no such MSR"], id="F-1.1.4 STATUS_SET is v4+ only"
    ),
    pytest.param(
        {**INTEL, "pmu_version": 1, "num_fixed": 0},
        [],
        CTRL,
        1,
        ["WRMSR IA32_PERF_GLOBAL_CTRL <- 0x1: no such MSR"],
        id="F-1.1.1 v1 has no GLOBAL_CTRL",
    ),
    pytest.param(
        {**INTEL, "pmu_version": 1, "num_fixed": 0},
        [],
        FIX0,
        1,
        ["IA32_FIXED_CTR0", "no such MSR"],
        id="F-1.1.1 v1 has no fixed counters",
    ),
    pytest.param(
        INTEL, [], PMC0 + 2, 1, ["WRMSR IA32_PERFCTR2 <- 0x1: no such MSR"], id="F-1.3 no PERFCTR beyond num_gp"
    ),
    pytest.param(INTEL, [], FIX0 + 1, 1, ["IA32_FIXED_CTR1", "no such MSR"], id="F-1.3 no FIXED_CTR beyond num_fixed"),
    pytest.param(INTEL, [], 0x1234, 0, ["WRMSR MSR 0x1234 <- 0x0: no such MSR"], id="F-1.3 non-existent MSR"),
    pytest.param(
        INTEL, [], SEL0, 1 << 32, ["IA32_PERFEVTSEL", "reserved bits 0x100000000"], id="F-1.4 PERFEVTSEL reserved bit"
    ),
    pytest.param(
        V2, [], SEL0, M.EVENTSEL_ANY, ["IA32_PERFEVTSEL", "reserved bits 0x200000"], id="F-1.1.3 ANY reserved before v3"
    ),
    pytest.param(
        INTEL,
        [],
        FCC,
        M.FIXED_OS << 4,
        ["IA32_FIXED_CTR_CTRL", "reserved bits 0x10"],
        id="F-1.6.1 FIXED_CTR_CTRL nibble of a missing counter",
    ),
    pytest.param(
        V2,
        [],
        FCC,
        M.FIXED_ANY,
        ["IA32_FIXED_CTR_CTRL", "reserved bits 0x4"],
        id="F-1.6.2 fixed AnyThread reserved before v3",
    ),
    pytest.param(INTEL, [], PMC0, 1 << 64, ["not a 64-bit value"], id="F-1.3 value wider than 64 bits"),
    pytest.param(INTEL, [], PMC0, -1, ["not a 64-bit value"], id="F-1.3 negative value"),
    # AMD
    pytest.param(
        AMD_LEGACY,
        [],
        A_CTL,
        1,
        ["WRMSR PerfCntrGlobalCtl <- 0x1: no such MSR"],
        id="F-3.6 AMD legacy has no global regs",
    ),
    pytest.param(
        AMD_EXT,
        [],
        A_SET,
        1,
        ["PerfCntrGlobalStatusSet", "no such MSR"],
        id="F-3.6 AMD PerfCtrExtCore has no global regs",
    ),
    pytest.param(
        AMD_LEGACY,
        [],
        F15_SEL0,
        0,
        ["WRMSR PerfEvtSel0 <- 0x0: no such MSR"],
        id="F-3.1.1 AMD legacy has no extended addresses",
    ),
    pytest.param(
        AMD6,
        [],
        K7_CTR0 + 4,
        0,
        ["MSR 0xc0010008", "no such MSR"],
        id="F-3.2.1 no K7 alias for counter 4 (0xc0010008 is not PERFCTR4)",
    ),
    pytest.param(
        AMD, [], A_STATUS, 0, ["WRMSR PerfCntrGlobalStatus <- 0x0: read-only"], id="F-3.6.2 GlobalStatus is read-only"
    ),
    pytest.param(
        AMD,
        [],
        A_CTL,
        FX,
        ["PerfCntrGlobalCtl", "reserved bits 0x100000000"],
        id="F-3.6.1 GlobalCtl has no fixed-counter bits",
    ),
    pytest.param(
        AMD,
        [],
        A_CLR,
        1 << 62,
        ["WRMSR StatusClr <- 0x4000000000000000", "reserved bits 0x4000000000000000"],
        id="F-3.6.2 StatusClr reserved bit",
    ),
    pytest.param(
        AMD,
        [],
        A_SET,
        1 << 63,
        ["WRMSR StatusSet", "reserved bits 0x8000000000000000"],
        id="F-3.6.2 StatusSet reserved bit",
    ),
    pytest.param(
        AMD,
        [],
        F15_SEL0,
        M.EVENTSEL_PIN,
        ["PerfEvtSel", "reserved bits 0x80000"],
        id="F-3.3 PerfEvtSel bit 19 reserved",
    ),
    pytest.param(
        AMD, [], F15_SEL0, 1 << 42, ["PerfEvtSel", "reserved bits 0x40000000000"], id="F-3.3 PerfEvtSel bit 42 reserved"
    ),
]


@pytest.mark.parametrize(("cfg", "setup", "msr", "value", "texts"), WRITE_FAULTS)
def test_msr_write_faults(cfg: dict[str, Any], setup: Setup, msr: int, value: int, texts: list[str]) -> None:
    cpu, s = make(**cfg)
    apply(cpu, s, setup)
    before = list(s)
    with pytest.raises(Fault) as info:
        cpu.wrmsr(s, msr, value)
    assert info.value.vector == "#GP"
    msg = str(info.value)
    assert msg.startswith("#GP: WRMSR ")
    for text in texts:
        assert text in msg
    assert s == before, "a faulting WRMSR must not change state"


@pytest.mark.parametrize(
    ("cfg", "msr", "text"),
    [
        pytest.param(INTEL, 0x1234, "#GP: RDMSR MSR 0x1234: no such MSR", id="F-1.3 non-existent MSR"),
        pytest.param(INTEL, PMC0 + 2, "#GP: RDMSR IA32_PERFCTR2: no such MSR", id="F-1.3 PERFCTR2 of 2"),
        pytest.param(V3, INUSE, "#GP: RDMSR IA32_PERF_GLOBAL_INUSE: no such MSR", id="F-1.1.4 INUSE is v4+ only"),
        pytest.param(
            {**INTEL, "pmu_version": 1, "num_fixed": 0},
            STATUS,
            "#GP: RDMSR IA32_PERF_GLOBAL_STATUS: no such MSR",
            id="F-1.1.1 v1 no STATUS",
        ),
        pytest.param(
            {**INTEL, "pmu_version": 1, "num_fixed": 0},
            CAPS,
            "#GP: RDMSR IA32_PERF_CAPABILITIES: no such MSR",
            id="F-1.2.6 v1 no PERF_CAPS",
        ),
        pytest.param(
            AMD_LEGACY,
            A_STATUS,
            "#GP: RDMSR PerfCntrGlobalStatus: no such MSR",
            id="F-3.6 AMD legacy has no global status",
        ),
        pytest.param(
            AMD_EXT, A_CTL, "#GP: RDMSR PerfCntrGlobalCtl: no such MSR", id="F-3.6 AMD PerfCtrExtCore has no global ctl"
        ),
        pytest.param(AMD, CTRL, "#GP: RDMSR MSR 0x38f: no such MSR", id="F-3.2 AMD has no Intel MSRs"),
        pytest.param(AMD, F15_CTR0 + 4, "#GP: RDMSR PerfCtr2: no such MSR", id="F-3.2 PerfCtr2 of 2"),
    ],
)
def test_rdmsr_faults(cfg: dict[str, Any], msr: int, text: str) -> None:
    cpu, s = make(**cfg)
    with pytest.raises(Fault) as info:
        cpu.rdmsr(s, msr)
    assert str(info.value) == text
    assert not cpu.has_msr(msr)


def test_msr_accesses_are_logged() -> None:
    cpu, s = make(**INTEL)
    cpu.wrmsr(s, PMC0, 5)
    assert cpu.rdmsr(s, PMC0) == 5
    assert cpu.log == [("wrmsr", PMC0, 5), ("rdmsr", PMC0, 5)]


# -- STATUS_SET side effects (F-3.6.5, F-1.7.7 / open point 2) ------------------


def _pmi_ready(cpu: Cpu, s: list[int]) -> None:
    """Unmasked NMI-mode LVTPC and freeze-on-PMI armed, so any PMI would show."""
    cpu.write_lvtpc(s, M.APIC_DM_NMI)
    cpu.wrmsr(s, M.MSR_IA32_DEBUGCTLMSR, M.DEBUGCTL_FREEZE_PERFMON_ON_PMI)


@pytest.mark.parametrize(
    ("cfg", "msr"),
    [
        pytest.param(AMD, A_SET, id="F-3.6.5 AMD StatusSet of CNT_OF raises no PMI, no freeze"),
        pytest.param(V4, SET, id="F-1.7.7 open point 2 default: STATUS_SET raises no PMI"),
    ],
)
def test_status_set_has_no_overflow_side_effects(cfg: dict[str, Any], msr: int) -> None:
    cpu, s = make(**cfg)
    _pmi_ready(cpu, s)
    event = M.EVENT_ENCODINGS[cpu.cfg.vendor]["instructions"]
    sel = M.EVENTSEL_EN | M.EVENTSEL_OS | M.EVENTSEL_INT | event
    cpu.wrmsr(s, SEL0 if cpu.cfg.intel else F15_SEL0, sel)
    cpu.wrmsr(s, msr, 0b11)
    assert s[cpu.global_status] == 0b11
    assert s[cpu.nmi_pending] == 0
    assert not [e for e in cpu.log if e[0] == "pmi"]
    cpu.retire(s, guest=False, cpl=0, instructions=3)
    assert s[cpu.pmc] == 3, "StatusSet of an overflow bit must not freeze counters"


def test_status_set_raises_pmi_when_configured() -> None:
    cpu, s = make(**V4, status_set_raises_pmi=True)
    cpu.write_lvtpc(s, M.APIC_DM_NMI)
    cpu.wrmsr(s, SET, FRZ)  # not an overflow bit: no PMI
    assert s[cpu.nmi_pending] == 0
    cpu.wrmsr(s, SET, 0b1)
    assert s[cpu.nmi_pending] == 1


@pytest.mark.parametrize(
    ("cfg", "msr"),
    [
        pytest.param(V4, SET, id="F-1.7.7 STATUS_SET CTR_Frz freezes counting"),
        pytest.param(AMD, A_SET, id="F-3.6.4 StatusSet PMCF freezes counting"),
    ],
)
def test_status_set_freeze_bit_freezes(cfg: dict[str, Any], msr: int) -> None:
    cpu, s = make(**cfg)
    sel = M.EVENTSEL_EN | M.EVENTSEL_OS | M.EVENT_ENCODINGS[cpu.cfg.vendor]["instructions"]
    cpu.wrmsr(s, SEL0 if cpu.cfg.intel else F15_SEL0, sel)
    cpu.wrmsr(s, msr, FRZ)
    cpu.retire(s, guest=False, cpl=0, instructions=4)
    assert s[cpu.pmc] == 0


# -- RDPMC (F-1.11.2, F-3.2.2) ------------------------------------------------------------
PRESET = [(A_PMC0, 0x1111), (A_PMC1, 0x2222_3333_4444), (FIX0, 0xAAAA_BBBB_CCCC)]
AMD_PRESET = [(F15_CTR0, 0x1111), (F15_CTR0 + 2, 0x2222_3333_4444)]

# (config, setup, ecx, expected value or None for #GP, substring of the fault)
RDPMC: list[Any] = [
    pytest.param(INTEL, PRESET, 0, 0x1111, "", id="F-1.11.2 GP index 0"),
    pytest.param(INTEL, PRESET, 1, 0x2222_3333_4444, "", id="F-1.11.2 GP index 1"),
    pytest.param(INTEL, PRESET, M.RDPMC_FIXED | 0, 0xAAAA_BBBB_CCCC, "", id="F-1.11.2 fixed index (1<<30)|0"),
    pytest.param(
        {**INTEL, "num_fixed": 3}, [(FIX0 + 2, 7)], M.RDPMC_FIXED | 2, 7, "", id="F-1.11.2 fixed index (1<<30)|2"
    ),
    pytest.param(INTEL, PRESET, 2, None, "RDPMC 0x2: no GP counter 2", id="F-1.11.2 invalid GP index"),
    pytest.param(
        INTEL,
        PRESET,
        M.RDPMC_FIXED | 1,
        None,
        "RDPMC 0x40000001: no fixed counter 1",
        id="F-1.11.2 invalid fixed index",
    ),
    pytest.param(
        {**INTEL, "pmu_version": 1, "num_fixed": 0},
        [],
        M.RDPMC_FIXED,
        None,
        "no fixed counter 0",
        id="F-1.11.2 v1 has no fixed type",
    ),
    pytest.param(
        INTEL, PRESET, 1 << 29, None, "no GP counter 536870912", id="F-1.11.2 PERF_METRICS type (1<<29) not modelled"
    ),
    pytest.param(INTEL, PRESET, 0x10000, None, "no GP counter 65536", id="F-1.11.2 index bits above the counters"),
    pytest.param(
        INTEL,
        PRESET,
        M.RDPMC_FAST | 1,
        None,
        "RDPMC 0x80000001: fast read on an architectural PMU (F-1.11.2)",
        id="F-1.11.2 fast bit #GP (open point 7 default)",
    ),
    pytest.param(
        {**INTEL, "rdpmc_fast": "low32"}, PRESET, M.RDPMC_FAST | 1, 0x3333_4444, "", id="F-1.11.2 fast bit low32 policy"
    ),
    pytest.param(
        {**INTEL, "rdpmc_fast": "low32"},
        PRESET,
        M.RDPMC_FAST | M.RDPMC_FIXED,
        0xBBBB_CCCC,
        "",
        id="F-1.11.2 fast fixed low32 policy",
    ),
    pytest.param(
        {**INTEL, "rdpmc_fast": "low32"},
        PRESET,
        M.RDPMC_FAST | 5,
        None,
        "no GP counter 5",
        id="F-1.11.2 fast invalid index still #GP",
    ),
    pytest.param(AMD, AMD_PRESET, 0, 0x1111, "", id="F-3.2.2 AMD index 0"),
    pytest.param(AMD, AMD_PRESET, 1, 0x2222_3333_4444, "", id="F-3.2.2 AMD index 1"),
    pytest.param(AMD6, [(F15_CTR0 + 10, 9)], 5, 9, "", id="F-3.2.2 AMD index 5"),
    pytest.param(AMD, AMD_PRESET, 2, None, "RDPMC 0x2: no counter 2", id="F-3.2.2 AMD invalid index"),
    pytest.param(AMD, AMD_PRESET, M.RDPMC_FAST, None, "no counter", id="F-3.2.2 AMD fast bit #GP"),
    pytest.param(AMD, AMD_PRESET, M.RDPMC_FIXED, None, "no counter", id="F-3.2.2 AMD has no fixed type"),
]


@pytest.mark.parametrize(("cfg", "setup", "ecx", "expected", "text"), RDPMC)
def test_rdpmc(cfg: dict[str, Any], setup: Setup, ecx: int, expected: int | None, text: str) -> None:
    cpu, s = make(**cfg)
    apply(cpu, s, setup)
    if expected is None:
        with pytest.raises(Fault) as info:
            cpu.rdpmc(s, ecx)
        assert info.value.vector == "#GP"
        assert str(info.value).startswith("#GP: RDPMC ")
        assert text in str(info.value)
    else:
        assert cpu.rdpmc(s, ecx) == expected
        assert cpu.log[-1] == ("rdpmc", ecx, expected)
