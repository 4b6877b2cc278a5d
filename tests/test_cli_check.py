"""`vpmu check`, `explain`, `worlds`, `designs` and input errors (cli.py, commands.py).

Input errors must end with exit status 2 and exactly one line on stderr,
``vpmu: error: ...``, naming what is wrong; never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vpmu.check import properties as P
from vpmu.cli import main
from vpmu.designs import DESIGNS

SMALL_WORLD = """
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

CONTEXTS = {"host", "NMI", "IRQ", "guest", "guest PMI"}
RESULT_KEYS = {
    "design",
    "world",
    "vendor",
    "verdict",
    "states",
    "transitions",
    "depth",
    "seconds",
    "properties",
    "violation",
}
VIOLATION_KEYS = {"property", "description", "source", "message", "trace"}
STEP_KEYS = {"step", "context", "label", "text", "changes", "hw", "move"}


@pytest.fixture
def tiny(tmp_path: Path) -> str:
    p = tmp_path / "tiny.toml"
    p.write_text(SMALL_WORLD, encoding="utf-8")
    return str(p)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- vpmu check: text ------------------------------------------------------------------------------


def test_check_without_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    """upstream on both default worlds: the Intel race (a counterexample table), AMD holds."""
    code, out, err = run(capsys, "check")
    assert code == 1
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == "upstream on intel-default: counterexample (81 steps)"
    assert lines[1].split() == ["#", "context", "step", "changed"]
    assert "violated: lvtpc-route-consistent — " + P.BY_NAME["lvtpc-route-consistent"].description in lines
    assert "  source: I2; §2.4" in lines
    head = next(i for i, line in enumerate(lines) if line.startswith("design "))
    assert lines[head].split() == [
        "design",
        "world",
        "verdict",
        "states",
        "trans.",
        "depth",
        "seconds",
        "states/s",
        "detail",
    ]
    rows = [line.split() for line in lines[head + 1 :]]
    assert len(rows) == 2
    intel, amd = rows
    assert intel[:3] == ["upstream", "intel-default", "violated"]
    assert intel[5] == "81" and intel[8:] == ["lvtpc-route-consistent", "(trace:", "81", "steps)"]
    assert amd[:3] == ["upstream", "amd-default", "holds"]
    assert len(amd) == 8  # no detail
    for row in rows:
        assert all(x.isdigit() for x in (row[3], row[4], row[5]))
        float(row[6])


def test_check_trace_table_rows(tiny: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "--design", "no-nmi-gate", "--world", tiny)
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "no-nmi-gate on tiny: counterexample (16 steps)"
    numbered = [line for line in lines if line[:4].strip().isdigit()]
    assert [int(line[:4]) for line in numbered] == list(range(1, 17))
    assert numbered[-1].split()[1:3] == ["NMI", "intel_pmu_handle_irq:disable_all"]
    at = "  at step 16: intel_pmu_handle_irq:disable_all (wrmsr) ran in the NMI handler while guest_lvtpc_loaded"
    assert at in lines


def test_check_context_and_no_trace(tiny: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "--design", "no-nmi-gate", "--world", tiny, "--context", "3")
    assert code == 1
    assert "   ... 13 earlier steps (use --context 0 to see all)" in out.splitlines()
    assert sum(1 for line in out.splitlines() if line[:4].strip().isdigit()) == 3
    code, out, _ = run(capsys, "check", "--design", "no-nmi-gate", "--world", tiny, "--no-trace")
    assert code == 1
    assert "counterexample" not in out and out.splitlines()[0].startswith("design")


