"""kvm-unit-tests ``x86/pmu.c`` as guest programs (pmu-test-suites.md §3).

The test's ``main()`` runs ``check_invalid_rdpmc_gp()`` and then
``check_counters()`` once per counter-MSR "pass": on Intel with the legacy
counter aliases (IA32_PERFCTRx, 32-bit sign-extended writes) and again with the
full-width aliases (IA32_A_PMCx, plus ``check_gp_counters_write_width()``); on
AMD with the F15h MSRs and again with the legacy K7 MSRs and four counters
(§3.0). Each case here is one ``check_*`` function in one pass, as its own
guest (a fresh VM, preceded by ``main()``'s preamble: PERF_GLOBAL_CTRL = 0,
LVTPC = vector 32).

The measured workload is the test's ``loop()`` asm blob, instruction by
instruction (§3.0): the enabling WRMSR of PERF_GLOBAL_CTRL, two MOVs, CLFLUSH,
MFENCE, N = 1,000,000 iterations of a ten-instruction body ending in LOOP (one
branch), the nine-instruction IBPB block (WRMSR PRED_CMD, CALL, POP, ADD, an
indirect JMP over a NOP: two branches), MOV, XOR, XOR and the disabling WRMSR.
Counting the enabling WRMSR and not the disabling one (the model's convention,
docs/fidelity.md §2; the test's own breakdown "enable 3 + disable 3") gives
exactly LOOP_INSNS = 10,000,017 instructions and LOOP_BRANCHES = 1,000,002
branches — the constants of the test, derived here from the stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from vpmu.conform.suites import (
    Case,
    Check,
    Omission,
    Program,
    Vm,
    bit_clear,
    bit_set,
    eq,
    faults,
    lt,
    skipped,
    within,
)
from vpmu.conform.suites.machines import HOST_EVENTS, MACHINES, vcpu
from vpmu.hw import msr as M

N = 1_000_000
IBPB_JMP_INSNS = 9
IBPB_JMP_BRANCHES = 2
EXTRA_INSNS = 3 + 3 + 2 + IBPB_JMP_INSNS  # enable + disable + clflush/mfence + IBPB block
LOOP_INSNS = N * 10 + EXTRA_INSNS  # 10,000,017
LOOP_BRANCHES = N + IBPB_JMP_BRANCHES  # 1,000,002
#: Instructions per cycle of the loop body in the model (a choice: real cores retire this body at
#: an IPC of 2 or more; the model needs an IPC above 1 for check_gp_counter_cmask to count at all).
LOOP_IPC = 2
KVM_FEP_INSNS = 22
KVM_FEP_BRANCHES = 5
PMI_VECTOR = 32
WIDTH_MASK = (1 << 48) - 1  # GP and fixed counter width of both machines
SOURCE = "pmu-test-suites.md §3"

NO_CACHE = "the model has no caches: LLC references and misses count nothing (docs/fidelity.md §2)"
NO_PREDICTOR = "the model has no branch predictor: branch mispredictions count nothing (docs/fidelity.md §2)"


@dataclass(frozen=True)
class Event:
    name: str
    unit_sel: int  # (umask << 8) | event select
    lo: int
    hi: int
    unexpressible: str = ""


INTEL_EVENTS = (
    Event("core cycles", 0x003C, 1 * N, 50 * N),
    # adjust_events_range(): exact on Intel with PERF_GLOBAL_CTRL (no overcount erratum in the model).
    Event("instructions", 0x00C0, LOOP_INSNS, LOOP_INSNS),
    # set_ref_cycle_expectations() scales by ref-cycles/TSC; the model has no TSC and counts
    # reference cycles as core cycles, so the factor is 1.
    Event("ref cycles", 0x013C, 1 * N, 30 * N),
    Event("llc references", 0x4F2E, 1, int(2.5 * N), NO_CACHE),
    Event("llc misses", 0x412E, 1, 1 * N, NO_CACHE),
    Event("branches", 0x00C4, LOOP_BRANCHES, LOOP_BRANCHES),
    Event("branch misses", 0x00C5, 1, N // 10, NO_PREDICTOR),
)
AMD_EVENTS = (
    Event("core cycles", 0x0076, 1 * N, 50 * N),
    Event("instructions", 0x00C0, 10 * N, int(10.2 * N)),
    Event("branches", 0x00C2, 1 * N, int(1.1 * N)),
    Event("branch misses", 0x00C3, 1, N // 10, NO_PREDICTOR),
)
FIXED_EVENTS = (
    Event("fixed 0", 0, 10 * N, int(10.2 * N)),
    Event("fixed 1", 1, 1 * N, 30 * N),
    Event("fixed 2", 2, N // 10, 30 * N),
)


@dataclass(frozen=True)
class Pass:
    """What lib/x86/pmu.c found, and which counter MSRs this pass uses (§2, §3.0)."""

    vendor: str
    name: str  # "legacy", "full-width", "F15h", "K7"
    ctr_fmt: str  # counter MSR name in the guest assembly
    sel_fmt: str  # event-select MSR name
    nr_gp: int
    nr_fixed: int
    full_writes: bool  # pmu_use_full_writes()

    @property
    def intel(self) -> bool:
        return self.vendor == "intel"

    @property
    def events(self) -> tuple[Event, ...]:
        return INTEL_EVENTS if self.intel else AMD_EVENTS

    def ctr(self, i: int) -> str:
        return self.ctr_fmt.format(i)

    def sel(self, i: int) -> str:
        return self.sel_fmt.format(i)

    @property
    def instructions(self) -> Event:
        return self.events[1]

    @property
    def branches(self) -> Event:
        return self.events[5] if self.intel else self.events[2]


PASSES = {
    "intel": (
        Pass("intel", "legacy", "PERFCTR{}", "EVTSEL{}", 8, 3, False),
        Pass("intel", "full-width", "PMC{}", "EVTSEL{}", 8, 3, True),
    ),
    "amd": (
        Pass("amd", "F15h", "PMC{}", "EVTSEL{}", 6, 0, False),
        Pass("amd", "K7", "PERFCTR{}", "K7_EVTSEL{}", 4, 0, False),
    ),
}

EN, INT = "EN", "INT"
OS_USR = "OS|USR"


def preamble() -> Program:
    """main(): #GP fixups (test_for_exception), the PMI handler on vector 32, PERF_GLOBAL_CTRL = 0."""
    return Program(
        ".gp_fixup",
        ".pmi_handler count",
        "wrmsr GLOBAL_CTRL 0",
        f"lvtpc {PMI_VECTOR}",
    )


