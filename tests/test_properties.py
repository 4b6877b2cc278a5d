"""Every property of the catalog fails on some design and holds on one that should satisfy it.

Each violation test names the design, the world and the property, and pins the
exact length of the counterexample. The explorer is breadth-first, so that
length is the BFS-shortest: no violating state exists at a smaller depth (the
tests also check ``stats.depth`` equals it). The lengths were computed once and
hard-coded; a change means the model, a design or the explorer changed, and the
new trace deserves a look before the number is updated.

Worlds are small (one GP counter 5 bits wide, no fixed counter, no NMIs and no
asynchronous exits unless the hazard needs them) so each check takes
milliseconds and the trace shows only the hazard. Each contrast run checks a
design that should satisfy the property on the *same* world.
"""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from vpmu.check import properties as P
from vpmu.check.explore import Result, check
from vpmu.check.system import DELIVER, NMI, NMI_CTX, TASK, System
from vpmu.check.world import WorldSpec, builtin_worlds, parse_world
from vpmu.designs import UPSTREAM, get_design
from vpmu.kernel.env import KernelEnv
from vpmu.kernel.lang import Design, Edit, Step

CAP = 200_000  # far above any small world here; a cap hit fails the test (verdict "incomplete")

#: The guest of the default worlds, without the fastpath WRMSR: it counts its own
#: instructions with a PMI three instructions away, takes it, reads counter and status.
PROGRAM = [
    "wrmsr PMC0 -3",
    "wrmsr EVTSEL0 INSTRUCTIONS|USR|OS|INT|EN",
    "wrmsr GLOBAL_CTRL GP0",
    "loop 3",
    "rdpmc 0",
    "rdmsr GLOBAL_STATUS",
    "hlt",
]


def small_world(
    vendor: str,
    *,
    exits: int = 0,
    nmis: int = 0,
    program: list[str] | None = None,
    host_event: bool = True,
    name: str = "",
) -> WorldSpec:
    """A one-counter world written as TOML, as a user would write it."""
    machine = 'vendor = "intel"\nnum_fixed = 0' if vendor == "intel" else 'vendor = "amd"\npmu_version = "perfmonv2"'
    lines = ", ".join(f'"{line}"' for line in (program or PROGRAM))
    text = f"""
name = "{name or vendor + "-small"}"

[machine]
{machine}
num_gp = 1
gp_width = 5
"""
    if host_event:
        text += """
[[host_event]]
name = "cycles"
event = "cycles"
exclude_guest = true
"""
    text += f"""
[guest]
program = [{lines}]
rearm = ["PMC0 -8"]

[bounds]
exits = {exits}
exit_reasons = {'["timer", "interrupt"]' if vendor == "intel" else '["interrupt"]'}
nmis = {nmis}
"""
    return parse_world(tomllib.loads(text), f"<test {vendor}>")


def run(
    design: Design | str, world: WorldSpec, properties: tuple[str, ...] | None = None, cap: int | None = CAP
) -> Result:
    d = get_design(design) if isinstance(design, str) else design
    return check(System(d, world, properties), max_states=cap)


def violated(
    design: Design | str, world: WorldSpec, prop: str, length: int, properties: tuple[str, ...] | None = None
) -> Result:
    """Assert the first (BFS-shortest) violation is ``prop`` after exactly ``length`` steps."""
    r = run(design, world, properties)
    got = (r.verdict, r.prop, len(r.records))
    assert got == ("violated", prop, length), f"{got}: {r.message or r.reason}"
    assert r.stats.depth == length  # found in BFS layer `length`: nothing shorter violates
    assert len(r.states) == length + 1
    return r


def holds(
    design: Design | str, world: WorldSpec, properties: tuple[str, ...] | None = None, cap: int | None = CAP
) -> Result:
    r = run(design, world, properties, cap)
    assert r.verdict == "holds", f"{r.verdict}: {r.prop} after {len(r.records)} steps: {r.message or r.reason}"
    return r


