"""KVM selftests ``pmu_counters_test`` and ``pmu_event_filter_test`` as guest programs
(pmu-test-suites.md §8.1, §8.2).

``pmu_counters_test`` is Intel-only. Its measured sequence (GUEST_MEASURE_EVENT)
is modelled instruction by instruction: the enabling WRMSR, MOV $10 to ECX, ten
iterations of ENTER, CLFLUSH, MFENCE, MOV, LEAVE, LOOP (one branch each), MOV,
XOR, XOR and the disabling WRMSR — NUM_INSNS_RETIRED = 10 * 6 + 5 = 65
instructions (the enabling WRMSR counted, the disabling one not) and
NUM_BRANCH_INSNS_RETIRED = 10 branches. For a GP counter the control MSR is the
event selector (always intercepted: KVM emulates and counts the enabling WRMSR,
§5.6); for a fixed counter it is PERF_GLOBAL_CTRL (passed through).

The host iterates guest CPUID configurations (PMU version 0-5, PERF_CAPABILITIES,
the EBX event mask and length, fewer GP or fixed counters). The per-test cases
run the host's counters at version 2, once with PERF_CAPABILITIES.FW_WRITES
(counters through IA32_A_PMCx) and once without (through IA32_PERFCTRx); the
``[CPUID matrix]`` cases run one VM per guest CPUID (VcpuSpec version, counters),
where KVM's interception policy, its #GP for absent counters and reserved bits,
and its PERFCTR0/1 quirk decide what the guest sees.
"""

from __future__ import annotations

from vpmu.conform.suites import (
    Case,
    Check,
    Omission,
    Program,
    Vm,
    eq,
    faults,
    ne,
    no_fault,
    skipped,
)
from vpmu.conform.suites.machines import HOST_EVENTS, MACHINES, vcpu
from vpmu.hw import msr as M
from vpmu.kernel.env import VcpuSpec
from vpmu.kernel.pmu_filter import (
    KVM_PMU_EVENT_DENY,
    KVM_PMU_EVENT_FILTER_MAX_EVENTS,
    KVM_PMU_EVENT_FLAGS_VALID_MASK,
    masked_entry,
    raw_event,
)

NUM_LOOPS = 10
NUM_BRANCH_INSNS_RETIRED = NUM_LOOPS
NUM_INSNS_PER_LOOP = 6  # ENTER, CLFLUSH(OPT)/NOP, MFENCE, MOV, LEAVE, LOOP
NUM_EXTRA_INSNS = 5  # MOV $10 to ECX, MOV back, two XORs, one WRMSR
NUM_INSNS_RETIRED = NUM_LOOPS * NUM_INSNS_PER_LOOP + NUM_EXTRA_INSNS  # 65
MAX_NR_GP_COUNTERS = 8
MAX_NR_FIXED_COUNTERS = 3
FIXED_PMC_KERNEL = 1
NUM_BRANCHES = 42  # pmu_event_filter_test

NO_CACHE = "the model has no caches: LLC references and misses count nothing"
NO_TOPDOWN = "the model has no top-down (slots) events: they count nothing"

#: The 13 Intel architectural events (§1.8): (name, raw encoding, fixed twin or -1, assertion).
ARCH_EVENTS: tuple[tuple[str, int, int, str], ...] = (
    ("cpu-cycles", 0x003C, 1, "ne0"),
    ("instructions", 0x00C0, 0, "insns"),
    ("reference-cycles", 0x013C, 2, "ne0"),
    ("llc-references", 0x4F2E, -1, "cache"),
    ("llc-misses", 0x412E, -1, "cache"),
    ("branches", 0x00C4, -1, "branches"),
    ("branch-mispredicts", 0x00C5, -1, ""),
    ("topdown-slots", 0x01A4, 3, "slots"),
    ("topdown-be-bound", 0x02A4, -1, "ne0-td"),
    ("topdown-bad-spec", 0x0073, -1, ""),
    ("topdown-fe-bound", 0x019C, -1, "ne0-td"),
    ("topdown-retiring", 0x02C2, -1, "slots"),
    ("lbr-inserts", 0x01E4, -1, ""),
)


def measured(ctrl_msr: str, value: str, fep: bool = False) -> list[str]:
    """GUEST_MEASURE_EVENT(ctrl_msr, value, "clflush", FEP): 65 instructions, 10 branches. With
    KVM_FEP, ENTER, LEAVE, LOOP and the MOV and two XORs after the loop are emulated by KVM."""
    if not fep:
        return [
            f"wrmsr {ctrl_msr} {value}",
            "loop 1 ring=0",  # mov $10, %ecx
            f"loop {NUM_LOOPS * NUM_INSNS_PER_LOOP} ring=0 branch_every={NUM_INSNS_PER_LOOP}",  # enter..loop 1b
            "loop 3 ring=0",  # mov %edi,%ecx; xor %eax,%eax; xor %edx,%edx
            f"wrmsr {ctrl_msr} 0",
        ]
    body = ["fep", "loop 3 ring=0", "fep", "fep branch"]  # FEP enter; clflush, mfence, mov; FEP leave; FEP loop 1b
    return [
        f"wrmsr {ctrl_msr} {value}",
        "loop 1 ring=0",  # mov $10, %ecx
        *body * NUM_LOOPS,
        "fep",  # FEP mov %edi,%ecx
        "fep",  # FEP xor %eax,%eax
        "fep",  # FEP xor %edx,%edx
        f"wrmsr {ctrl_msr} 0",
    ]


def _event_checks(name: str, kind: str, tag: str) -> list[Check]:
    """guest_assert_event_count()'s switch on the event (the host supports all 13)."""
    if kind == "insns":
        return [eq(f"{name}: count", tag, NUM_INSNS_RETIRED)]
    if kind == "branches":
        return [eq(f"{name}: count", tag, NUM_BRANCH_INSNS_RETIRED)]
    if kind == "ne0":
        return [ne(f"{name}: count", tag, 0)]
    if kind == "cache":
        return [skipped(f"{name}: count", "!= 0", NO_CACHE, tag)]
    if kind == "ne0-td":
        return [skipped(f"{name}: count", "!= 0", NO_TOPDOWN, tag)]
    if kind == "slots":
        return [skipped(f"{name}: count", f">= {NUM_INSNS_RETIRED}", NO_TOPDOWN, tag)]
    return []  # no count check for this event


