"""Appendix C scenarios S1, S2, S5, S7, S8, S15 as scripted runs with the outcome Appendix C states
(and the order of the inner run loop's fastpath handler and request check, §1.1).

Each scenario is a small world run either by ``simulate`` (deterministic: a pending
interrupt is always taken first) or by :func:`drive`, which takes the same moves
unless the scenario's ``choose`` hook picks another enabled move (inject an NMI,
let the PMI skid one instruction). Assertions are on the hardware log of the
steps (``StepRecord.hw``), the states, and the ghost's journal and verdict.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from vpmu.check import properties as P
from vpmu.check.simulate import Plan, simulate
from vpmu.check.system import DELIVER, NMI, STEP, TASK, Move, StepRecord, System
from vpmu.check.world import parse_world
from vpmu.designs import get_design
from vpmu.hw import msr as M
from vpmu.hw import virt as V
from vpmu.hw.layout import State
from vpmu.kernel.kvm import MSR_IA32_TSC_DEADLINE

USR, OS, INT, EN = M.EVENTSEL_USR, M.EVENTSEL_OS, M.EVENTSEL_INT, M.EVENTSEL_EN
GUESTONLY, HOSTONLY = M.AMD64_EVENTSEL_GUESTONLY, M.AMD64_EVENTSEL_HOSTONLY
MASKED, APIC_NMI = M.APIC_LVT_MASKED, M.APIC_DM_NMI
F5 = M.APIC_DM_FIXED | M.PERF_GUEST_MEDIATED_PMI_VECTOR
GC = {"intel": M.MSR_CORE_PERF_GLOBAL_CTRL, "amd": M.MSR_AMD64_PERF_CNTR_GLOBAL_CTL}
ST = {"intel": M.MSR_CORE_PERF_GLOBAL_STATUS, "amd": M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS}
SET = {"intel": M.MSR_CORE_PERF_GLOBAL_STATUS_SET, "amd": M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_SET}
CLR = {"intel": M.MSR_CORE_PERF_GLOBAL_OVF_CTRL, "amd": M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_CLR}
INTEL_ENABLE = 0b11  # perf's enable_all on a 2-GP, 0-fixed Intel machine (§2.3 step 7)


def world(text: str) -> Any:
    return parse_world(tomllib.loads(text), "test_scenarios")


def system(design: str, text: str, properties: tuple[str, ...] | None = None) -> System:
    return System(get_design(design), world(text), properties)


@dataclass
class Run:
    system: System
    records: list[StepRecord] = field(default_factory=list)
    states: list[State] = field(default_factory=list)  # states[i] is before records[i]

    def slot(self, name: str) -> int:
        return self.system.layout.index(name)

    def index(self, label: str, start: int = 0, context: str | None = None) -> int:
        """Index of the first record at or after ``start`` with this label (and context)."""
        for i in range(start, len(self.records)):
            rec = self.records[i]
            if rec.label == label and (context is None or rec.context == context):
                return i
        raise AssertionError(f"no step {label!r} after record {start}")

    def hw(self, kind: str) -> list[tuple[int, str, int, int]]:
        """(record index, label, a, b) of every hardware event of this kind."""
        return [(i, r.label, a, b) for i, r in enumerate(self.records) for k, a, b in r.hw if k == kind]

    def load_lvtpc_writes(self) -> list[int]:
        """The LVTPC value of every perf_load_guest_lvtpc write (B.1.3, B.3.3)."""
        return [a for _, label, a, _ in self.hw("lvtpc") if label == "perf_load_guest_lvtpc:write_lvtpc"]


Chooser = Callable[[Run, State, list[Move]], Move | None]


def drive(sys_: System, choose: Chooser | None = None, start: State | None = None, max_steps: int = 5000) -> Run:
    """Run from ``start`` (default: the initial state): take a pending interrupt first, else step,
    unless ``choose`` returns another enabled move."""
    sys_.stop_on_violation = False
    sys_.ghost.journal = []
    run = Run(sys_)
    s = sys_.initial() if start is None else start
    for _ in range(max_steps):
        moves = sys_.moves(s)
        if not moves:
            break
        move = choose(run, s, moves) if choose else None
        if move is None:
            move = (DELIVER, 0) if (DELIVER, 0) in moves else (STEP, 0)
        assert move in moves, f"{move} not enabled: {moves}"
        run.states.append(s)
        s, rec = sys_.apply(s, move)
        run.records.append(rec)
    run.states.append(s)
    assert sys_.finished(s)
    return run


def simulated(sys_: System) -> Run:
    result = simulate(sys_, Plan("none"))
    assert result.finished
    return Run(sys_, result.records, result.states)


def violation(run: Run) -> str:
    """The first property the ghost flagged, or ""."""
    v = run.states[-1][run.system.ghost.violation]
    return P.by_index(v).name if v else ""


# --- S1: empty host perf (H2) and the seed thread's assertion ------------------------------------

S1_INTEL = """
[machine]
vendor = "intel"
pmu_version = 5
num_gp = 8
gp_width = 48
num_fixed = 3
fixed_width = 48
[guest]
program = ["hlt"]
[bounds]
exits = 0
nmis = 0
"""

S1_AMD = """
[machine]
vendor = "amd"
pmu_version = "perfmonv2"
num_gp = 6
gp_width = 48
[guest]
program = ["hlt"]
[bounds]
exits = 0
nmis = 0
"""


def test_S1_intel_empty_host_perf_clear_then_elided_load() -> None:
    """S1 (H2, B.1): no host events, HW 0x38F = every counter bit (perf's last enable_all), guest n=8,
    m=3 with global_ctrl 0xFF: perf's load is a nop, W(0x38F, 0) comes before the LVTPC and every
    selector write, all counter writes are elided (P(i) = 0), and VM-entry leaves 0x38F = 0xFF.
    The model boots with no host event, so perf never wrote 0x38F; the test puts perf's last
    enable_all value there (the power-up value 0xFF would do as well: it is not 0 either)."""
    sys_ = system("upstream", S1_INTEL)
    cpu = sys_.cpu
    start = list(sys_.initial())
    start[cpu.global_ctrl] = cpu.counter_bits  # 0x7_000000FF
    start[sys_.ghost.task_gc] = cpu.counter_bits
    run = drive(sys_, start=tuple(start))
    assert violation(run) == ""
    load_pcs = {pc for a, b in sys_.task.spans("kvm_mediated_pmu_load") for pc in range(a, b)}
    first_load = []
    for i, rec in enumerate(run.records):
        if rec.context == TASK and run.states[i][sys_.task_pc] in load_pcs:
            first_load.extend(rec.hw)
        elif first_load:
            break
    expected = [("wrmsr", 0x38F, 0), ("lvtpc", F5, 0)]
    for i in range(8):
        expected += [("rdpmc", i, 0), ("wrmsr", 0x186 + i, 0)]
    expected += [("rdpmc", (1 << 30) | j, 0) for j in range(3)]
    expected += [("rdmsr", 0x38E, 0), ("wrmsr", 0x38D, 0)]
    assert first_load == expected
    entry = run.index("vcpu_enter_guest:vmenter")
    assert run.records[entry].hw == [("vmcs_load_pgc", 0xFF, 1)]
    assert run.states[entry + 1][cpu.global_ctrl] == 0xFF


@pytest.mark.parametrize(
    ("design", "text", "warns"),
    [
        pytest.param("seed-assert", S1_AMD, True, id="S1-H2-seed-assert-amd-reload_virt-WARNs"),
        pytest.param("upstream", S1_AMD, False, id="S1-H2-upstream-amd-no-WARN"),
        pytest.param("seed-assert", S1_INTEL, True, id="S1-H2-seed-assert-intel-WARNs"),
        pytest.param("upstream", S1_INTEL, False, id="S1-H2-upstream-intel-no-WARN"),
    ],
)
def test_S1_ablation_seed_assert(design: str, text: str, warns: bool) -> None:
    """S1 ablation (seed thread, Sean 2025-11-19): replacing the clear by WARN_ON_ONCE(rdmsr(GLOBAL_CTRL))
    trips on a correct state: with no host events perf's load is "one big nop", and on AMD
    amd_pmu_reload_virt() (run when KVM enabled SVM) left GlobalCtl = every counter bit."""
    sys_ = system(design, text)
    cpu = sys_.cpu
    assert sys_.initial()[cpu.global_ctrl] == cpu.gp_bits != 0
    run = simulated(sys_)
    if warns:
        assert violation(run) == "no-warn"
        assert "kvm_mediated_pmu_load:assert_global_ctrl" in sys_.ghost.message
    else:
        assert violation(run) == ""


# --- S2: empty host perf on AMD after SVM enable (H2, H8) ------------------------------------------

S2_AMD = """
[machine]
vendor = "amd"
pmu_version = "perfmonv2"
num_gp = 1
gp_width = 48
svme_off_filter = "{policy}"
[guest]
program = [
  "wrmsr EVTSEL0 INSTRUCTIONS|USR|OS|INT|EN|HOSTONLY",
  "wrmsr GLOBAL_CTRL GP0",
  "loop 10",
  "cpuid",
  "rdmsr EVTSEL0",
  "rdpmc 0",
  "hlt",
]
[bounds]
exits = 0
nmis = 0
"""
S2_SEL = 0xC0 | USR | OS | INT | EN | HOSTONLY
NOT_TRANSPARENCY = tuple(n for n in P.BY_NAME if n != "guest-transparency")


def test_S2_amd_hostonly_selector_stuffed_guestonly() -> None:
    """S2 (H2, H8, v6 26/44): KVM drops HostOnly (a reserved bit of its AMD vPMU) from eventsel,
    eventsel_hw has GuestOnly set; load clears GlobalCtl (all-ones after reload_virt) before
    writing selectors; between #VMEXIT and put the counter does not advance for host work; put
    clears GlobalCtl first.
    Run without the guest-transparency property: see test_S2_finding_* for why."""
    sys_ = system("upstream", S2_AMD.format(policy="linux"), NOT_TRANSPARENCY)
    cpu, gc = sys_.cpu, GC["amd"]
    assert sys_.initial()[cpu.global_ctrl] == 0x1  # amd_pmu_reload_virt(): all ones
    run = drive(sys_)
    assert violation(run) == ""
    s = run.states[-1]
    assert s[run.slot("pmc.eventsel0")] == S2_SEL & ~HOSTONLY  # amd_pmu_set_msr(): reserved bits dropped
    assert s[run.slot("pmc.eventsel_hw0")] == (S2_SEL & ~HOSTONLY) | GUESTONLY
    reads = [j for j in sys_.ghost.journal or [] if j[1] == "rdmsr(PerfEvtSel0)"]
    assert reads == [("guest read", "rdmsr(PerfEvtSel0)", S2_SEL & ~HOSTONLY, S2_SEL)]  # native keeps HostOnly
    # Every load: GlobalCtl := 0 is the first write and precedes the selector write.
    loads = [i for i, r in enumerate(run.records) if r.label == "kvm_mediated_pmu_load:clear_global_ctrl"]
    assert len(loads) == 4  # first entry, after the EVTSEL0, CPUID and RDMSR(EVTSEL0) exits
    for i in loads:
        assert run.records[i].hw == [("wrmsr", gc, 0)]
        j = run.index("kvm_pmu_load_guest_pmcs:load_eventsel0", i)
        assert [h for r in run.records[i + 1 : j] for h in r.hw if h[0] == "wrmsr" and h[1] == gc] == []
    assert run.records[loads[0] - 1].hw == []  # perf's load: a nop without host events
    assert run.states[loads[0]][cpu.global_ctrl] == 0x1
    # #VMEXIT on CPUID -> put: GlobalCtl still enabled, selector enabled, yet PMC0 is frozen (GuestOnly).
    exit_i = run.index("guest_main:cpuid0")
    put_i = run.index("amd_mediated_pmu_put:clear_global_ctrl", exit_i)
    window = run.states[exit_i + 1 : put_i + 1]
    assert put_i - exit_i >= 3  # host steps retired at CPL0 in between
    assert all(st[cpu.global_ctrl] == 0x1 and st[cpu.evtsel] & EN for st in window)
    assert len({st[cpu.pmc] for st in window}) == 1
    assert run.records[put_i].hw == [("wrmsr", gc, 0)]  # put: GlobalCtl := 0 first (B.4.3)


@pytest.mark.parametrize(
    ("policy", "flagged"), [("linux", True), ("apm", False)], ids=["S2-finding-F-3.4-linux", "S2-finding-F-3.4-apm"]
)
def test_S2_finding_hostonly_guest_counts_unlike_native(policy: str, flagged: bool) -> None:
    """S2 finding (F-3.4, open point 6; §4.2): KVM's AMD vPMU drops HostOnly from the guest's selector
    (a reserved bit, amd_pmu_set_msr()) and forces GuestOnly=1, so the guest reads its selector back
    without HostOnly and counts guest instructions. A native CPU keeps the bit; with EFER.SVME=0 it
    counts nothing by the measured behaviour ("linux" policy) and counts by the APM reading ("apm").
    Either way the read-back differs. Linux guests never set HostOnly with SVM off (F-3.4.1)."""
    sys_ = system("upstream", S2_AMD.format(policy=policy))
    run = drive(sys_)
    journal = sys_.ghost.journal or []
    rdmsr = [j for j in journal if j[1] == "rdmsr(PerfEvtSel0)"]
    assert rdmsr == [("guest read", "rdmsr(PerfEvtSel0)", S2_SEL & ~HOSTONLY, S2_SEL)]
    rd = [j for j in journal if j[1] == "rdpmc(0x0)"]
    assert len(rd) == 1
    _, _, seen, native = rd[0]
    assert seen > 0  # counted under KVM
    assert (native == 0) is flagged
    assert violation(run) == "guest-transparency"


# --- S5 / S15: guest PMI end to end (§3.2) ------------------------------------------------------------

PMI_WORLD = """
[machine]
vendor = "{vendor}"
pmu_version = {version}
num_gp = 2
gp_width = 48
[vcpu]
lvtpc = 0xFE                                 # Fixed delivery, vector 0xFE, unmasked
[[host_event]]
name = "cycles"
event = "cycles"
counter = 1
[guest]
program = [
  "wrmsr GLOBAL_CTRL 0",
  "wrmsr PMC0 -1",                           # 2^48 - 1: one event to overflow
  "wrmsr EVTSEL0 INSTRUCTIONS|USR|OS|INT|EN",  # exits; not counted (global_ctrl = 0)
  "wrmsr GLOBAL_CTRL GP0",                   # counts itself: PMC0 wraps
  {tail}
  "hlt",
]
[bounds]
exits = 0
nmis = 0
"""


def pmi_world(vendor: str, tail: str = '"loop 5",', skid: int = 0) -> str:
    text = PMI_WORLD.format(vendor=vendor, version=5 if vendor == "intel" else '"perfmonv2"', tail=tail)
    if vendor == "intel":
        text = text.replace("num_gp = 2\n", "num_gp = 2\nnum_fixed = 0\n")
    if skid:
        text = text.replace("gp_width = 48\n", f"gp_width = 48\npmi_skid = {skid}\n")
    return text


def test_S5_intel_guest_pmi_end_to_end() -> None:
    """S5 (§3.2, H22): overflow -> status bit 0 and physical LVTPC auto-masked -> 0xF5 -> VM-exit -> put saves
    global_status = 0x1 and clears HW, LVTPC := NMI -> IRQ handler -> KVM_REQ_PMI -> vLAPIC injects 0xFE and
    sets vLVTPC.Mask -> load: status restored via 0x391, physical LVTPC = 0x000100F5 -> the guest's
    handler reads bit 0."""
    sys_ = system("upstream", pmi_world("intel"))
    run = simulated(sys_)
    assert violation(run) == ""
    cpu = sys_.cpu
    # 1. the overflow and the PMI through the mediated vector; Intel sets the Mask bit (F-2.5).
    (ovf,) = run.hw("overflow")
    assert ovf[1:] == ("guest_main:wrmsr3", 0x1, 1)
    (pmi,) = run.hw("pmi")
    assert pmi[0] == ovf[0] and pmi[2:] == (M.PERF_GUEST_MEDIATED_PMI_VECTOR, F5)
    after = run.states[ovf[0] + 1]
    assert after[cpu.lvtpc] == F5 | MASKED
    assert after[cpu.global_status] & 1
    # 2. an external-interrupt VM-exit that acknowledges 0xF5 (F-4.4.2).
    x = ovf[0] + 1
    assert run.records[x].label == "VM-exit" and run.records[x].hw[0][:2] == ("vmexit", V.EXIT_EXTINT)
    assert run.states[x + 1][cpu.exit_vector] == M.PERF_GUEST_MEDIATED_PMI_VECTOR
    # 3. put saves and clears status, LVTPC := NMI (unmasked).
    save = run.index("intel_mediated_pmu_put:save_status", x)
    assert run.records[save].hw == [("rdmsr", ST["intel"], 0x1)]
    assert run.records[save + 1].hw == [("wrmsr", CLR["intel"], 0x1)]
    put_lvtpc = run.index("perf_put_guest_lvtpc:write_lvtpc", save)
    assert run.records[put_lvtpc].hw == [("lvtpc", APIC_NMI, 0)]
    assert run.states[put_lvtpc + 1][run.slot("pmu.global_status")] == 0x1
    assert run.states[put_lvtpc + 1][cpu.global_status] == 0
    # 4. handle_exit_irqoff dispatches 0xF5 after put: KVM_REQ_PMI for the running vCPU (§2.6).
    irq = run.index("kvm_handle_guest_mediated_pmi:request_pmi", put_lvtpc, context="irq")
    assert run.index("vcpu_enter_guest:handle_exit_irqoff", put_lvtpc) < irq
    assert run.states[irq + 1][run.slot("kvm.KVM_REQ_PMI")] == 1
    # 5. delivery: vLVTPC masked by KVM for the Intel-compatible guest, PMI injected.
    dlv = run.index("vcpu_enter_guest:kvm_pmu_deliver_pmi", irq)
    assert run.states[dlv + 1][run.slot("vlapic.LVTPC")] == 0xFE | MASKED
    # 6. load restores bit 0 via STATUS_SET and writes LVTPC = 0x000100F5.
    setst = run.index("intel_mediated_pmu_load:set_guest_status", dlv)
    assert run.records[setst].hw == [("wrmsr", SET["intel"], 0x1)]
    assert run.load_lvtpc_writes() == [F5, F5, F5 | MASKED, F5]  # the last after the guest's unmask
    # 7. the guest's handler (late ack) sees bit 0; exactly one PMI reached the guest.
    journal = sys_.ghost.journal or []
    assert [j for j in journal if j[0] == "guest PMI"] == [("guest PMI", "delivered", 1, 1)]
    assert ("guest read", "rdmsr(IA32_PERF_GLOBAL_STATUS)", 0x1, 0x1) in journal


def test_S15_amd_guest_pmi_never_masked() -> None:
    """S15 (§3.3, F-2.6): on an AMD host with an AMD guest the physical LVTPC is never auto-masked, KVM
    does not mask vLVTPC on injection, and every load writes 0x000000F5 -- until the guest masks its
    LVTPC itself (then 0x000100F5)."""
    sys_ = system("upstream", pmi_world("amd", tail='"loop 5", "lvtpc 0xFE|MASKED", "cpuid",'))
    run = simulated(sys_)
    assert violation(run) == ""
    cpu = sys_.cpu
    (ovf,) = run.hw("overflow")
    (pmi,) = run.hw("pmi")
    assert pmi[0] == ovf[0] and pmi[2:] == (M.PERF_GUEST_MEDIATED_PMI_VECTOR, F5)
    assert run.states[ovf[0] + 1][cpu.lvtpc] == F5  # not masked by the AMD APIC
    # SVM: #VMEXIT(INTR) leaves 0xF5 pending; it is taken at local_irq_enable, after put.
    put_end = run.index("perf_put_guest_context:clear_loaded", ovf[0])
    irq = run.index("kvm_handle_guest_mediated_pmi:request_pmi", ovf[0], context="irq")
    assert put_end < irq < run.index("vcpu_enter_guest:handle_exit", put_end)
    dlv = run.index("vcpu_enter_guest:kvm_pmu_deliver_pmi", irq)
    assert run.states[dlv + 1][run.slot("vlapic.LVTPC")] == 0xFE  # not masked by KVM
    # First entry, after EVTSEL0, after the PMI, after the guest's LVTPC write, after CPUID.
    assert run.load_lvtpc_writes() == [F5, F5, F5, F5 | MASKED, F5 | MASKED]
    assert all(st[cpu.lvtpc] & MASKED == 0 for st in run.states[: run.index("guest_main:lvtpc0")])
    journal = sys_.ghost.journal or []
    assert [j for j in journal if j[0] == "guest PMI"] == [("guest PMI", "delivered", 1, 1)]
    assert ("guest read", "rdmsr(PerfCntrGlobalStatus)", 0x1, 0x1) in journal


# --- S7: PMI skid past an unrelated VM-exit (H6) -----------------------------------------------------


def test_S7_pmi_skid_past_cpuid_exit() -> None:
    """S7 (H6; machine option pmi_skid=1): the guest counter overflows and 0xF5 becomes pending, and the
    next guest instruction, CPUID, exits before the interrupt is taken. Expected: the CPUID exit is handled
    normally, put runs, then the pending 0xF5 is serviced when IRQs are enabled -> KVM_REQ_PMI for the same
    vCPU -> injected on the next entry. No WARN."""
    sys_ = system("upstream", pmi_world("intel", tail='"cpuid", "loop 5",', skid=1))
    cpu = sys_.cpu

    def skid_once(run: Run, s: State, moves: list[Move]) -> Move | None:
        # In guest mode with 0xF5 pending and skid left: let the guest run one more instruction.
        if s[cpu.mode] and (DELIVER, 0) in moves and (STEP, 0) in moves:
            return (STEP, 0)
        return None

    run = drive(sys_, skid_once)
    assert violation(run) == ""
    (ovf,) = run.hw("overflow")
    assert run.records[ovf[0] + 1].label == "guest_main:cpuid0"  # skid: CPUID ran with 0xF5 pending
    (x,) = [i for i, _, reason, _ in run.hw("vmexit") if reason == V.EXIT_CPUID]
    assert x == ovf[0] + 1
    assert run.states[x + 1][cpu.irr] == 1 << M.PERF_GUEST_MEDIATED_PMI_VECTOR  # still pending, IRQs off
    put_end = run.index("perf_put_guest_context:clear_loaded", x)
    irq = run.index("kvm_handle_guest_mediated_pmi:request_pmi", x, context="irq")
    # handle_exit_irqoff has nothing to dispatch (not an interrupt exit): taken at local_irq_enable.
    enable = run.index("vcpu_enter_guest:local_irq_enable", put_end)
    taken = run.index("IRQ", enable)
    assert put_end < enable < taken < irq
    assert "0xf5" in run.records[taken].text
    assert irq < run.index("vcpu_enter_guest:handle_exit", irq)  # then the CPUID is emulated
    assert run.states[irq][run.slot("kvm.running_vcpu")] == 1  # the same vCPU is still running
    dlv = run.index("vcpu_enter_guest:kvm_pmu_deliver_pmi", irq)
    inject = run.index("vcpu_enter_guest:inject_pending_event", dlv)
    assert run.index("vcpu_enter_guest:vmenter", inject) > inject  # injected on the next entry
    journal = sys_.ghost.journal or []
    assert [j for j in journal if j[0] == "guest PMI"] == [("guest PMI", "delivered", 1, 1)]


# --- the inner run loop: fastpath handler, then the request check (§1.1, H11) ------------------------

FASTPATH_WORLD = """
[machine]
vendor = "intel"
num_gp = 1
gp_width = 5
num_fixed = 0
[guest]
program = [
  "wrmsr PMC0 -2",
  "wrmsr EVTSEL0 INSTRUCTIONS|USR|OS|INT|EN",   # emulated and counted: pmc->counter = -1
  "tsc_deadline",                                # a fastpath WRMSR: counting it wraps PMC0
  "hlt",
]
[bounds]
exits = 0
nmis = 0
"""


def test_fastpath_request_check_comes_after_the_handler() -> None:
    """§1.1: the vendor run function's fastpath handler runs first; the loop then re-enters only if
    kvm_vcpu_exit_request() is false. Without the H11 guard (no-fastpath-guard) the handler skips the
    TSC_DEADLINE WRMSR and its emulated count wraps pmc->counter, raising KVM_REQ_PMI: the request check
    after the handler sees it and breaks out to put, and the slow-path handle_exit does not emulate the
    already-skipped WRMSR a second time (exit_fastpath != EXIT_FASTPATH_NONE)."""
    sys_ = system("no-fastpath-guard", FASTPATH_WORLD)
    cpu = sys_.cpu
    run = drive(sys_)
    assert violation(run) == "no-emulated-count-while-loaded"  # I9: the count went into a stale pmc->counter
    rip, ef, req_pmi = run.slot("guest.rip"), run.slot("kvm.exit_fastpath"), run.slot("kvm.KVM_REQ_PMI")
    (fp,) = [
        i
        for i, rec in enumerate(run.records)
        if rec.label == "vcpu_enter_guest:fastpath" and run.states[i][cpu.exit_qual] == MSR_IA32_TSC_DEADLINE
    ]
    after = run.states[fp + 1]
    assert (after[ef], after[req_pmi], after[run.slot("pmc.counter0")]) == (1, 1, 0)
    assert after[rip] == run.states[fp][rip] + 1  # skipped in the fastpath
    assert run.records[fp + 1].label == "vcpu_enter_guest:kvm_vcpu_exit_request"
    assert run.records[fp + 2].label == "intel_mediated_pmu_put:save_status"  # broke out: no re-entry
    done = run.index("vcpu_enter_guest:handle_exit", fp)
    assert run.states[done][ef] == 1
    assert run.states[done + 1][rip] == after[rip]  # not skipped again
    assert run.states[done + 1][ef] == 0  # the local is dead after vcpu_enter_guest
    assert run.index("vcpu_enter_guest:kvm_pmu_deliver_pmi", done) > done


def test_fastpath_guard_sends_the_counted_wrmsr_to_the_slow_path() -> None:
    """The same guest under upstream: kvm_pmu_is_fastpath_emulation_allowed() is false (PMC0 counts
    instructions), so the handler leaves the exit alone, the loop breaks out, and handle_exit emulates
    and counts the WRMSR after put (H11); no property fails."""
    sys_ = system("upstream", FASTPATH_WORLD)
    cpu = sys_.cpu
    run = drive(sys_)
    assert violation(run) == ""
    rip, ef = run.slot("guest.rip"), run.slot("kvm.exit_fastpath")
    (fp,) = [
        i
        for i, rec in enumerate(run.records)
        if rec.label == "vcpu_enter_guest:fastpath" and run.states[i][cpu.exit_qual] == MSR_IA32_TSC_DEADLINE
    ]
    assert run.states[fp + 1][ef] == 0 and run.states[fp + 1][rip] == run.states[fp][rip]
    assert run.records[fp + 1].label == "vcpu_enter_guest:kvm_vcpu_exit_request"
    assert run.records[fp + 2].label == "intel_mediated_pmu_put:save_status"
    done = run.index("vcpu_enter_guest:handle_exit", fp)
    assert run.states[done + 1][rip] == run.states[fp][rip] + 1  # skipped once, in the slow path
    assert run.states[done + 1][run.slot("kvm.KVM_REQ_PMI")] == 1  # its count wrapped pmc->counter


# --- S8: unrelated NMIs while the guest context is loaded (H5) -------------------------------------

S8_WORLD = """
[machine]
vendor = "intel"
pmu_version = 5
num_gp = 2
gp_width = 48
num_fixed = 0
[[host_event]]
name = "cycles"
event = "cycles"
counter = 1
[guest]
program = [
  "wrmsr EVTSEL0 INSTRUCTIONS|USR|OS|EN",
  "wrmsr PMC0 -5",
  "loop 10",                 # PMC0 wraps: guest GLOBAL_STATUS bit 0 (no PMI: INT=0)
  "cpuid",                   # full exit: put saves bit 0, load restores it
  "loop 3",
  "rdmsr GLOBAL_STATUS",
  "hlt",
]
[bounds]
exits = 0
nmis = 2
"""


def s8_schedule(sys_: System) -> Chooser:
    """NMI 1 at the VM-entry step of the load that restored the guest's status bit;
    NMI 2 while the guest runs after that entry."""
    vmenter = next(pc for pc, ins in enumerate(sys_.task.code) if ins.qualified == "vcpu_enter_guest:vmenter")
    gs = sys_.layout.index("pmu.global_status")
    sent = [0]

    def choose(run: Run, s: State, moves: list[Move]) -> Move | None:
        if (DELIVER, 0) in moves:
            return None
        if sent[0] == 0 and not s[sys_.cpu.mode] and s[sys_.task_pc] == vmenter and s[gs]:
            sent[0] = 1
            return (NMI, 0)
        if sent[0] == 1 and s[sys_.cpu.mode]:
            sent[0] = 2
            return (NMI, 0)
        return None

    return choose


def nmi_handler_runs(run: Run) -> list[list[int]]:
    """Record indices of each run of perf's NMI handler."""
    out: list[list[int]] = []
    prev = False
    for i, rec in enumerate(run.records):
        here = rec.context == "nmi" and rec.move == (STEP, 0)
        if here and not prev:
            out.append([])
        if here:
            out[-1].append(i)
        prev = here
    return out


def test_S8_unrelated_nmis_leave_guest_state_alone() -> None:
    """S8 (H5, §2.4, I10): an NMI between load and VM-entry and one while the guest runs (NMI VM-exit):
    perf's handler returns NMI_DONE both times without reading/acking GLOBAL_STATUS or writing LVTPC;
    the guest's status bit and the 0xF5 routing are unchanged."""
    sys_ = system("upstream", S8_WORLD)
    cpu = sys_.cpu
    run = drive(sys_, s8_schedule(sys_))
    assert violation(run) == ""
    first, second = nmi_handler_runs(run)
    # NMI 1: the vCPU task is at VM-entry with the guest context loaded (host mode).
    assert run.records[first[0] - 1].label == "NMI" and run.states[first[0]][cpu.mode] == 0
    assert run.records[run.index("vcpu_enter_guest:vmenter", first[-1])].hw[0][0] == "vmcs_load_pgc"
    # NMI 2: arrived in guest mode -> NMI VM-exit, then the host handler runs.
    (nmi_exit,) = [i for i, _, reason, _ in run.hw("vmexit") if reason == V.EXIT_NMI]
    assert first[-1] < nmi_exit < second[0]
    for handler in (first, second):
        assert [run.records[i].label for i in handler] == [
            "perf_event_nmi_handler:guest_lvtpc_gate",
            "default_do_nmi:iret",  # the backtrace handler claims it (nmi_handle(), V6)
        ]
        assert [h for i in handler for h in run.records[i].hw] == []  # no RDMSR, WRMSR, LVTPC write
        before, after = run.states[handler[0]], run.states[handler[-1] + 1]
        assert before[cpu.lvtpc] == after[cpu.lvtpc] == F5
        assert before[cpu.global_status] == after[cpu.global_status] == 0x1
    journal = sys_.ghost.journal or []
    assert ("guest read", "rdmsr(IA32_PERF_GLOBAL_STATUS)", 0x1, 0x1) in journal


def test_S8_ablation_no_nmi_gate() -> None:
    """S8 ablation (design no-nmi-gate, H5): the same NMI before VM-entry runs the Intel PMI handler, which
    reads and acks the guest's GLOBAL_STATUS and (late ack) rewrites LVTPC to NMI: the guest enters with its
    PMIs routed to the host NMI and its status bit gone."""
    sys_ = system("no-nmi-gate", S8_WORLD)
    cpu = sys_.cpu
    run = drive(sys_, s8_schedule(sys_))
    assert violation(run) == "nmi-handler-hands-off"
    handler = nmi_handler_runs(run)[0]
    hw = [h for i in handler for h in run.records[i].hw]
    assert ("rdmsr", ST["intel"], 0x1) in hw
    assert ("wrmsr", CLR["intel"], 0x1) in hw
    assert ("lvtpc", APIC_NMI, INTEL_ENABLE) in hw  # written after enable_all: PERF_GLOBAL_CTRL != 0
    entry = run.index("vcpu_enter_guest:vmenter", handler[-1])
    assert run.states[entry][cpu.lvtpc] == APIC_NMI
    assert run.states[entry][cpu.global_status] == 0
