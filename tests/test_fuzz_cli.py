"""Fuzzing the command line: mutated worlds, configs, design files, scenario files and traces.

Each input is a valid seed document mutated by hypothesis (a value replaced by one of another type
or out of range, a key dropped or added, bytes that are not UTF-8, a byte order mark, a cut-off
file) and handed to the CLI in-process. Every run must end in status 0, 1, 2 or 3 with a message,
never in a traceback or the internal-error status 70. Worlds are kept small (``--max-states``,
``--max-steps``) so a run takes milliseconds.

CI runs a few examples per target (deterministic: ``derandomize``). The long run is the same test
with more examples and random inputs (README, "Fuzzing")::

    VPMU_FUZZ_EXAMPLES=2000 nice python -m pytest tests/test_fuzz_cli.py -q -p no:cacheprovider

runs 2,000 inputs per target, 10,000 in all.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpmu.cli import main
from vpmu.errors import EXIT_INTERNAL

EXAMPLES = int(os.environ.get("VPMU_FUZZ_EXAMPLES", "0"))
SETTINGS = settings(
    max_examples=EXAMPLES or 12,
    deadline=None,
    derandomize=not EXAMPLES,  # CI: the same inputs every run; the long run: new ones
    database=None,
    suppress_health_check=list(HealthCheck),
)

WORLD = """\
name = "fuzz"
description = "a tiny world"
[machine]
vendor = "intel"
num_gp = 1
num_fixed = 1
gp_width = 5
fixed_width = 3
[vcpu]
lvtpc = "NMI"
deny_events = []
[[host_event]]
name = "cycles"
event = "cycles"
exclude_guest = true
pinned = true
[guest]
program = ["wrmsr PMC0 -3", "wrmsr EVTSEL0 INSTRUCTIONS|USR|OS|INT|EN", "wrmsr GLOBAL_CTRL GP0", "loop 3",
           "rdpmc 0", "rdmsr GLOBAL_STATUS", "hlt"]
ack = "late"
enable = "GP0"
rearm = ["PMC0 -8"]
[bounds]
exits = 1
exit_reasons = ["timer"]
nmis = 1
perf_ops = 0
max_depth = 0
[check]
properties = []
"""

CONFIG = """\
[machine]
vendor = "amd"
pmu_version = "perfmonv2"
num_gp = 6
gp_width = 48
masked_pmi = "drop"
pmi_skid = 0
"""

DESIGN = """\
name = "fuzz-variant"
base = "upstream"
summary = "a variant"
[[edit]]
op = "swap"
function = "perf_load_guest_lvtpc"
label = "write_lvtpc"
other = "set_flag"
[[edit]]
op = "insert_after"
function = "kvm_mediated_pmu_load"
label = "load_pmcs"
copy = "kvm_mediated_pmu_load:clear_global_ctrl"
as = "clear_again"
[[edit]]
op = "delete"
function = "kvm_mediated_pmu_put"
label = "put_lvtpc"
"""

SCENARIO = """\
id = "fuzz-1"
title = "a scenario"
hazards = ["H1"]
source = "fuzz"
design = "lvtpc-before-clear"
[expect]
verdict = "violated"
property = "lvtpc-written-while-enabled"
[world]
[world.machine]
vendor = "intel"
num_gp = 1
gp_width = 5
num_fixed = 0
[[world.host_event]]
name = "cycles"
[world.guest]
program = ["wrmsr EVTSEL0 INSTRUCTIONS|USR|OS|INT|EN", "wrmsr GLOBAL_CTRL GP0", "loop 2", "hlt"]
[world.bounds]
exits = 1
nmis = 0
[script]
exits = "at:2"
violation = "lvtpc-written-while-enabled"
steps = ["host: kvm_mediated_pmu_load:clear_global_ctrl"]
"""

PY_DESIGNS = (
    "import sys\nsys.exit(0)\n",
    "raise RuntimeError('no')\n",
    "DESIGN = 3\n",
    "import no_such_module_for_vpmu\n",
    "def f(:\n",
    "from vpmu.designs import get_design\nDESIGN = get_design('upstream').derive('p', 's', [])\n",
    "from vpmu.designs import get_design\nfrom vpmu.kernel.lang import Edit\n"
    "DESIGN = get_design('upstream').derive('p', 's', [Edit('delete', 'vcpu_run', '*')])\n",
)

WORDS = (
    "NMI", "NMI|MASKED", "hlt", "loop 3", "loop -1", "wrmsr PMC0 -1", "rdpmc fixed0", "rdpmc 9", "upstream",
    "intel", "amd", "timer", "interrupt", "every:2", "at:1,2", "random:0.5", "GP0|FIXED0", "PMC0 -2",
    "no-warn", "amd-guest-only", "holds", "violated", "refused", "delete", "swap", "*", "", " ", "é", "\x00",
)  # fmt: skip
INTS = (0, 1, -1, 2, 3, 16, 17, 255, 256, 4095, 4096, 2**31, 2**32, 2**48, 2**63 - 1, -(2**63), 10**30)

scalars = st.one_of(
    st.sampled_from(INTS),
    st.integers(-(2**64), 2**64),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(("a", "name", "x")), inner, max_size=3),
    max_leaves=6,
)
# A mutation: which node (index into the document's nodes), what to do, with what.
mutations = st.lists(
    st.tuples(st.integers(0, 10_000), st.sampled_from(("set", "drop", "add", "dup")), values), min_size=1, max_size=3
)
# Text-level damage after serialising: none mostly; sometimes bytes that are not UTF-8, a BOM, a cut.
damage = st.sampled_from(("none",) * 6 + ("latin1", "bom", "cut", "nul", "deep"))


# --- TOML out and documents in --------------------------------------------------------------------


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def dump_toml(d: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer (tomllib reads only): scalars, then tables, then arrays of tables."""
    out = []
    for k, v in d.items():
        if not isinstance(v, dict) and not (isinstance(v, list) and v and all(isinstance(x, dict) for x in v)):
            out.append(f"{json.dumps(k)} = {_toml_value(v)}")
    for k, v in d.items():
        name = f"{prefix}{json.dumps(k)}"
        if isinstance(v, dict):
            out.append(f"\n[{name}]")
            out.append(dump_toml(v, name + "."))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for x in v:
                out.append(f"\n[[{name}]]")
                out.append(dump_toml(x, name + "."))
    return "\n".join(out)