def _test_event(
    name: str, kind: str, rdpmc: str, pmc_msr: str, ctrl: str, value: str, tag: str, fep: bool = False
) -> tuple[list[str], list[Check]]:
    """GUEST_TEST_EVENT(): zero the counter, measure, then guest_assert_event_count()."""
    lines = [f"wrmsr {pmc_msr} 0", *measured(ctrl, value, fep)]
    lines += [
        f"rdpmc {rdpmc} ring=0 @{tag}",
        f"loop {NUM_LOOPS} ring=0 branches",  # loop . (sanity: a disabled counter does not count)
        f"rdpmc {rdpmc} ring=0 @{tag}-after",
        f"wrmsr {pmc_msr} 0xdead",
        f"rdpmc {rdpmc} ring=0 @{tag}-dead",
    ]
    checks = _event_checks(name, kind, tag)
    checks += [
        Check(f"{name}: unchanged while disabled", "== count", (tag, f"{tag}-after"), lambda a, b: a == b),
        eq(f"{name}: reads 0xdead back", f"{tag}-dead", 0xDEAD),
    ]
    return lines, checks


def arch_event_program(
    fw: bool, events: tuple[int, ...], one_counter: bool = False, fep: bool = False
) -> tuple[Program, list[Check]]:
    """guest_test_arch_events() for the given event indices (all GP counters, or idx % 8 only).
    ``fep``: with forced emulation enabled, __guest_test_arch_event() runs GUEST_TEST_EVENT
    twice per counter, without and with KVM_FEP."""
    nr_gp, nr_fixed = MACHINES["intel"].num_gp, MACHINES["intel"].num_fixed
    base = "PMC" if fw else "PERFCTR"
    prog = Program()
    checks: list[Check] = []
    for idx in events:
        name, raw, twin, kind = ARCH_EVENTS[idx]
        counters = [idx % nr_gp] if one_counter else range(nr_gp)
        for i in counters:
            prog.add(f"wrmsr EVTSEL{i} 0", f"wrmsr GLOBAL_CTRL {1 << i:#x}")
            for f in (False, True) if fep else (False,):
                sfx = "-fep" if f else ""
                lines, cks = _test_event(
                    f"{name} gp{i}{sfx}",
                    kind,
                    str(i),
                    f"{base}{i}",
                    f"EVTSEL{i}",
                    f"OS|EN|{raw:#x}",
                    f"{name}-gp{i}{sfx}",
                    f,
                )
                prog.extend(lines)
                checks += cks
        if twin < 0 or twin >= nr_fixed:
            continue  # no fixed twin, or one this (v2) guest does not enumerate (fixed counter 3)
        prog.add(f"wrmsr FIXED_CTR_CTRL {FIXED_PMC_KERNEL << 4 * twin:#x}")
        for f in (False, True) if fep else (False,):
            sfx = "-fep" if f else ""
            lines, cks = _test_event(
                f"{name} fixed{twin}{sfx}",
                kind,
                f"fixed{twin}",
                f"FIXED_CTR{twin}",
                "GLOBAL_CTRL",
                f"{1 << (M.FIXED_IDX_BASE + twin):#x}",
                f"{name}-fixed{twin}{sfx}",
                f,
            )
            prog.extend(lines)
            checks += cks
    return prog, checks


def _intel_case(name: str, title: str, section: str, vms: tuple[Vm, ...], checks: list[Check], **kw: object) -> Case:
    return Case(
        suite=kw.pop("suite", "counters"),  # type: ignore[arg-type]
        name=name,
        vendor=kw.pop("vendor", "intel"),  # type: ignore[arg-type]
        title=title,
        source=f"pmu-test-suites.md §{section}",
        machine=MACHINES[str(kw.pop("machine", "intel"))],
        host_events=HOST_EVENTS,
        vms=vms,
        checks=tuple(checks),
        **kw,  # type: ignore[arg-type]
    )


def test_arch_events(fw: bool) -> Case:
    all_events = tuple(range(len(ARCH_EVENTS)))
    prog, checks = arch_event_program(fw, all_events)
    sweep = []
    for idx in all_events:  # the sweep: one counter per event (as the multi-vCPU variant picks one)
        p, _ = arch_event_program(fw, (idx,), one_counter=True)
        sweep.append(Vm(ARCH_EVENTS[idx][0], vcpu("intel"), p.done()))
    return _intel_case(
        f"test_arch_events[{'fw' if fw else 'legacy'}]",
        "13 architectural events on every GP counter and their fixed twins: 65 / 10, disabled, 0xdead",
        "8.1.1",
        (Vm("", vcpu("intel"), prog.done()),),
        checks,
        sweep=tuple(sweep),
        notes=(
            "One guest configuration (version 2, all counters); the EBX mask and length of the CPUID matrix "
            "change nothing KVM does (events are never refused for their enumeration, §12.14); the GP and "
            "fixed counter matrices are the [CPUID matrix] cases.",
        ),
    )


def test_arch_events_fep(fw: bool) -> Case:
    """test_arch_events with forced emulation enabled (is_forced_emulation_enabled): each counter
    measured without and then with KVM_FEP."""
    all_events = tuple(range(len(ARCH_EVENTS)))
    prog, checks = arch_event_program(fw, all_events, one_counter=True, fep=True)
    return _intel_case(
        f"test_arch_events[{'fw' if fw else 'legacy'}, FEP]",
        "the architectural events without and with KVM_FEP: KVM's emulator counts instructions and branches",
        "8.1.1",
        (Vm("", vcpu("intel"), prog.done()),),
        checks,
        schedules=FEP_SCHEDULES,
        notes=(
            '__guest_test_arch_event(): GUEST_TEST_EVENT("") then GUEST_TEST_EVENT(KVM_FEP); the FEP sequence '
            "has 33 emulated instructions (ENTER, LEAVE and LOOP per iteration, then MOV, XOR, XOR), 10 of them "
            "branches (LOOP, taken or not), each a #UD exit with a full put/load; the counts stay 65 / 10.",
            "Reduced for time (each FEP measurement is 33 exits with a full put/load): one GP counter per "
            "event (idx % 8, the counter the test's multi-vCPU variant picks) plus the fixed twins, and the "
            "schedules " + ", ".join(FEP_SCHEDULES) + " (no step sweep).",
        ),
    )


