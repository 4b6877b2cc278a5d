"""Issue 12: no traceback, no vacuous verdict, no lost work.

One test (or a few) per defect the issue lists, each failing on the code before the fix:
exit status 70 for internal errors; inputs that are not UTF-8, nest too deeply, or hold values
the architecture cannot; output paths checked before the run; vacuous verdicts refused; a
Python design file guarded; Ctrl-C stopping the whole command; progress on stderr; the
world reference generated from the validator's schema; consistent flags; colour; user scenarios;
simulate's observations in its JSON.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vpmu.check import explore
from vpmu.check.system import System
from vpmu.cli import main
from vpmu.errors import EXIT_INTERNAL

ROOT = Path(__file__).resolve().parent.parent

TINY = """\
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
program = ["wrmsr EVTSEL0 INSTRUCTIONS|USR|OS|INT|EN", "wrmsr GLOBAL_CTRL GP0", "loop 2", "rdpmc 0", "hlt"]

[bounds]
exits = 1
nmis = 0
"""

TINY_AMD = TINY.replace('vendor = "intel"', 'vendor = "amd"').replace("num_fixed = 0\n", "")


def vpmu(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process: (status, stdout, stderr); a usage error's SystemExit is its status."""
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def one_line(capsys: pytest.CaptureFixture[str], *argv: str, status: int = 2) -> str:
    code, out, err = vpmu(capsys, *argv)
    assert code == status, (code, out, err)
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("vpmu: error: "), err
    return err[len("vpmu: error: ") :].rstrip("\n")


def write(tmp_path: Path, name: str, text: str | bytes) -> str:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return str(p)


# --- 1. an internal error has its own status --------------------------------------------------------


def _boom(*_a: Any, **_k: Any) -> Any:
    raise ZeroDivisionError("simulated bug")


def test_internal_error_is_status_70_one_line_no_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("VPMU_DEBUG", raising=False)
    monkeypatch.setattr(explore, "check", _boom)
    code, _out, err = vpmu(capsys, "check", "--world", write(tmp_path, "t.toml", TINY))
    assert code == EXIT_INTERNAL == 70
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "internal error" in err and "bug in vpmu" in err and "ZeroDivisionError: simulated bug" in err
    assert "--debug" in err and "report" in err


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str
) -> None:
    monkeypatch.setattr(explore, "check", _boom)
    argv = ["check", "--world", write(tmp_path, "t.toml", TINY)]
    if how == "flag":
        argv.append("--debug")
    else:
        monkeypatch.setenv("VPMU_DEBUG", "1")
    code, _, err = vpmu(capsys, *argv)
    assert code == 70 and "Traceback (most recent call last)" in err and "ZeroDivisionError" in err


def test_exit_statuses_in_help_and_readme(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = vpmu(capsys, "--help")
    assert code == 0
    for line in ("0   success", "1   a violation", "2   bad input", "3   incomplete", "70  internal error"):
        assert line in out
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "70" in readme and "internal error" in readme


# --- 2. tracebacks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--world", "--config", "--design-file"])
def test_non_utf8_file_is_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path: Path, flag: str) -> None:
    f = write(tmp_path, "bad.toml", b'name = "caf\xe9"\n')
    cmd = ["info", "--config", f] if flag == "--config" else ["check", flag, f]
    msg = one_line(capsys, *cmd)
    assert msg.startswith(f"{f}: not UTF-8 text: byte 0xe9 at line 1, column 12")


def test_bom_is_accepted(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = write(tmp_path, "bom.toml", "\ufeff" + TINY)
    code, out, err = vpmu(capsys, "check", "--world", f)
    assert code == 0 and "holds" in out and not err, err


@pytest.mark.parametrize("kind", ["toml-shallow", "toml-deep", "json-shallow", "json-deep"])
def test_deep_nesting_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path, kind: str) -> None:
    depth = 100 if kind.endswith("shallow") else 5000  # within / beyond Python's recursion limit
    if kind.startswith("toml"):
        f = write(tmp_path, "deep.toml", TINY + "[check]\nproperties = " + "[" * depth + "]" * depth + "\n")
        msg = one_line(capsys, "check", "--world", f)
    else:
        f = write(tmp_path, "deep.json", "[" * depth + "]" * depth)
        msg = one_line(capsys, "trace", "show", f)
    assert msg == f"{f}: nested more than 64 levels deep; allowed: at most 64"