def labels(r: Result) -> list[str]:
    return [rec.label for rec in r.records]


def is_subsequence(needles: list[str], haystack: list[str]) -> bool:
    it = iter(haystack)
    return all(any(x == n for x in it) for n in needles)


# --- derived designs for the properties no named design breaks ----------------------------


def _raw_eventsel0(env: KernelEnv) -> Step:
    """KVM before v6 26/44: the guest's selector goes to hardware as the guest wrote it."""
    cpu, sel = env.cpu, env.pmc_eventsel

    def do(s: list[int]) -> None:
        cpu.wrmsr(s, env.GP_EVENTSEL(0), s[sel])

    return Step("load_eventsel0", "wrmsrq(GP_EVENTSEL_BASE + 0, pmc->eventsel)", do)


RAW_EVENTSEL = UPSTREAM.derive(
    "raw-eventsel",
    "H8 ablation: load writes the guest's selector, not eventsel_hw (no GuestOnly stuffing)",
    [Edit("replace", "kvm_pmu_load_guest_pmcs", "load_eventsel0", step=_raw_eventsel0)],
)
NO_LVTPC_SWITCH = UPSTREAM.derive(
    "no-lvtpc-switch",
    "H6 ablation: the host LVTPC stays NMI while the guest context is loaded",
    [Edit("delete", "kvm_mediated_pmu_load", "load_lvtpc"), Edit("delete", "kvm_mediated_pmu_put", "put_lvtpc")],
)
NO_SCHED_OUT = UPSTREAM.derive(
    "no-sched-out",
    "H9/H15 ablation: perf_load_guest_context leaves the exclude_guest host events scheduled in",
    [Edit("delete", "perf_load_guest_context", "ctx_sched_out")],
)
PUT_KEEPS_LVTPC = UPSTREAM.derive(
    "put-keeps-lvtpc",
    "H1 ablation: perf_put_guest_lvtpc clears the flag but leaves LVTPC routed to 0xF5",
    [Edit("delete", "perf_put_guest_lvtpc", "write_lvtpc")],
)


# --- the acceptance cases ---------------------------------------------------------------


def test_seed_assert_warns_on_amd_without_host_events() -> None:
    """Sean's objection in the seed thread (2025-11-19): with no perf event,
    perf_load_guest_context() is "one big nop", and amd_pmu_reload_virt() (run when
    KVM enabled SVM) left every GlobalCtl bit set, so the proposed
    WARN_ON_ONCE(rdmsr(PERF_GLOBAL_CTRL)) fires on a perfectly good state (H2)."""
    world = small_world("amd", host_event=False)
    r = violated("seed-assert", world, "no-warn", 10)  # BFS-shortest
    assert labels(r)[-1] == "kvm_mediated_pmu_load:assert_global_ctrl"
    # perf_load_guest_context() touched no MSR: the GlobalCtl the WARN reads is reload_virt's.
    assert not any(rec.hw for rec in r.records if rec.label.startswith("perf_load_guest_context:"))
    assert r.records[-1].hw == [("rdmsr", 0xC0000301, 0x1)]
    assert "WARN_ON_ONCE fired at kvm_mediated_pmu_load:assert_global_ctrl" in r.message
    holds("upstream", world)  # the explicit clear: nothing fires, every property holds


def test_seed_assert_warns_on_amd_with_host_events() -> None:
    """With a host event, perf's own enable after sched-out writes every counter bit back."""
    world = small_world("amd")
    violated("seed-assert", world, "no-warn", 10)  # BFS-shortest
    holds("upstream", world)