#: The schedules of the FEP variant (fewer than the default set, for time).
FEP_SCHEDULES = ("none", "every:61", "every:61:timer", "random:1", "random:1:no-nmi")


def _rd_wr_counters(base: str, nr_possible: int, nr: int, fixed: bool) -> tuple[list[str], list[Check]]:
    """guest_rd_wr_counters() for counters that exist (i < nr)."""
    lines: list[str] = []
    checks: list[Check] = []
    for i in range(nr_possible):
        if i >= nr:
            continue  # not reached: the model's vCPU has every counter the test probes
        msr = f"{base}{i}"
        idx = f"RDPMC_FIXED|{i}" if fixed else str(i)
        t = f"{'fixed' if fixed else 'gp'}{i}"
        lines += [
            f"wrmsr {msr} 0xffff @wr-{t}",
            f"rdmsr {msr} @rd-{t}",
            f"rdpmc {idx} ring=0 @rdpmc-{t}",
            f"rdpmc RDPMC_FAST|{idx} ring=0 @fast-{t}",
            f"wrmsr {msr} 0 @wr0-{t}",
        ]
        checks += [
            no_fault(f"WRMSR({msr}, 0xffff)", f"wr-{t}"),
            eq(f"RDMSR({msr})", f"rd-{t}", 0xFFFF),
            eq(f"RDPMC({idx})", f"rdpmc-{t}", 0xFFFF),
            faults(f"RDPMC({idx}|FAST) #GP", f"fast-{t}"),
            no_fault(f"WRMSR({msr}, 0)", f"wr0-{t}"),
        ]
    return lines, checks


def test_gp_counters(fw: bool) -> Case:
    nr = MACHINES["intel"].num_gp
    prog = Program(".gp_fixup", "rdmsr GLOBAL_CTRL @global-ctrl")
    checks: list[Check] = [eq("PERF_GLOBAL_CTRL after RESET == GENMASK(nr_gp - 1, 0)", "global-ctrl", (1 << nr) - 1)]
    lines, cks = _rd_wr_counters("PMC" if fw else "PERFCTR", MAX_NR_GP_COUNTERS, nr, False)
    prog.extend(lines)
    checks += cks
    vm = Vm("", vcpu("intel"), prog.done())
    return _intel_case(
        f"test_gp_counters[{'fw' if fw else 'legacy'}]",
        "GP counter MSRs and RDPMC: write/read 0xffff, fast RDPMC #GP, reset PERF_GLOBAL_CTRL",
        "8.1.2",
        (vm,),
        checks,
        notes=(f"nr_gp_counters = {nr} (the host's); fewer counters: test_gp_counters[CPUID matrix].",),
    )


def test_fixed_counters() -> Case:
    nr = MACHINES["intel"].num_fixed
    prog = Program(".gp_fixup")
    lines, checks = _rd_wr_counters("FIXED_CTR", MAX_NR_FIXED_COUNTERS, nr, True)
    prog.extend(lines)
    for i in range(MAX_NR_FIXED_COUNTERS):
        prog.add(
            f"wrmsr FIXED_CTR{i} 0",
            f"wrmsr FIXED_CTR_CTRL {FIXED_PMC_KERNEL << 4 * i:#x}",
            f"wrmsr GLOBAL_CTRL {1 << (M.FIXED_IDX_BASE + i):#x}",
            f"loop {NUM_LOOPS} ring=0 branches",  # loop .
            "wrmsr GLOBAL_CTRL 0",
            f"rdmsr FIXED_CTR{i} @count-fixed{i}",
        )
        checks.append(ne(f"fixed counter {i} counts", f"count-fixed{i}", 0))
    return _intel_case(
        "test_fixed_counters",
        "fixed counter MSRs and RDPMC; each fixed counter counts a loop",
        "8.1.3",
        (Vm("", vcpu("intel"), prog.done()),),
        checks,
        notes=(f"nr_fixed_counters = {nr} (the host's), bitmask 0 (v2 guest: the bitmask needs v5).",),
    )


# --- the CPUID matrix of test_intel_counters() ----------------------------------------------------

KVM_PMU_VERSION = 2  # kvm_pmu_cap.version: KVM caps what it reports at 2 (v7.0 pmu.c)
MSR_P6_PERFCTR0, MSR_P6_PERFCTR1 = 0xC1, 0xC2
MSR_IA32_PMC0 = 0x4C1
MSR_CORE_PERF_FIXED_CTR0 = 0x309
INTEL_RDPMC_FIXED, INTEL_RDPMC_FAST = 1 << 30, 1 << 31
#: Versions of the matrix run here: v3 and v4 behave as v2 in KVM and in the guest (both see min(v, 2)
#: and KVM does not read the v5 fixed-counter bitmap), so 0, 1, 2 and 5 cover every distinct path.
MATRIX_VERSIONS = (0, 1, 2, 5)
MATRIX_NR_GP = (0, 1, 2, 3, 7, 8)


def guest_pmu_version(v: int) -> int:
    """guest_get_pmu_version(): min(kvm_pmu_version, the guest's CPUID version)."""
    return min(KVM_PMU_VERSION, v)