def loop_blob(mask: str | None) -> list[str]:
    """LOOP_ASM: ``__precise_loop(mask)`` (with PERF_GLOBAL_CTRL), or ``__loop()`` (mask None)."""
    return [
        f"wrmsr GLOBAL_CTRL {mask}" if mask is not None else "loop 1 ring=0",  # _wrmsr1 (or nop)
        "loop 2 ring=0",  # mov %ecx,%edi; mov %ebx,%ecx
        "loop 1 ring=0",  # clflush (buf)
        "loop 1 ring=0",  # mfence
        # 1: mov (buf),r; add $64,r; 7 x nop; loop 1b — two per cycle (LOOP_IPC), so CMASK=2 counts
        f"loop {10 * N} ring=0 branch_every=10 ipc={LOOP_IPC}",
        "loop 3 ring=0",  # mov $1,%eax; xor %edx,%edx; mov $73,%ecx
        "loop 1 ring=0",  # wrmsr PRED_CMD (IBPB): passed through by KVM, a plain instruction here
        "loop 1 ring=0 branches",  # call 1f
        "loop 2 ring=0",  # 1: pop %rax; add $(2f-1b),%rax
        "loop 1 ring=0 branches",  # jmp *%rax (over one nop)
        "loop 1 ring=0",  # 2: nop
        "loop 3 ring=0",  # mov %edi,%ecx; xor %eax,%eax; xor %edx,%edx
        "wrmsr GLOBAL_CTRL 0" if mask is not None else "loop 1 ring=0",  # _wrmsr1 (or nop)
    ]