def test_error_message_of_a_deep_value_cannot_fail() -> None:
    from vpmu.errors import ConfigError

    v: Any = []
    for _ in range(5000):
        v = [v]
    assert str(ConfigError("k", v, "allowed: x")) == "k = [[[[…]]]] is not allowed; allowed: x"


@pytest.mark.parametrize("vars_", [[1, [2]], ["a", 1, "b"]])
def test_itf_vars_that_are_not_strings(capsys: pytest.CaptureFixture[str], tmp_path: Path, vars_: list[Any]) -> None:
    f = write(tmp_path, "t.itf.json", json.dumps({"vars": vars_, "states": [{"a": 1}]}))
    code, out, err = vpmu(capsys, "trace", "validate", f)
    assert code == 1 and "Traceback" not in err
    assert "vars[" in out and "expected a string" in out


@pytest.mark.parametrize(
    ("function", "kind"),
    [("vcpu_run", "end"), ("default_do_nmi", "iret"), ("kvm_handle_guest_mediated_pmi", "iret")],
)
def test_design_deleting_every_step_of_an_entry(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, function: str, kind: str
) -> None:
    from vpmu.check.world import resolve_world
    from vpmu.designs import get_design

    labels = System(get_design("upstream"), resolve_world("intel-default")).functions[function].labels()
    edits = "".join(f'[[edit]]\nop = "delete"\nfunction = "{function}"\nlabel = "{lb}"\n' for lb in labels)
    f = write(tmp_path, "d.toml", 'name = "d"\n' + edits)
    msg = one_line(capsys, "check", "--design-file", f, "--vendor", "intel", "--max-states", "100")
    assert f"{function}" in msg and f"no longer ends in an unconditional {kind} step" in msg


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("", "'' is not allowed; allowed: a file name"),
        ("{tmp}/missing-dir/x.html", "directory {tmp}/missing-dir does not exist"),
        ("{tmp}", "{tmp} is a directory"),
        ("/dev/full", "/dev/full is not a regular file"),
    ],
)
def test_output_path_checked_before_the_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, path: str, why: str
) -> None:
    monkeypatch.setattr(explore, "check", _boom)  # the run must not start
    tiny = write(tmp_path, "t.toml", TINY)
    path, why = path.format(tmp=tmp_path), why.format(tmp=tmp_path)
    for argv in (
        ["check", "--world", tiny, "--html", path],
        ["simulate", "--world", tiny, "--trace", path],
        ["scenarios", "S5", "--html", path],
    ):
        msg = one_line(capsys, *argv)
        assert msg.startswith("argument --") and why in msg, msg


