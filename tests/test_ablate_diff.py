"""`vpmu ablate` and `vpmu diff` (issue 5): which steps are load-bearing, and what changed between designs."""

from __future__ import annotations

import pytest

from vpmu.check.ablate import ablate, mutations
from vpmu.check.world import resolve_world
from vpmu.cli import main
from vpmu.designs import get_design


def test_mutations_are_every_deletion_and_every_adjacent_swap() -> None:
    muts = [m.name for m in mutations(get_design("upstream"), "kvm_mediated_pmu_load", resolve_world("amd-default"))]
    assert muts == [
        "(none: baseline)",
        "delete perf_load_guest_context",
        "delete clear_global_ctrl",
        "delete load_lvtpc",
        "delete load_pmcs",
        "delete vendor_load",
        "swap perf_load_guest_context <-> clear_global_ctrl",
        "swap clear_global_ctrl <-> load_lvtpc",
        "swap load_lvtpc <-> load_pmcs",
        "swap load_pmcs <-> vendor_load",
    ]


def test_the_explicit_clear_is_load_bearing_on_amd_and_the_swap_breaks_h1() -> None:
    """Issue 5's acceptance: on the default AMD world (where upstream holds), deleting the
    clear violates a property (the seed thread's question: it cannot be an assertion), and
    swapping it with the LVTPC switch violates the ordering invariant of H1."""
    out = {
        o.mutation: o
        for o in ablate(get_design("upstream"), "kvm_mediated_pmu_load", [resolve_world("amd-default")], jobs=1)
    }
    assert out["(none: baseline)"].verdict == "holds"
    assert (out["delete clear_global_ctrl"].verdict, out["delete clear_global_ctrl"].prop) == (
        "violated",
        "lvtpc-written-while-enabled",
    )
    swap = out["swap clear_global_ctrl <-> load_lvtpc"]
    assert (swap.verdict, swap.prop) == ("violated", "lvtpc-written-while-enabled")


def test_parallel_and_serial_ablation_agree() -> None:
    args = (get_design("upstream"), "amd_mediated_pmu_put", [resolve_world("amd-default")])
    assert ablate(*args, jobs=2) == ablate(*args, jobs=1)


def test_ablate_cli_table_names_worlds_and_load_bearing_steps(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ablate", "--function", "amd_mediated_pmu_put", "--vendor", "amd", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "ablation of upstream:amd_mediated_pmu_put on amd-default" in out
    assert "delete clear_global_ctrl" in out and "amd-default" in out


def test_ablate_unknown_function_is_an_input_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ablate", "--function", "nope", "--vendor", "amd"]) == 2
    err = capsys.readouterr().err
    assert "has no function 'nope'" in err and "kvm_mediated_pmu_load" in err


def test_diff_v5_upstream_matches_appendix_b5(capsys: pytest.CaptureFixture[str]) -> None:
    """B.5: v5 switches LVTPC inside perf's context load/put (while perf has the PMU disabled);
    the merged code calls perf_{load,put}_guest_lvtpc() from KVM, the load one after the clear;
    v5 wrote counters unconditionally."""
    assert main(["diff", "v5", "upstream"]) == 0
    out = capsys.readouterr().out
    assert "+ load_lvtpc: perf_load_guest_lvtpc(" in out
    assert "+ put_lvtpc: perf_put_guest_lvtpc()" in out
    assert "- arch_load_lvtpc: arch_perf_load_guest_context(data)" in out
    assert "- arch_put_lvtpc: apic_write(APIC_LVTPC, APIC_DM_NMI)" in out
    assert "* load_pmc0: changed" in out
    inlined = out[out.index("kvm_mediated_pmu_load, inlined") :]
    # In v5 the LVTPC write comes before perf re-enables the PMU; in upstream after KVM's clear.
    assert inlined.index("- perf_load_guest_context:arch_load_lvtpc") < inlined.index(
        "perf_load_guest_context:perf_ctx_enable"
    )
    assert inlined.index("kvm_mediated_pmu_load:clear_global_ctrl") < inlined.index(
        "+ perf_load_guest_lvtpc:write_lvtpc"
    )


def test_diff_of_a_design_with_itself_is_empty(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", "upstream", "upstream"]) == 0
    assert "no difference" in capsys.readouterr().out


def test_diff_unknown_design(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", "upstream", "bogus"]) == 2
    assert "unknown design 'bogus'" in capsys.readouterr().err