def _matrix_rd_wr(base: int, nr_possible: int, nr: int, or_mask: int, tag: str) -> tuple[list[str], list[Check]]:
    """guest_rd_wr_counters() for every possible counter: #GP expectations for absent ones, and
    KVM's PERFCTR0/1 quirk (writes dropped, reads 0, no #GP)."""
    lines: list[str] = []
    checks: list[Check] = []
    for i in range(nr_possible):
        msr = base + i
        ok = i < nr or bool(or_mask >> i & 1)
        expected = 0xFFFF if ok else 0
        expect_gp = not ok and msr not in (MSR_P6_PERFCTR0, MSR_P6_PERFCTR1)
        idx = i | (INTEL_RDPMC_FIXED if base == MSR_CORE_PERF_FIXED_CTR0 else 0)
        t = f"{tag}-{i}"
        lines += [
            f"wrmsr {msr:#x} 0xffff @wr-{t}",
            f"rdmsr {msr:#x} @rd-{t}",
            f"rdpmc {idx:#x} ring=0 @rdpmc-{t}",
            f"rdpmc {idx | INTEL_RDPMC_FAST:#x} ring=0 @fast-{t}",
            f"wrmsr {msr:#x} 0 @wr0-{t}",
        ]
        if expect_gp:
            checks += [faults(f"{t}: WRMSR({msr:#x}) #GP", f"wr-{t}"), faults(f"{t}: RDMSR({msr:#x}) #GP", f"rd-{t}")]
            checks.append(faults(f"{t}: WRMSR({msr:#x}, 0) #GP", f"wr0-{t}"))
        else:
            checks += [
                no_fault(f"{t}: WRMSR({msr:#x}) no fault", f"wr-{t}"),
                eq(f"{t}: RDMSR({msr:#x})", f"rd-{t}", expected),
                no_fault(f"{t}: WRMSR({msr:#x}, 0) no fault", f"wr0-{t}"),
            ]
        checks.append(
            eq(f"{t}: RDPMC({idx:#x})", f"rdpmc-{t}", expected)
            if ok
            else faults(f"{t}: RDPMC({idx:#x}) #GP", f"rdpmc-{t}")
        )
        checks.append(faults(f"{t}: RDPMC({idx | INTEL_RDPMC_FAST:#x}) #GP", f"fast-{t}"))
    return lines, checks


def _matrix_vcpu(v: int, nr_gp: int, nr_fixed: int, bitmap: int = 0) -> VcpuSpec:
    """What KVM makes of the CPUID userspace set: no counters without a version, no fixed
    counters before v2 (intel_pmu_refresh())."""
    return vcpu("intel", num_gp=nr_gp if v else 0, num_fixed=nr_fixed if v >= 2 else 0, version=v, fixed_bitmap=bitmap)


def test_gp_counters_matrix() -> Case:
    """test_gp_counters(v, perf_caps, nr_gp) over the CPUID matrix: one VM each."""
    vms: list[Vm] = []
    checks: list[Check] = []
    for v in MATRIX_VERSIONS:
        for fw in (False, True):
            for j in MATRIX_NR_GP if v else (0,):
                tag = f"v{v}-{'fw' if fw else 'legacy'}-gp{j}"
                gv = guest_pmu_version(v)
                nr = j if gv else 0
                prog = Program(".gp_fixup")
                if gv > 1:
                    prog.add(f"rdmsr GLOBAL_CTRL @{tag}-global-ctrl")
                    checks.append(eq(f"{tag}: PERF_GLOBAL_CTRL after RESET", f"{tag}-global-ctrl", (1 << nr) - 1))
                lines, cks = _matrix_rd_wr(MSR_IA32_PMC0 if fw else M.MSR_IA32_PERFCTR0, MAX_NR_GP_COUNTERS, nr, 0, tag)
                vms.append(Vm(tag, _matrix_vcpu(v, j, 0), prog.extend(lines).done()))
                checks += cks
    return _intel_case(
        "test_gp_counters[CPUID matrix]",
        "GP counters over guest CPUID versions 0, 1, 2, 5 and 0-8 counters: #GP for absent ones, the PERFCTR0/1 quirk",
        "8.1.2",
        tuple(vms),
        checks,
        schedules=MATRIX_SCHEDULES,
        notes=(
            "test_intel_counters()'s loop over versions and perf_caps: versions "
            + ", ".join(map(str, MATRIX_VERSIONS))
            + " (v3 and v4 take v2's paths), GP counters "
            + ", ".join(map(str, MATRIX_NR_GP))
            + " of the host's 8; with fewer counters than the host KVM intercepts RDPMC, PERF_GLOBAL_CTRL and "
            "the absent counters' MSRs (kvm_need_any_pmc_intercept), with version 1 it intercepts "
            "PERF_GLOBAL_CTRL (kvm_need_perf_global_ctrl_intercept). The native reference is a CPU with the "
            "guest's CPUID, plus KVM's documented PERFCTR0/1 quirk.",
        ),
    )


def test_fixed_counters_matrix() -> Case:
    """test_fixed_counters(v, perf_caps, nr_fixed, bitmask) over the CPUID matrix."""
    vms: list[Vm] = []
    checks: list[Check] = []
    for v in MATRIX_VERSIONS:
        for j in range(MAX_NR_FIXED_COUNTERS + 1) if v >= 2 else (0,):
            for k in (0, (1 << MAX_NR_FIXED_COUNTERS) - 1):
                tag = f"v{v}-fixed{j}-bitmask{k:#x}"
                gv = guest_pmu_version(v)
                nr = j if gv >= 2 else 0
                bitmask = k if gv >= 5 else 0  # never: KVM reports version 2
                prog = Program(".gp_fixup")
                lines, cks = _matrix_rd_wr(MSR_CORE_PERF_FIXED_CTR0, MAX_NR_FIXED_COUNTERS, nr, bitmask, tag)
                prog.extend(lines)
                checks += cks
                for i in range(MAX_NR_FIXED_COUNTERS):
                    t = f"{tag}-{i}"
                    if i >= nr and not bitmask >> i & 1:
                        prog.add(
                            f"wrmsr FIXED_CTR_CTRL {FIXED_PMC_KERNEL << 4 * i:#x} @ctrl-{t}",
                            f"wrmsr GLOBAL_CTRL {1 << (M.FIXED_IDX_BASE + i):#x} @global-{t}",
                        )
                        checks += [
                            faults(f"{t}: #GP for counter {i} in FIXED_CTR_CTRL", f"ctrl-{t}"),
                            faults(f"{t}: #GP for counter {i} in PERF_GLOBAL_CTRL", f"global-{t}"),
                        ]
                        continue
                    prog.add(
                        f"wrmsr FIXED_CTR{i} 0",
                        f"wrmsr FIXED_CTR_CTRL {FIXED_PMC_KERNEL << 4 * i:#x}",
                        f"wrmsr GLOBAL_CTRL {1 << (M.FIXED_IDX_BASE + i):#x}",
                        f"loop {NUM_LOOPS} ring=0 branches",
                        "wrmsr GLOBAL_CTRL 0",
                        f"rdmsr FIXED_CTR{i} @count-{t}",
                    )
                    checks.append(ne(f"{t}: fixed counter {i} counts", f"count-{t}", 0))
                vms.append(Vm(tag, _matrix_vcpu(v, MACHINES["intel"].num_gp, j, k), prog.done()))
    return _intel_case(
        "test_fixed_counters[CPUID matrix]",
        "fixed counters over guest CPUID versions 0, 1, 2, 5, 0-3 fixed counters and bitmasks 0 and 0x7",
        "8.1.3",
        tuple(vms),
        checks,
        schedules=MATRIX_SCHEDULES,
        notes=(
            "FIXED_CTR_CTRL and PERF_GLOBAL_CTRL bits of absent fixed counters are reserved: KVM injects #GP "
            "(fixed_ctr_ctrl_rsvd, global_ctrl_rsvd of intel_pmu_refresh()). The CPUID fixed-counter bitmask "
            "(v5) is not read by KVM (v7.0 intel_pmu_refresh()) and the guest ignores it below version 5, "
            "which it never sees (guest_get_pmu_version() = min(2, v)): masks 0 and 0x7 stand for the 8 the "
            "test iterates.",
        ),
    )


