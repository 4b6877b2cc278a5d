"""Design files round trip: written as TOML or Python, shown with `vpmu show`, checked
with `vpmu check` (check/design_file.py, commands.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vpmu.check.design_file import load_design_file
from vpmu.cli import main
from vpmu.designs import get_design

WORLD = """
name = "{vendor}-tiny"

[machine]
{machine}
num_gp = 1
gp_width = 5

[[host_event]]
name = "cycles"
event = "cycles"

[guest]
program = ["wrmsr PMC0 -3", "wrmsr EVTSEL0 INSTRUCTIONS|USR|OS|INT|EN", "wrmsr GLOBAL_CTRL GP0",
           "loop 3", "tsc_deadline", "rdpmc 0", "rdmsr GLOBAL_STATUS", "hlt"]
rearm = ["PMC0 -8"]

[bounds]
exits = 1
exit_reasons = {reasons}
nmis = 1
"""

#: perf-stays-disabled, written as a file: flag-first's swap and the deleted enable.
STAYS_DISABLED = """\
name = "stays-disabled-file"
base = "upstream"
summary = "perf-stays-disabled, from a file"

[[edit]]
op = "swap"
function = "perf_load_guest_lvtpc"
label = "write_lvtpc"
other = "set_flag"

[[edit]]
op = "delete"
function = "perf_load_guest_context"
label = "perf_ctx_enable"
"""

#: The same, plus a copy of KVM's clear inserted after the counters are loaded.
WITH_COPY = (
    STAYS_DISABLED.replace('name = "stays-disabled-file"', 'name = "clear-twice"')
    + """
[[edit]]
op = "insert_after"
function = "kvm_mediated_pmu_load"
label = "load_pmcs"
copy = "kvm_mediated_pmu_load:clear_global_ctrl"
as = "clear_again"
"""
)

NO_CLEAR = """\
name = "no-clear-file"

[[edit]]
op = "delete"
function = "kvm_mediated_pmu_load"
label = "clear_global_ctrl"
"""

PY_NO_GATE = """\
from vpmu.designs import get_design
from vpmu.kernel.lang import Edit

DESIGN = get_design("upstream").derive(
    "py-no-gate",
    "perf's NMI handler without the guest_lvtpc_loaded gate",
    [Edit("delete", "perf_event_nmi_handler", "guest_lvtpc_gate")],
)
"""

PY_RAW_EVENTSEL = """\
from vpmu.designs import get_design
from vpmu.kernel.lang import Edit, Step


def raw(env):
    def do(s):
        env.cpu.wrmsr(s, env.GP_EVENTSEL(0), s[env.pmc_eventsel])

    return Step("load_eventsel0", "wrmsrq(GP_EVENTSEL_BASE + 0, pmc->eventsel)", do)


