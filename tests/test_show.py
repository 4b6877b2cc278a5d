"""`vpmu show`: listings a kernel developer recognises (§1.2, §1.3, B.5), and one-line errors.

Designs are data: the listing is the design's steps, by label, as kernel-like code, and a
design edit that names a label the function does not have fails with the labels it does have.
"""

from __future__ import annotations

import re

import pytest

from vpmu.check.system import System
from vpmu.check.world import resolve_world
from vpmu.cli import main
from vpmu.designs import DESIGNS, UPSTREAM, get_design
from vpmu.errors import VpmuError
from vpmu.kernel.lang import Edit, Step


def show(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["show", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def steps(out: str) -> list[tuple[str, str]]:
    """(label, text) of every step line of a function listing (two-space indent, label, text)."""
    rows = []
    for line in out.splitlines()[2:]:
        m = re.match(r"^  (\w+)\s{2,}(.*?)(?:\s{4}\[[^\]]*\])?$", line)
        if m:
            rows.append((m.group(1), m.group(2)))
    return rows


@pytest.mark.parametrize(
    ("vendor", "hook"),
    [("intel", "intel_mediated_pmu_load"), ("amd", "amd_mediated_pmu_load")],
    ids=["sec1.2-intel", "sec1.2-amd"],
)
def test_show_kvm_mediated_pmu_load_reads_like_the_kernel(
    capsys: pytest.CaptureFixture[str], vendor: str, hook: str
) -> None:
    """§1.2 steps 2-6 in order: perf_load_guest_context(); wrmsrq(kvm_pmu_ops.PERF_GLOBAL_CTRL, 0);
    perf_load_guest_lvtpc(...); kvm_pmu_load_guest_pmcs(vcpu); kvm_pmu_call(mediated_load)(vcpu)."""
    rc, out, err = show(capsys, "upstream", "kvm_mediated_pmu_load", "--vendor", vendor)
    assert rc == 0 and err == ""
    assert out.splitlines()[0].startswith(f"kvm_mediated_pmu_load  (upstream, {vendor}-default)")
    rows = steps(out)
    assert [label for label, _ in rows] == [
        "perf_load_guest_context",
        "clear_global_ctrl",
        "load_lvtpc",
        "load_pmcs",
        "vendor_load",
    ]
    keys = [
        "perf_load_guest_context",
        "wrmsrq(kvm_pmu_ops.PERF_GLOBAL_CTRL, 0)",
        "perf_load_guest_lvtpc",
        "kvm_pmu_load_guest_pmcs",
        "mediated_load",
    ]
    for (_, text), key in zip(rows, keys, strict=True):
        assert key in text
    assert hook in rows[-1][1]
    assert "§1.2 step 3" in out  # each step cites its source


def test_show_kvm_mediated_pmu_put_order(capsys: pytest.CaptureFixture[str]) -> None:
    """§1.3 / B.2: vendor put, save+zero PMCs, perf_put_guest_lvtpc(), perf_put_guest_context()."""
    rc, out, _ = show(capsys, "upstream", "kvm_mediated_pmu_put")
    assert rc == 0
    rows = steps(out)
    assert [label for label, _ in rows] == ["vendor_put", "put_pmcs", "put_lvtpc", "perf_put_guest_context"]
    keys = ["mediated_put", "kvm_pmu_put_guest_pmcs", "perf_put_guest_lvtpc", "perf_put_guest_context"]
    for (_, text), key in zip(rows, keys, strict=True):
        assert key in text


def test_show_amd_put_clears_globalctl_first(capsys: pytest.CaptureFixture[str]) -> None:
    """B.4.3: amd_mediated_pmu_put writes GlobalCtl = 0 before saving status."""
    rc, out, _ = show(capsys, "upstream", "amd_mediated_pmu_put", "--vendor", "amd")
    assert rc == 0
    assert [label for label, _ in steps(out)] == ["clear_global_ctrl", "save_status", "clear_status"]
    assert "wrmsrq(MSR_AMD64_PERF_CNTR_GLOBAL_CTL, 0)" in steps(out)[0][1]


def test_show_v5_switches_lvtpc_inside_perf(capsys: pytest.CaptureFixture[str]) -> None:
    """B.5: in v5 the LVTPC write sits inside perf_load_guest_context, after sched-out and before
    perf re-enables the PMU; KVM's load has no LVTPC step."""
    rc, out, _ = show(capsys, "v5", "perf_load_guest_context")
    assert rc == 0
    labels = [label for label, _ in steps(out)]
    assert labels.index("ctx_sched_out") < labels.index("arch_load_lvtpc") < labels.index("perf_ctx_enable")
    rc, out, _ = show(capsys, "v5", "kvm_mediated_pmu_load")
    assert "load_lvtpc" not in [label for label, _ in steps(out)]


def test_show_seed_assert_replaces_the_clear(capsys: pytest.CaptureFixture[str]) -> None:
    """Seed thread (S1 ablation): seed-assert has WARN_ON_ONCE(rdmsrq(...)) where upstream clears."""
    rc, out, _ = show(capsys, "seed-assert", "kvm_mediated_pmu_load")
    assert rc == 0
    rows = dict(steps(out))
    assert "clear_global_ctrl" not in rows
    assert rows["assert_global_ctrl"] == "WARN_ON_ONCE(rdmsrq(kvm_pmu_ops.PERF_GLOBAL_CTRL))"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["no-such-design", "kvm_mediated_pmu_load"], "unknown design 'no-such-design'; known designs: upstream, v5"),
        (["upstream", "no_such_function"], "design 'upstream' has no function 'no_such_function'; functions: "),
    ],
    ids=["unknown-design", "unknown-function"],
)
def test_show_errors_are_one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    """Usage/input errors: exit status 2, nothing on stdout, one line on stderr that says what exists."""
    rc, out, err = show(capsys, *argv)
    assert rc == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("vpmu: error: ")
    assert needle in err
    if "function" in needle:
        assert "kvm_mediated_pmu_load" in err and "kvm_mediated_pmu_put" in err
    else:
        assert all(name in err for name in DESIGNS)