@dataclass
class Counter:
    """pmu_counter_t: a GP counter (index) or a fixed counter (``fixed`` set)."""

    index: int
    config: str
    fixed: bool = False

    @property
    def global_idx(self) -> int:
        return M.FIXED_IDX_BASE + self.index if self.fixed else self.index


def start_event(p: Pass, c: Counter, count: str = "0") -> list[str]:
    """__start_event(): counter preset, then enable (selector EN or the FIXED_CTR_CTRL nibble), LVTPC."""
    if not c.fixed:
        lines = [f"wrmsr {p.ctr(c.index)} {count}", f"wrmsr {p.sel(c.index)} {c.config}|{EN}"]
    else:
        shift = 4 * c.index
        bits = (1 if "OS" in c.config else 0) | (2 if "USR" in c.config else 0) | (8 if INT in c.config else 0)
        lines = [
            f"wrmsr FIXED_CTR{c.index} {count}",
            "rdmsr FIXED_CTR_CTRL",
            f"wrmsr FIXED_CTR_CTRL ($rax&~{0xF << shift:#x})|{bits << shift:#x}",
        ]
    return [*lines, f"lvtpc {PMI_VECTOR}"]


def stop_event(p: Pass, c: Counter, tag: str) -> list[str]:
    """__stop_event(): disable, then read the count (tagged)."""
    if not c.fixed:
        return [f"wrmsr {p.sel(c.index)} {c.config}", f"rdmsr {p.ctr(c.index)} @{tag}"]
    return [
        "rdmsr FIXED_CTR_CTRL",
        f"wrmsr FIXED_CTR_CTRL $rax&~{0xF << 4 * c.index:#x}",
        f"rdmsr FIXED_CTR{c.index} @{tag}",
    ]


def measure(p: Pass, counters: list[Counter], tags: list[str], count: str = "0") -> list[str]:
    """measure_many() / __measure(): start each, one precise loop over all of them, stop each."""
    lines: list[str] = []
    mask = 0
    for c in counters:
        lines += start_event(p, c, count)
        mask |= 1 << c.global_idx
    lines += loop_blob(f"{mask:#x}")
    for c, tag in zip(counters, tags, strict=True):
        lines += stop_event(p, c, tag)
    return lines


def clear_status() -> list[str]:
    """pmu_clear_global_status(): write the status back to the clear MSR."""
    return ["rdmsr GLOBAL_STATUS", "wrmsr GLOBAL_OVF_CTRL $rax"]


def _case(p: Pass, fn: str, title: str, section: str, program: Program, checks: list[Check], **kw: object) -> Case:
    return Case(
        suite="kut",
        name=f"{fn}[{p.name}]",
        vendor=p.vendor,
        title=title,
        source=f"{SOURCE}.{section}",
        machine=MACHINES[p.vendor],
        host_events=HOST_EVENTS,
        vms=(Vm("", vcpu(p.vendor), program.done()),),
        checks=tuple(checks),
        **kw,  # type: ignore[arg-type]
    )


def _cfg(unit_sel: int) -> str:
    return f"{OS_USR}|{unit_sel:#x}"


# --- the check_* functions ---------------------------------------------------------------------


def check_invalid_rdpmc_gp(vendor: str) -> Case:
    prog = preamble().add("rdpmc 64 ring=0 @rdpmc-64")
    p = PASSES[vendor][0]
    return Case(
        suite="kut",
        name="check_invalid_rdpmc_gp",
        vendor=vendor,
        title="RDPMC(64) raises #GP",
        source=f"{SOURCE}.1",
        machine=MACHINES[p.vendor],
        host_events=HOST_EVENTS,
        vms=(Vm("", vcpu(vendor), prog.done()),),
        checks=(faults("Expected #GP on RDPMC(64)", "rdpmc-64"),),
    )