def test_check_property_restriction(tiny: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = check_json(
        capsys, "--design", "no-nmi-gate", "--world", tiny, "--property", "no-warn", "--property", "host-isolation"
    )
    assert code == 0
    (r,) = doc["results"]
    assert (r["verdict"], r["properties"]) == ("holds", ["no-warn", "host-isolation"])


# --- vpmu check --json -------------------------------------------------------------------------------


def check_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code, out, err = run(capsys, "check", "--json", *argv)
    assert err == ""
    return code, json.loads(out)


def validate(doc: dict[str, Any]) -> None:
    """The documented structure of schema vpmu.check/1 (docs/json-schema.md)."""
    assert set(doc) == {"schema", "results"}
    assert doc["schema"] == "vpmu.check/1"
    assert isinstance(doc["results"], list) and doc["results"]
    for r in doc["results"]:
        extra = {"incomplete_reason"} if r["verdict"] == "incomplete" else set()
        assert set(r) == RESULT_KEYS | extra
        assert r["verdict"] in ("holds", "violated", "incomplete")
        assert r["vendor"] in ("intel", "amd")
        for k in ("design", "world"):
            assert isinstance(r[k], str) and r[k]
        for k in ("states", "transitions", "depth"):
            assert isinstance(r[k], int) and r[k] >= 0
        assert isinstance(r["seconds"], (int, float)) and r["seconds"] >= 0
        assert r["properties"] and all(p in P.BY_NAME for p in r["properties"])
        if r["verdict"] == "incomplete":
            assert isinstance(r["incomplete_reason"], str) and r["incomplete_reason"]
        if r["verdict"] != "violated":
            assert r["violation"] is None
            continue
        v = r["violation"]
        assert set(v) == VIOLATION_KEYS
        prop = P.BY_NAME[v["property"]]
        assert v["property"] in r["properties"]
        assert (v["description"], v["source"]) == (prop.description, prop.source)
        assert isinstance(v["message"], str) and v["message"]
        assert len(v["trace"]) == r["depth"]
        for n, step in enumerate(v["trace"], 1):
            assert set(step) == STEP_KEYS
            assert step["step"] == n
            assert step["context"] in CONTEXTS
            assert isinstance(step["label"], str) and step["label"]
            assert isinstance(step["text"], str)
            assert isinstance(step["changes"], dict)
            for name, change in step["changes"].items():
                assert isinstance(name, str)
                assert isinstance(change, list) and len(change) == 2 and all(isinstance(x, int) for x in change)
                assert change[0] != change[1]
            assert isinstance(step["hw"], list) and all(isinstance(h, str) for h in step["hw"])
            kind, arg = step["move"]
            assert kind in (0, 1, 2, 3) and isinstance(arg, int)


def test_json_violated_default_intel(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = check_json(capsys, "--vendor", "intel")
    assert code == 1
    validate(doc)
    (r,) = doc["results"]
    assert (r["design"], r["world"], r["vendor"], r["verdict"], r["depth"]) == (
        "upstream",
        "intel-default",
        "intel",
        "violated",
        81,
    )
    assert r["properties"] == [p.name for p in P.PROPERTIES if p.vendor != "amd"]
    v = r["violation"]
    assert v["property"] == "lvtpc-route-consistent"
    assert v["trace"][-1]["label"] == "kvm_pmu_load_guest_pmcs:load_eventsel0"
    assert v["trace"][-1]["changes"]["EVTSEL0"] == [0x13003C, 0x5300C0]
    assert "wrmsr IA32_PERFEVTSEL0 <- 0x5300c0" in v["trace"][-1]["hw"]
    moves = {tuple(s["move"]) for s in v["trace"]}
    assert (3, 0) in moves and (1, 0) in moves  # an unrelated NMI raised, an interrupt delivered


def test_json_incomplete_and_holds(tiny: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = check_json(capsys, "--vendor", "amd", "--max-states", "500")
    assert code == 3
    validate(doc)
    assert doc["results"][0]["verdict"] == "incomplete"
    assert doc["results"][0]["properties"] == [p.name for p in P.PROPERTIES]
    code, doc = check_json(capsys, "--design", "perf-stays-disabled", "--world", tiny)
    assert code == 0
    validate(doc)
    assert (doc["results"][0]["world"], doc["results"][0]["verdict"]) == ("tiny", "holds")


def test_json_several_worlds(tiny: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = check_json(capsys, "--design", "seed-assert", "--world", tiny, "--world", "amd-default")
    assert code == 1
    validate(doc)
    assert [(r["world"], r["verdict"], r["violation"]["property"]) for r in doc["results"]] == [
        ("tiny", "violated", "no-warn"),
        ("amd-default", "violated", "no-warn"),
    ]


# --- input errors: exit 2, one line, no traceback ----------------------------------------------------


DESIGN_BAD_LABEL = """\
name = "bad-label"
base = "upstream"

[[edit]]
op = "delete"
function = "kvm_mediated_pmu_load"
label = "clear_global_ctrl"

[[edit]]
op = "swap"
function = "perf_load_guest_lvtpc"
label = "write_lvtpc"
other = "no_such_step"
"""

WORLD_INCLUDE_GUEST = SMALL_WORLD.replace('event = "cycles"\n', 'event = "cycles"\nexclude_guest = false\n')


def write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert out == ""
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("vpmu: error: "), err
    return err[len("vpmu: error: ") :].rstrip("\n")


def test_unknown_design(capsys: pytest.CaptureFixture[str]) -> None:
    msg = one_line_error(capsys, "check", "--design", "bogus")
    assert msg == f"unknown design 'bogus'; known designs: {', '.join(DESIGNS)}"


def test_unknown_world(capsys: pytest.CaptureFixture[str]) -> None:
    msg = one_line_error(capsys, "check", "--world", "bogus")
    assert msg.startswith("unknown world 'bogus'; built-in worlds: ")
    assert "intel-default" in msg and "amd-default" in msg and msg.endswith("(or give a .toml path)")


def test_missing_world_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "missing.toml")
    assert one_line_error(capsys, "check", "--world", missing) == f"{missing}: cannot read: No such file or directory"


def test_unknown_property(capsys: pytest.CaptureFixture[str]) -> None:
    msg = one_line_error(capsys, "check", "--property", "bogus")
    assert msg == f"unknown property 'bogus'; known properties: {', '.join(P.BY_NAME)}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('name = "x\n', "malformed TOML: "),
        (
            SMALL_WORLD.replace("exits = 1", "exits = -1"),
            "bounds.exits = -1 is not allowed; allowed: an integer from 0 to 16",
        ),
        (
            SMALL_WORLD.replace("exits = 1", "exitz = 1"),
            "bounds.exitz = 1 is not allowed; unknown key; allowed: exits, exit_reasons, nmis, perf_ops, max_depth",
        ),
        (SMALL_WORLD + "\n[extra]\n", "extra = {} is not allowed; unknown key; allowed: "),
        (
            SMALL_WORLD.replace('vendor = "intel"', 'vendor = "via"'),
            '[machine]: vendor = "via" is not allowed; allowed: intel, amd',
        ),
        (SMALL_WORLD.replace('"loop 3"', '"loop three"'), "loop count 'three' is not a number"),
        (
            WORLD_INCLUDE_GUEST,
            "host_event[0].exclude_guest = false is not allowed; with an include-guest core event on the host, "
            "KVM_CREATE_VCPU fails with -EBUSY",
        ),
    ],
    ids=[
        "syntax",
        "negative-exits",
        "unknown-bounds-key",
        "unknown-table",
        "bad-vendor",
        "bad-guest-program",
        "include-guest-H14",
    ],
)
def test_malformed_world(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str) -> None:
    f = write(tmp_path, "w.toml", text)
    msg = one_line_error(capsys, "check", "--world", f)
    assert msg.startswith(f"{f}"), msg  # the file is named
    assert expected in msg


def test_design_file_that_raises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write(tmp_path, "boom.py", 'raise RuntimeError("boom")\n')
    assert one_line_error(capsys, "check", "--design-file", f) == f"{f}: the design file raised RuntimeError: boom"


def test_design_file_without_design(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write(tmp_path, "empty.py", "X = 1\n")
    assert one_line_error(capsys, "check", "--design-file", f) == (
        f"{f}: must define DESIGN, a vpmu.kernel.lang.Design (got NoneType)"
    )


def test_toml_design_file_with_unknown_label(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The message names file:line of the [[edit]] and lists the function's labels."""
    f = write(tmp_path, "bad.toml", DESIGN_BAD_LABEL)
    msg = one_line_error(capsys, "check", "--design-file", f)
    assert msg == (
        f"{f}:9 (edit 2): design 'bad-label', function 'perf_load_guest_lvtpc' has no step labelled "
        "'no_such_step'; its labels are: write_lvtpc, set_flag"
    )


def test_toml_design_file_with_unknown_op(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write(tmp_path, "bad.toml", DESIGN_BAD_LABEL.replace('op = "swap"', 'op = "move"'))
    msg = one_line_error(capsys, "check", "--design-file", f)
    allowed = "delete, swap, replace, insert_before, insert_after"
    assert msg == f"{f}:9 (edit 2): op = 'move' is not allowed; allowed: {allowed}"


@pytest.mark.parametrize("design", ["v5", "upstream"])
def test_design_and_design_file_together(tmp_path: Path, capsys: pytest.CaptureFixture[str], design: str) -> None:
    f = write(tmp_path, "d.toml", 'name = "d"\n')
    msg = one_line_error(capsys, "check", "--design", design, "--design-file", f)
    assert msg == "give either --design or --design-file, not both"


@pytest.mark.parametrize("cap", ["0", "-5"])
def test_max_states_must_be_positive(capsys: pytest.CaptureFixture[str], cap: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check", "--max-states", cap])
    assert info.value.code == 2
    err = capsys.readouterr().err
    allowed = "allowed: an integer >= 1 (see vpmu check --help)"
    assert err == f"vpmu: error: argument --max-states: {cap} is not allowed; {allowed}\n"


def test_world_of_the_other_vendor(tiny: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert one_line_error(capsys, "check", "--world", tiny, "--vendor", "amd") == (
        "none of the worlds given is an amd world"
    )


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check", "--vendor", "via"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("vpmu: error: argument --vendor: invalid choice: 'via'")
    assert "Traceback" not in err


# --- explain, worlds, designs, simulate ------------------------------------------------------------------


def test_explain_one(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explain", "no-warn")
    assert code == 0
    p = P.BY_NAME["no-warn"]
    assert out.splitlines() == ["no-warn", f"  {p.description}", f"  source: {p.source}"]
    code, out, _ = run(capsys, "explain", "amd-guest-only")
    assert out.splitlines()[0] == "amd-guest-only (amd only)"


def test_explain_all(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explain")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 3 * len(P.PROPERTIES)
    assert [line.split()[0] for line in lines[::3]] == [p.name for p in P.PROPERTIES]
    assert all(line.startswith("  source: ") for line in lines[2::3])


def test_explain_bogus(capsys: pytest.CaptureFixture[str]) -> None:
    msg = one_line_error(capsys, "explain", "bogus")
    assert msg == f"unknown property 'bogus'; known properties: {', '.join(P.BY_NAME)}"


def test_worlds(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "worlds")
    assert code == 0
    lines = out.splitlines()
    assert "intel-default  (intel, PMU 5, 1 GP x 5 bits, 1 fixed)" in lines
    assert "amd-default  (amd, PMU perfmonv2, 1 GP x 5 bits)" in lines
    assert all(not line.startswith(" ") for line in lines)  # one line per world without -v


def test_worlds_describe_one(tiny: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "worlds", "amd-default")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "amd-default  (amd, PMU perfmonv2, 1 GP x 5 bits)"
    assert "  host events: cycles (cycles, period 15)" in lines
    assert "  bounds: 2 async exits (interrupt), 2 unrelated NMIs" in lines
    assert lines[-1] == f"  properties: {', '.join(p.name for p in P.PROPERTIES)}"
    code, out, _ = run(capsys, "worlds", tiny)
    assert code == 0
    assert out.splitlines()[0] == "tiny  (intel, PMU 5, 1 GP x 5 bits)"
    assert "amd-guest-only" not in out


def test_worlds_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "worlds", "-v")
    assert code == 0
    assert out.count("  guest program:") == out.count("  bounds: ") >= 2


def test_worlds_bogus(capsys: pytest.CaptureFixture[str]) -> None:
    assert one_line_error(capsys, "worlds", "bogus").startswith("unknown world 'bogus'")


def test_designs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "designs")
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == list(DESIGNS)
    assert lines[0].split(None, 1)[1] == DESIGNS["upstream"].summary
    seed = next(line for line in lines if line.split()[0] == "seed-assert")
    assert seed.endswith(f"{DESIGNS['seed-assert'].summary} (from upstream)")


def test_designs_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "designs", "-v")
    assert code == 0
    lines = [line.strip() for line in out.splitlines()]
    assert "edit: replace kvm_mediated_pmu_load:clear_global_ctrl" in lines
    assert "edit: swap kvm_mediated_pmu_load:clear_global_ctrl <-> load_lvtpc" in lines
    assert sum(line.startswith("source:") for line in lines) == len(DESIGNS)


def test_simulate_bad_plan(capsys: pytest.CaptureFixture[str]) -> None:
    expected = (
        '--exits = "bogus" is not allowed; allowed: none, every:K (K >= 1), at:A,B,... (A >= 0), random:P (0 < P <= 1)'
    )
    assert one_line_error(capsys, "simulate", "--exits", "bogus") == expected
    assert one_line_error(capsys, "simulate", "--vendor", "amd", "--exits", "bogus") == expected
    assert one_line_error(capsys, "simulate", "--vendor", "amd", "--nmis", "every:0").startswith('--nmis = "every:0"')


def test_simulate_needs_one_world(capsys: pytest.CaptureFixture[str]) -> None:
    assert one_line_error(capsys, "simulate") == "simulate runs one world: give --world or --vendor"
