"""Host perf as it is: cpuc->enabled = 1 from boot, a system-wide active_events, events bound to
another CPU, events closed (issue 13 part 1; verified-facts.md V3, V4, V18)."""

from __future__ import annotations

import dataclasses

import pytest

from vpmu.check.explore import check
from vpmu.check.system import DELIVER, PERF_CLOSE, PERF_OP, PERF_OPEN, STEP, System
from vpmu.check.world import parse_world, resolve_world
from vpmu.designs import get_design
from vpmu.errors import ConfigError
from vpmu.hw import msr as M
from vpmu.kernel.env import HostEvent


def _world(**event: object) -> System:
    w = resolve_world("intel-remote-event")
    ev = dataclasses.replace(w.host_events[0], **event)  # type: ignore[arg-type]
    bounds = dataclasses.replace(w.bounds, perf_ops=2)
    return System(get_design("upstream"), dataclasses.replace(w, host_events=(ev,), bounds=bounds))


def test_cpuc_enabled_is_one_from_boot_without_any_event_here() -> None:
    """The per-CPU cpu_hw_events initializer has .enabled = 1 (arch/x86/events/core.c, V4): with
    the only event on another CPU no perf code ran here, yet perf believes the PMU enabled, and
    the event counts in active_events (V3)."""
    system = System(get_design("upstream"), resolve_world("intel-remote-event"))
    env, s = system.env, list(system.initial())
    assert s[env.cpuc_enabled] == 1
    assert env.active_events(s) and not env.pmu_ctx_here(s)


def test_perf_ctx_disable_does_not_reach_the_x86_pmu_without_a_context_here() -> None:
    """perf_ctx_disable()/perf_ctx_enable() walk this CPU's pmu contexts (kernel/events/core.c);
    without an x86 event here they never call x86_pmu_disable() (V18), whereas perf_pmu_disable()
    on the x86 PMU itself does (the perf-pmu-disabled fix)."""
    system = System(get_design("perf-pmu-disabled"), resolve_world("intel-remote-event"))
    fn = system.functions["perf_load_guest_context"]
    steps = {st.label: st for st in fn.steps}
    s = list(system.initial())
    s[system.cpu.global_ctrl] = system.env.host_global_enable
    assert "perf_ctx_disable" in steps and "perf_ctx_enable" not in steps
    do = steps["perf_ctx_disable"].do
    assert do is not None
    do(s)
    assert s[system.env.cpuc_enabled] == 1 and s[system.cpu.global_ctrl]
    do = steps["perf_pmu_disable"].do
    assert do is not None
    do(s)
    assert s[system.env.cpuc_enabled] == 0 and s[system.cpu.global_ctrl] == 0


@pytest.mark.parametrize(
    ("design", "verdict", "prop"),
    [
        ("upstream", "violated", "lvtpc-route-consistent"),
        ("perf-stays-disabled", "violated", "no-guest-counting-in-host"),  # V18: not a fix here
        ("perf-pmu-disabled", "holds", ""),
    ],
)
def test_f1_on_a_world_with_the_only_event_on_another_cpu(design: str, verdict: str, prop: str) -> None:
    r = check(System(get_design(design), resolve_world("intel-remote-event")))
    assert r.verdict == verdict, r.message
    if prop:
        assert r.prop == prop


def test_another_cpus_event_changes_only_active_events_from_open_to_close() -> None:
    """Opening or closing an event bound to another CPU sends no IPI here; its existence is all
    this CPU sees (__x86_pmu_event_init() ... hw_perf_event_destroy(), arch/x86/events/core.c)."""
    system = _world(opened=False, close=True)
    env, cpu = system.env, system.cpu
    s = system.initial()
    assert not env.active_events(list(s))
    assert system.perf_ops(s) == [(PERF_OP, PERF_OPEN)]
    s, rec = system.apply(s, (PERF_OP, PERF_OPEN))
    assert env.active_events(list(s)) and not s[cpu.irr] and "active_events++" in rec.text
    assert system.perf_ops(s) == [(PERF_OP, PERF_CLOSE)]
    s, rec = system.apply(s, (PERF_OP, PERF_CLOSE))
    assert not env.active_events(list(s)) and "active_events--" in rec.text


def test_closing_an_event_of_this_cpu_removes_it_by_ipi_then_frees_it() -> None:
    """perf_event_release_kernel(): perf_remove_from_context() by IPI stops the event, then its
    free decrements active_events; the NMI handler then returns at its active_events check."""
    system = _world(cpu=0, close=True)
    env = system.env
    s = system.initial()
    assert s[env.ev_active[0]] and (PERF_OP, PERF_CLOSE) in system.perf_ops(s)
    s, rec = system.apply(s, (PERF_OP, PERF_CLOSE))
    assert "remove IPI pending" in rec.text
    s, _ = system.apply(s, (DELIVER, 0))
    while s[system.irq_pc] >= 0:
        s, _ = system.apply(s, (STEP, 0))
    assert not s[env.ev_active[0]] and not s[env.ev_installed[0]] and not env.active_events(list(s))
    assert s[system.cpu.evtsel] & M.EVENTSEL_EN == 0


def test_world_keys_cpu_and_close_are_validated() -> None:
    base = {"machine": {"vendor": "intel", "num_gp": 1, "gp_width": 5}, "guest": {"program": ["hlt"]}}
    with pytest.raises(ConfigError, match=r"host_event\[0\]\.cpu"):
        parse_world({**base, "host_event": [{"cpu": 2}]}, "w")
    with pytest.raises(ConfigError, match=r"bounds\.perf_ops"):
        parse_world({**base, "host_event": [{"close": True}]}, "w")
    w = parse_world({**base, "host_event": [{"cpu": 1}, {"name": "b", "counter": 0}]}, "w")  # counters do not clash
    assert w.host_events[0] == HostEvent("event0", cpu=1, period=15)
