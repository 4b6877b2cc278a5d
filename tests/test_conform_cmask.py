"""check_gp_counter_cmask is not vacuous: CMASK=2 counts the loop body's two-instruction cycles."""

from __future__ import annotations

from vpmu.conform.runner import CaseRun, Schedule, _judge, cases_by_id, run_vm
from vpmu.conform.suites.kut import LOOP_IPC, N
from vpmu.designs import DESIGNS, UPSTREAM, _handle_exit_then
from vpmu.hw import msr as M
from vpmu.hw import virt as V
from vpmu.kernel.env import KernelEnv
from vpmu.kernel.lang import Edit, Step

CASE = "intel/kut/check_gp_counter_cmask[full-width]"


def _strip_cmask(env: KernelEnv) -> Step:
    sels = {env.GP_EVENTSEL(i): i for i in range(env.vcpu.num_gp)}

    def then(s: list[int], reason: int, msr: int, value: int) -> None:
        if reason == V.EXIT_WRMSR and msr in sels:
            s[env.pmc_eventsel_hw + sels[msr]] &= ~M.EVENTSEL_CMASK

    return _handle_exit_then(env, "eventsel_hw without CMASK", "test ablation", then)


def test_cmask_counts_the_cycles_with_two_instructions_and_a_dropped_cmask_is_caught() -> None:
    case = cases_by_id()[CASE]
    r = run_vm("upstream", case, case.vms[0], Schedule.parse("every:99991"))
    (obs,) = [o for o in r.obs if o.tag == "cmask"]
    assert obs.virt == obs.native == 10 * N // LOOP_IPC  # the loop body's cycles; nothing else reaches 2
    broken = UPSTREAM.derive(
        "test-no-cmask", "drop CMASK", [Edit("replace", "vcpu_enter_guest", "handle_exit", step=_strip_cmask)]
    )
    DESIGNS[broken.name] = broken
    try:
        r = run_vm(broken.name, case, case.vms[0], Schedule.parse("none"))
        out = CaseRun(CASE, "none")
        _judge(case, [r], out)
        assert not out.passed and out.failed_checks and out.failed_checks[0].startswith("cmask")
    finally:
        del DESIGNS[broken.name]