DESIGN = get_design("upstream").derive(
    "py-raw-eventsel",
    "load writes the guest's selector as written (no GuestOnly)",
    [Edit("replace", "kvm_pmu_load_guest_pmcs", "load_eventsel0", step=raw)],
)
"""


@pytest.fixture
def worlds(tmp_path: Path) -> dict[str, str]:
    out = {}
    for vendor, machine in (
        ("intel", 'vendor = "intel"\nnum_fixed = 0'),
        ("amd", 'vendor = "amd"\npmu_version = "perfmonv2"'),
    ):
        p = tmp_path / f"{vendor}.toml"
        reasons = '["timer", "interrupt"]' if vendor == "intel" else '["interrupt"]'  # SVM: no preemption timer
        p.write_text(WORLD.format(vendor=vendor, machine=machine, reasons=reasons), encoding="utf-8")
        out[vendor] = str(p)
    return out


def write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def show(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    assert main(["show", *argv]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out.splitlines()


def step_labels(lines: list[str]) -> list[str]:
    """The labels of a `vpmu show DESIGN FUNCTION` listing (after the two header lines)."""
    return [line.split()[0] for line in lines[2:]]


def check_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, Any]]]:
    code = main(["check", "--json", *argv])
    out, err = capsys.readouterr()
    assert err == ""
    return code, json.loads(out)["results"]


def same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("world", "verdict", "states", "transitions", "depth", "properties", "violation")
    return all(a[k] == b[k] for k in keys)


# --- TOML -------------------------------------------------------------------------------------------


def test_toml_file_loads_with_its_edits(tmp_path: Path) -> None:
    d = load_design_file(write(tmp_path, "c.toml", WITH_COPY))
    assert (d.name, d.base, d.summary) == ("clear-twice", "upstream", "perf-stays-disabled, from a file")
    assert [e.describe() for e in d.edits] == [
        "swap perf_load_guest_lvtpc:write_lvtpc <-> set_flag",
        "delete perf_load_guest_context:perf_ctx_enable",
        "insert_after kvm_mediated_pmu_load:load_pmcs",
    ]
    assert d.edits[2].origin == f"{tmp_path / 'c.toml'}:16 (edit 3)"  # the line of its [[edit]]


def test_toml_file_shows_the_edited_step_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write(tmp_path, "c.toml", WITH_COPY)
    lines = show(capsys, "--design-file", f, "kvm_mediated_pmu_load")
    assert lines[0].startswith("kvm_mediated_pmu_load  (clear-twice, intel-default)")
    assert step_labels(lines) == [
        "perf_load_guest_context",
        "clear_global_ctrl",
        "load_lvtpc",
        "load_pmcs",
        "clear_again",
        "vendor_load",
    ]
    again = next(line for line in lines if line.split()[0] == "clear_again")
    assert "wrmsrq(kvm_pmu_ops.PERF_GLOBAL_CTRL, 0)" in again  # a copy of the clear
    assert step_labels(show(capsys, "--design-file", f, "perf_load_guest_lvtpc")) == ["set_flag", "write_lvtpc"]
    assert step_labels(show(capsys, "--design-file", f, "perf_load_guest_context")) == [
        "warn_loaded",
        "perf_ctx_disable",
        "ctx_sched_out",
        "set_loaded",
    ]
    amd = show(capsys, "--design-file", f, "kvm_mediated_pmu_load", "--vendor", "amd")
    assert amd[0].startswith("kvm_mediated_pmu_load  (clear-twice, amd-default)")
    assert amd[-1].split()[0] == "vendor_load" and "amd_mediated_pmu_load" in amd[-1]


def test_toml_file_show_without_function(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write(tmp_path, "c.toml", WITH_COPY)
    lines = show(capsys, "--design-file", f)
    assert lines[:6] == [
        "clear-twice: perf-stays-disabled, from a file",
        "  derived from upstream",
        "  edit: swap perf_load_guest_lvtpc:write_lvtpc <-> set_flag",
        "  edit: delete perf_load_guest_context:perf_ctx_enable",
        "  edit: insert_after kvm_mediated_pmu_load:load_pmcs",
        f"  source: {f}",
    ]
    assert lines[6] == "functions (intel-default):"


def test_toml_file_reproduces_a_built_in_design(
    tmp_path: Path, worlds: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The same edits as perf-stays-disabled give the same state graph: same counts."""
    f = write(tmp_path, "s.toml", STAYS_DISABLED)
    argv = ("--world", worlds["intel"], "--world", worlds["amd"])
    code, from_file = check_json(capsys, "--design-file", f, *argv)
    assert code == 0
    code2, built_in = check_json(capsys, "--design", "perf-stays-disabled", *argv)
    assert code2 == 0
    assert [r["design"] for r in from_file] == ["stays-disabled-file"] * 2
    assert [r["verdict"] for r in from_file] == ["holds", "holds"]
    assert all(same_run(a, b) for a, b in zip(from_file, built_in, strict=True))