def test_json_to_a_full_disk(tmp_path: Path) -> None:
    tiny = write(tmp_path, "t.toml", TINY)
    with open("/dev/full", "w") as full:
        p = subprocess.run(
            [sys.executable, "-m", "vpmu.cli", "check", "--world", tiny, "--json"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
            check=False,
        )
    assert p.returncode == 2, p.stderr
    assert p.stderr == "vpmu: error: cannot write the output: No space left on device\n"


# --- 3. no vacuous verdict ------------------------------------------------------------------------------


def test_world_whose_properties_are_all_of_the_other_vendor(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = write(tmp_path, "w.toml", TINY + '[check]\nproperties = ["amd-guest-only"]\n')
    msg = one_line(capsys, "check", "--world", f)
    assert "check.properties" in msg and "none applies to the world's vendor, intel" in msg
    assert "amd-guest-only is amd only" in msg


def test_property_of_the_other_vendor_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    msg = one_line(capsys, "check", "--property", "amd-guest-only", "--vendor", "intel")
    assert msg.startswith("--property amd-guest-only (amd only) does not apply to world 'intel-default' (intel)")


def test_system_refuses_to_judge_nothing() -> None:
    from vpmu.check.world import resolve_world
    from vpmu.designs import get_design
    from vpmu.errors import VpmuError

    with pytest.raises(VpmuError, match="properties to judge: none"):
        System(get_design("upstream"), resolve_world("intel-default"), ())
    with pytest.raises(VpmuError, match=r"amd-guest-only \(amd only\)"):
        System(get_design("upstream"), resolve_world("intel-default"), ("no-warn", "amd-guest-only"))


def test_json_lists_the_properties_judged(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = write(tmp_path, "t.toml", TINY)
    code, out, _ = vpmu(capsys, "check", "--world", f, "--property", "no-warn", "--json")
    assert code == 0 and json.loads(out)["results"][0]["properties"] == ["no-warn"]
    code, out, _ = vpmu(capsys, "check", "--world", f, "--json")
    assert len(json.loads(out)["results"][0]["properties"]) > 5


# --- 4. values the architecture cannot hold ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("vcpu", "says"),
    [
        ("lvtpc = -1", "vcpu.lvtpc = -1 is not allowed"),
        ("lvtpc = 18446744073709551616", "vcpu.lvtpc = 18446744073709551616 is not allowed"),
        ("lvtpc = 0x20400", "reserved or read-only bits set"),  # bit 17
        ("lvtpc = 0x1400", "reserved or read-only bits set"),  # delivery status (read-only)
        ("lvtpc = 0x500", "delivery mode 0b101 is not one LVTPC supports"),  # INIT
        ("lvtpc = 0x0f", "vectors 0 to 15 are illegal in Fixed mode"),
        ("lvtpc = true", "vcpu.lvtpc = true is not allowed"),
        ("deny_events = [1e23]", "vcpu.deny_events = 1e+23 is not allowed"),
        ("deny_events = [0x100]", "vcpu.deny_events = 256 is not allowed; allowed: event selects: Intel 0 to 0xFF"),
        ("deny_events = 3", "vcpu.deny_events = 3 is not allowed; allowed: a list of integers"),
        ("deny_fixed = [0]", "vcpu.deny_fixed = 0 is not allowed; allowed: none (the vCPU has no fixed counters)"),
    ],
)
def test_bad_vcpu_values_are_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path, vcpu: str, says: str) -> None:
    f = write(tmp_path, "w.toml", TINY + f"[vcpu]\n{vcpu}\n")
    assert says in one_line(capsys, "check", "--world", f)


def test_good_vcpu_values_are_accepted(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for text, vcpu in (
        (TINY, "lvtpc = 0x100f5"),  # Fixed vector 0xF5, masked
        (TINY, "deny_events = [0xC0]"),
        (TINY_AMD, "deny_events = [0x1C0]"),  # AMD: a 12-bit event select
    ):
        f = write(tmp_path, "w.toml", text + f"[vcpu]\n{vcpu}\n")
        code, _, err = vpmu(capsys, "check", "--world", f)
        assert code in (0, 1) and not err, err


# --- 5. a Python design file runs in a guard ------------------------------------------------------------------


def test_design_file_calling_sys_exit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = write(tmp_path, "d.py", "import sys\nsys.exit(0)\n")
    assert (
        one_line(capsys, "check", "--design-file", f)
        == f"{f}: the design file called sys.exit(0); it must define DESIGN"
    )


def test_design_file_code_raising_during_the_run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "d.py",
        "from vpmu.designs import get_design\nfrom vpmu.kernel.lang import Edit\n"
        'DESIGN = get_design("upstream").derive("d", "raises", '
        '[Edit("replace", "kvm_mediated_pmu_load", "clear_global_ctrl", step=lambda env: 1 // 0)])\n',
    )
    msg = one_line(capsys, "check", "--design-file", f)
    assert msg == f"{f}:3: the design file's code raised ZeroDivisionError: integer division or modulo by zero"


def test_docs_say_a_python_design_is_code() -> None:
    text = (ROOT / "docs" / "design-files.md").read_text(encoding="utf-8")
    assert "arbitrary code" in text and "prefer TOML" in text


# --- 6. Ctrl-C stops the whole command --------------------------------------------------------------------------


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, calls: int) -> None:
    """Ctrl-C after ``calls`` expansions of a state (in the checker's loop, where a real one lands)."""
    real = System.moves
    n = [0]

    def moves(self: System, s: Any) -> Any:
        n[0] += 1
        if n[0] == calls:
            raise KeyboardInterrupt
        return real(self, s)

    monkeypatch.setattr(System, "moves", moves)


