"""The scenario catalog (vpmu/scenarios/catalog/) and `vpmu scenarios`.

Every entry loads and validates; every expressible scenario's observed verdict
is its expected one (and its scripted run shows the expected observations);
the catalog covers every scenario of Appendix C and the hazards the issue asks
for, listing what the model cannot express with a reason; the CLI prints the
table, exits 1 when a verdict differs and 2 for an unknown id.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from vpmu.check import properties as P
from vpmu.cli import main
from vpmu.designs import DESIGNS
from vpmu.errors import VpmuError
from vpmu.scenarios import Catalog, Scenario, load_catalog, parse_file, parse_scenario
from vpmu.scenarios.run import run

CATALOG = load_catalog()
EXPRESSIBLE = [s for s in CATALOG.scenarios if s.expressible]
APPENDIX_C = [f"S{n}" for n in range(1, 16)]
WITHHELD = {"S6", "S9", "S11", "S14"}
#: Hazards the issue asks for one scenario each (H1-H12, H14-H19), and those the model cannot express.
HAZARDS = [f"H{n}" for n in range(1, 20) if n != 13]
NOT_EXPRESSIBLE_HAZARDS = {"H4", "H16", "H17"}


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["scenarios", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- the catalog as data -------------------------------------------------------------------------


def test_catalog_loads_in_order() -> None:
    ids = [s.id for s in CATALOG.scenarios]
    assert len(ids) == len(set(ids)) >= 50
    kinds = [i[0] for i in ids]
    assert kinds == sorted(kinds, key="SHF".index)  # Appendix C, then hazards, then findings
    assert ids.index("S2") < ids.index("S10") < ids.index("S15")  # by number, not as text


def test_every_appendix_c_scenario_is_listed() -> None:
    """S1-S15 each have an entry under their own id; the withheld ones say so, the rest state an outcome
    (S3 as a whole is not expressible, but its expressible parts are separate entries; S4 is, since
    the VM's life is modelled: [vm] lifecycle)."""
    for sid in APPENDIX_C:
        s = CATALOG.by_id[sid]
        if sid in WITHHELD:
            assert not s.expressible and "withheld" in s.reason
        elif sid == "S3":
            assert not s.expressible and s.reason
        else:
            assert s.expressible, sid
    assert CATALOG.by_id["S3-sched"].expressible and CATALOG.by_id["H14"].verdict == "refused"


@pytest.mark.parametrize("hazard", HAZARDS)
def test_every_hazard_has_a_scenario(hazard: str) -> None:
    mine = [s for s in CATALOG.scenarios if hazard in s.hazards]
    assert mine, f"no scenario for {hazard}"
    if hazard in NOT_EXPRESSIBLE_HAZARDS:
        assert all(not s.expressible and s.reason for s in mine if s.id == hazard)
        assert not CATALOG.by_id[hazard].expressible
    else:
        own = [s for s in mine if s.expressible and (s.id == hazard or s.id.startswith(hazard + "-"))]
        assert own, f"no expressible scenario named after {hazard}"


def test_entries_are_complete() -> None:
    for s in CATALOG.scenarios:
        assert s.title and s.source and s.file.endswith(f"/{s.id}.toml"), s.id
        if not s.expressible:
            assert s.reason and s.design == "" and s.world is None
            continue
        assert s.design in DESIGNS and s.note, s.id
        assert s.verdict in ("holds", "violated", "refused")
        assert (s.verdict == "violated") == bool(s.prop)
        assert bool(s.properties) == bool(s.restricted), s.id  # a subset always says why
        if s.verdict == "refused":
            assert s.world is None and s.error in s.world_error
        else:
            assert s.world is not None
            if s.prop:
                assert P.BY_NAME[s.prop].vendor in ("", s.vendor)


def test_restricted_scenarios_say_so() -> None:
    restricted = {s.id for s in CATALOG.scenarios if s.properties}
    assert restricted == {
        *("S2", "S8", "S13", "S13-spurious", "H2-intel", "H10-guest", "F2-fix", "F2-linux-next", "F3-fix"),
        *("F1-unknown-nmi", "F1-panic"),
        *("S10-allow", "S10-stale"),
    }


def test_new_designs_have_summary_and_source() -> None:
    for name in ("raw-eventsel", "no-lvtpc-switch", "no-sched-out", "lvtpc-first-running", "no-global-ctrl-refresh"):
        d = DESIGNS[name]
        assert d.summary and d.source and d.base, name


# --- every expected verdict ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scenario",
    [pytest.param(s, id=s.id, marks=[pytest.mark.slow] if s.slow else []) for s in EXPRESSIBLE],
)
def test_observed_verdict_is_expected(scenario: Scenario) -> None:
    o = run(scenario)
    assert (o.verdict, o.prop) == (scenario.verdict, scenario.prop), o.message
    assert o.script_problems == []
    assert o.matches
    if o.verdict == "violated":
        assert o.result is not None and o.result.records  # a counterexample to print


