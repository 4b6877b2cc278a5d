"""vpmu conform: the public PMU test suites as guest programs, native vs virtualized.

A representative subset (the whole default run is `vpmu conform`, about half a minute on
two cores): the suites' constants arise from the modelled instruction streams, cases pass
natively and under upstream with exits anywhere, finding F1 shows up only with unrelated
NMIs and is attributed, and each broken design is caught (or is the documented gap).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vpmu.cli import main
from vpmu.cli.conform import KNOWN_GAPS
from vpmu.conform.runner import (
    MUTATIONS,
    CaseRun,
    Schedule,
    cases_by_id,
    fold_mutation,
    run_case,
    run_tasks,
)
from vpmu.conform.suites import all_omissions, kut, selftests
from vpmu.designs import DESIGNS
from vpmu.errors import VpmuError


def run(case: str, schedule: str, design: str = "upstream") -> CaseRun:
    return run_case(cases_by_id()[case], design, Schedule.parse(schedule))


def test_the_suites_constants() -> None:
    assert kut.LOOP_INSNS == 10_000_017
    assert kut.LOOP_BRANCHES == 1_000_002
    assert selftests.NUM_INSNS_RETIRED == 65
    assert selftests.NUM_BRANCH_INSNS_RETIRED == 10


def test_every_listed_case_is_run_or_omitted_with_a_reason() -> None:
    ids = set(cases_by_id())
    names = {c.split("/")[2].split("[")[0] for c in ids}
    for fn in (
        "check_gp_counters",
        "check_fixed_counters",
        "check_counters_many",
        "check_counter_overflow",
        "check_gp_counter_cmask",
        "check_rdpmc",
        "check_running_counter_wrmsr",
        "check_emulated_instr",
        "check_gp_counters_write_width",
        "check_invalid_rdpmc_gp",
        "test_arch_events",
        "test_gp_counters",
        "test_fixed_counters",
        "test_member_deny_list",
        "test_fixed_counter_bitmap",
    ):
        assert fn in names, fn
    for vendor in ("intel", "amd"):
        for fn in ("check_fixed_counters", "check_gp_counters_write_width"):
            ran = any(c.startswith(f"{vendor}/kut/{fn}") for c in ids)
            omitted = any(o.name == fn and o.vendor in (vendor, "both") for o in all_omissions())
            assert ran or omitted, (vendor, fn)
    assert all(o.reason for o in all_omissions())
    for case in cases_by_id().values():
        tags = {w[1:] for vm in case.vms for line in vm.program for w in line.split() if w.startswith("@")}
        for check in case.checks:
            assert check.skip or set(check.tags) <= tags, (case.id, check.name)


def test_exact_counts_arise_from_the_modelled_loop() -> None:
    r = run("intel/kut/check_gp_counters[full-width]", "none")
    assert r.verdict == "pass", r.failed_checks
    r = run("amd/kut/check_gp_counters[F15h]", "every:99991")
    assert r.verdict == "pass" and r.exits > 1000


@pytest.mark.parametrize(
    ("case", "schedule"),
    [
        ("intel/kut/check_counter_overflow[full-width]", "every:1000003"),
        ("intel/kut/check_counter_overflow[legacy]", "random:1:no-nmi"),
        ("amd/kut/check_counter_overflow[K7]", "every:99991"),
        ("intel/kut/check_emulated_instr[full-width]", "steps"),
        ("amd/kut/check_rdpmc[F15h]", "every:1"),
        ("intel/kut/check_gp_counters_write_width[full-width]", "every:3"),
        ("intel/counters/test_arch_events[fw]", "every:61"),
        ("intel/counters/test_gp_counters[legacy]", "steps"),
        ("intel/counters/test_fixed_counters", "random:3"),
        ("intel/filter/test_member_deny_list", "every:1"),
        ("amd/filter/test_amd_deny_list", "random:2"),
    ],
)
def test_upstream_passes(case: str, schedule: str) -> None:
    r = run(case, schedule)
    assert r.verdict == "pass", (r.first_diff, r.violation, r.failed_checks, r.native_failed)
    assert r.observations > 0


def test_a_gp_probe_is_observed_natively_and_virtualized() -> None:
    r = run("intel/kut/check_invalid_rdpmc_gp", "none")
    assert r.verdict == "pass" and r.observations == 1


def test_finding_f1_is_attributed_and_removed_by_perf_stays_disabled() -> None:
    r = run("intel/counters/test_fixed_counters", "random:4")
    assert r.verdict == "FAIL"
    assert "F1" in r.note and "guest" in r.first_diff
    assert run("intel/counters/test_fixed_counters", "random:4", "perf-stays-disabled").verdict == "pass"


def test_filter_reference_is_a_cpu_without_the_denied_events() -> None:
    r = run("intel/filter/test_not_member_allow_list", "none")
    assert r.verdict == "pass"
    r = run("intel/filter/test_not_member_allow_list", "none", "raw-eventsel")  # a filter bypass
    assert r.verdict == "FAIL" and r.failed_checks


@pytest.mark.parametrize(
    ("design", "case", "schedule"),
    [
        ("no-status-restore", "amd/kut/check_counter_overflow[F15h]", "none"),
        ("no-clear", "intel/counters/test_arch_events[fw]", "none"),
        ("no-guestonly-amd", "amd/kut/check_emulated_instr[K7]", "none"),
    ],
)
def test_mutations_are_caught_by_the_cases_own_assertions(design: str, case: str, schedule: str) -> None:
    m = fold_mutation(design, run_tasks([(case, schedule)], design))
    assert m.by_assertion == [case]


def test_put_keeps_eventsel_is_the_documented_gap() -> None:
    tasks = [("intel/counters/test_arch_events[fw]", "every:7"), ("intel/kut/check_counter_overflow[legacy]", "none")]
    m = fold_mutation("put-keeps-eventsel", run_tasks(tasks, "put-keeps-eventsel"))
    assert not m.caught
    assert "put-keeps-eventsel" in KNOWN_GAPS
    assert set(MUTATIONS) <= set(DESIGNS)


def test_bad_schedule() -> None:
    with pytest.raises(VpmuError, match="not allowed"):
        Schedule.parse("every:0")


def test_cli_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conform", "--case", "amd/kut/check_rdpmc[K7]", "--schedule", "none", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "amd/kut/check_rdpmc[K7]" in out and "pass" in out and "1 of 1 pass" in out
    rc = main(["conform", "--case", "check_invalid_rdpmc_gp", "--schedule", "steps", "--jobs", "1", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["schema"] == "vpmu.conform/1" and len(doc["results"]) == 2
    assert all(r["verdict"] == "pass" for r in doc["results"])


def test_cli_failure_exit_and_trace(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    trace = str(tmp_path / "t.json")
    args = ["conform", "--case", "intel/kut/check_emulated_instr[legacy]", "--schedule", "none", "--jobs", "1"]
    assert main([*args, "--design", "no-status-restore", "--trace", trace]) == 1
    out = capsys.readouterr().out
    assert "first difference" in out and "assertion fails: instruction counter overflow" in out
    doc = json.loads(Path(trace).read_text(encoding="utf-8"))
    assert doc["schema"] == "vpmu.trace/1" and doc["trace"]


def test_cli_list_and_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conform", "--list"]) == 0
    out = capsys.readouterr().out
    assert "not expressible" in out and "intel/kut/check_counter_overflow[full-width]" in out
    assert main(["conform", "--schedule", "every:x"]) == 2
    assert main(["conform", "--case", "no-such-case"]) == 2
    assert "no case matches" in capsys.readouterr().err


def test_amd_cases_report_the_timer_schedule_as_not_applicable() -> None:
    """SVM has no preemption timer: every:K:timer is skipped on AMD, with the reason."""
    from vpmu.conform.runner import Schedule, cases_by_id, run_case

    r = run_case(cases_by_id()["amd/kut/check_counter_overflow[K7]"], "upstream", Schedule.parse("every:99991:timer"))
    assert r.skipped.startswith("SVM has no preemption timer") and r.runs == 0


def test_summary_counts_not_applicable_runs_apart(capsys: pytest.CaptureFixture[str]) -> None:
    """An AMD case under the (Intel-only) fastpath schedule is n/a: not counted as a pass."""
    from vpmu.cli import main

    code = main(["conform", "--case", "amd/kut/check_rdpmc[K7]", "--schedule", "none", "--schedule", "every:3:timer"])
    out = capsys.readouterr().out
    assert code == 0 and "1 of 1 pass; 1 not applicable" in out