def test_ctrl_c_stops_check_over_several_worlds(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    a, b = write(tmp_path, "a.toml", TINY), write(tmp_path, "b.toml", TINY.replace('"tiny"', '"tiny2"'))
    _interrupt_after(monkeypatch, 5)
    code, out, err = vpmu(capsys, "check", "--world", a, "--world", b, "--json")
    assert code == 3
    results = json.loads(out)["results"]
    assert [r["verdict"] for r in results] == ["incomplete", "incomplete"]
    assert results[0]["incomplete_reason"] == "interrupted (Ctrl-C)"
    assert results[1]["incomplete_reason"] == "interrupted (Ctrl-C) before this world started"
    assert "interrupted" in err


def test_ctrl_c_stops_scenarios(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _interrupt_after(monkeypatch, 5)
    code, out, _err = vpmu(capsys, "scenarios", "S5", "H1", "H2")
    assert code == 3, out
    assert "DIFFERS" not in out and out.count("NOT FINISHED") == 3
    assert "0 as expected, 0 differ, 3 incomplete (interrupted: S5, H1, H2)" in out


def test_ctrl_c_stops_ablate_and_conform(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _interrupt_after(monkeypatch, 5)
    code, out, err = vpmu(capsys, "ablate", "--function", "perf_load_guest_lvtpc", "--vendor", "amd", "--jobs", "1")
    assert code == 3 and "interrupted" in err and "holds" not in out
    from vpmu.conform import runner

    monkeypatch.setattr(runner, "_task", lambda _w: (_ for _ in ()).throw(KeyboardInterrupt))
    code, out, err = vpmu(capsys, "conform", "--vendor", "amd", "--suite", "kut", "--jobs", "1")
    assert code == 3 and "interrupted: 0 of" in err and "pass" not in out


def test_sigint_stops_a_real_run(tmp_path: Path) -> None:
    """The whole command stops on a real SIGINT: the running world incomplete, exit 3."""
    p = subprocess.Popen(
        [sys.executable, "-m", "vpmu.cli", "check", "--world", "amd-long", "--progress", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
    )
    assert p.stderr is not None
    line = p.stderr.readline()  # the first progress line: the check is running
    assert "amd-long" in line and "states/s" in line
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 3, err
    (result,) = json.loads(out)["results"]
    assert result["verdict"] == "incomplete" and result["incomplete_reason"] == "interrupted (Ctrl-C)"


# --- 7. progress --------------------------------------------------------------------------------------------


def test_progress_callback_names_the_world_states_rate_and_time() -> None:
    from vpmu.report.progress import Progress

    class Stats:
        states, depth, rate, seconds = 1234, 7, 5678.0, 1.5

    stream = io.StringIO()  # not a terminal
    show = Progress(True, stream).states("upstream on intel-long")
    assert show is not None
    show(Stats(), 9)
    assert stream.getvalue() == ("vpmu: upstream on intel-long: 1234 states, 9 queued, depth 7, 5678 states/s, 1.5 s\n")
    assert Progress(None, io.StringIO()).states("x") is None  # off by default when not a terminal
    assert Progress(False, io.StringIO()).states("x") is None


def test_progress_flag_on_every_long_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from vpmu.scenarios import run

    real = explore.check
    fast = lambda *a, **k: real(*a, **{**k, "progress_every": 0.0})  # noqa: E731 - report at every layer
    monkeypatch.setattr(explore, "check", fast)
    monkeypatch.setattr(run, "check", fast)
    tiny = write(tmp_path, "t.toml", TINY)
    _, _, err = vpmu(capsys, "check", "--world", tiny, "--progress")
    assert "vpmu: upstream on tiny: " in err and "states/s" in err
    _, _, err = vpmu(capsys, "scenarios", "S5", "--progress")
    assert "vpmu: scenario S5 (1/1): " in err and "[1/1] scenario S5: " in err
    _, _, err = vpmu(
        capsys, "ablate", "--function", "perf_load_guest_lvtpc", "--world", tiny, "--jobs", "1", "--progress"
    )
    assert "vpmu: [1/" in err and "(none: baseline) on tiny: holds" in err
    _, _, err = vpmu(capsys, "conform", "--case", "check_invalid_rdpmc_gp", "--jobs", "1", "--progress")
    assert "vpmu: [1/" in err and "check_invalid_rdpmc_gp" in err


# --- 8. the world reference -----------------------------------------------------------------------------


def test_worlds_md_is_generated_from_the_schema() -> None:
    from vpmu.check.world_schema import update

    path = ROOT / "docs" / "worlds.md"
    text = path.read_text(encoding="utf-8")
    assert update(text) == text, "run: python -m vpmu.check.world_schema docs/worlds.md"


EVERY_KEY = """\
name = "every"
description = "every key of the world format"
cpus = 1
[machine]
vendor = "intel"
num_gp = 2
gp_width = 4
[vcpu]
num_gp = 1
num_fixed = 1
intel_compatible = true
deny_events = [0xC0]
deny_fixed = [0]
lvtpc = "NMI"
version = 2
gp_width = 4
fixed_width = 48
fixed_bitmap = 0
[[host_event]]
name = "cycles"
event = "cycles"
exclude_guest = true
pinned = false
period = 7
counter = 1
opened = false
cpu = 0
close = false
[guest]
program = ["loop 1", "hlt"]
ack = "mid"
enable = "GP0"
rearm = ["PMC0 -2"]
[bounds]
exits = 1
exit_reasons = ["timer"]
nmis = 0
perf_ops = 1
max_depth = 50
migrations = 0
[check]
properties = ["no-warn"]
[vm]
lifecycle = false
"""


def test_schema_and_validator_agree(tmp_path: Path) -> None:
    """Every key of the schema is accepted where it belongs and a bounded integer is checked at its ends."""
    from vpmu.check.world import parse_world
    from vpmu.check.world_schema import KEYS, keys_of
    from vpmu.config import MachineConfig
    from vpmu.errors import VpmuError
    from vpmu.inputs import parse_toml

    assert set(keys_of("machine")) == set(MachineConfig.__dataclass_fields__)
    every = parse_toml(EVERY_KEY, "every")
    for table in ("", "vcpu", "host_event", "guest", "bounds", "check", "vm"):
        t = every if not table else every["host_event"][0] if table == "host_event" else every[table]
        assert set(t) == set(keys_of(table)), table  # EVERY_KEY uses every key of the schema ...
    parse_world(every, "every")  # ... and the validator accepts them all
    for k in KEYS:
        if k.lo is None or k.hi is None or k.table != "bounds":
            continue
        for v, ok in ((k.lo, True), (k.hi, True), (k.lo - 1, False), (k.hi + 1, False)):
            data = parse_toml(TINY, "t")
            data["bounds"] = {k.name: v}
            if k.name == "migrations":  # migrations need a second pCPU
                data["cpus"] = 2
            if ok:
                parse_world(data, "t")
            else:
                with pytest.raises(VpmuError, match=f"bounds.{k.name} = {v} is not allowed"):
                    parse_world(data, "t")
    for table in ("vcpu", "guest", "bounds", "check"):
        data = parse_toml(TINY, "t")
        data.setdefault(table, {})["no_such_key"] = 1
        with pytest.raises(
            VpmuError,
            match=f"{table}.no_such_key = 1 is not allowed; unknown key; allowed: " + ", ".join(keys_of(table)),
        ):
            parse_world(data, "t")


# --- 9. flags --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["check", "--context", "-5"], "argument --context: -5 is not allowed; allowed: an integer >= 0"),
        (["conform", "--jobs", "-1"], "argument --jobs: -1 is not allowed; allowed: an integer >= 0"),
        (["ablate", "--function", "f", "--jobs", "-1"], "argument --jobs: -1 is not allowed"),
        (["check", "--vendor", "intel", "--vendor", "amd"], "argument --vendor: given twice; give it once"),
        (["check", "--html", ""], "argument --html: '' is not allowed; allowed: a file name"),
        (["simulate", "--max-steps", "0"], "argument --max-steps: 0 is not allowed; allowed: an integer >= 1"),
        (["trace", "show", "x.json", "--result", "-1"], "argument --result: -1 is not allowed"),
    ],
)
def test_flags_are_validated(capsys: pytest.CaptureFixture[str], argv: list[str], says: str) -> None:
    assert says in one_line(capsys, *argv)


def test_mutation_without_mutations(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from vpmu.conform import runner

    monkeypatch.setattr(runner, "run_tasks", _boom)  # the full run must not start
    assert one_line(capsys, "conform", "--mutation", "no-clear") == (
        "--mutation DESIGN is for the mutation check: give --mutations as well"
    )


def test_design_file_named_like_a_builtin(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = write(tmp_path, "d.toml", 'name = "upstream"\n')
    assert 'name = "upstream" is the name of a built-in design' in one_line(capsys, "check", "--design-file", f)


# --- 11. smaller issues ------------------------------------------------------------------------------------


def test_values_are_spelled_as_in_toml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = write(tmp_path, "w.toml", TINY.replace('event = "cycles"', 'event = "cycles"\npinned = "yes"'))
    assert 'host_event[0].pinned = "yes" is not allowed; allowed: true or false' in one_line(
        capsys, "check", "--world", f
    )
    f = write(tmp_path, "w.toml", TINY.replace("[guest]\nprogram = [", "[guest]\nprogrammes = ["))
    msg = one_line(capsys, "check", "--world", f)
    assert "None" not in msg and "True" not in msg


def test_info_says_yes_or_no(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = vpmu(capsys, "info", "--vendor", "intel")
    assert code == 0 and "status-set PMI no" in out and "False" not in out


@pytest.mark.parametrize("doc", ["null", "[]"])
def test_not_a_trace_document(capsys: pytest.CaptureFixture[str], tmp_path: Path, doc: str) -> None:
    f = write(tmp_path, "x.json", doc)
    msg = one_line(capsys, "trace", "show", f)
    assert msg.startswith(f"{f} is not a vpmu trace document: ") and "unknown" not in msg
    code, out, _ = vpmu(capsys, "trace", "validate", f)
    assert code == 1 and out.startswith(f"{f}: not a vpmu or ITF document")


def test_max_states_message_does_not_contradict_the_count(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = vpmu(capsys, "check", "--vendor", "intel", "--max-states", "1")
    assert code == 3 and "state cap reached (--max-states 1)" in out and "(1 states)" not in out


def test_long_world_names_keep_the_columns(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    long = write(tmp_path, "l.toml", TINY.replace('"tiny"', '"a-world-with-a-long-name"'))
    short = write(tmp_path, "s.toml", TINY)
    _, out, _ = vpmu(capsys, "check", "--world", long, "--world", short, "--no-trace")
    lines = out.splitlines()
    head = next(line for line in lines if line.startswith("design"))
    rows = [line for line in lines if line.startswith("upstream")]
    col = head.index("verdict")
    assert [r[col : col + 5] for r in rows] == ["holds", "holds"], out


@pytest.mark.parametrize(
    ("env", "flag", "color"),
    [
        ({"NO_COLOR": ""}, None, False),  # not a terminal; an empty NO_COLOR changes nothing
        ({"NO_COLOR": "", "FORCE_COLOR": "1"}, None, True),  # empty NO_COLOR does not disable colour
        ({"NO_COLOR": "1", "FORCE_COLOR": "1"}, None, False),
        ({"NO_COLOR": "1"}, "always", True),  # the flag wins
        ({"FORCE_COLOR": "1"}, "never", False),
    ],
)
def test_color(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    flag: str | None,
    color: bool,
) -> None:
    for k in ("NO_COLOR", "FORCE_COLOR"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    argv = ["explain", "no-warn", "--vendor", "intel"][:2] + ([f"--color={flag}"] if flag else [])
    _, out, _ = vpmu(capsys, "check", "--vendor", "intel", "--max-states", "1", *argv[2:])
    assert ("\033[" in out) == color


def test_fish_completion(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = vpmu(capsys, "completion", "fish")
    assert code == 0 and out.startswith("# fish completion for vpmu")
    assert "complete -c vpmu -n '__fish_use_subcommand' -f -a 'check'" in out
    assert "complete -c vpmu -n '__fish_seen_subcommand_from check' -l vendor" in out and "-a 'intel amd'" in out
    assert "__fish_seen_subcommand_from trace; and __fish_seen_subcommand_from render" in out


# --- 12. user scenarios, simulate's observations --------------------------------------------------------------

DESIGN_NO_CLEAR = (
    'name = "my-no-clear"\n[[edit]]\nop = "delete"\nfunction = "kvm_mediated_pmu_load"\nlabel = "clear_global_ctrl"\n'
)
SCENARIO = """\
id = "mine"
title = "deleting the clear on a tiny AMD world"
source = "a test"
design_file = "d.toml"
world = "w.toml"

[expect]
verdict = "violated"
property = "lvtpc-written-while-enabled"
"""


def test_user_scenario_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    write(tmp_path, "d.toml", DESIGN_NO_CLEAR)
    write(tmp_path, "w.toml", TINY_AMD)
    f = write(tmp_path, "mine.toml", SCENARIO)
    g = write(
        tmp_path,
        "other.toml",
        SCENARIO.replace('"mine"', '"other"')
        .replace('design_file = "d.toml"', 'design = "upstream"')
        .replace('verdict = "violated"\nproperty = "lvtpc-written-while-enabled"', 'verdict = "holds"'),
    )
    code, out, _ = vpmu(capsys, "scenarios", "--file", f, "--file", g)
    assert code == 0, out
    assert "my-no-clear" in out and "2 scenarios: 2 as expected, 0 differ" in out
    code, out, err = vpmu(capsys, "scenarios", "--catalog", str(tmp_path), "--json")
    assert code == 0 and "skipped: d.toml, w.toml" in err
    assert [s["id"] for s in json.loads(out)["scenarios"]] == ["mine", "other"]
    wrong = write(tmp_path, "wrong.toml", SCENARIO.replace("lvtpc-written-while-enabled", "no-warn"))
    code, out, _ = vpmu(capsys, "scenarios", "--file", wrong)
    assert code == 1 and "DIFFERS" in out


def test_user_scenario_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = write(tmp_path, "s.toml", SCENARIO)
    assert "d.toml: cannot read" in one_line(capsys, "scenarios", "--file", f)
    assert "not a directory" in one_line(capsys, "scenarios", "--catalog", f)


def test_simulate_trace_carries_the_observations(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_file = str(tmp_path / "sim.json")
    code, out, _ = vpmu(capsys, "simulate", "--vendor", "intel", "--exits", "every:3", "--trace", out_file)
    assert code == 0
    doc = json.loads(Path(out_file).read_text())
    kinds = {o["kind"] for o in doc["observations"]}
    assert kinds == {"guest read", "guest PMI", "host count"} and doc["violations"] == []
    assert all(o["matches"] for o in doc["observations"])
    assert "guest rdpmc" in out  # the text output shows the same observations
    code, out, _ = vpmu(capsys, "trace", "validate", "--strict", out_file)
    assert code == 0 and "valid vpmu.trace/1" in out
    doc["observations"][0]["matches"] = False
    doc["observations"][1]["seen"] = -1
    bad = write(tmp_path, "bad.json", json.dumps(doc))
    code, out, _ = vpmu(capsys, "trace", "validate", bad)
    assert code == 1 and "observations[0].matches: expected true" in out and "observations[1].seen" in out


def test_scenarios_help_default_is_the_runners_cap() -> None:
    from vpmu.cli import scenarios as cli_scenarios
    from vpmu.scenarios import run

    assert cli_scenarios.MAX_STATES == run.MAX_STATES