def test_scripts_are_checked() -> None:
    """A scripted observation that does not happen, one out of order and an absent one that does
    happen are each reported, and the scenario no longer matches."""
    s5 = CATALOG.by_id["S5"]
    assert s5.script is not None
    steps = s5.script.steps
    wrong = replace(
        s5.script,
        steps=(steps[-1], steps[0], "host: perf_load_guest_lvtpc:write_lvtpc: LVTPC <- SMI"),
        journal=("guest read rdmsr(IA32_PERF_GLOBAL_STATUS) = 0x0 (native 0x1)",),
        absent=("kvm_mediated_pmu_load:clear_global_ctrl",),
    )
    o = run(replace(s5, script=wrong))
    assert o.verdict == "holds" and not o.matches
    assert o.observed == "holds (script differs)"
    text = "\n".join(o.script_problems)
    assert "(it appears only earlier)" in text
    assert "LVTPC <- SMI' not seen" in text
    assert "journal: 'guest read rdmsr(IA32_PERF_GLOBAL_STATUS) = 0x0 (native 0x1)' not seen" in text
    assert "absent: 'kvm_mediated_pmu_load:clear_global_ctrl' was seen" in text


def test_script_violation_must_match() -> None:
    s10 = CATALOG.by_id["S10"]
    assert s10.script is not None and s10.script.violation == "guest-transparency"
    o = run(replace(s10, script=replace(s10.script, violation="")))
    assert any("scripted run violates guest-transparency; expected none" in p for p in o.script_problems)


def test_a_wrong_expectation_differs() -> None:
    h1 = CATALOG.by_id["H1"]
    o = run(replace(h1, verdict="holds", prop=""))
    assert o.verdict == "violated" and not o.matches


# --- validation errors -------------------------------------------------------------------------------

GOOD = """
id = "H1-test"
title = "t"
hazards = ["H1"]
source = "s"
design = "lvtpc-before-clear"
[expect]
verdict = "violated"
property = "lvtpc-written-while-enabled"
[world.machine]
vendor = "intel"
num_gp = 1
gp_width = 5
[world.guest]
program = ["hlt"]
"""


def data(**changes: Any) -> dict[str, Any]:
    d = tomllib.loads(GOOD)
    for k, v in changes.items():
        if v is None:
            d.pop(k)
        else:
            d[k] = v
    return d


