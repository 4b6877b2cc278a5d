"""Validation of vpmu.check/1, vpmu.trace/1 and ITF documents (report/schema.py, `vpmu trace validate`).

Every document the tool writes must validate; crafted bad ones must be rejected
with a message naming the JSON path of the offending value.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from vpmu.check.system import CONTEXT_LABEL
from vpmu.cli import main
from vpmu.config import VENDORS
from vpmu.report import schema as S

TINY_WORLD = """
name = "tiny"

[machine]
vendor = "intel"
num_gp = 1
num_fixed = 0
gp_width = 5

[[host_event]]
name = "cycles"
event = "cycles"

[guest]
program = ["wrmsr PMC0 -3", "wrmsr EVTSEL0 INSTRUCTIONS|USR|OS|INT|EN", "wrmsr GLOBAL_CTRL GP0",
           "loop 3", "rdpmc 0", "rdmsr GLOBAL_STATUS", "hlt"]

[bounds]
exits = 1
nmis = 1
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def check_doc(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, _ = run(capsys, "check", "--json", *argv)
    assert code in (0, 1, 3)
    doc: dict[str, Any] = json.loads(out)
    return doc


@pytest.fixture(scope="module")
def intel_check() -> dict[str, Any]:
    """`vpmu check --vendor intel --json`: the default counterexample (81 steps)."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["check", "--vendor", "intel", "--json"]) == 1
    doc: dict[str, Any] = json.loads(buf.getvalue())
    return doc


@pytest.fixture(scope="module")
def sim_trace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`vpmu simulate --trace`: a schedule with exits and an NMI, every context visited."""
    import contextlib
    import io

    path = tmp_path_factory.mktemp("sim") / "sim.json"
    with contextlib.redirect_stdout(io.StringIO()):
        main(["simulate", "--vendor", "intel", "--exits", "every:3", "--nmis", "at:20", "--trace", str(path)])
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def errors(doc: Any, strict: bool = False) -> list[str]:
    return S.validate(doc, strict=strict).errors


# --- the tool's own output is valid ------------------------------------------------------------


def test_contexts_and_vendors_match_the_model() -> None:
    assert set(S.CONTEXTS) == set(CONTEXT_LABEL.values())
    assert set(S.VENDORS) == set(VENDORS)


def test_check_output_validates(intel_check: dict[str, Any]) -> None:
    r = S.validate(intel_check, strict=True)
    assert r.ok and not r.warnings, r.errors
    assert r.kind == "vpmu.check/1"
    assert r.summary == "1 result: 1 violated; 1 counterexample of 81 steps in all"


def test_simulate_output_validates(sim_trace: dict[str, Any]) -> None:
    r = S.validate(sim_trace, strict=True)
    assert r.ok and not r.warnings, r.errors
    assert r.kind == "vpmu.trace/1"
    assert {s["context"] for s in sim_trace["steps"]} == set(S.CONTEXTS)  # every context, so every check ran


@pytest.mark.parametrize(
    "argv",
    [
        ("--vendor", "amd", "--max-states", "500"),  # incomplete, with incomplete_reason
        ("--design", "seed-assert"),  # two worlds, two violations (AMD and Intel)
        ("--design", "no-nmi-gate", "--vendor", "intel"),
        ("--design", "lvtpc-before-clear", "--vendor", "intel", "--property", "lvtpc-written-while-enabled"),
    ],
)
def test_more_check_outputs_validate(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    doc = check_doc(capsys, *argv)
    r = S.validate(doc, strict=True)
    assert r.ok, r.errors


def test_holds_on_a_world_file_validates(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    world = tmp_path / "tiny.toml"
    world.write_text(TINY_WORLD)
    doc = check_doc(capsys, "--design", "perf-stays-disabled", "--world", str(world))
    assert doc["results"][0]["verdict"] == "holds"
    assert S.validate(doc, strict=True).ok
    # --fingerprint adds the optional collision_probability key, which vpmu.check/1 defines.
    doc = check_doc(capsys, "--design", "perf-stays-disabled", "--world", str(world), "--fingerprint")
    assert 0 < doc["results"][0]["collision_probability"] < 1e-9
    assert S.validate(doc, strict=True).ok


# --- crafted bad documents: precise messages ------------------------------------------------------


def first_step(doc: dict[str, Any]) -> dict[str, Any]:
    step: dict[str, Any] = doc["results"][0]["violation"]["trace"][3]
    return step


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(schema="vpmu.check/2"), 'schema: version "2" of vpmu.check is not supported'),
        (lambda d: d.update(schema="vpmu.nothing/1"), 'schema: unknown schema "vpmu.nothing/1"'),
        (lambda d: d.update(schema=1), "schema: expected a schema name"),
        (lambda d: d.pop("results"), '(document): missing key "results"'),
        (lambda d: d.update(results={}), "results: expected an array of results, got {}"),
        (lambda d: d["results"][0].pop("verdict"), 'results[0]: missing key "verdict"'),
        (lambda d: d["results"][0].update(verdict="fine"), 'results[0].verdict: expected one of "holds"'),
        (lambda d: d["results"][0].update(states="many"), 'results[0].states: expected an integer >= 0, got "many"'),
        (lambda d: d["results"][0].update(states=True), "results[0].states: expected an integer >= 0, got true"),
        (lambda d: d["results"][0].update(seconds=-1), "results[0].seconds: expected a number >= 0, got -1"),
        (lambda d: d["results"][0].update(vendor="via"), 'results[0].vendor: expected one of "intel", "amd"'),
        (
            lambda d: d["results"][0].update(collision_probability=1.5),
            "results[0].collision_probability: expected a number from 0 to 1, got 1.5",
        ),
        (
            lambda d: d["results"][0].update(collision_probability="1e-9"),
            'results[0].collision_probability: expected a number from 0 to 1, got "1e-9"',
        ),
        (lambda d: d["results"][0].update(depth=80), "results[0].depth: is 80 but the counterexample has 81 steps"),
        (lambda d: d["results"][0].update(violation=None), "results[0].violation: expected the violation object"),
        (lambda d: d["results"][0]["violation"].pop("trace"), 'results[0].violation: missing key "trace"'),
        (
            lambda d: d["results"][0]["violation"].update(property="no-warn-at-all"),
            'results[0].violation.property: "no-warn-at-all" is not among results[0].properties',
        ),
        (
            lambda d: first_step(d)["changes"].update(LVTPC="x"),
            'results[0].violation.trace[3].changes.LVTPC: expected [old, new] integers, got "x"',
        ),
        (
            lambda d: first_step(d)["changes"].update(LVTPC=[1, 1]),
            "results[0].violation.trace[3].changes.LVTPC: old and new are both 1",
        ),
        (
            lambda d: first_step(d)["changes"].update({"RFLAGS.IF": [1, 2.5]}),
            'results[0].violation.trace[3].changes["RFLAGS.IF"]: expected [old, new] integers, got [1, 2.5]',
        ),
        (lambda d: first_step(d).update(step=7), "results[0].violation.trace[3].step: expected 4 (steps are numbered"),
        (lambda d: first_step(d).update(context="hypervisor"), 'trace[3].context: expected one of "host", "NMI"'),
        (lambda d: first_step(d).update(label=""), "results[0].violation.trace[3].label: expected a non-empty string"),
        (lambda d: first_step(d).update(hw=["ok", 3]), "results[0].violation.trace[3].hw[1]: expected a string, got 3"),
        (lambda d: first_step(d).update(move=[0]), "results[0].violation.trace[3].move: expected [kind, arg] integers"),
        (
            lambda d: first_step(d).update(move=[6, 0]),
            "results[0].violation.trace[3].move[0]: expected a move kind 0..5",
        ),
        (lambda d: first_step(d).pop("text"), 'results[0].violation.trace[3]: missing key "text"'),
        (lambda d: d["results"][0]["violation"].update(trace={}), "results[0].violation.trace: expected an array"),
    ],
)
def test_bad_check_documents(intel_check: dict[str, Any], mutate: Any, message: str) -> None:
    doc = copy.deepcopy(intel_check)
    mutate(doc)
    errs = errors(doc)
    assert any(message in e for e in errs), errs


