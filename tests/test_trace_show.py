"""`vpmu trace show`: a trace file printed as the checker's compact table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vpmu.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def check_text_and_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: tuple[str, ...], extra: tuple[str, ...] = ()
) -> tuple[list[str], Path]:
    """The table `vpmu check ARGS EXTRA` prints (without the summary), and `vpmu check --json ARGS` in a file."""
    code, out, _ = run(capsys, "check", *args, *extra)
    assert code == 1
    table = out.split("\n\ndesign ")[0].splitlines()  # the summary table follows a blank line
    code, js, _ = run(capsys, "check", "--json", *args)
    f = tmp_path / "check.json"
    f.write_text(js)
    return table, f


@pytest.mark.parametrize(
    "extra",
    [(), ("--context", "16"), ("--full",), ("--full", "--context", "3")],
)
def test_show_equals_the_check_table(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, extra: tuple[str, ...]
) -> None:
    """From the rows alone (plus the built-in model's formats and initial state), the same lines as `vpmu check`."""
    table, f = check_text_and_json(capsys, tmp_path, ("--vendor", "intel"), extra)
    code, out, err = run(capsys, "trace", "show", str(f), *extra)
    assert (code, err) == (0, "")
    assert out.splitlines() == table
    assert table[0] == "upstream on intel-default: counterexample (81 steps)"
    assert table[-1].startswith("  at step 81: kvm_pmu_load_guest_pmcs:load_eventsel0: guest_lvtpc_loaded=1")


def test_show_h1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    table, f = check_text_and_json(capsys, tmp_path, ("--design", "lvtpc-before-clear", "--vendor", "intel"))
    code, out, _ = run(capsys, "trace", "show", str(f))
    assert code == 0 and out.splitlines() == table
    assert "  10  host     perf_load_guest_lvtpc:write_lvtpc         LVTPC NMI->Fixed|0xf5" in out


def test_show_a_simulation(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "sim.json"
    run(capsys, "simulate", "--vendor", "intel", "--exits", "every:3", "--trace", str(f))
    code, out, _ = run(capsys, "trace", "show", str(f), "--context", "2")
    lines = out.splitlines()
    n = len(json.loads(f.read_text())["steps"])
    assert code == 0
    assert lines[0] == f"upstream on intel-default: trace ({n} steps)"
    assert lines[2] == f"   ... {n - 2} earlier steps (use --context 0 to see all)"
    assert lines[-1] == f"end of trace (step {n})"
    assert len(lines) == 3 + 2 * 2 + 2


def test_show_full_without_a_built_in_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A trace of a world file: only the slots the trace changes are known, in hex (LVTPC decoded)."""
    code, out, _ = run(capsys, "check", "--vendor", "intel", "--json")
    doc = json.loads(out)
    doc["results"][0]["world"] = "my-world"  # not built in: no model to ask
    f = tmp_path / "c.json"
    f.write_text(json.dumps(doc))
    code, out, _ = run(capsys, "trace", "show", str(f), "--full", "--context", "1")
    assert code == 0
    lines = out.splitlines()
    assert lines[3].startswith("  81  host     kvm_pmu_load_guest_pmcs:load_eventsel0")
    assert "PMC0 0x1e->0x1f, EVTSEL0 0x13003c->0x5300c0" in lines[3]
    regs = lines[5].strip()
    assert regs.startswith("PMC0=0x1f, RFLAGS.IF=0x0, GLOBAL_CTRL=0x100000001, perf.cpuc_enabled=0x1")
    assert "LVTPC=NMI" in regs
    assert lines[6] == "(--full: only the slots this trace changes; its design or world is not built in)"


def test_show_picks_a_result(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ("--world", "intel-default", "--world", "amd-default", "--max-states", "19000")
    code, out, _ = run(capsys, "check", *argv, "--json")
    f = tmp_path / "two.json"
    f.write_text(out)
    verdicts = [r["verdict"] for r in json.loads(out)["results"]]
    assert verdicts == ["violated", "incomplete"]
    code, out, err = run(capsys, "trace", "show", str(f), "--result", "1")
    assert code == 2
    assert err == f"vpmu: error: results[1] of {f} (upstream on amd-default) incomplete: it has no trace\n"
    code, out, err = run(capsys, "trace", "show", str(f), "--result", "2")
    assert code == 2 and err == f"vpmu: error: --result 2 is out of range: {f} has results 0..1\n"
    code, out, err = run(capsys, "trace", "show", str(f), "--result", "0", "--context", "1")
    assert code == 0 and out.startswith("upstream on intel-default: counterexample (81 steps)")


def test_show_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "holds.json"
    code, out, _ = run(capsys, "check", "--vendor", "amd", "--max-states", "100", "--json")
    f.write_text(out)
    code, out, err = run(capsys, "trace", "show", str(f))
    assert code == 2 and err == f"vpmu: error: {f} has no counterexample (upstream on amd-default: incomplete)\n"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "vpmu.trace/1", "design": "x", "world": "y", "contexts": [], "steps": 1}))
    code, out, err = run(capsys, "trace", "show", str(bad))
    assert code == 2
    assert err == (
        f"vpmu: error: {bad} is not a valid vpmu.trace/1 document: contexts: expected the context names, got [] "
        f"(and 1 more; vpmu trace validate {bad} lists them)\n"
    )
    with pytest.raises(SystemExit) as info:
        run(capsys, "trace", "show", str(f), "--context", "-1")
    assert info.value.code == 2 and "--context: -1 is not allowed" in capsys.readouterr().err