def check_emulated_instr(p: Pass) -> Case:
    branches, instructions = p.branches, p.instructions
    brnch, instr = Counter(0, _cfg(branches.unit_sel)), Counter(1, _cfg(instructions.unit_sel))
    prog = preamble().extend(clear_status())
    prog.extend(start_event(p, brnch)).extend(start_event(p, instr))
    prog.add(
        f"wrmsr {p.ctr(0)} -{KVM_FEP_BRANCHES}&{WIDTH_MASK:#x}",
        f"wrmsr {p.ctr(1)} -{KVM_FEP_INSNS}&{WIDTH_MASK:#x}",
        # kvm_fep_asm("wrmsr"): 22 instructions counted, 5 branches.
        "wrmsr GLOBAL_CTRL 0x3",
        "loop 3 ring=0",  # mov %ecx,%edi; mov $0,%eax; cmp $0,%eax
    )
    for _ in range(5):
        prog.add("fep branch")  # KVM_FEP "jne 1f" (not taken; the emulator counts it as a branch)
    for _ in range(5):
        prog.add("loop 1 ring=0", "cpuid")  # mov $0xa,%eax; cpuid (exits; KVM emulates and counts it)
    prog.add("loop 3 ring=0", "wrmsr GLOBAL_CTRL 0")  # 1: mov %edi,%ecx; xor; xor; wrmsr
    prog.extend(stop_event(p, brnch, "branch-count")).extend(stop_event(p, instr, "instruction-count"))
    prog.add("rdmsr GLOBAL_STATUS @status")
    b_start, i_start = -KVM_FEP_BRANCHES % (1 << 64), -KVM_FEP_INSNS % (1 << 64)

    def delta(start: int, want: int) -> Check:
        name = "instruction count" if want == KVM_FEP_INSNS else "branch count"
        tag = "instruction-count" if want == KVM_FEP_INSNS else "branch-count"
        return Check(
            name, f"count - start == {want}", (tag,), lambda v: v is not None and (v - start) % (1 << 64) == want
        )

    checks = [
        delta(i_start, KVM_FEP_INSNS),
        delta(b_start, KVM_FEP_BRANCHES),
        bit_set("branch counter overflow", "status", 0),
        bit_set("instruction counter overflow", "status", 1),
    ]
    note = (
        "The original runs only with forced emulation (is_fep_available; verified-facts V12), and so does this "
        "case: the five KVM_FEP JNEs exit on #UD and KVM's emulator counts each as an instruction and a branch "
        "(x86_emulate_instruction(): kvm_pmu_instruction_retired(), kvm_pmu_branch_retired() for IsBranch "
        "opcodes, taken or not); the five CPUIDs exit and are counted by kvm_skip_emulated_instruction()."
    )
    return _case(
        p, "check_emulated_instr", "emulated instructions count and overflow", "2", prog, checks, notes=(note,)
    )


def check_gp_counters(p: Pass) -> Case:
    prog = preamble()
    checks: list[Check] = []
    for ev in p.events:
        for i in range(p.nr_gp):
            tag = f"{ev.name.replace(' ', '-')}-{i}"
            if ev.unexpressible:
                checks.append(skipped(f"{ev.name}-{i}", f"in [{ev.lo}, {ev.hi}]", ev.unexpressible))
                continue
            prog.extend(measure(p, [Counter(i, _cfg(ev.unit_sel))], [tag]))
            checks.append(within(f"{ev.name}-{i}", tag, ev.lo, ev.hi))
    return _case(p, "check_gp_counters", "every event on every GP counter, in range", "3", prog, checks)