# --- design edits by label (vpmu.kernel.lang.Edit) ------------------------------------------------

LOAD_LABELS = "perf_load_guest_context, clear_global_ctrl, load_lvtpc, load_pmcs, vendor_load"


@pytest.mark.parametrize(
    "edit",
    [
        Edit("delete", "kvm_mediated_pmu_load", "no_such_step"),
        Edit("swap", "kvm_mediated_pmu_load", "no_such_step", other="load_lvtpc"),
        Edit("swap", "kvm_mediated_pmu_load", "load_lvtpc", other="no_such_step"),
        Edit("replace", "kvm_mediated_pmu_load", "no_such_step", step=Step("x", "x")),
        Edit("insert_after", "kvm_mediated_pmu_load", "no_such_step", step=Step("x", "x")),
    ],
    ids=["delete", "swap-label", "swap-other", "replace", "insert_after"],
)
def test_edit_naming_a_missing_label_lists_the_labels(edit: Edit) -> None:
    """PRODUCT.md (designs as data): an edit naming a label that does not exist is an error listing the
    labels the function has, with the design's name when built as a design."""
    world = resolve_world("intel-default")
    design = UPSTREAM.derive("typo", "an edit with a typo", [edit])
    with pytest.raises(VpmuError) as exc:
        System(design, world)
    msg = str(exc.value)
    assert "\n" not in msg
    assert "design 'typo'" in msg
    assert "function 'kvm_mediated_pmu_load' has no step labelled 'no_such_step'" in msg
    assert msg.endswith(f"its labels are: {LOAD_LABELS}")


def test_edit_naming_a_missing_function_lists_the_functions() -> None:
    """The same for a function name: the error lists the design's functions."""
    design = UPSTREAM.derive("typo", "", [Edit("delete", "kvm_mediated_pmu_lod", "clear_global_ctrl")])
    with pytest.raises(VpmuError, match=r"unknown function 'kvm_mediated_pmu_lod'; functions: .*kvm_mediated_pmu_load"):
        System(design, resolve_world("amd-default"))


def test_edit_origin_is_named_and_valid_edits_apply() -> None:
    """An edit written in a file names its origin; a valid delete removes exactly that step (H2 no-clear)."""
    bad = Edit("delete", "kvm_mediated_pmu_load", "clear_globl_ctrl", origin="my.toml:3")
    with pytest.raises(VpmuError, match=r"^my\.toml:3: .*its labels are: "):
        System(UPSTREAM.derive("typo", "", [bad]), resolve_world("intel-default"))
    fns = System(get_design("no-clear"), resolve_world("intel-default")).functions
    assert fns["kvm_mediated_pmu_load"].labels() == [
        "perf_load_guest_context",
        "load_lvtpc",
        "load_pmcs",
        "vendor_load",
    ]
