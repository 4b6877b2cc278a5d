"""MSR indices and bit fields, named as in msr-index.h and the manuals.

Sources: x86-pmu-hardware.md §1.3 (Intel MSR map), §3.2 (AMD), §2 (LVTPC);
kernel-mediated-pmu.md §0.1-§0.3.
"""

from __future__ import annotations

# --- Intel architectural perfmon (F-1.3) ---------------------------------
MSR_IA32_PERFCTR0 = 0xC1  # legacy counter alias, 32-bit sign-extended writes (F-1.5.2)
MSR_IA32_PMC0 = 0x4C1  # full-width alias, iff PERF_CAPABILITIES.FW_WRITE (F-1.5.3)
MSR_P6_EVNTSEL0 = 0x186
MSR_CORE_PERF_FIXED_CTR0 = 0x309
MSR_CORE_PERF_FIXED_CTR_CTRL = 0x38D
MSR_CORE_PERF_GLOBAL_STATUS = 0x38E
MSR_CORE_PERF_GLOBAL_CTRL = 0x38F
MSR_CORE_PERF_GLOBAL_OVF_CTRL = 0x390
MSR_CORE_PERF_GLOBAL_STATUS_SET = 0x391
MSR_CORE_PERF_GLOBAL_INUSE = 0x392
MSR_IA32_PERF_CAPABILITIES = 0x345
MSR_IA32_DEBUGCTLMSR = 0x1D9
MSR_X2APIC_LVTPC = 0x834  # F-2.1

# --- AMD (F-3.2) -----------------------------------------------------------
MSR_K7_EVNTSEL0 = 0xC0010000
MSR_K7_PERFCTR0 = 0xC0010004
MSR_F15H_PERF_CTL0 = 0xC0010200  # PerfEvtSel n at +2n
MSR_F15H_PERF_CTR0 = 0xC0010201  # PerfCtr n at +2n
MSR_AMD64_PERF_CNTR_GLOBAL_STATUS = 0xC0000300
MSR_AMD64_PERF_CNTR_GLOBAL_CTL = 0xC0000301
MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_CLR = 0xC0000302
MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_SET = 0xC0000303

# --- Event select bits (F-1.4, F-3.3) --------------------------------------
EVENTSEL_EVENT = 0xFF
EVENTSEL_UMASK = 0xFF00
EVENTSEL_USR = 1 << 16
EVENTSEL_OS = 1 << 17
EVENTSEL_EDGE = 1 << 18
EVENTSEL_PIN = 1 << 19
EVENTSEL_INT = 1 << 20
EVENTSEL_ANY = 1 << 21
EVENTSEL_EN = 1 << 22
EVENTSEL_INV = 1 << 23
EVENTSEL_CMASK = 0xFF << 24
AMD64_EVENTSEL_EVENT_HI = 0xF << 32
AMD64_EVENTSEL_GUESTONLY = 1 << 40
AMD64_EVENTSEL_HOSTONLY = 1 << 41
#: Selector bits KVM drops from an AMD guest's write (amd_pmu_refresh(): pmu->reserved_bits),
#: among them HostOnly and GuestOnly: the guest's vPMU has no host/guest filter.
AMD_PMU_RESERVED_BITS = 0xFFFFFFF000280000

# --- FIXED_CTR_CTRL nibble (F-1.6) -----------------------------------------
FIXED_OS = 0x1
FIXED_USR = 0x2
FIXED_ANY = 0x4
FIXED_PMI = 0x8

# --- GLOBAL_CTRL / GLOBAL_STATUS bit positions (F-1.7) -----------------------
FIXED_IDX_BASE = 32  # KVM_FIXED_PMC_BASE_IDX
STATUS_LBR_FRZ = 1 << 58
STATUS_CTR_FRZ = 1 << 59  # Intel CTR_Frz / AMD PMCF, same bit (F-1.7.2, F-3.6.2)
STATUS_ASCI = 1 << 60
STATUS_OVF_UNCORE = 1 << 61
STATUS_OVF_BUF = 1 << 62
STATUS_COND_CHGD = 1 << 63

# --- DEBUGCTL (F-1.9, F-3.7.1) ----------------------------------------------
DEBUGCTL_FREEZE_LBRS_ON_PMI = 1 << 11
DEBUGCTL_FREEZE_PERFMON_ON_PMI = 1 << 12
DEBUGCTL_FREEZE_IN_SMM = 1 << 14

# --- PERF_CAPABILITIES (F-1.2.7) --------------------------------------------
PERF_CAP_FW_WRITE = 1 << 13

# --- RDPMC index (F-1.11.2) -------------------------------------------------
RDPMC_FIXED = 1 << 30
RDPMC_FAST = 1 << 31

# --- Local APIC LVTPC (F-2.2, §0.3) -----------------------------------------
APIC_VECTOR_MASK = 0xFF
APIC_DM_MASK = 0x700
APIC_DM_FIXED = 0x000
APIC_DM_SMI = 0x200
APIC_DM_NMI = 0x400
APIC_DELIVERY_STATUS = 1 << 12
APIC_LVT_MASKED = 1 << 16
LVTPC_RESERVED = ~(APIC_VECTOR_MASK | APIC_DM_MASK | APIC_DELIVERY_STATUS | APIC_LVT_MASKED)
LVTPC_RESET = APIC_LVT_MASKED  # F-2.2
PERF_GUEST_MEDIATED_PMI_VECTOR = 0xF5  # §0.3