def check_fixed_counters(p: Pass) -> Case:
    prog = preamble()
    checks: list[Check] = []
    for j in range(p.nr_fixed):
        prog.extend(measure(p, [Counter(j, OS_USR, fixed=True)], [f"fixed-{j}"]))
        ev = FIXED_EVENTS[j]
        checks.append(within(f"fixed-{j}", f"fixed-{j}", ev.lo, ev.hi))
    return _case(p, "check_fixed_counters", "fixed counters 0-2, in range", "4", prog, checks)


def check_rdpmc(p: Pass) -> Case:
    val = 0xFF0123456789
    prog = preamble()
    checks: list[Check] = []
    for i in range(p.nr_gp):
        # Legacy aliases take only the low 32 bits, sign-extended (bit 31 is 0 here).
        x = val & 0xFFFFFFFF if p.intel and not p.full_writes else val
        prog.add(
            f"wrmsr {p.ctr(i)} {val:#x}",
            f"rdpmc {i} ring=0 @cntr-{i}",
            f"rdpmc RDPMC_FAST|{i} ring=0 @fast-{i}",
        )
        checks.append(eq(f"cntr-{i}", f"cntr-{i}", x & WIDTH_MASK))
        checks.append(_fast(f"fast-{i}", val))
    for j in range(p.nr_fixed):
        x = val & WIDTH_MASK
        prog.add(
            f"wrmsr FIXED_CTR{j} {x:#x}",
            f"rdpmc fixed{j} ring=0 @fixed-cntr-{j}",
            f"rdpmc RDPMC_FAST|RDPMC_FIXED|{j} ring=0 @fixed-fast-{j}",
        )
        checks.append(eq(f"fixed cntr-{j}", f"fixed-cntr-{j}", x))
        checks.append(_fast(f"fixed fast-{j}", x))
    return _case(p, "check_rdpmc", "RDPMC reads what WRMSR wrote; fast reads", "5", prog, checks)


def _fast(name: str, val: int) -> Check:
    """A fast (ECX bit 31) read: #GP is reported as SKIP, else the low 32 bits."""
    tag = name.replace(" ", "-")
    low = val & 0xFFFFFFFF
    return Check(name, f"#GP (skip) or == {low:#x}", (tag,), lambda v: v is None or v == low)


def check_counters_many(p: Pass) -> Case:
    counters: list[Counter] = []
    events: list[Event] = []
    for n in range(p.nr_gp):  # get_one_event(n): every event is available on these machines
        ev = p.events[n % len(p.events)]
        counters.append(Counter(n, _cfg(ev.unit_sel)))
        events.append(ev)
    for j in range(p.nr_fixed):
        counters.append(Counter(j, OS_USR, fixed=True))
        events.append(FIXED_EVENTS[j])
    tags = [f"many-{'fixed' if c.fixed else 'gp'}{c.index}" for c in counters]
    prog = preamble().extend(measure(p, counters, tags))
    checks: list[Check] = []
    for c, ev, tag in zip(counters, events, tags, strict=True):
        name = f"all counters: {'fixed' if c.fixed else 'gp'} {c.index} ({ev.name})"
        if ev.unexpressible:
            checks.append(skipped(name, f"in [{ev.lo}, {ev.hi}]", ev.unexpressible, tag))
        else:
            checks.append(within(name, tag, ev.lo, ev.hi))
    return _case(p, "check_counters_many", "all counters at once, in range", "6", prog, checks)