def test_good_scenario_parses() -> None:
    s = parse_scenario(data(), "x.toml")
    assert s.id == "H1-test" and s.expected == "violated: lvtpc-written-while-enabled"
    assert s.world is not None and s.world.name == "H1-test"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"id": "X1"}, 'id = "X1" is not allowed'),
        ({"title": ""}, 'title = "" is not allowed'),
        ({"hazards": ["H26"]}, 'hazards: "H26" is not allowed'),
        ({"design": "nope"}, 'design = "nope" is not allowed; known designs: upstream'),
        ({"expect": None}, "expect is required"),
        ({"expect": {"verdict": "maybe"}}, 'expect.verdict = "maybe" is not allowed'),
        ({"expect": {"verdict": "violated"}}, 'expect.property = "" is not allowed'),
        ({"expect": {"verdict": "holds", "property": "no-warn"}}, "expect.property is only for verdict = violated"),
        (
            {"expect": {"verdict": "holds", "properties": ["no-warn"]}},
            "expect.restricted is required with expect.properties",
        ),
        (
            {
                "expect": {
                    "verdict": "violated",
                    "property": "no-warn",
                    "properties": ["host-isolation"],
                    "restricted": "r",
                }
            },
            "expect.property 'no-warn' is not among expect.properties",
        ),
        ({"expect": {"verdict": "violated", "property": "amd-guest-only"}}, "'amd-guest-only' is for amd only"),
        ({"expect": {"verdict": "refused", "error": "H14"}}, "expect.verdict = refused, but the world loads"),
        ({"world": None}, "world is required"),
        ({"world": "nowhere"}, 'world = "nowhere" is not a built-in world'),
        ({"expressible": False}, 'reason = "" is not allowed'),
        ({"expressible": False, "reason": "r"}, "design is not allowed with expressible = false"),
        ({"reason": "r"}, "reason is only for expressible = false"),
        ({"script": {"exits": "sometimes"}}, 'script.exits = "sometimes" is not allowed'),
        ({"script": {"steps": "one"}}, 'steps = "one" is not allowed; allowed: a list of strings'),
        ({"script": {"violation": "nope"}}, 'script.violation = "nope" is not allowed'),
    ],
)
def test_validation_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(VpmuError) as e:
        parse_scenario(data(**changes), "scenarios/catalog/H1-test.toml")
    assert str(e.value).startswith("scenarios/catalog/H1-test.toml")
    assert message in str(e.value)


def test_world_errors_name_the_world_table() -> None:
    d = data()
    d["world"]["guest"]["ack"] = "never"
    with pytest.raises(VpmuError, match=r"H1-test.toml \[world\]: guest.ack = \"never\""):
        parse_scenario(d, "H1-test.toml")
    d = data()
    d["world"]["check"] = {"properties": ["no-warn"]}
    with pytest.raises(VpmuError, match=r"use expect\.properties and expect\.restricted"):
        parse_scenario(d, "H1-test.toml")


def test_file_name_must_be_the_id() -> None:
    with pytest.raises(VpmuError, match="name the file after the id"):
        parse_file(GOOD, "scenarios/catalog/H1.toml")
    with pytest.raises(VpmuError, match="malformed TOML"):
        parse_file("id = ", "scenarios/catalog/H1.toml")


def test_select_unknown_id() -> None:
    assert [s.id for s in CATALOG.select(["s5", "F1"])] == ["S5", "F1"]  # case-insensitive
    with pytest.raises(VpmuError, match=r"^unknown scenario 'S99'; known scenarios: S1, S1-seed-amd, "):
        CATALOG.select(["S99"])


# --- the CLI ---------------------------------------------------------------------------------------


def test_cli_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert re.match(r"scenario\s+hazard\s+design\s+expected\s+observed\s+time$", lines[0])
    rows = {line.split()[0]: line for line in lines[1 : 1 + len(EXPRESSIBLE)]}
    assert set(rows) == {s.id for s in EXPRESSIBLE}
    assert re.search(
        r"^S1-seed-amd\s+H2\s+seed-assert\s+violated: no-warn\s+violated: no-warn\s+\d+\.\d\ds$", rows["S1-seed-amd"]
    )
    assert re.search(r"\sholds\*\s+holds\s", rows["S8"])  # restricted: marked
    assert "DIFFERS" not in out
    assert "* judged on a subset of the properties" in out
    missing = lines[lines.index("not expressible in the model yet:") + 1 :]
    for s in CATALOG.scenarios:
        if not s.expressible:
            assert any(line.split()[0] == s.id for line in missing if line.startswith("  ") and line.split())
    assert "withheld" in out and "PEBS" in out
    n = len(CATALOG.scenarios) - len(EXPRESSIBLE)
    assert (
        lines[-1] == f"{len(EXPRESSIBLE)} scenarios: {len(EXPRESSIBLE)} as expected, 0 differ; {n} not expressible yet"
    )