def test_lvtpc_before_clear_rewrites_lvtpc_while_enabled() -> None:
    """H1 (PeterZ 2025-08-18): LVTPC is switched to 0xF5 before KVM clears GLOBAL_CTRL."""
    world = small_world("intel")
    r = violated("lvtpc-before-clear", world, "lvtpc-written-while-enabled", 10)  # BFS-shortest
    assert labels(r)[-1] == "perf_load_guest_lvtpc:write_lvtpc"
    holds("upstream", world)


def test_no_clear_on_intel() -> None:
    """H2: without KVM's clear, perf's enable_all leaves GLOBAL_CTRL set, so LVTPC is
    rewritten (first) and, once the guest has programmed a selector, the guest's
    selector is loaded with the PMU enabled and counts host code."""
    world = small_world("intel")
    r = violated("no-clear", world, "lvtpc-written-while-enabled", 10)  # BFS-shortest
    assert "while PERF_GLOBAL_CTRL = 0x1" in r.message
    only = ("no-guest-counting-in-host",)
    r = violated("no-clear", world, "no-guest-counting-in-host", 64, only)  # BFS-shortest
    # the guest first programs its selector (an exit KVM emulates); the next load writes it.
    assert labels(r)[-1] == "kvm_pmu_load_guest_pmcs:load_eventsel0"
    assert "PMC0 holds guest selector" in r.message
    holds("upstream", world)


def test_no_clear_is_harmless_for_counting_on_amd() -> None:
    """On AMD the GuestOnly bit KVM stuffs keeps the guest selector from counting host
    code even without the clear; only the LVTPC ordering (H1) is broken."""
    world = small_world("amd", exits=1)
    violated("no-clear", world, "lvtpc-written-while-enabled", 10)  # BFS-shortest
    holds("no-clear", world, ("no-guest-counting-in-host", "amd-guest-only"))


def test_no_nmi_gate_lets_perf_touch_the_guest_pmu() -> None:
    """H5: an unrelated NMI while the guest LVTPC is loaded runs the whole perf PMI
    handler, which disables the PMU and acks GLOBAL_STATUS holding guest bits."""
    world = small_world("intel", nmis=1)
    r = violated("no-nmi-gate", world, "nmi-handler-hands-off", 16)  # BFS-shortest
    assert [rec.context for rec in r.records[-4:]] == [TASK, TASK, NMI_CTX, NMI_CTX]
    assert [rec.move[0] for rec in r.records[-4:-2]] == [NMI, DELIVER]  # raised, then taken
    assert labels(r)[-1] == "intel_pmu_handle_irq:disable_all"
    holds("upstream", world, ("nmi-handler-hands-off",))


def test_put_keeps_eventsel_leaves_guest_state() -> None:
    """H9: put leaves the guest's selector in hardware when perf re-schedules its events."""
    world = small_world("intel")
    r = violated("put-keeps-eventsel", world, "clean-after-put", 80)  # BFS-shortest
    assert "EVTSEL0=0x5300c0" in r.message
    holds("upstream", world)


def test_no_status_restore_loses_guest_status() -> None:
    """H10: load does not set the guest's saved overflow bit back into GLOBAL_STATUS;
    restricted to guest transparency, the guest then reads a status a native CPU
    would not show."""
    world = small_world("intel")
    r = violated("no-status-restore", world, "restored-after-load", 123)  # BFS-shortest
    assert "GLOBAL_STATUS=0x0 but pmu->global_status=0x1" in r.message
    only = ("guest-transparency",)
    r = violated("no-status-restore", world, "guest-transparency", 126, only)  # BFS-shortest
    assert labels(r)[-1] == "guest_pmi_handler:read_status"
    assert "rdmsr(IA32_PERF_GLOBAL_STATUS) read 0x0; a native CPU shows 0x1" in r.message
    holds("upstream", world)


def test_no_status_restore_on_amd() -> None:
    world = small_world("amd")
    violated("no-status-restore", world, "restored-after-load", 123)  # BFS-shortest
    only = ("guest-transparency",)
    violated("no-status-restore", world, "guest-transparency", 127, only)  # BFS-shortest
    holds("upstream", world)