def check_counter_overflow(p: Pass) -> Case:
    instr = p.instructions
    cnt = Counter(0, _cfg(instr.unit_sel))
    prog = preamble()
    # measure_for_overflow(): measure once from 0, preset = 1 - count.
    prog.extend(measure(p, [cnt], ["overflow-measure"]))
    prog.add("mov preset 1-$rax")
    checks: list[Check] = [Check("measure > 1", "> 1", ("overflow-measure",), lambda v: v is not None and v > 1)]
    prog.extend(clear_status())
    config = cnt.config
    for i in range(p.nr_gp + 1):
        if i == p.nr_gp:
            if not p.intel:
                break
            c = Counter(0, config, fixed=True)
            prog.extend(measure(p, [c], ["overflow-measure-fixed"]))
            prog.add(f"mov preset (1-$rax)&{WIDTH_MASK:#x}")
            count = "$preset"
        else:
            c = Counter(i, config)
            count = f"$preset&{WIDTH_MASK:#x}" if p.full_writes else "$preset"
        config = config.replace(f"|{INT}", "") + (f"|{INT}" if i % 2 else "")
        c.config = config
        prog.extend(measure(p, [c], [f"cntr-{i}"], count=count))
        if p.intel:
            checks.append(eq(f"cntr-{i}", f"cntr-{i}", 1))
        else:
            checks.append(
                Check(f"cntr-{i}", "== 0xffffffffffff or < 7", (f"cntr-{i}",), lambda v: v == WIDTH_MASK or v < 7)
            )
        prog.add(
            f"rdmsr GLOBAL_STATUS @status-{i}",
            "wrmsr GLOBAL_OVF_CTRL $rax",
            f"rdmsr GLOBAL_STATUS @status-clear-{i}",
            f"check_irq {PMI_VECTOR} @irq-{i}",
        )
        checks += [
            bit_set(f"status-{i}", f"status-{i}", c.global_idx),
            bit_clear(f"status clear-{i}", f"status-clear-{i}", c.global_idx),
            eq(f"irq-{i}", f"irq-{i}", i % 2),
        ]
    return _case(
        p,
        "check_counter_overflow",
        "overflow: count, status, status clear, PMI iff INT",
        "7",
        prog,
        checks,
        notes=(
            "The test measures with interrupts disabled and takes the PMI at check_irq(); the model has no "
            "guest RFLAGS.IF, so the PMI is taken when raised by a handler that only counts it, and check_irq "
            "does the rest (guest/program.py, counting_pmi_handler).",
        ),
    )


def check_gp_counter_cmask(p: Pass) -> Case:
    instr = p.instructions
    c = Counter(0, f"{_cfg(instr.unit_sel)}|{2 << 24:#x}")
    prog = preamble().extend(measure(p, [c], ["cmask"]))
    return _case(
        p,
        "check_gp_counter_cmask",
        "CMASK=2 counts fewer than the instructions",
        "8",
        prog,
        [lt("cmask", "cmask", instr.lo)],
        notes=(
            f"Not vacuous: the loop body retires {LOOP_IPC} instructions per cycle in the model (LOOP_IPC), so "
            f"CMASK=2 counts its {10 * N // LOOP_IPC:,} cycles (every other instruction of the blob retires alone), "
            "natively and virtualized alike; a hardware selector without the CMASK field would count all "
            "10,000,017 instructions and fail the assertion (tests/test_conform_cmask.py).",
        ),
    )


def check_running_counter_wrmsr(p: Pass) -> Case:
    instr = p.instructions
    c = Counter(0, _cfg(instr.unit_sel))

    def start() -> list[str]:  # start_event(): __start_event(evt, 0) + global_enable()
        return [*start_event(p, c), "rdmsr GLOBAL_CTRL", "wrmsr GLOBAL_CTRL $rax|0x1"]

    def stop(tag: str) -> list[str]:  # stop_event(): global_disable() + __stop_event()
        return ["rdmsr GLOBAL_CTRL", "wrmsr GLOBAL_CTRL $rax&~0x1", *stop_event(p, c, tag)]

    count = f"{WIDTH_MASK:#x}" if p.full_writes else "-1"
    prog = preamble().extend(start()).extend(loop_blob(None)).add(f"wrmsr {p.ctr(0)} 0").extend(stop("cntr"))
    prog.extend(clear_status()).extend(start()).add(f"wrmsr {p.ctr(0)} {count}")
    prog.extend(loop_blob(None)).extend(stop("cntr-2")).add("rdmsr GLOBAL_STATUS @status")
    checks = [lt("cntr", "cntr", instr.lo), bit_set("status msr bit", "status", 0)]
    return _case(p, "check_running_counter_wrmsr", "WRMSR to a running counter (0, then -1)", "9", prog, checks)