def test_cli_is_deterministic_apart_from_times(capsys: pytest.CaptureFixture[str]) -> None:
    def strip(text: str) -> str:
        return re.sub(r"\d+\.\d\ds", "T", text)

    _, a, _ = cli(capsys, "S8", "F1", "H3-late")
    _, b, _ = cli(capsys, "S8", "F1", "H3-late")
    assert strip(a) == strip(b)


def test_cli_trace_of_a_holding_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "S5", "--trace")
    assert code == 0
    assert out.startswith("S5: Guest PMI end to end")
    assert "  expected: holds; observed: holds" in out
    assert re.search(r"^holds: \d+ states, \d+ transitions, depth \d+ .*no counterexample to show$", out, re.M)
    head = "scripted run (exits none, NMIs none): "
    line = next(x for x in out.splitlines() if x.startswith(head))
    assert re.fullmatch(r"\d+ steps; all 14 expected observations as stated \(.*\)", line[len(head) :])
    assert "  step     IRQ: kvm_handle_guest_mediated_pmi:request_pmi" in out
    assert "  journal  guest PMI delivered" in out
    assert out.rstrip().endswith("1 scenario: 1 as expected, 0 differ")


def test_cli_trace_of_a_violation(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "S1-seed-amd", "--trace", "--context", "3")
    assert code == 0
    assert "counterexample (10 steps)" in out
    assert "   ... 7 earlier steps (use --context 0 to see all)" in out
    assert "violated: no-warn — no WARN_ON_ONCE fires" in out
    assert "kvm_mediated_pmu_load:assert_global_ctrl" in out


def test_cli_trace_of_restricted_and_not_expressible(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "S8", "H4", "--trace")
    assert code == 0
    assert "  properties judged: lvtpc-written-while-enabled" in out
    assert "  restricted because: finding F1" in out
    assert "H4: Host PEBS" in out and "  not expressible: PEBS" in out
    assert "not expressible in the model yet:" in out  # two scenarios: the table too


def test_cli_unknown_id(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "S5", "S99")
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("vpmu: error: unknown scenario 'S99'; known scenarios: S1, ")
    assert "H3-late" in err and "F1-fix" in err