def test_change_chain_is_checked(intel_check: dict[str, Any]) -> None:
    """A slot's old value must be the new value the previous change left (PMC0 changes at steps 1 and 2)."""
    doc = copy.deepcopy(intel_check)
    trace = doc["results"][0]["violation"]["trace"]
    trace[1]["changes"]["PMC0"][0] += 5
    errs = errors(doc)
    assert errs == [
        "results[0].violation.trace[1].changes.PMC0: old value 0x17 does not continue the new value 0x12 "
        "that step 1 left in PMC0"
    ]


def test_verdict_consistency(intel_check: dict[str, Any]) -> None:
    doc = copy.deepcopy(intel_check)
    doc["results"][0]["verdict"] = "holds"
    assert errors(doc) == ['results[0].violation: expected null for verdict "holds", got an object']
    doc = copy.deepcopy(intel_check)
    doc["results"][0]["verdict"] = "incomplete"
    doc["results"][0]["violation"] = None
    assert errors(doc) == ['results[0]: missing key "incomplete_reason" (required when the verdict is "incomplete")']
    doc["results"][0]["incomplete_reason"] = ""
    assert errors(doc) == ['results[0].incomplete_reason: expected a non-empty string, got ""']
    doc["results"][0]["incomplete_reason"] = "state cap reached (--max-states 10)"
    doc["results"][0]["collision_probability"] = 0.0
    assert errors(doc) == [
        'results[0].collision_probability: present only when the verdict is "holds" or "violated", not "incomplete"'
    ]


