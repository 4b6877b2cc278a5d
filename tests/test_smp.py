"""Several pCPUs and vCPU migration (issue 13 part 5): each pCPU has its own PMU, local APIC and
perf state; the vCPU task is preempted between two vcpu_enter_guest() calls (kvm_sched_out ->
kvm_arch_vcpu_put) and scheduled in on another pCPU (kvm_sched_in -> kvm_arch_vcpu_load,
arch/x86/kvm/x86.c), where the next kvm_mediated_pmu_load() runs."""

from __future__ import annotations

import dataclasses

import pytest

from vpmu.check.explore import check
from vpmu.check.smp import MIGRATE, Smp, per_cpu_slot
from vpmu.check.system import STEP, System
from vpmu.check.world import builtin_worlds, parse_world, resolve_world
from vpmu.designs import get_design
from vpmu.errors import ConfigError


def _small(name: str, nmis: int = 0) -> System:
    w = resolve_world(name)
    w = dataclasses.replace(w, bounds=dataclasses.replace(w.bounds, exits=0, nmis=nmis, migrations=1))
    return System(get_design("upstream"), w)


def test_two_cpu_worlds_are_built_in_and_one_cpu_worlds_keep_the_plain_system() -> None:
    worlds = builtin_worlds()
    assert worlds["intel-smp"].cpus == worlds["amd-smp"].cpus == 2
    assert System(get_design("upstream"), worlds["intel-default"]).smp is None
    assert isinstance(System(get_design("upstream"), worlds["amd-smp"]).smp, Smp)


def test_what_is_per_cpu() -> None:
    """PMU and APIC registers, perf's per-CPU state and the NMI path's are per pCPU; the VMCS,
    the exit information, KVM's struct kvm_pmu and the guest are the vCPU's."""
    assert per_cpu_slot("LVTPC", "hw") and per_cpu_slot("GLOBAL_CTRL", "hw") and per_cpu_slot("GIF", "hw")
    assert per_cpu_slot("perf.guest_lvtpc_loaded", "host") and per_cpu_slot("perf.cpuc_enabled", "host")
    assert per_cpu_slot("ghost.owner.PMC0", "ghost") and not per_cpu_slot("ref.PMC0", "ghost")
    assert not per_cpu_slot("VMCS.GUEST_PERF_GLOBAL_CTRL", "hw") and not per_cpu_slot("MODE", "hw")
    assert not per_cpu_slot("pmc.counter0", "kvm") and not per_cpu_slot("guest.rip", "guest")


def test_migration_swaps_the_pcpu_state_and_keeps_the_vcpus() -> None:
    system = _small("intel-smp")
    smp = system.smp
    assert isinstance(smp, Smp)
    env, cpu = system.env, system.cpu
    s = system.initial()
    while not s[cpu.mode]:  # first trip into the guest: load on pCPU 0
        assert (MIGRATE, 1) not in system.moves(s) or system.task.code[s[system.task_pc]].qualified == "vcpu_run:again"
        s, _ = system.apply(s, (STEP, 0))
    while (MIGRATE, 1) not in system.moves(s):  # back out, put, up to the preemption point
        s, _ = system.apply(s, system.moves(s)[0])
    assert system.task.code[s[system.task_pc]].qualified == "vcpu_run:again"
    before = s
    s, rec = system.apply(s, (MIGRATE, 1))
    assert "kvm_arch_vcpu_put" in rec.text and "kvm_arch_vcpu_load" in rec.text and s[smp.vcpu_cpu] == 1
    for k, i in enumerate(smp.per_cpu):  # pCPU 0's state went to its shadow, pCPU 1's (boot) came in
        assert s[smp.shadow[0] + k] == before[i]
    assert s[env.pmc_counter] == before[env.pmc_counter] and s[env.guest_rip] == before[env.guest_rip]
    assert s[env.ev_prev[0]] != before[env.ev_prev[0]] or s[cpu.pmc] != before[cpu.pmc]  # another event instance
    assert (MIGRATE, 1) not in system.moves(s)  # budget spent
    while not s[cpu.mode]:  # the next load runs on pCPU 1
        s, _ = system.apply(s, (STEP, 0))
    assert s[env.guest_lvtpc_loaded] and s[smp.shadow[0] + smp.per_cpu.index(env.guest_lvtpc_loaded)] == 0


def _reachable(system: System) -> set[tuple[int, ...]]:
    seen = {system.initial()}
    todo = [system.initial()]
    while todo:
        for _, n in system.successors(todo.pop()):
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


@pytest.mark.parametrize(("world", "verdict"), [("amd-smp", "holds"), ("intel-smp", "violated")])
def test_properties_hold_per_cpu_with_migration(world: str, verdict: str) -> None:
    """The guest runs on both pCPUs; upstream holds on AMD and shows F1 on Intel."""
    system = _small(world, nmis=1)
    assert system.smp is not None
    ran_on = {s[system.smp.vcpu_cpu] for s in _reachable(system) if s[system.cpu.mode]}
    assert ran_on == {0, 1}
    r = check(system)
    assert r.verdict == verdict, r.message
    if verdict == "violated":
        assert r.prop == "lvtpc-route-consistent"


def test_smp_keys_are_validated() -> None:
    base = {"machine": {"vendor": "intel", "num_gp": 1, "gp_width": 5}, "guest": {"program": ["hlt"]}}
    with pytest.raises(ConfigError, match=r"bounds\.migrations"):
        parse_world({**base, "bounds": {"migrations": 1}}, "w")
    with pytest.raises(ConfigError, match=r"cpus"):
        parse_world({**base, "cpus": 5}, "w")
    with pytest.raises(ConfigError, match=r"system-wide"):
        parse_world({**base, "cpus": 2, "host_event": [{"cpu": 1}]}, "w")
