"""The VM's life and include-guest events (issue 13 part 4; S4, H14): perf_create_mediated_pmu()
at the first KVM_CREATE_VCPU (kvm_arch_vcpu_precreate(), arch/x86/kvm/x86.c), -EOPNOTSUPP for an
include-guest event while a mediated VM exists (mediated_pmu_account_event()), and
perf_release_mediated_pmu() at destruction (kernel/events/core.c)."""

from __future__ import annotations

import pytest

from vpmu.check.explore import check
from vpmu.check.system import PERF_CLOSE, PERF_OP, PERF_OPEN, System
from vpmu.check.world import parse_world
from vpmu.designs import get_design
from vpmu.errors import ConfigError
from vpmu.scenarios import load_catalog


def _system(scenario_id: str, design: str = "upstream") -> System:
    world = load_catalog().select([scenario_id])[0].world
    assert world is not None
    return System(get_design(design), world)


def _reachable(system: System) -> list[tuple[int, ...]]:
    seen = {system.initial()}
    todo = [system.initial()]
    while todo:
        s = todo.pop()
        for _, n in system.successors(s):
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return list(seen)


def test_the_watchdog_makes_vcpu_creation_fail_until_it_is_closed() -> None:
    """S4: with the watchdog's include-guest event the first KVM_CREATE_VCPU fails (-EBUSY) and the
    guest never runs; once another CPU closed it, the VM is created, runs and is released."""
    system = _system("S4")
    env, cpu = system.env, system.cpu
    s = system.initial()
    assert env.nr_include_guest_events(list(s)) == 1 and not s[env.mediated_vm]
    assert (PERF_OP, PERF_CLOSE) in system.moves(s)
    states = _reachable(system)
    ends = {system.task.code[s[system.task_pc]].step.label for s in states if system.finished(s)}
    assert ends == {"end", "end_failed"}
    ran = [s for s in states if s[cpu.mode]]
    assert ran and all(s[env.mediated_vm] and not env.nr_include_guest_events(list(s)) for s in ran)
    assert all(not s[env.mediated_vm] for s in states if system.finished(s))  # released at destruction


def test_an_include_guest_event_is_refused_while_the_vm_exists() -> None:
    system = _system("S4-eopnotsupp")
    env = system.env
    s = system.initial()
    while not s[env.mediated_vm]:
        s, _ = system.apply(s, (0, 0))
    s, rec = system.apply(s, (PERF_OP, PERF_OPEN))
    assert "-EOPNOTSUPP" in rec.text and not env.nr_include_guest_events(list(s))


def test_mediated_exclusive_fails_without_the_create_check() -> None:
    r = check(_system("S4", "no-mediated-exclusion"))
    assert (r.verdict, r.prop) == ("violated", "mediated-exclusive")
    assert check(_system("S4")).verdict == "holds"


def test_vm_lifecycle_is_validated() -> None:
    base = {"machine": {"vendor": "intel", "num_gp": 1, "gp_width": 5}, "guest": {"program": ["hlt"]}}
    with pytest.raises(ConfigError, match=r"vm\.lifecycle"):
        parse_world({**base, "vm": {"lifecycle": 1}}, "w")
    with pytest.raises(ConfigError, match=r"host_event\[0\]\.exclude_guest"):
        parse_world({**base, "host_event": [{"exclude_guest": False}]}, "w")
    w = parse_world({**base, "vm": {"lifecycle": True}, "host_event": [{"exclude_guest": False}]}, "w")
    assert w.lifecycle and not w.host_events[0].exclude_guest