def test_unknown_keys_warn_or_fail_when_strict(intel_check: dict[str, Any]) -> None:
    doc = copy.deepcopy(intel_check)
    doc["results"][0]["colour"] = "red"
    r = S.validate(doc)
    assert r.ok and r.warnings == ['results[0]: unknown key "colour" (not part of a vpmu.check/1 result); ignored']
    assert errors(doc, strict=True) == ['results[0]: unknown key "colour" (not part of a vpmu.check/1 result)']


def test_bad_trace_documents(sim_trace: dict[str, Any]) -> None:
    doc = copy.deepcopy(sim_trace)
    doc["schema"] = "vpmu.trace/0"
    assert errors(doc) == ['schema: version "0" of vpmu.trace is not supported; this vpmu reads vpmu.trace/1']
    doc = copy.deepcopy(sim_trace)
    del doc["design"]
    doc["contexts"] = ["host", "host"]
    doc["steps"][10]["changes"]["GLOBAL_CTRL"] = [None, 1]
    assert errors(doc) == [
        '(document): missing key "design"',
        'contexts: expected distinct names, got ["host", "host"]',
        "steps[10].changes.GLOBAL_CTRL: expected [old, new] integers, got [null, 1]",
    ]
    doc = copy.deepcopy(sim_trace)
    doc["contexts"] = ["host"]  # steps in other contexts are then wrong
    assert any(e.startswith('steps[20].context: expected one of "host", got "guest"') for e in errors(doc))


def test_move_kind_4_is_a_perf_ipi(sim_trace: dict[str, Any]) -> None:
    doc = copy.deepcopy(sim_trace)
    doc["steps"][0]["move"] = [4, 0]
    assert errors(doc) == []


def test_not_a_document() -> None:
    assert errors([1, 2]) == ["(document): expected a JSON object, got [1, 2]"]
    assert errors({"results": []}) == [
        '(document): missing key "schema": not a vpmu document (nor an ITF trace: no "states")'
    ]


def test_error_list_is_capped(sim_trace: dict[str, Any]) -> None:
    doc = copy.deepcopy(sim_trace)
    for s in doc["steps"]:
        s["label"] = 0
    r = S.validate(doc)
    assert len(r.errors) == S.MAX_ERRORS and r.dropped == len(doc["steps"]) - S.MAX_ERRORS
    assert r.lines()[-1] == f"... and {r.dropped} more errors"


# --- ITF structure -----------------------------------------------------------------------------


def good_itf() -> dict[str, Any]:
    return {
        "#meta": {"format": "ITF"},
        "vars": ["x", "y"],
        "states": [
            {"#meta": {"index": 0}, "x": 1, "y": {"#bigint": "123456789012345678901234567890"}},
            {"#meta": {"index": 1}, "x": {"#tup": [1, "a"]}, "y": {"#map": [[1, {"#set": [True]}]]}},
        ],
    }