def _nodes(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _nodes(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _nodes(v, (*path, i))


def mutate(doc: Any, muts: list[tuple[int, str, Any]]) -> Any:
    doc = json.loads(json.dumps(doc))
    for at, op, value in muts:
        nodes = [p for p in _nodes(doc) if p]
        if not nodes:  # everything dropped: start the document again with one key
            doc[f"k{at % 7}"] = value
            continue
        path = nodes[at % len(nodes)]
        parent = functools.reduce(lambda d, k: d[k], path[:-1], doc)
        key = path[-1]
        if op == "set":
            parent[key] = value
        elif op == "drop":
            del parent[key]
        elif op == "add" and isinstance(parent, dict):
            parent[f"k{at % 7}"] = value
        elif op == "add":
            parent.append(value)
        elif op == "dup" and isinstance(parent, list):
            parent.append(parent[key])
    return doc


def damaged(text: str, how: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    if how == "latin1":
        return data[: len(data) // 2] + b"\xe9\xff" + data[len(data) // 2 :]
    if how == "bom":
        return b"\xef\xbb\xbf" + data
    if how == "cut":
        return data[: len(data) * 2 // 3]
    if how == "nul":
        return data.replace(b"\n", b"\n\x00", 1)
    if how == "deep":
        return data + b"\nzz = " + b"[" * 3000 + b"]" * 3000 + b"\n"
    return data


# --- running the CLI -----------------------------------------------------------------------------


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse: a usage error
            code = int(e.code) if isinstance(e.code, int) else 2
    return code, out.getvalue(), err.getvalue()


#: Exit statuses seen, by command (printed after a long run: how many inputs got past validation).
TALLY: Counter[tuple[str, int]] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report_tally() -> Iterator[None]:
    yield
    if EXAMPLES:
        total = sum(TALLY.values())
        lines = [f"  {cmd:<10} status {code}: {n}" for (cmd, code), n in sorted(TALLY.items())]
        sys.__stderr__.write(f"\nfuzz: {total} inputs; exit statuses by command:\n" + "\n".join(lines) + "\n")


def assert_clean(argv: list[str], files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory(prefix="vpmu-fuzz-") as d:
        for name, data in files.items():
            Path(d, name).write_bytes(data)
        argv = [a.replace("{d}", d) for a in argv]
        code, out, err = run_cli(argv)
    TALLY[(argv[1] if argv[0] == "trace" else argv[0], code)] += 1
    assert code != EXIT_INTERNAL, f"internal error for {argv}:\n{err}\ninput: {files}"
    assert code in (0, 1, 2, 3), (code, argv, err)
    assert "Traceback" not in err and "Traceback" not in out, err
    if code == 2:
        assert err.startswith("vpmu: error: ") and err.count("\n") == 1, err
    else:
        assert out.strip() or err.strip(), argv  # a verdict, a table or a message


def _toml(seed: str, muts: list[tuple[int, str, Any]], how: str) -> bytes:
    import tomllib

    return damaged(dump_toml(mutate(tomllib.loads(seed), muts)), how)


# --- the targets ---------------------------------------------------------------------------------------


@SETTINGS
@given(mutations, damage, st.sampled_from(("check", "simulate")))
def test_fuzz_world(muts: list[tuple[int, str, Any]], how: str, command: str) -> None:
    argv = ["check", "--world", "{d}/w.toml", "--max-states", "300", "--no-trace", "--color", "never"]
    if command == "simulate":
        argv = ["simulate", "--world", "{d}/w.toml", "--exits", "every:3", "--nmis", "at:5", "--max-steps", "3000"]
    assert_clean(argv, {"w.toml": _toml(WORLD, muts, how)})


@SETTINGS
@given(mutations, damage)
def test_fuzz_config(muts: list[tuple[int, str, Any]], how: str) -> None:
    assert_clean(["info", "--config", "{d}/c.toml"], {"c.toml": _toml(CONFIG, muts, how)})


@SETTINGS
@given(mutations, damage, st.sampled_from((None, *PY_DESIGNS)))
def test_fuzz_design_file(muts: list[tuple[int, str, Any]], how: str, py: str | None) -> None:
    if py is not None:
        files, name = {"d.py": py.encode()}, "d.py"
    else:
        files, name = {"d.toml": _toml(DESIGN, muts, how)}, "d.toml"
    argv = ["check", "--design-file", "{d}/" + name, "--vendor", "intel", "--max-states", "300", "--no-trace"]
    assert_clean(argv, files)


@SETTINGS
@given(mutations, damage)
def test_fuzz_scenario_file(muts: list[tuple[int, str, Any]], how: str) -> None:
    argv = ["scenarios", "--file", "{d}/s.toml", "--max-states", "300", "--trace"]
    assert_clean(argv, {"s.toml": _toml(SCENARIO, muts, how)})


@functools.cache
def trace_seeds() -> dict[str, Any]:
    """A check document with a counterexample, a simulate trace and an ITF export, made by vpmu itself."""
    with tempfile.TemporaryDirectory(prefix="vpmu-fuzz-seed-") as d:
        Path(d, "w.toml").write_text(WORLD)
        _, out, _ = run_cli(["check", "--world", f"{d}/w.toml", "--design", "lvtpc-before-clear", "--json"])
        check_doc = json.loads(out)
        run_cli(["simulate", "--world", f"{d}/w.toml", "--exits", "every:4", "--trace", f"{d}/sim.json"])
        sim_doc = json.loads(Path(d, "sim.json").read_text())
        run_cli(["trace", "itf", f"{d}/sim.json", "-o", f"{d}/sim.itf.json"])
        itf_doc = json.loads(Path(d, "sim.itf.json").read_text())
    # Keep them small: a few steps are enough to reach every validator.
    check_doc["results"][0]["violation"]["trace"] = check_doc["results"][0]["violation"]["trace"][-6:]
    for i, row in enumerate(check_doc["results"][0]["violation"]["trace"]):
        row["step"] = i + 1
    check_doc["results"][0]["depth"] = 6
    sim_doc["steps"] = sim_doc["steps"][:6]
    sim_doc["observations"] = sim_doc["observations"][:3]
    itf_doc["states"] = itf_doc["states"][:4]
    return {"check": check_doc, "sim": sim_doc, "itf": itf_doc}


COMMANDS: dict[str, Callable[[str], list[str]]] = {
    "validate": lambda f: ["trace", "validate", f],
    "show": lambda f: ["trace", "show", f, "--full"],
    "itf": lambda f: ["trace", "itf", f, "-o", "{d}/out.itf.json"],
    "render": lambda f: ["trace", "render", f, "--html", "{d}/out.html"],
}


@SETTINGS
@given(mutations, damage, st.sampled_from(("check", "sim", "itf")), st.sampled_from(tuple(COMMANDS)))
def test_fuzz_trace(muts: list[tuple[int, str, Any]], how: str, seed: str, command: str) -> None:
    text = json.dumps(mutate(trace_seeds()[seed], muts), allow_nan=True)
    assert_clean(COMMANDS[command]("{d}/t.json"), {"t.json": damaged(text, how)})


def test_the_seeds_are_valid() -> None:
    """Unmutated, every seed runs cleanly (the mutations start from working inputs)."""
    import tomllib

    for seed in (WORLD, CONFIG, DESIGN, SCENARIO):
        assert tomllib.loads(dump_toml(tomllib.loads(seed))) == tomllib.loads(seed)
    with tempfile.TemporaryDirectory() as d:
        Path(d, "w.toml").write_text(WORLD)
        Path(d, "s.toml").write_text(SCENARIO)
        Path(d, "d.toml").write_text(DESIGN)
        assert run_cli(["check", "--world", f"{d}/w.toml", "--max-states", "300"])[0] in (0, 3)
        assert run_cli(["scenarios", "--file", f"{d}/s.toml"])[0] == 0
        assert run_cli(["check", "--design-file", f"{d}/d.toml", "--max-states", "300"])[0] in (1, 3)
    for doc in trace_seeds().values():
        with tempfile.TemporaryDirectory() as d:
            Path(d, "t.json").write_text(json.dumps(doc))
            code, out, err = run_cli(["trace", "validate", f"{d}/t.json"])
            assert code == 0, out + err


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