def test_toml_file_with_a_copied_step_checks(
    tmp_path: Path, worlds: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The extra clear is harmless (GLOBAL_CTRL is already 0 there): holds on both
    vendors, with more states than without it (one more step per load)."""
    f = write(tmp_path, "c.toml", WITH_COPY)
    code, results = check_json(capsys, "--design-file", f, "--world", worlds["intel"], "--world", worlds["amd"])
    assert code == 0
    assert [(r["design"], r["verdict"]) for r in results] == [("clear-twice", "holds")] * 2
    _, base = check_json(capsys, "--design", "perf-stays-disabled", "--world", worlds["intel"])
    assert results[0]["states"] > base[0]["states"]


def test_toml_file_finds_the_same_counterexample(
    tmp_path: Path, worlds: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    f = write(tmp_path, "n.toml", NO_CLEAR)
    code, from_file = check_json(capsys, "--design-file", f, "--world", worlds["intel"])
    assert code == 1
    (r,) = from_file
    assert r["design"] == "no-clear-file"  # the base defaults to upstream, the name to the file's
    assert (r["violation"]["property"], len(r["violation"]["trace"])) == ("lvtpc-written-while-enabled", 10)
    _, (b,) = check_json(capsys, "--design", "no-clear", "--world", worlds["intel"])
    assert same_run(r, b)


def test_toml_file_text_output(tmp_path: Path, worlds: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    f = write(tmp_path, "n.toml", NO_CLEAR)
    assert main(["check", "--design-file", f, "--world", worlds["amd"]]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "no-clear-file on amd-tiny: counterexample (10 steps)"
    assert out.splitlines()[-1].split()[:3] == ["no-clear-file", "amd-tiny", "violated"]


# --- Python -----------------------------------------------------------------------------------------


def test_python_file_shows_and_checks(
    tmp_path: Path, worlds: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    f = write(tmp_path, "gate.py", PY_NO_GATE)
    d = load_design_file(f)
    assert (d.name, d.base) == ("py-no-gate", "upstream")
    lines = show(capsys, "--design-file", f, "perf_event_nmi_handler")
    assert lines[0].startswith("perf_event_nmi_handler  (py-no-gate, intel-default)")
    assert step_labels(lines) == ["no_active_events", "handle_irq"]
    code, (r,) = check_json(capsys, "--design-file", f, "--world", worlds["intel"])
    assert code == 1
    assert (r["design"], r["violation"]["property"], r["depth"]) == ("py-no-gate", "nmi-handler-hands-off", 16)
    _, (b,) = check_json(capsys, "--design", "no-nmi-gate", "--world", worlds["intel"])
    assert same_run(r, b)


def test_python_file_with_a_step_factory(
    tmp_path: Path, worlds: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    f = write(tmp_path, "raw.py", PY_RAW_EVENTSEL)
    lines = show(capsys, "--design-file", f, "kvm_pmu_load_guest_pmcs", "--vendor", "amd")
    row = next(line for line in lines if line.split()[0] == "load_eventsel0")
    assert "pmc->eventsel)" in row and "eventsel_hw" not in row
    code, (r,) = check_json(capsys, "--design-file", f, "--world", worlds["amd"])
    assert code == 1
    assert (r["violation"]["property"], r["depth"]) == ("amd-guest-only", 65)
    code, (r,) = check_json(capsys, "--design-file", f, "--world", worlds["intel"])
    assert code == 1  # on Intel the raw selector is what KVM loads anyway: only the NMI race remains
    assert r["violation"]["property"] == "lvtpc-route-consistent"


def test_built_in_designs_are_untouched_by_files(tmp_path: Path) -> None:
    before = get_design("upstream").edits
    load_design_file(write(tmp_path, "c.toml", WITH_COPY))
    load_design_file(write(tmp_path, "gate.py", PY_NO_GATE))
    assert get_design("upstream").edits == before == ()