def test_no_fastpath_guard_counts_into_a_stale_counter() -> None:
    """H11: the fastpath skips the guest's TSC-deadline WRMSR and counts it in
    pmc->counter while the live count is in hardware; put will overwrite it."""
    world = small_world("intel", program=[*PROGRAM[:3], "tsc_deadline", *PROGRAM[3:]])
    r = violated("no-fastpath-guard", world, "no-emulated-count-while-loaded", 74)  # BFS-shortest
    assert labels(r)[-1] == "vcpu_enter_guest:fastpath"
    holds("upstream", world)


# --- the remaining properties --------------------------------------------------------------------


def test_lvtpc_route_consistent_upstream_race_on_intel() -> None:
    """The race the default Intel world finds in the merged code: an unrelated NMI
    between perf_load_guest_lvtpc()'s LVTPC write and its flag write runs the whole
    Intel PMI handler, whose late ack rewrites LVTPC to NMI and whose enable_all
    re-enables the PMU. The flag is then set with LVTPC routing PMIs as NMIs: once
    the guest selector is loaded a guest overflow would reach host perf. The proposed
    fix (flag first, PMU left disabled) holds on the same world."""
    world = small_world("intel", nmis=1)
    r = violated("upstream", world, "lvtpc-route-consistent", 77)  # BFS-shortest
    assert "guest_lvtpc_loaded=1 but LVTPC = NMI" in r.message
    # In order: the LVTPC write, the NMI raised and taken, the handler's late ack to NMI,
    # its return, the flag write, and the guest selector that arms a PMI.
    assert is_subsequence(
        [
            "perf_load_guest_lvtpc:write_lvtpc",
            "NMI",
            "NMI",
            "intel_pmu_handle_irq:enable_all",
            "intel_pmu_handle_irq:late_ack",
            "default_do_nmi:iret",
            "perf_load_guest_lvtpc:set_flag",
            "kvm_pmu_load_guest_pmcs:load_eventsel0",
        ],
        labels(r)[-20:],
    )
    assert labels(r)[-1] == "kvm_pmu_load_guest_pmcs:load_eventsel0"
    holds("perf-stays-disabled", world)


def test_lvtpc_route_consistent_put_keeps_lvtpc() -> None:
    """H1 on the put side: perf clears guest_lvtpc_loaded but LVTPC keeps routing to
    0xF5 when perf re-enables its events; a host overflow would be misrouted."""
    world = small_world("intel")
    r = violated(PUT_KEEPS_LVTPC, world, "lvtpc-route-consistent", 32)  # BFS-shortest
    assert labels(r)[-1] == "perf_put_guest_context:perf_ctx_enable"
    holds("upstream", world)


def test_amd_guest_only_raw_selector() -> None:
    """H8 (v6 26/44): SVM does not switch GlobalCtl at #VMEXIT, so a guest selector
    without GuestOnly keeps counting host code until put clears GlobalCtl. KVM must
    stuff GuestOnly=1/HostOnly=0 into eventsel_hw; loading the guest's raw selector
    breaks that as soon as the guest has enabled a counter."""
    world = small_world("amd")
    r = violated(RAW_EVENTSEL, world, "amd-guest-only", 65)  # BFS-shortest
    assert labels(r)[-1] == "kvm_pmu_load_guest_pmcs:load_eventsel0"
    assert "is not GuestOnly" in r.message
    holds("upstream", world)


def test_guest_pmi_accounting_without_lvtpc_switch() -> None:
    """H6 / RFC open question 3: with LVTPC left in NMI mode while the guest runs, the
    guest's overflow raises a host NMI; host perf takes (and acks) it and the guest
    never gets its PMI. The dedicated vector 0xF5 exists for exactly this."""
    world = small_world("intel")
    r = violated(NO_LVTPC_SWITCH, world, "guest-pmi-accounting", 66)  # BFS-shortest
    assert "a guest counter overflowed and its PMI was delivered as a host NMI" in r.message
    assert r.records[-1].context == "guest"
    holds("upstream", world)


