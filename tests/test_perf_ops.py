"""Host perf reconfiguring by IPI while a mediated guest runs (bounds.perf_ops; §2.3, H15)."""

from __future__ import annotations

import pytest

from vpmu.check.explore import check
from vpmu.check.system import DELIVER, LOCAL_TIMER_VECTOR, PERF_OP, PERF_OPEN, PERF_ROTATE, STEP, System
from vpmu.check.world import resolve_world
from vpmu.designs import get_design


@pytest.mark.parametrize("world", ["intel-perf-ops", "amd-perf-ops"])
def test_upstream_holds_with_host_perf_reconfiguring(world: str) -> None:
    """Disabling and re-enabling the host event at any point keeps every property."""
    r = check(System(get_design("upstream"), resolve_world(world)))
    assert r.verdict == "holds", r.message
    assert r.stats.states > 10_000  # the IPIs really multiply the interleavings


@pytest.mark.parametrize(
    ("world", "dispatch"),
    [
        # VMX acknowledges the vector on exit and KVM dispatches it in handle_exit_irqoff (F-4.4.2).
        ("intel-perf-ops", "vcpu_enter_guest:handle_exit_irqoff"),
        # SVM leaves it pending in the APIC; it is taken when IRQs are enabled (F-5.4).
        ("amd-perf-ops", "vcpu_enter_guest:local_irq_enable"),
    ],
)
def test_ipi_in_guest_mode_is_handled_after_put(world: str, dispatch: str) -> None:
    """A perf IPI arriving in guest mode makes the guest exit; the host handles it only after
    put (§1.1), so the event toggles with guest_ctx_loaded clear and H15's refusal is not needed."""
    system = System(get_design("upstream"), resolve_world(world))
    env, cpu = system.env, system.cpu
    s = system.initial()
    while not s[cpu.mode]:  # run to the first VM-entry
        s, _ = system.apply(s, (STEP, 0))
    s, rec = system.apply(s, (PERF_OP, 0))
    assert "perf_event_disable(cycles)" in rec.text
    assert system.moves(s)[0] == (DELIVER, 0)
    s, rec = system.apply(s, (DELIVER, 0))
    assert rec.label == "VM-exit" and not s[cpu.mode]
    labels = []
    while s[env.ipi_event] >= 0:
        s, rec = system.apply(s, system.moves(s)[0])
        labels.append(rec.label)
    assert labels.index("perf_put_guest_context:clear_loaded") < labels.index(dispatch)
    assert labels.index(dispatch) < labels.index("perf_event_ipi:event_function")
    assert not s[env.ev_enabled[0]] and not s[env.ev_active[0]]


def test_simulated_perf_ipis_toggle_the_host_event_and_keep_counts_exact() -> None:
    """`simulate --perf-ops every:K`: another CPU disables, then re-enables, the host event; perf's
    reads still equal the host-mode events it asked for, and the guest's count is native."""
    from vpmu.check.simulate import Plan, simulate

    system = System(get_design("upstream"), resolve_world("intel-long"))
    r = simulate(
        system,
        Plan.parse("every:10000", "--exits"),
        reason="interrupt",
        perf_ops=Plan.parse("every:250000", "--perf-ops"),
    )
    assert r.finished and r.perf_ops == 4 and not r.violations
    assert ("guest read", "rdpmc(0x0)", 1_000_001, 1_000_001) in r.journal
    texts = [rec.text for rec in r.records if rec.label == "IPI"]
    assert texts[0].startswith("another CPU calls perf_event_disable(cycles)")
    assert texts[1].startswith("another CPU calls perf_event_enable(cycles)")


def test_random_plans_are_seeded_and_advance_loops_in_bulk() -> None:
    from vpmu.check.simulate import Plan, simulate

    def run(seed: int) -> tuple[int, int, int]:
        system = System(get_design("upstream"), resolve_world("amd-long"))
        r = simulate(system, Plan.parse("random:0.0001", "--exits"), seed=seed)
        return len(r.records), r.exits, r.retired

    assert run(7) == run(7)
    steps, exits, retired = run(7)
    assert retired == 1_000_001 and 50 < exits < 200 and steps < 5_000  # bulk, not one step per instruction


# -- event creation and multiplexing (perf_event_open on another CPU; perf_rotate_context) ---------


def _scenario_system(scenario_id: str) -> System:
    from vpmu.scenarios import load_catalog

    world = load_catalog().select([scenario_id])[0].world
    assert world is not None
    return System(get_design("upstream"), world)


def _run_irq(system: System, s: tuple[int, ...]) -> tuple[tuple[int, ...], list[str]]:
    """Deliver the pending host interrupt and run its handler to its iret."""
    labels = []
    s, rec = system.apply(s, (DELIVER, 0))
    labels.append(rec.label)
    while s[system.irq_pc] >= 0:
        s, rec = system.apply(s, (STEP, 0))
        labels.append(rec.label)
    return s, labels