def test_itf_good() -> None:
    r = S.validate(good_itf(), strict=True)
    assert r.ok and r.kind == "ITF" and r.summary == "2 variables, 2 states"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["states"][1].pop("y"), 'states[1]: missing variable "y" (listed in vars)'),
        (lambda d: d["states"][0].update(z=1), "states[0].z: not a variable listed in vars"),
        (lambda d: d["states"][0].update(x=1.5), "states[0].x: expected an integer (ITF has no fractions"),
        (lambda d: d["states"][0].update(x=None), "states[0].x: null is not an ITF value"),
        (lambda d: d["states"][0].update(y={"#bigint": "12a"}), 'states[0].y["#bigint"]: expected a decimal integer'),
        (lambda d: d["states"][0].update(y={"#bigint": "1", "x": 2}), 'states[0].y: expected a lone "#bigint" key'),
        (lambda d: d["states"][0].update(y={"#frac": [1, 2]}), 'states[0].y: unknown ITF form "#frac"'),
        (lambda d: d["states"][1].update(y={"#map": [[1]]}), 'states[1].y["#map"][0]: expected a [key, value] pair'),
        (lambda d: d["states"][1]["#meta"].update(index=5), 'states[1]["#meta"].index: expected 1, got 5'),
        (lambda d: d.update(vars="x"), 'vars: expected an array of strings, got "x"'),
        (lambda d: d.update(loop=7), "loop: expected a state index 0..1, got 7"),
        (lambda d: d.update(states={}), "states: expected an array of states, got {}"),
    ],
)
def test_itf_bad(mutate: Any, message: str) -> None:
    doc = good_itf()
    mutate(doc)
    errs = errors(doc)
    assert any(message in e for e in errs), errs


# --- vpmu trace validate -----------------------------------------------------------------------


def test_validate_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, intel_check: dict[str, Any], sim_trace: dict[str, Any]
) -> None:
    good = tmp_path / "check.json"
    good.write_text(json.dumps(intel_check))
    sim = tmp_path / "sim.json"
    sim.write_text(json.dumps(sim_trace))
    code, out, err = run(capsys, "trace", "validate", str(good), str(sim))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{good}: valid vpmu.check/1 (1 result: 1 violated; 1 counterexample of 81 steps in all)",
        f"{sim}: valid vpmu.trace/1 ({len(sim_trace['steps'])} steps)",
    ]

    bad_doc = copy.deepcopy(intel_check)
    first_step(bad_doc)["changes"]["LVTPC"] = "x"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(bad_doc))
    code, out, err = run(capsys, "trace", "validate", str(good), str(bad))
    assert (code, err) == (1, "")
    assert out.splitlines()[1:] == [
        f"{bad}: invalid vpmu.check/1 document, 1 error:",
        '  results[0].violation.trace[3].changes.LVTPC: expected [old, new] integers, got "x"',
    ]

    notjson = tmp_path / "broken.json"
    notjson.write_text('{"schema": ')
    code, out, err = run(capsys, "trace", "validate", str(notjson), str(bad))
    assert code == 2
    assert err == f"vpmu: error: {notjson} is not JSON: Expecting value at line 1 column 12\n"
    code, out, err = run(capsys, "trace", "validate", str(tmp_path / "missing.json"))
    assert code == 2 and err.startswith(f"vpmu: error: {tmp_path / 'missing.json'}: cannot read: ")


def test_validate_strict_flag(capsys: pytest.CaptureFixture[str], tmp_path: Path, sim_trace: dict[str, Any]) -> None:
    doc = dict(sim_trace, extra=1)
    f = tmp_path / "t.json"
    f.write_text(json.dumps(doc))
    code, out, _ = run(capsys, "trace", "validate", str(f))
    assert code == 0 and '  warning: (document): unknown key "extra" (not part of vpmu.trace/1); ignored' in out
    code, out, _ = run(capsys, "trace", "validate", "--strict", str(f))
    assert code == 1 and '  (document): unknown key "extra" (not part of vpmu.trace/1)' in out