def check_gp_counters_write_width(p: Pass) -> Case:
    val_64 = 0xFFFFFF0123456789
    val_32 = val_64 & 0xFFFFFFFF
    val_max = val_64 & WIDTH_MASK
    prog = preamble()
    checks: list[Check] = []
    for i in range(p.nr_gp):
        for name, v in (("val_32", val_32), ("val_max", val_max), ("val_64", val_64)):
            prog.add(
                f"wrmsr PERFCTR{i} {v:#x} @legacy-{name}-{i}",
                f"rdmsr PERFCTR{i} @legacy-{name}-{i}-legacy",
                f"rdmsr PMC{i} @legacy-{name}-{i}-full",
            )
            checks += [
                eq(f"PERFCTR{i} <- {name}: legacy read", f"legacy-{name}-{i}-legacy", val_32),
                eq(f"PERFCTR{i} <- {name}: full-width read", f"legacy-{name}-{i}-full", val_32),
            ]
    for i in range(p.nr_gp):
        for name, v in (("val_32", val_32), ("val_max", val_max)):
            prog.add(
                f"wrmsr PMC{i} {v:#x} @full-{name}-{i}",
                f"rdmsr PMC{i} @full-{name}-{i}-full",
                f"rdmsr PERFCTR{i} @full-{name}-{i}-legacy",
            )
            checks += [
                eq(f"PMC{i} <- {name}: full-width read", f"full-{name}-{i}-full", v),
                eq(f"PMC{i} <- {name}: legacy read", f"full-{name}-{i}-legacy", v),
            ]
        prog.add(f"wrmsr PMC{i} {val_64:#x} @full-val_64-{i}")
        checks.append(faults(f"writing unsupported width to MSR_IA32_PMC{i} raises #GP", f"full-val_64-{i}"))
    return _case(p, "check_gp_counters_write_width", "legacy and full-width counter writes", "11", prog, checks)


def cases() -> list[Case]:
    out: list[Case] = []
    for vendor in ("intel", "amd"):
        out.append(check_invalid_rdpmc_gp(vendor))
        for p in PASSES[vendor]:
            out += [
                check_emulated_instr(p),
                check_gp_counters(p),
            ]
            if p.intel:
                out.append(check_fixed_counters(p))
            out += [
                check_rdpmc(p),
                check_counters_many(p),
                check_counter_overflow(p),
                check_gp_counter_cmask(p),
                check_running_counter_wrmsr(p),
            ]
            if p.full_writes:
                out.append(check_gp_counters_write_width(p))
        out.append(one_vm(vendor))
    return out


OMISSIONS = [
    Omission("kut", "check_fixed_counters", "amd", "n/a", "AMD has no fixed counters (§0.2)"),
    Omission(
        "kut",
        "check_gp_counters_write_width",
        "amd",
        "n/a",
        "needs Intel PERF_CAPABILITIES.FW_WRITES (the IA32_PMCx aliases); AMD counters are always full width",
    ),
    Omission(
        "kut",
        "check_tsx_cycles",
        "intel",
        "not expressible",
        "TSX (RTM, IN_TX/IN_TXCP selector bits 32-33) is outside the model: those selector bits #GP "
        "(docs/fidelity.md §2)",
    ),
    Omission("kut", "check_tsx_cycles", "amd", "n/a", "Intel RTM only"),
    Omission(
        "kut",
        "check_gp_counters (llc references, llc misses, branch misses)",
        "both",
        "not expressible",
        f"{NO_CACHE}; {NO_PREDICTOR}; their range checks (min 1) cannot hold natively in the model, "
        "so those measurements are not run (their counters in check_counters_many are run, unchecked)",
    ),
    Omission(
        "kut",
        "warm_up, set_ref_cycle_expectations",
        "both",
        "not expressible",
        "cache warm-up measures nothing; the reference-cycle calibration needs a TSC, which the model does not "
        "have (reference cycles advance with core cycles, so the scale factor is 1)",
    ),
    Omission(
        "kut",
        "x86/pmu_pebs.c, x86/pmu_lbr.c",
        "intel",
        "not expressible",
        "PEBS, the DS area and LBRs are not modelled (H4: guest PEBS is unsupported by the mediated vPMU)",
    ),
]