def test_cli_bad_context(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli(capsys, "S5", "--trace", "--context", "-1")
    assert info.value.code == 2 and "--context: -1 is not allowed" in capsys.readouterr().err


def test_cli_exit_1_when_a_verdict_differs(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = replace(CATALOG.by_id["H1"], verdict="holds", prop="")
    fake = Catalog((wrong, CATALOG.by_id["S5"]), {"H1": wrong, "S5": CATALOG.by_id["S5"]})
    monkeypatch.setattr("vpmu.scenarios.load_catalog", lambda: fake)
    code, out, _ = cli(capsys)
    assert code == 1
    row = next(line for line in out.splitlines() if line.startswith("H1 "))
    assert re.search(r"\sholds\s+violated: lvtpc-written-while-enabled\s+\d+\.\d\ds  DIFFERS$", row)
    assert out.splitlines()[-1] == "2 scenarios: 1 as expected, 1 differ (H1)"


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "S1-seed-amd", "S2", "H14", "S6", "--json", "--trace")
    assert code == 0
    doc = json.loads(out)
    assert doc["schema"] == "vpmu.scenarios/1"
    by = {e["id"]: e for e in doc["scenarios"]}
    assert list(by) == ["S1-seed-amd", "S2", "H14", "S6"]
    seed = by["S1-seed-amd"]
    assert seed["expected"] == {"verdict": "violated", "property": "no-warn", "properties": None, "restricted": None}
    assert seed["observed"]["verdict"] == "violated" and seed["matches"] is True
    assert seed["trace"][-1]["label"] == "kvm_mediated_pmu_load:assert_global_ctrl"
    assert by["S2"]["expected"]["properties"] and by["S2"]["observed"]["script_problems"] == []
    assert by["H14"]["observed"]["verdict"] == "refused" and "H14" in by["H14"]["observed"]["message"]
    assert by["S6"] == {k: by["S6"][k] for k in ("id", "title", "hazards", "source", "note", "expressible", "reason")}
    assert by["S6"]["expressible"] is False


# --- the contrasts the notes claim ------------------------------------------------------------------

#: (scenario, design, properties or None for the scenario's own): the scenario's world with this design holds.
#: An ablation's world holding on the real design shows that the ablated step is what breaks it.
CONTRASTS = [
    ("S1-seed-amd", "upstream", None),
    ("S1-seed-intel", "upstream", None),
    ("S3-sched-out", "upstream", None),
    ("S8-no-gate", "upstream", ("nmi-handler-hands-off",)),
    ("S13", "no-sched-out", None),
    ("S13", "lvtpc-before-clear", None),
    ("H1", "upstream", None),
    ("H2", "upstream", None),
    ("H2-intel", "upstream", None),
    ("H5", "upstream", ("nmi-handler-hands-off",)),
    ("H5", "perf-stays-disabled", ()),
    ("H6", "upstream", None),
    ("H8", "upstream", None),
    ("H9", "upstream", None),
    ("H10", "upstream", None),
    ("H10-guest", "upstream", ()),
    ("H11", "upstream", None),
    ("H12", "upstream", None),
    ("H12-icelake", "upstream", None),
    ("F1-flag-first", "perf-stays-disabled", ()),
]


@pytest.mark.parametrize(("sid", "design", "props"), CONTRASTS, ids=[f"{s}-{d}" for s, d, _ in CONTRASTS])
def test_contrast_holds(sid: str, design: str, props: tuple[str, ...] | None) -> None:
    s = CATALOG.by_id[sid]
    if props is None:
        props = s.properties
    o = run(replace(s, design=design, verdict="holds", prop="", properties=props, restricted="contrast", script=None))
    assert o.verdict == "holds", f"{sid} with {design}: {o.observed}: {o.message}"


@pytest.mark.parametrize("sid", ["S10", "H19"])
def test_filter_is_the_only_difference(sid: str) -> None:
    """S10 and H19 are violated (guest-transparency) only because of the filter: without it the world holds."""
    s = CATALOG.by_id[sid]
    assert s.world is not None and s.world.vcpu.deny_events
    world = replace(s.world, vcpu=replace(s.world.vcpu, deny_events=(), deny_fixed=()))
    o = run(replace(s, world=world, verdict="holds", prop="", script=None))
    assert o.verdict == "holds", o.message


def test_s2_hostonly_differs_under_either_svme_off_policy() -> None:
    """S2-hostonly: with the APM reading of SVME=0 (open point 6) the counts agree, but the guest
    still reads its selector back without HostOnly, which KVM's AMD vPMU drops as reserved."""
    s = CATALOG.by_id["S2-hostonly"]
    assert s.world is not None
    world = replace(s.world, machine=replace(s.world.machine, svme_off_filter="apm"))
    o = run(replace(s, world=world))
    assert (o.verdict, o.prop) == ("violated", "guest-transparency")
    assert "rdmsr(PerfEvtSel0)" in o.message


def test_html_writes_the_first_counterexample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s13.html"
    assert main(["scenarios", "S5", "S13", "--html", str(out)]) == 0
    assert "scenario S13: timeline of lvtpc-first-running" in capsys.readouterr().err
    assert "<svg" in out.read_text(encoding="utf-8")
    assert main(["scenarios", "S5", "--html", str(tmp_path / "none.html")]) == 0
    assert "no counterexample among the scenarios run" in capsys.readouterr().err
    assert not (tmp_path / "none.html").exists()