def test_an_event_opened_later_counts_in_active_events_at_once_and_runs_after_its_install_ipi() -> None:
    """perf_event_open() on another CPU increments active_events before the install IPI reaches
    this CPU (§2.4's gate sees it at once); __perf_install_in_context() then programs the
    counter at -period and starts the event."""
    system = _scenario_system("S3-open")
    env, cpu = system.env, system.cpu
    s = system.initial()
    assert not env.active_events(list(s)) and not s[env.ev_active[0]]
    assert s[cpu.global_ctrl] == cpu.gp_bits  # the reset value: perf never touched a PMU it has no event on
    assert system.moves(s)[-1] == (PERF_OP, PERF_OPEN + 0)
    s, rec = system.apply(s, (PERF_OP, PERF_OPEN + 0))
    assert rec.text.startswith("another CPU opens cycles (perf_event_open: active_events++)")
    assert env.active_events(list(s)) and not s[env.ev_installed[0]]
    assert system.perf_ops(s) == []  # one operation at a time
    s, labels = _run_irq(system, s)
    assert labels[0] == "IRQ" and "perf_event_ipi:event_function" in labels
    assert s[env.ev_installed[0]] and s[env.ev_enabled[0]] and s[env.ev_active[0]]
    period = env.host_events[0].period
    assert s[env.ev_prev[0]] == -period & cpu.gp_mask  # armed at -period, counting since
    assert s[cpu.pmc] > s[env.ev_prev[0]] and s[cpu.global_ctrl] == env.host_global_enable
    assert system.perf_ops(s) == [(PERF_OP, 0)]  # now it can be disabled


def test_the_nmi_gate_reads_active_events_from_the_state() -> None:
    """With no event opened, perf_event_nmi_handler() returns before the vendor handler."""
    system = _scenario_system("S3-open")
    s = list(system.initial())
    gate = next(i for i in system.nmi.code if i.step.label == "no_active_events")
    assert gate.when is not None and gate.when(s)
    s[system.env.ev_opened[0]] = 1
    assert not gate.when(s)


def test_rotation_swaps_the_multiplexed_flexible_events() -> None:
    """Two flexible events on one counter: the first in flexible_groups order runs and the other
    sets rotate_necessary; the hrtimer's perf_rotate_context() moves the running one to the tail
    and schedules the other in, folding the first one's count (host-isolation stays exact)."""
    system = _scenario_system("S3-rotate")
    env, cpu = system.env, system.cpu
    s = system.initial()
    cyc, ins = 0, 1
    assert s[env.ev_active[cyc]] and not s[env.ev_active[ins]] and s[env.rotate_necessary]
    assert (PERF_OP, PERF_ROTATE) in system.moves(s)
    for _ in range(3):  # some host instructions for the running event to count
        s, _ = system.apply(s, (STEP, 0))
    s, rec = system.apply(s, (PERF_OP, PERF_ROTATE))
    assert "multiplexing hrtimer" in rec.text
    s, labels = _run_irq(system, s)
    assert [label.split(":")[1] for label in labels if label.startswith("perf_mux_hrtimer_handler")] == [
        "apic_eoi",
        "no_rotation",
        "perf_pmu_disable",
        "ctx_event_to_rotate",
        "sched_out_flexible",
        "rotate_ctx",
        "sched_in_flexible",
        "perf_pmu_enable",
        "iret",
    ]
    assert not s[env.ev_active[cyc]] and s[env.ev_active[ins]]
    assert [s[slot] for slot in env.flexible_order] == [ins, cyc]
    assert s[env.rotate_necessary]  # cycles could not be scheduled: rotate again later
    assert s[cpu.evtsel] & 0xFF == env.host_eventsel(env.host_events[ins]) & 0xFF
    assert not s[system.ghost.violation]


def test_no_rotation_runs_while_the_guest_context_is_loaded() -> None:
    """IRQs are off from load to put (§1.1): in every reachable state where the rotation handler
    runs, perf_put_guest_context() has run (guest_ctx_loaded is clear)."""
    system = _scenario_system("S3-rotate")
    env = system.env
    seen, frontier, rotating = {system.initial()}, [system.initial()], 0
    while frontier:
        nxt = []
        for s in frontier:
            for _, t in system.successors(s):
                if t not in seen:
                    seen.add(t)
                    nxt.append(t)
                    if system._irq_running(t, LOCAL_TIMER_VECTOR):
                        rotating += 1
                        assert not t[env.guest_ctx_loaded]
        frontier = nxt
    assert rotating > 100


def test_simulated_perf_ops_open_an_unopened_event_first() -> None:
    from vpmu.check.simulate import Plan, simulate

    system = _scenario_system("S3-open")
    r = simulate(system, Plan("none"), perf_ops=Plan.parse("at:1", "--perf-ops"))
    assert r.finished and r.perf_ops == 1 and not r.violations
    assert next(rec.text for rec in r.records if rec.label == "IPI").startswith("another CPU opens cycles")