# --- Architectural events: (event select, umask) -> event stream -----------
INSTRUCTIONS = "instructions"
CYCLES = "cycles"
BRANCHES = "branches"
EVENT_STREAMS = (INSTRUCTIONS, CYCLES, BRANCHES)

#: Intel architectural events the model counts (F-1.2.2; suites §1.8).
INTEL_EVENTS: dict[tuple[int, int], str] = {
    (0x3C, 0x00): CYCLES,  # core cycles
    (0xC0, 0x00): INSTRUCTIONS,  # instructions retired
    (0x3C, 0x01): CYCLES,  # reference cycles: one per core cycle in this model
    (0xC4, 0x00): BRANCHES,  # branch instructions retired
}
#: AMD Zen events the model counts (suites §1.8).
AMD_EVENTS: dict[tuple[int, int], str] = {
    (0x76, 0x00): CYCLES,
    (0xC0, 0x00): INSTRUCTIONS,
    (0xC2, 0x00): BRANCHES,
}
#: Fixed counter i counts (F-1.6.5); FC2 (reference cycles) and FC3 (slots)
#: advance with core cycles in this model.
FIXED_EVENTS = (INSTRUCTIONS, CYCLES, CYCLES, CYCLES)

#: Event-select encodings a model component can ask for by name.
EVENT_ENCODINGS: dict[str, dict[str, int]] = {
    "intel": {CYCLES: 0x3C, INSTRUCTIONS: 0xC0, BRANCHES: 0xC4},
    "amd": {CYCLES: 0x76, INSTRUCTIONS: 0xC0, BRANCHES: 0xC2},
}


def lvtpc_str(v: int) -> str:
    """Render an LVTPC value the way a kernel developer reads it."""
    dm = v & APIC_DM_MASK
    mode = {APIC_DM_FIXED: f"Fixed|{v & APIC_VECTOR_MASK:#04x}", APIC_DM_NMI: "NMI", APIC_DM_SMI: "SMI"}
    text = mode.get(dm, f"DM{dm >> 8}")
    if v & APIC_LVT_MASKED:
        text += "|Masked"
    return text


def msr_name(vendor: str, msr: int) -> str:
    """Name of an MSR index, for listings and traces."""
    if vendor == "intel":
        for base, name, span in (
            (MSR_IA32_PERFCTR0, "IA32_PERFCTR", 8),
            (MSR_IA32_PMC0, "IA32_PMC", 8),
            (MSR_P6_EVNTSEL0, "IA32_PERFEVTSEL", 8),
            (MSR_CORE_PERF_FIXED_CTR0, "IA32_FIXED_CTR", 4),
        ):
            if base <= msr < base + span:
                return f"{name}{msr - base}"
        named = {
            MSR_CORE_PERF_FIXED_CTR_CTRL: "IA32_FIXED_CTR_CTRL",
            MSR_CORE_PERF_GLOBAL_STATUS: "IA32_PERF_GLOBAL_STATUS",
            MSR_CORE_PERF_GLOBAL_CTRL: "IA32_PERF_GLOBAL_CTRL",
            MSR_CORE_PERF_GLOBAL_OVF_CTRL: "IA32_PERF_GLOBAL_OVF_CTRL",
            MSR_CORE_PERF_GLOBAL_STATUS_SET: "IA32_PERF_GLOBAL_STATUS_SET",
            MSR_CORE_PERF_GLOBAL_INUSE: "IA32_PERF_GLOBAL_INUSE",
            MSR_IA32_PERF_CAPABILITIES: "IA32_PERF_CAPABILITIES",
            MSR_IA32_DEBUGCTLMSR: "IA32_DEBUGCTL",
            MSR_X2APIC_LVTPC: "X2APIC_LVTPC",
        }
    else:
        if MSR_K7_EVNTSEL0 <= msr < MSR_K7_EVNTSEL0 + 4:
            return f"K7_EVNTSEL{msr - MSR_K7_EVNTSEL0}"
        if MSR_K7_PERFCTR0 <= msr < MSR_K7_PERFCTR0 + 4:
            return f"K7_PERFCTR{msr - MSR_K7_PERFCTR0}"
        if MSR_F15H_PERF_CTL0 <= msr < MSR_F15H_PERF_CTL0 + 12:
            n, odd = divmod(msr - MSR_F15H_PERF_CTL0, 2)
            return f"PerfCtr{n}" if odd else f"PerfEvtSel{n}"
        named = {
            MSR_AMD64_PERF_CNTR_GLOBAL_STATUS: "PerfCntrGlobalStatus",
            MSR_AMD64_PERF_CNTR_GLOBAL_CTL: "PerfCntrGlobalCtl",
            MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_CLR: "PerfCntrGlobalStatusClr",
            MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_SET: "PerfCntrGlobalStatusSet",
            MSR_IA32_DEBUGCTLMSR: "DebugCtl",
            MSR_X2APIC_LVTPC: "X2APIC_LVTPC",
        }
    return named.get(msr, f"MSR {msr:#x}")