def test_host_isolation_without_sched_out() -> None:
    """H9/H15: if perf does not schedule its exclude_guest events out before KVM loads
    the guest context, KVM overwrites the host's counter and selector; perf still
    believes the event runs, does not re-program it at put, and the event misses
    every host-mode cycle afterwards. A guest that does nothing suffices."""
    world = small_world("intel", program=["hlt"])
    r = violated(NO_SCHED_OUT, world, "host-isolation", 38)  # BFS-shortest
    assert labels(r)[-1] == "vcpu_run:perf_read"
    assert "host event 'cycles' counted" in r.message
    holds("upstream", world)


def test_host_pmi_accounting_host_overflow_to_guest_vector() -> None:
    """H1: with LVTPC still routed to 0xF5 after put, a host counter overflow raises
    the guest's vector: KVM would inject a spurious guest PMI and host perf loses its
    sample. lvtpc-route-consistent flags the misrouting as soon as perf re-enables
    (32 steps, above); restricted to host-pmi-accounting the overflow itself shows."""
    world = small_world("intel")
    only = ("host-pmi-accounting",)
    r = violated(PUT_KEEPS_LVTPC, world, "host-pmi-accounting", 41, only)  # BFS-shortest
    assert "routed to the guest vector 0xF5" in r.message
    assert ("pmi", 0xF5, 0xF5) in r.records[-1].hw  # host-mode overflow, raised on the guest vector
    assert any(kind == "overflow" and not in_guest for kind, _, in_guest in r.records[-1].hw)
    holds("upstream", world, only)


def test_no_guest_counting_in_host_flag_first_alone() -> None:
    """flag-first fixes the LVTPC window but not the PMU enable: the NMI handler's
    enable_all between KVM's clear and the selector load re-enables every counter, so
    the guest's selector counts host code (why perf-stays-disabled also keeps
    cpuc->enabled clear)."""
    world = small_world("intel", nmis=1)
    r = violated("flag-first", world, "no-guest-counting-in-host", 77)  # BFS-shortest
    assert labels(r)[-1] == "kvm_pmu_load_guest_pmcs:load_eventsel0"
    holds("perf-stays-disabled", world)


def test_no_unknown_nmi_fails_on_f1_and_holds_on_the_fix() -> None:
    """F1's user-visible face (V6): after an NMI in the load window rewrote LVTPC to NMI, the
    guest's counter overflows and its PMI arrives as an NMI; perf_event_nmi_handler() returns
    NMI_DONE at its guest_lvtpc_loaded gate, no NMI_LOCAL handler claims it, and
    unknown_nmi_error() (arch/x86/kernel/nmi.c) prints "Uhhuh" or, with unknown_nmi_panic,
    panics. perf-stays-disabled holds."""
    world = small_world("intel", nmis=1)
    only = ("no-unknown-nmi",)
    r = violated("upstream", world, "no-unknown-nmi", 81, only)  # BFS-shortest
    assert "Uhhuh. NMI received for unknown reason" in r.message and "Dazed and confused" in r.message
    assert labels(r)[-2:] == ["perf_event_nmi_handler:guest_lvtpc_gate", "default_do_nmi:iret"]
    panic = dataclasses.replace(world, machine=dataclasses.replace(world.machine, unknown_nmi_panic=True))
    r = violated("upstream", panic, "no-unknown-nmi", 81, only)
    assert "Kernel panic - not syncing: NMI: Not continuing" in r.message
    holds("perf-stays-disabled", world, only)


