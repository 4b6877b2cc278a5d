"""`vpmu trace itf`: traces in the Informal Trace Format (Apalache ADR-015, read by Apalache and Quint)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vpmu.check.explore import check
from vpmu.check.system import System
from vpmu.check.world import resolve_world
from vpmu.cli import main
from vpmu.designs import get_design
from vpmu.report import schema as S
from vpmu.report.itf import itf_int, to_itf
from vpmu.report.trace import HIDDEN_OWNERS


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def check_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Path:
    code, out, _ = run(capsys, "check", "--vendor", "intel", "--json")
    assert code == 1
    f = tmp_path / "check.json"
    f.write_text(out)
    return f


def test_itf_states_are_the_machine_after_each_step(capsys: pytest.CaptureFixture[str], check_file: Path) -> None:
    """Every state equals the checker's own state (machine and kernel slots), rebuilt from the rows alone."""
    out_file = check_file.with_suffix(".itf.json")
    code, out, err = run(capsys, "trace", "itf", str(check_file), "-o", str(out_file))
    assert (code, err) == (0, "")
    doc = json.loads(out_file.read_text())
    assert S.validate(doc, strict=True).ok
    system = System(get_design("upstream"), resolve_world("intel-default"))
    result = check(system)
    assert result.verdict == "violated"
    visible = [(i, s.name) for i, s in enumerate(system.layout.slots) if s.owner not in HIDDEN_OWNERS]
    assert doc["vars"] == [name for _, name in visible]
    assert len(doc["states"]) == len(result.states) == 82
    for k, (state, model) in enumerate(zip(doc["states"], result.states, strict=True)):
        assert state["#meta"]["index"] == k
        assert {name: state[name] for _, name in visible} == {name: model[i] for i, name in visible}
    assert doc["states"][81]["#meta"] == {
        "index": 81,
        "step": 81,
        "context": "host",
        "label": "kvm_pmu_load_guest_pmcs:load_eventsel0",
    }
    meta = doc["#meta"]
    assert meta["format"] == "ITF" and meta["varTypes"]["LVTPC"] == "Int"
    assert meta["vpmu"]["violation"]["property"] == "lvtpc-route-consistent"
    assert meta["vpmu"]["slots"] == "all machine and kernel slots"
    assert (
        out == f"ITF trace of upstream on intel-default: 82 states of {len(visible)} variables written to {out_file}\n"
    )


def test_itf_changed_only_and_stdout(capsys: pytest.CaptureFixture[str], check_file: Path) -> None:
    code, out, err = run(capsys, "trace", "itf", str(check_file), "--changed-only")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    rows = json.loads(check_file.read_text())["results"][0]["violation"]["trace"]
    changed = list(dict.fromkeys(n for r in rows for n in r["changes"]))
    assert doc["vars"] == changed
    assert doc["#meta"]["vpmu"]["slots"] == "the slots the trace changes"
    for k, r in enumerate(rows, 1):
        for name, (old, new) in r["changes"].items():
            assert doc["states"][k - 1][name] == old and doc["states"][k][name] == new


def test_itf_without_a_built_in_model_uses_the_changed_slots(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    f = tmp_path / "sim.json"
    run(capsys, "simulate", "--vendor", "intel", "--exits", "every:5", "--trace", str(f))
    doc = json.loads(f.read_text())
    doc["world"] = "a-world-file"
    f.write_text(json.dumps(doc))
    code, out, _ = run(capsys, "trace", "itf", str(f))
    assert code == 0
    itf = json.loads(out)
    assert itf["#meta"]["vpmu"]["slots"] == "the slots the trace changes"
    assert len(itf["states"]) == len(doc["steps"]) + 1
    assert S.validate(itf, strict=True).ok


def test_big_integers() -> None:
    assert itf_int(5) == 5
    assert itf_int(-(2**53) + 1) == -(2**53) + 1
    assert itf_int(2**53) == {"#bigint": str(2**53)}
    assert itf_int(-(2**64)) == {"#bigint": str(-(2**64))}
    view = S.TraceView(
        rows=[
            {
                "step": 1,
                "context": "host",
                "label": "f:x",
                "text": "",
                "changes": {"MSR": [1, 2**63 + 5]},
                "hw": [],
                "move": [0, 0],
            }
        ],
        design="d",
        world="w",
    )
    doc: dict[str, Any] = to_itf(view)
    assert [s["MSR"] for s in doc["states"]] == [1, {"#bigint": "9223372036854775813"}]
    assert S.validate(doc).ok
    doc = to_itf(view, bigint=True)
    assert [s["MSR"] for s in doc["states"]] == [{"#bigint": "1"}, {"#bigint": "9223372036854775813"}]


def test_itf_input_is_refused_for_rendering(capsys: pytest.CaptureFixture[str], check_file: Path) -> None:
    itf = check_file.with_suffix(".itf.json")
    run(capsys, "trace", "itf", str(check_file), "-o", str(itf))
    code, out, _ = run(capsys, "trace", "validate", str(itf))
    assert code == 0 and out.startswith(f"{itf}: valid ITF (")
    code, out, err = run(capsys, "trace", "show", str(itf))
    assert code == 2 and "is an ITF trace; render the vpmu.check/1 or vpmu.trace/1 file it was exported from" in err