#: The CPUID matrix cases are many short VMs: fewer schedules than the default (no step sweep).
MATRIX_SCHEDULES = ("none", "every:3", "every:17:timer", "random:1", "random:1:no-nmi")


# --- pmu_event_filter_test ---------------------------------------------------------------------------

#: base_event_filter: Intel's architectural events plus AMD Zen's branches retired (event selects).
BASE_FILTER = (0x3C, 0xC0, 0x3C, 0x2E, 0x2E, 0xC4, 0xC5, 0xA4, 0xC2)


def _sanity(vendor: str) -> tuple[Program, list[Check]]:
    """sanity_check_pmu(): the guest code's check_msr() calls before its first GUEST_SYNC."""
    prog = Program()
    checks: list[Check] = []

    def check_msr(msr: str, bits: int, tag: str) -> None:
        prog.add(
            f"rdmsr {msr} @{tag}-0",
            f"mov v $rax^{bits:#x}",
            f"wrmsr {msr} $v",
            f"rdmsr {msr} @{tag}-1",
            f"mov v $v^{bits:#x}",
            f"wrmsr {msr} $v",
            f"rdmsr {msr} @{tag}-2",
        )
        checks.extend(
            [
                Check(f"sanity {msr} flipped", "reads back", (f"{tag}-0", f"{tag}-1"), lambda a, b: b == a ^ bits),
                Check(f"sanity {msr} restored", "reads back", (f"{tag}-0", f"{tag}-2"), lambda a, b: b == a),
            ]
        )

    if vendor == "intel":
        check_msr("GLOBAL_CTRL", 1, "sanity-gc")
        check_msr("EVTSEL0", 0xFFFF, "sanity-sel")
        check_msr("PMC0", 0xFFFF, "sanity-pmc")
    else:
        check_msr("K7_EVTSEL0", 0xFFFF, "sanity-sel")
        check_msr("PERFCTR0", 0xFFFF, "sanity-pmc")
    return prog, checks


def _filter_program(vendor: str) -> tuple[Program, list[Check]]:
    """intel_guest_code() / amd_guest_code(): the sanity check, then one measurement
    (AMD: PerfCntrGlobalCtl keeps its reset value, GP bits set)."""
    prog, checks = _sanity(vendor)
    return prog.extend(_iteration(vendor, "")), checks


def _delta(a: int | None, b: int | None) -> int:
    assert a is not None and b is not None
    return b - a


def _counting(counting: bool) -> list[Check]:
    if counting:
        return [
            Check("branches retired != 0", "delta != 0", ("branches-0", "branches-1"), lambda a, b: _delta(a, b) != 0),
            Check(
                "instructions retired != 0",
                "delta != 0",
                ("instructions-0", "instructions-1"),
                lambda a, b: _delta(a, b) != 0,
            ),
        ]
    return [
        Check("branches retired == 0", "delta == 0", ("branches-0", "branches-1"), lambda a, b: _delta(a, b) == 0),
        Check(
            "instructions retired == 0",
            "delta == 0",
            ("instructions-0", "instructions-1"),
            lambda a, b: _delta(a, b) == 0,
        ),
    ]


def _guest_events(vendor: str) -> tuple[int, ...]:
    return (0xC4, 0xC0) if vendor == "intel" else (0xC2, 0xC0)


def filter_case(vendor: str, name: str, action: str, events: tuple[int, ...], counting: bool, title: str) -> Case:
    """One filter (a fresh VM): the model's filter is a deny list of event selects. A deny list
    is given as is; an allow list A as the guest's own events that A does not contain."""
    mine = _guest_events(vendor)
    if action == "deny":
        deny = tuple(e for e in events if e in mine or e > 0xFF)
    elif action == "allow":
        deny = tuple(e for e in mine if e not in events)
    else:
        deny = ()
    prog, checks = _filter_program(vendor)
    checks += _counting(counting)
    return _intel_case(
        name,
        title,
        "8.2",
        (Vm("", vcpu(vendor, deny_events=deny), prog.done()),),
        checks,
        suite="filter",
        vendor=vendor,
        machine=vendor,
        notes=(
            f"filter {action} {[hex(e) for e in events]} as the model's deny list {[hex(e) for e in deny]}; "
            "each filter is a fresh VM (the test changes the filter between runs of one VM, KVM_REQ_PMU, which "
            "the model's static filter does not express); the native reference is a CPU on which the denied "
            "events count nothing.",
        ),
    )


def _remove(events: tuple[int, ...], *gone: int) -> tuple[int, ...]:
    return tuple(e for e in events if e not in gone)


def filter_cases(vendor: str) -> list[Case]:
    out = []
    if vendor == "amd":
        out.append(
            filter_case(vendor, "test_amd_deny_list", "deny", (0x1C2,), True, "deny event 0x1C2: 0xC2 still counts")
        )
    not_member = _remove(BASE_FILTER, 0xC0, 0xC4, 0xC2)
    out += [
        filter_case(vendor, "test_without_filter", "none", (), True, "no filter: counting"),
        filter_case(vendor, "test_member_deny_list", "deny", BASE_FILTER, False, "deny the base list: not counting"),
        filter_case(vendor, "test_member_allow_list", "allow", BASE_FILTER, True, "allow the base list: counting"),
        filter_case(vendor, "test_not_member_deny_list", "deny", not_member, True, "deny others: counting"),
        filter_case(vendor, "test_not_member_allow_list", "allow", not_member, False, "allow others: not counting"),
    ]
    if vendor == "intel":
        out += [fixed_counter_bitmap(idx) for idx in range(MACHINES["intel"].num_fixed)]
    return out