def test_mediated_exclusive_fails_when_the_vm_is_created_beside_the_watchdog() -> None:
    """H14 (S4): perf_create_mediated_pmu() refuses the first mediated VM while an include-guest
    event exists (kernel/events/core.c); without that check the VM and the watchdog coexist."""
    from vpmu.scenarios import load_catalog

    world = load_catalog().select(["S4"])[0].world
    assert world is not None
    r = violated("no-mediated-exclusion", world, "mediated-exclusive", 1)
    assert labels(r) == ["vcpu_run:kvm_arch_vcpu_precreate"]
    holds("upstream", world)


# --- every property is covered; the fix holds everywhere ---------------------------------------


def test_progress_fails_on_a_host_pmi_storm() -> None:
    """A sampling period shorter than perf's own PMI handler re-arms the counter so close to
    overflow that the handler's tail overflows it again: the vCPU never gets to run. Every
    property holds on such a world vacuously, so the checker reports it as a progress failure."""
    world = small_world("intel")
    storm = parse_world({**tomllib.loads(STORM), "name": "storm"}, "storm")
    r = check(System(get_design("upstream"), storm))
    assert (r.verdict, r.prop) == ("violated", "progress")
    assert "every path loops" in r.message
    # the whole (finite) graph, then the loop's last state; the first NMI of the storm is not back to back
    assert r.stats.states == 30 and len(r.records) == 29
    holds("upstream", world)  # the default period lets the guest finish


STORM = """
[machine]
vendor = "intel"
num_gp = 1
gp_width = 5
num_fixed = 0

[[host_event]]
name = "cycles"
event = "cycles"
period = 2

[guest]
program = ["loop 2", "hlt"]

[bounds]
exits = 0
nmis = 0
"""


def _catalog_world(scenario_id: str) -> WorldSpec:
    from vpmu.scenarios import load_catalog

    world = load_catalog().select([scenario_id])[0].world
    assert world is not None
    return world


def test_event_filter_reenabled_by_a_fixed_ctr_ctrl_write() -> None:
    """F2 (docs/findings.md): reprogram_fixed_counters() copies the whole FIXED_CTR_CTRL into
    fixed_ctr_ctrl_hw but marks only the fields that changed, so a denied counter whose field
    did not change is never filtered again; the next load enables it in hardware."""
    world = _catalog_world("F2")
    r = violated("upstream", world, "event-filter", 108)
    assert labels(r)[-1] == "vcpu_enter_guest:vmenter" and "FIXED_CTR0 counts" in r.message
    writes = [hw for rec in r.records if rec.label.endswith("load_fixed_ctrl") for hw in rec.hw]
    assert [w[2] for w in writes if w[0] == "wrmsr"] == [0x0, 0x0, 0x33]  # entry, after each write
    holds("fixed-refilter", world, ("event-filter",))


def test_event_filter_bypassed_when_load_writes_the_guest_selector() -> None:
    """raw-eventsel loads pmc->eventsel instead of eventsel_hw: a denied GP event runs."""
    world = _catalog_world("S10")
    r = violated("raw-eventsel", world, "event-filter", 61, ("event-filter",))
    assert "PMC0 counts event 0xc0" in r.message
    holds("upstream", world, ("event-filter",))


def test_a_latched_pmi_is_judged_where_it_is_delivered() -> None:
    """F3 (masked_pmi = "latch", open point 1): a guest overflow while LVTPC is masked is latched;
    put's LVTPC write unmasks it as NMI and the ghost judges that delivery, not only the overflow.
    With the default "drop" policy the same world holds."""
    from dataclasses import replace

    world = _catalog_world("F3-latch")
    r = violated("upstream", world, "guest-pmi-accounting", 114)
    assert labels(r)[-1] == "perf_put_guest_lvtpc:write_lvtpc" and "delivered as a host NMI" in r.message
    dropped = replace(world, machine=replace(world.machine, masked_pmi="drop"))
    holds("upstream", dropped)