@pytest.mark.parametrize(
    ("events", "field", "expected"),
    [
        (
            [{"name": "a", "pinned": True, "counter": 0}, {"name": "b", "pinned": False, "counter": 0}],
            "host_event[1].counter",
            "only flexible events (pinned = false) may share one",
        ),
        (
            [{"name": "a", "pinned": False, "counter": 0}, {"name": "b", "pinned": True, "counter": 0}],
            "host_event[1].counter",
            "only flexible events (pinned = false) may share one",
        ),
        ([{"name": "a"}, {"name": "a", "counter": 1}], "host_event[1].name", "another host event has this name"),
        ([{"name": "a", "opened": "no"}], "host_event[0].opened", "true or false"),
    ],
)
def test_host_event_errors_name_the_field(events: list[dict[str, object]], field: str, expected: str) -> None:
    from vpmu.check.world import parse_world
    from vpmu.errors import ConfigError

    data = {
        "machine": {"vendor": "intel", "num_gp": 2, "gp_width": 5},
        "host_event": events,
        "guest": {"program": ["hlt"]},
    }
    with pytest.raises(ConfigError) as e:
        parse_world(data, "w.toml")
    assert field in str(e.value) and expected in str(e.value)


def test_flexible_events_may_share_a_counter() -> None:
    from vpmu.check.world import parse_world

    data = {
        "machine": {"vendor": "amd", "num_gp": 1, "gp_width": 5},
        "host_event": [{"name": "a", "pinned": False, "counter": 0}, {"name": "b", "pinned": False, "counter": 0}],
        "guest": {"program": ["hlt"]},
    }
    w = parse_world(data, "w.toml")
    assert [(e.name, e.counter, e.pinned) for e in w.host_events] == [("a", 0, False), ("b", 0, False)]


def test_perf_never_arms_a_counter_one_event_from_overflow() -> None:
    """x86_perf_event_set_period(): a period of 1 is armed as 2 (some CPUs misbehave with 1 left)."""
    from vpmu.check.world import parse_world

    data = {
        "machine": {"vendor": "intel", "num_gp": 1, "gp_width": 5, "num_fixed": 0},
        "host_event": [{"name": "cycles", "period": 1}],
        "guest": {"program": ["hlt"]},
    }
    system = System(get_design("upstream"), parse_world(data, "w.toml"))
    s = system.initial()
    assert s[system.env.ev_prev[0]] == -2 & system.cpu.gp_mask == s[system.cpu.pmc]


def _world(events: list[dict[str, object]], num_gp: int = 1, perf_ops: int = 1) -> System:
    from vpmu.check.world import parse_world

    data = {
        "machine": {"vendor": "intel", "num_gp": num_gp, "gp_width": 5, "num_fixed": 0},
        "host_event": events,
        "guest": {"program": ["loop 2", "hlt"]},
        "bounds": {"exits": 0, "nmis": 0, "perf_ops": perf_ops},
    }
    return System(get_design("upstream"), parse_world(data, "w.toml"))


def test_once_a_flexible_event_does_not_fit_later_ones_are_not_tried() -> None:
    """merge_sched_in(): can_add_hw = 0 after the first flexible group that fails, so c (whose
    counter is free) waits with b for the next rotation."""
    system = _world(
        [
            {"name": "a", "pinned": False, "counter": 0},
            {"name": "b", "pinned": False, "counter": 0},
            {"name": "c", "pinned": False, "counter": 1},
        ],
        num_gp=2,
    )
    s, env = system.initial(), system.env
    assert [s[a] for a in env.ev_active] == [1, 0, 0] and s[env.rotate_necessary]


def test_an_event_installed_later_joins_the_tail_of_the_flexible_groups() -> None:
    """perf_event_groups_insert() gives a new group the next group_index: b, running, stays; a waits."""
    system = _world([{"name": "a", "pinned": False, "opened": False}, {"name": "b", "pinned": False, "counter": 0}])
    env = system.env
    s = system.initial()
    assert [s[a] for a in env.ev_active] == [0, 1]
    s, _ = system.apply(s, (PERF_OP, PERF_OPEN + 0))
    s, _ = _run_irq(system, s)
    assert [s[a] for a in env.ev_active] == [0, 1] and [s[slot] for slot in env.flexible_order] == [1, 0]
    assert s[env.rotate_necessary]


def test_no_second_perf_op_while_the_acked_timer_waits_for_its_handler() -> None:
    """VMX acknowledges the timer vector at VM-exit (ISR, exit vector); until its handler has
    run after put, no other perf operation starts."""
    system = _scenario_system("S3-rotate")
    s = list(system.initial())
    s[system.perf_ops_left] = 2
    state = tuple(s)
    while not state[system.cpu.mode]:
        state, _ = system.apply(state, (STEP, 0))
    state, _ = system.apply(state, (PERF_OP, PERF_ROTATE))
    state, rec = system.apply(state, (DELIVER, 0))
    assert rec.label == "VM-exit" and state[system.cpu.exit_vector] == LOCAL_TIMER_VECTOR
    assert system.perf_ops(state) == []


def test_an_event_never_opened_is_an_input_error() -> None:
    from vpmu.errors import ConfigError

    with pytest.raises(ConfigError, match=r"bounds.perf_ops = 0 is not allowed; host event 'a' has opened = false"):
        _world([{"name": "a", "opened": False}], perf_ops=0)