def fixed_counter_bitmap(idx: int) -> Case:
    """test_fixed_counter_bitmap() for fixed counter ``idx``: one VM per filter."""
    nr = MACHINES["intel"].num_fixed
    prog = Program(
        "wrmsr GLOBAL_CTRL 0",
        f"wrmsr FIXED_CTR{idx} 0",
        f"wrmsr FIXED_CTR_CTRL {FIXED_PMC_KERNEL << 4 * idx:#x}",
        f"wrmsr GLOBAL_CTRL {1 << (M.FIXED_IDX_BASE + idx):#x}",
        f"loop {NUM_BRANCHES} ring=0 branches",
        "wrmsr GLOBAL_CTRL 0",
        f"rdmsr FIXED_CTR{idx} @count",
    ).done()
    vms = [Vm("no filter", vcpu("intel"), tuple(p.replace("@count", "@count-none") for p in prog))]
    checks: list[Check] = [ne("no filter: counts", "count-none", 0)]
    for i in range(1 << nr):
        bitmap = 1 << i
        allowed = {j for j in range(nr) if bitmap >> j & 1}
        for action, events in (("allow", ()), ("deny", ()), ("allow", BASE_FILTER), ("deny", BASE_FILTER)):
            # A fixed-counter bitmap takes priority over the event list; the program programs no GP event.
            deny_fixed = tuple(sorted(set(range(nr)) - allowed)) if action == "allow" else tuple(sorted(allowed))
            label = f"{action} bitmap {bitmap:#x}{' + events' if events else ''}"
            tag = f"count-{action}-{bitmap:#x}{'-ev' if events else ''}"
            vms.append(
                Vm(label, vcpu("intel", deny_fixed=deny_fixed), tuple(p.replace("@count", f"@{tag}") for p in prog))
            )
            counts = (idx in allowed) == (action == "allow")
            checks.append(ne(f"{label}: counts", tag, 0) if counts else eq(f"{label}: does not count", tag, 0))
    # The step sweep: without a filter, and with the bitmap holding idx, allowed and denied.
    own = [vm for vm in vms if vm.label in ("no filter", f"allow bitmap {1 << idx:#x}", f"deny bitmap {1 << idx:#x}")]
    return _intel_case(
        f"test_fixed_counter_bitmap[{idx}]",
        f"fixed counter {idx} under allow/deny fixed-counter bitmaps, with and without the event list",
        "8.2",
        tuple(vms),
        checks,
        suite="filter",
        sweep=tuple(own),
        notes=("each filter is a fresh VM; the fixed bitmap is the model's deny_fixed list.",),
    )


# --- pmu_event_filter_test as the test runs it: one VM, the filter changed between iterations ----------

#: base_event_filter with the unit masks of the selftests' pmu.h (RAW_EVENT(eventsel, umask)).
BASE_FILTER_RAW = tuple(
    raw_event(e, u)
    for e, u in (
        (0x3C, 0x00),  # INTEL_ARCH_CPU_CYCLES
        (0xC0, 0x00),  # INTEL_ARCH_INSTRUCTIONS_RETIRED (= AMD_ZEN_INSTRUCTIONS_RETIRED)
        (0x3C, 0x01),  # INTEL_ARCH_REFERENCE_CYCLES
        (0x2E, 0x4F),  # INTEL_ARCH_LLC_REFERENCES
        (0x2E, 0x41),  # INTEL_ARCH_LLC_MISSES
        (0xC4, 0x00),  # INTEL_ARCH_BRANCHES_RETIRED
        (0xC5, 0x00),  # INTEL_ARCH_BRANCHES_MISPREDICTED
        (0xA4, 0x01),  # INTEL_ARCH_TOPDOWN_SLOTS
        (0xC2, 0x00),  # AMD_ZEN_BRANCHES_RETIRED
    )
)
NOT_MEMBER_RAW = tuple(
    e for e in BASE_FILTER_RAW if e not in (raw_event(0xC0, 0), raw_event(0xC4, 0), raw_event(0xC2, 0))
)
PMU_EVENT_FILTER_INVALID_ACTION = KVM_PMU_EVENT_DENY + 1
PMU_EVENT_FILTER_INVALID_FLAGS = KVM_PMU_EVENT_FLAGS_VALID_MASK << 1
PMU_EVENT_FILTER_INVALID_NEVENTS = KVM_PMU_EVENT_FILTER_MAX_EVENTS + 1


def _events(raw: tuple[int, ...]) -> str:
    return "events=" + ",".join(f"{e:#x}" for e in raw) if raw else ""


def _set(action: str | int, raw: tuple[int, ...] = (), **opts: int) -> str:
    words = [f"set_filter {action}", _events(raw), *(f"{k}={v:#x}" for k, v in opts.items())]
    return " ".join(w for w in words if w)


def _iteration(vendor: str, prefix: str) -> list[str]:
    """One pass of intel_guest_code()'s / amd_guest_code()'s for (;;) loop, up to its GUEST_SYNC."""
    if vendor == "intel":
        lines = [
            "wrmsr GLOBAL_CTRL 0",
            "wrmsr EVTSEL0 EN|OS|0xC4",
            "wrmsr EVTSEL1 EN|OS|0xC0",
            "wrmsr GLOBAL_CTRL 0x3",
        ]
        br, ir = "PMC0", "PMC1"
    else:
        lines = ["wrmsr K7_EVTSEL0 0", "wrmsr K7_EVTSEL0 EN|OS|0xC2", "wrmsr K7_EVTSEL1 EN|OS|0xC0"]
        br, ir = "PERFCTR0", "PERFCTR1"
    return [
        *lines,
        f"rdmsr {br} @{prefix}branches-0",
        f"rdmsr {ir} @{prefix}instructions-0",
        f"loop {NUM_BRANCHES} ring=0 branches",  # loop .
        f"rdmsr {br} @{prefix}branches-1",
        f"rdmsr {ir} @{prefix}instructions-1",
    ]