# --- the whole test as the real one runs: one VM, every check in order -----------------------------

PREAMBLE_LINES = len(preamble().lines)


def _renamed(case: Case, prefix: str) -> tuple[list[str], list[Check]]:
    """A per-check case's program without main()'s preamble, and its checks, with every tag
    prefixed (the checks run one after another in one guest)."""
    lines = []
    for line in case.vms[0].program[PREAMBLE_LINES:]:
        words = line.split()
        if words and words[-1].startswith("@"):
            words[-1] = f"@{prefix}{words[-1][1:]}"
            line = " ".join(words)
        lines.append(line)
    checks = [
        Check(f"{prefix}{c.name}", c.text, tuple(f"{prefix}{t}" for t in c.tags), c.test, c.skip) for c in case.checks
    ]
    return lines, checks


#: The one-VM cases run fewer schedules than the per-check cases (a run is every check in a row).
ONE_VM_SCHEDULES = ("none", "every:1000003", "every:1000003:timer", "random:1", "random:1:no-nmi")


def one_vm(vendor: str) -> Case:
    """main() as the test runs it: one guest, check_invalid_rdpmc_gp(), then check_counters()
    per pass (Intel: legacy, then full-width plus check_gp_counters_write_width(); AMD: F15h,
    then K7), counters, selectors, status and the PMI handler's state carried from one check
    to the next."""
    prog = Program(".gp_fixup", ".pmi_handler count", "wrmsr GLOBAL_CTRL 0")
    rdpmc_lines, checks = _renamed(check_invalid_rdpmc_gp(vendor), "")
    prog.extend(rdpmc_lines).add(f"lvtpc {PMI_VECTOR}")
    for p in PASSES[vendor]:
        per_check: list[Case] = [check_emulated_instr(p), check_gp_counters(p)]
        if p.intel:
            per_check.append(check_fixed_counters(p))
        per_check += [
            check_rdpmc(p),
            check_counters_many(p),
            check_counter_overflow(p),
            check_gp_counter_cmask(p),
            check_running_counter_wrmsr(p),
        ]
        if p.full_writes:
            per_check.append(check_gp_counters_write_width(p))
        for c in per_check:
            lines, cks = _renamed(c, f"{c.name}:")
            prog.extend(lines)
            checks += cks
    return Case(
        suite="kut",
        name="main[one VM]",
        vendor=vendor,
        title="the whole test in one VM: every check of every pass in order, state carried across",
        source=f"{SOURCE}.0",
        machine=MACHINES[vendor],
        host_events=HOST_EVENTS,
        vms=(Vm("", vcpu(vendor), prog.done()),),
        checks=tuple(checks),
        schedules=ONE_VM_SCHEDULES,
        notes=(
            "main()'s order: check_invalid_rdpmc_gp() before LVTPC is programmed, then check_counters() per "
            "pass; the per-check cases run the same checks each in a fresh VM (for reporting). Tags and "
            "assertion names carry the check and pass.",
            "Fewer schedules than the per-check cases (one run is about 1.3 billion guest instructions): "
            + ", ".join(ONE_VM_SCHEDULES)
            + ".",
        ),
    )
