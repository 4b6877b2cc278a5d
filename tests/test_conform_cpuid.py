"""Guest CPUID configurations: interception policy, #GP for absent counters, the PERFCTR0/1 quirk."""

from __future__ import annotations

import pytest

from vpmu.config import MachineConfig
from vpmu.conform.runner import CaseRun, Schedule, _judge, cases_by_id, run_vm
from vpmu.conform.suites import Case
from vpmu.conform.suites.machines import INTEL, vcpu
from vpmu.hw.layout import Layout
from vpmu.hw.virt import Cpu
from vpmu.kernel import kvm
from vpmu.kernel.env import KernelEnv, VcpuSpec


def _env(v: VcpuSpec) -> KernelEnv:
    layout = Layout()
    return KernelEnv(Cpu(INTEL, layout), layout, v)


def test_interception_follows_the_guest_cpuid() -> None:
    full = _env(vcpu("intel"))
    assert not kvm.need_perf_global_ctrl_intercept(full) and not kvm.need_rdpmc_intercept(full)
    fewer = _env(vcpu("intel", num_gp=4))
    assert kvm.need_any_pmc_intercept(fewer) and kvm.need_rdpmc_intercept(fewer)
    v1 = _env(vcpu("intel", num_fixed=0, version=1))
    assert kvm.need_perf_global_ctrl_intercept(v1)
    assert 0x38F not in kvm.passthrough_msrs(v1)  # IA32_PERF_GLOBAL_CTRL
    narrow = _env(VcpuSpec(num_gp=8, num_fixed=3, gp_width=32))
    assert not kvm.need_any_pmc_intercept(narrow) and kvm.need_rdpmc_intercept(narrow)


def _run(case: Case, schedule: str = "none") -> CaseRun:
    out = CaseRun(case.id, schedule)
    _judge(case, [run_vm("upstream", case, vm, Schedule.parse(schedule)) for vm in case.vms], out)
    return out


def _small(case_id: str, labels: tuple[str, ...]) -> Case:
    from dataclasses import replace

    case = cases_by_id()[case_id]
    return replace(case, vms=tuple(vm for vm in case.vms if vm.label in labels))


def test_matrix_passes_and_the_perfctr_quirk_is_load_bearing(monkeypatch: pytest.MonkeyPatch) -> None:
    case = _small("intel/counters/test_gp_counters[CPUID matrix]", ("v1-legacy-gp1", "v2-fw-gp3"))
    assert _run(case, "every:3").passed
    monkeypatch.setattr(kvm, "PERFCTR_QUIRK_MSRS", frozenset())  # KVM #GPs on absent PERFCTR1
    bad = _run(case)
    assert any("0xc2) no fault" in b for b in bad.failed_checks)


def test_reserved_fixed_bits_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    case = _small("intel/counters/test_fixed_counters[CPUID matrix]", ("v2-fixed1-bitmask0x0",))
    assert _run(case).passed
    monkeypatch.setattr(kvm, "rsvd_write", lambda env, msr, value: False)
    bad = _run(case)
    assert any("in FIXED_CTR_CTRL" in b for b in bad.failed_checks)


def test_a_world_names_the_guest_cpuid_and_bad_values_are_refused() -> None:
    import tomllib

    from vpmu.check.world import parse_world
    from vpmu.errors import ConfigError

    text = """
[machine]
vendor = "intel"
num_gp = 2
num_fixed = 1
[vcpu]
num_fixed = 0
version = 1
[guest]
program = ["hlt"]
"""
    world = parse_world(tomllib.loads(text), "w")
    assert world.vcpu.version == 1 and kvm.need_perf_global_ctrl_intercept(_env_for(world.machine, world.vcpu))
    with pytest.raises(ConfigError, match=r"vcpu\.num_fixed"):
        parse_world(tomllib.loads(text.replace("num_fixed = 0\n", "")), "w")
    with pytest.raises(ConfigError, match=r"vcpu\.version"):
        parse_world(tomllib.loads(text.replace("version = 1", "version = 7")), "w")


def _env_for(machine: MachineConfig, v: VcpuSpec) -> KernelEnv:
    layout = Layout()
    return KernelEnv(Cpu(machine, layout), layout, v)