def _counting_at(prefix: str, test: str, counting: bool) -> list[Check]:
    out = []
    for what in ("branches", "instructions"):
        a, b = f"{prefix}{what}-0", f"{prefix}{what}-1"
        if counting:
            out.append(Check(f"{test}: {what} retired != 0", "delta != 0", (a, b), lambda x, y: _delta(x, y) != 0))
        else:
            out.append(Check(f"{test}: {what} retired == 0", "delta == 0", (a, b), lambda x, y: _delta(x, y) == 0))
    return out


def filter_running_vm(vendor: str) -> Case:
    """main()'s flow on one VM: sanity_check_pmu(), then test_amd_deny_list() (AMD),
    test_without_filter(), test_member_deny_list(), test_member_allow_list(),
    test_not_member_deny_list(), test_not_member_allow_list(), then test_filter_ioctl()'s
    seven ioctls, each followed here by one more pass of the loop (the original only checks
    the ioctl's return value; the pass shows what the filter in force does to counting)."""
    prog, checks = _sanity(vendor)
    steps: list[tuple[str, str | None, bool]] = []  # (test, set_filter line or None, counting)
    if vendor == "amd":
        steps.append(("test_amd_deny_list", _set("deny", (raw_event(0x1C2, 0),)), True))
    steps += [
        ("test_without_filter", None, True),  # on AMD the 0x1C2 deny list is still in force, as in the test
        ("test_member_deny_list", _set("deny", BASE_FILTER_RAW), False),
        ("test_member_allow_list", _set("allow", BASE_FILTER_RAW), True),
        ("test_not_member_deny_list", _set("deny", NOT_MEMBER_RAW), True),
        ("test_not_member_allow_list", _set("allow", NOT_MEMBER_RAW), False),
        # test_filter_ioctl(): accepted (the invalid bits drop the entry: an empty allow list) ...
        ("test_filter_ioctl: ~0, flags 0 (accepted)", _set("allow", ((1 << 64) - 1,)), False),
        # ... refused (masked entry with invalid bits): the empty allow list stays
        ("test_filter_ioctl: ~0, masked (refused)", _set("allow", ((1 << 64) - 1,), flags=1), False),
        # ... accepted: one exclude entry and no include: nothing is allowed
        (
            "test_filter_ioctl: masked (0xff, 0xff, 0xff, exclude) (accepted)",
            _set("allow", (masked_entry(0xFF, 0xFF, 0xFF, True),), flags=1),
            False,
        ),
        (
            "test_filter_ioctl: invalid action (refused)",
            _set(PMU_EVENT_FILTER_INVALID_ACTION, BASE_FILTER_RAW),
            False,
        ),
        (
            "test_filter_ioctl: invalid flags (refused)",
            _set("allow", BASE_FILTER_RAW, flags=PMU_EVENT_FILTER_INVALID_FLAGS),
            False,
        ),
        (
            "test_filter_ioctl: too many events (refused)",
            _set("allow", BASE_FILTER_RAW, nevents=PMU_EVENT_FILTER_INVALID_NEVENTS),
            False,
        ),
    ]
    if vendor == "intel":
        nr_fixed = MACHINES["intel"].num_fixed
        steps.append(
            (
                "test_filter_ioctl: fixed bitmap beyond the counters (accepted)",
                _set("allow", BASE_FILTER_RAW, fixed=~((1 << (nr_fixed + 1)) - 1) & 0xFFFFFFFF),
                True,
            )
        )
    else:
        steps.append(("test_filter_ioctl: base allow list (accepted)", _set("allow", BASE_FILTER_RAW), True))
    for n, (test, line, counting) in enumerate(steps):
        prog.add(line or "sync")  # GUEST_SYNC(0); userspace sets the test's filter, if it has one
        prefix = f"t{n}-"
        prog.extend(_iteration(vendor, prefix))
        checks += _counting_at(prefix, test, counting)
    return _intel_case(
        "pmu_event_filter_test[running VM]",
        "one VM, the filter changed between passes of the guest loop (KVM_REQ_PMU, refresh of every PMC)",
        "8.2",
        (Vm("", vcpu(vendor), prog.done()),),
        checks,
        suite="filter",
        vendor=vendor,
        machine=vendor,
        notes=(
            "main()'s order on one VM; each GUEST_SYNC is an I/O exit KVM completes and counts, after which "
            "userspace issues KVM_SET_PMU_EVENT_FILTER (filter entries are the test's RAW_EVENT values, umasks "
            "included); KVM marks every PMC (__reprogram_pmi = -1) and raises KVM_REQ_PMU, and the next entry's "
            "kvm_pmu_handle_event() refreshes eventsel_hw and fixed_ctr_ctrl_hw. The guest rewrites its "
            "selectors with unchanged values each pass, which reprograms nothing: only the ioctl's refresh "
            "applies a new filter. test_filter_ioctl()'s ioctls are each followed by one more pass (an "
            "extension: the original checks only their return values).",
        ),
    )


def fixed_counter_bitmap_running_vm(idx: int) -> Case:
    """__test_fixed_counter_bitmap() for fixed counter ``idx`` as the test runs it: one VM,
    1 + 4 * 2^nr_fixed passes of intel_run_fixed_counter_guest_code(), the filter set between them."""
    nr = MACHINES["intel"].num_fixed
    body = [
        "wrmsr GLOBAL_CTRL 0",
        f"wrmsr FIXED_CTR{idx} 0",
        f"wrmsr FIXED_CTR_CTRL {FIXED_PMC_KERNEL << 4 * idx:#x}",
        f"wrmsr GLOBAL_CTRL {1 << (M.FIXED_IDX_BASE + idx):#x}",
        f"loop {NUM_BRANCHES} ring=0 branches",
        "wrmsr GLOBAL_CTRL 0",
    ]
    prog = Program(*body, f"rdmsr FIXED_CTR{idx} @count-none")
    checks: list[Check] = [ne("no filter: counts", "count-none", 0)]
    for i in range(1 << nr):
        bitmap = 1 << i
        for action, events in (("allow", ()), ("deny", ()), ("allow", BASE_FILTER_RAW), ("deny", BASE_FILTER_RAW)):
            label = f"{action} bitmap {bitmap:#x}{' + events' if events else ''}"
            tag = f"count-{action}-{bitmap:#x}{'-ev' if events else ''}"
            prog.add(_set(action, events, fixed=bitmap)).extend(body).add(f"rdmsr FIXED_CTR{idx} @{tag}")
            counts = bool(bitmap >> idx & 1) == (action == "allow")
            checks.append(ne(f"{label}: counts", tag, 0) if counts else eq(f"{label}: does not count", tag, 0))
    return _intel_case(
        f"test_fixed_counter_bitmap[{idx}, running VM]",
        f"fixed counter {idx}: one VM, the fixed-counter bitmap changed between passes",
        "8.2",
        (Vm("", vcpu("intel"), prog.done()),),
        checks,
        suite="filter",
        notes=(
            "the guest rewrites FIXED_CTR_CTRL with the same value each pass, so only the ioctl's refresh "
            "(every PMC marked, KVM_REQ_PMU) applies the new bitmap to fixed_ctr_ctrl_hw.",
        ),
    )