COVERED = {
    "progress": test_progress_fails_on_a_host_pmi_storm,
    "lvtpc-written-while-enabled": test_lvtpc_before_clear_rewrites_lvtpc_while_enabled,
    "lvtpc-route-consistent": test_lvtpc_route_consistent_upstream_race_on_intel,
    "no-guest-counting-in-host": test_no_clear_on_intel,
    "amd-guest-only": test_amd_guest_only_raw_selector,
    "clean-after-put": test_put_keeps_eventsel_leaves_guest_state,
    "restored-after-load": test_no_status_restore_loses_guest_status,
    "no-emulated-count-while-loaded": test_no_fastpath_guard_counts_into_a_stale_counter,
    "nmi-handler-hands-off": test_no_nmi_gate_lets_perf_touch_the_guest_pmu,
    "guest-transparency": test_no_status_restore_loses_guest_status,
    "guest-pmi-accounting": test_guest_pmi_accounting_without_lvtpc_switch,
    "host-isolation": test_host_isolation_without_sched_out,
    "host-pmi-accounting": test_host_pmi_accounting_host_overflow_to_guest_vector,
    "no-warn": test_seed_assert_warns_on_amd_without_host_events,
    "event-filter": test_event_filter_reenabled_by_a_fixed_ctr_ctrl_write,
    "no-unknown-nmi": test_no_unknown_nmi_fails_on_f1_and_holds_on_the_fix,
    "mediated-exclusive": test_mediated_exclusive_fails_when_the_vm_is_created_beside_the_watchdog,
}


def test_every_property_has_a_violation_test() -> None:
    assert set(COVERED) == set(P.BY_NAME)


@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_fix_holds_on_small_worlds_with_exits_and_nmis(vendor: str) -> None:
    """perf-stays-disabled satisfies every property of its vendor on a small world with
    one asynchronous exit (of either kind) and one unrelated NMI. All properties are
    judged in one run: a state violating any of them would end it, so "holds" means
    each holds alone on the same state graph."""
    world = small_world(vendor, exits=1, nmis=1, program=[*PROGRAM[:3], "tsc_deadline", *PROGRAM[3:]])
    system = System(get_design("perf-stays-disabled"), world)
    assert set(system.props) == {p.name for p in P.PROPERTIES if p.vendor in ("", vendor)}
    r = check(system, max_states=CAP)
    assert r.verdict == "holds", f"{r.prop}: {r.message}"
    assert r.stats.states > 1000


# --- the default worlds -------------------------------------------------------------------------


def test_upstream_violates_intel_default() -> None:
    """The known race on the default Intel world (see the route-consistency test)."""
    violated("upstream", builtin_worlds()["intel-default"], "lvtpc-route-consistent", 81)  # BFS-shortest


@pytest.mark.slow
@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_perf_stays_disabled_holds_on_default_world(vendor: str) -> None:
    world = builtin_worlds()[f"{vendor}-default"]
    r = holds("perf-stays-disabled", world, cap=None)
    assert r.stats.states > 100_000


@pytest.mark.slow
def test_upstream_holds_on_amd_default() -> None:
    r = holds("upstream", builtin_worlds()["amd-default"], cap=None)
    assert r.stats.states > 100_000


@pytest.mark.parametrize("design", ["no-guestonly-amd", "fixed-refilter"])
def test_variants_of_handle_exit_keep_its_fastpath_guard(design: str) -> None:
    """A design that wraps handle_exit must still skip it after an exit the fastpath handled."""
    from vpmu.kernel import kvm

    system = System(get_design(design), builtin_worlds()["intel-default"])
    step = next(st for st in system.functions["vcpu_enter_guest"].steps if st.label == "handle_exit")
    assert step.when is not None
    s = list(system.initial())
    s[system.env.exit_fastpath] = kvm.EXIT_FASTPATH_REENTER_GUEST
    assert not step.when(s)
    s[system.env.exit_fastpath] = kvm.EXIT_FASTPATH_NONE
    assert step.when(s)