def cases() -> list[Case]:
    return [
        test_arch_events(True),
        test_arch_events(False),
        test_arch_events_fep(True),
        test_gp_counters(True),
        test_gp_counters(False),
        test_fixed_counters(),
        test_gp_counters_matrix(),
        test_fixed_counters_matrix(),
        *filter_cases("intel"),
        filter_running_vm("intel"),
        *[fixed_counter_bitmap_running_vm(i) for i in range(MACHINES["intel"].num_fixed)],
        *filter_cases("amd"),
        filter_running_vm("amd"),
    ]


GAP_GP = (
    "the model's KVM injects #GP for MSRs and RDPMC indices the vCPU does not have and for reserved bits of "
    "PERF_GLOBAL_CTRL, GLOBAL_OVF_CTRL and FIXED_CTR_CTRL, and has the K7/P6 PERFCTR quirk, but it has no "
    "PERF_CAPABILITIES MSR and checks no other reserved bits (kvm_pmu_{get,set}_msr beyond those)"
)
OMISSIONS = [
    Omission(
        "counters",
        "pmu_counters_test (all)",
        "amd",
        "n/a",
        "the test requires an Intel host (§8.1; AMD port unmerged, §9.4)",
    ),
    Omission(
        "counters",
        "test_arch_events[legacy, FEP]",
        "intel",
        "not run",
        "the FEP variant runs once, with full-width writes (test_arch_events[fw, FEP]): the legacy pass "
        "differs only in the counter MSR written to zero, and its cost would push the default run over budget",
    ),
    Omission(
        "counters",
        "test_arch_events: CPUID matrix (versions 0-5, EBX mask/length)",
        "intel",
        "not expressible",
        "the EBX event mask and length only change which events the guest enumerates; KVM never refuses an "
        "event for its enumeration (§12.14) and the guest's checks depend on what the host counts, so every "
        "point of that matrix runs the same program as test_arch_events (the GP and fixed matrices are run)",
    ),
    Omission(
        "counters",
        "test_arch_events: LLC, top-down counts",
        "intel",
        "not expressible",
        f"{NO_CACHE}; {NO_TOPDOWN} (their 'disabled' and 0xdead sanity checks are run)",
    ),
    Omission(
        "counters",
        "CPUID matrix: versions 3 and 4, GP counter numbers 4-6, fixed bitmasks 1-6, FEP RDPMC",
        "intel",
        "not run",
        "for time: v3 and v4 take v2's paths in KVM and in the guest (min(2, v)), counter numbers 4-6 the "
        "paths of 3 and 7, and KVM does not read the fixed-counter bitmask; rdpmc_safe_fep() needs an "
        "emulated RDPMC (fep on RDPMC), which the guest ISA's fep does not express",
    ),
    Omission(
        "counters",
        "guest counter widths narrower than the host's",
        "intel",
        "not expressible",
        "KVM intercepts RDPMC and masks it to the guest's width (modelled), but the counter MSRs stay passed "
        "through at the host's width (v7.0 vmx_recalc_pmu_msr_intercepts): such a guest is not transparent, "
        "and no public test runs one",
    ),
    Omission(
        "filter",
        "masked events (test_masked_events)",
        "both",
        "not expressible",
        "the guest counts loads and stores (MEM_INST_RETIRED.ALL_LOADS/STORES/ANY, LS_DISPATCH), which the "
        "model's instructions do not have; the masked-entry rules themselves (umask mask/match, exclude "
        "entries) are KVM's and are modelled (kernel/pmu_filter.py, tests/test_conform_filter.py) and run "
        "in test_filter_ioctl's masked filters",
    ),
    Omission(
        "filter",
        "test_filter_ioctl (return values), test_pmu_config_disable",
        "both",
        "not expressible",
        "the ioctl's accept/reject rules are modelled and run for what they do to counting (pmu_event_filter_"
        "test[running VM]); its return values are host-side, and a VM without a PMU (KVM_PMU_CAP_DISABLE) is "
        "not modelled",
    ),
    Omission(
        "filter",
        "test_fixed_counter_bitmap",
        "amd",
        "n/a",
        "Intel fixed counters only",
    ),
    Omission(
        "selftests",
        "vmx_pmu_caps_test",
        "intel",
        "not expressible",
        f"PERF_CAPABILITIES is read-only to the guest (#GP on write): {GAP_GP}; the host-side KVM_SET_MSR checks "
        "are not guest programs",
    ),
    Omission(
        "selftests",
        "svm_pmu_host_guest_test",
        "amd",
        "not expressible",
        "step 3 needs L2 (L1's VMRUN of a nested guest that measures with its own counters and leaves with "
        "VMMCALL); steps 1, 2 and 4-9 need none, only L1's WRMSR to EFER.SVME and KVM recomputing each "
        "counter's Host-Only/Guest-Only enable from the vCPU's EFER.SVME and nested state. v7.0 does not: "
        "amd_pmu_set_msr() stuffs GuestOnly=1/HostOnly=0 into every guest selector (svm/pmu.c), so on v7.0 "
        "all four counters count in steps 1, 7 and 9 and the test fails; it needs the later series "
        "'KVM: x86/pmu: Disable Host-Only/Guest-Only events as appropriate for vCPU state' (§8.4), which "
        "the model does not have (nor guest EFER)",
    ),
]
