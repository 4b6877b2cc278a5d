"""The explorer (check/explore.py): determinism, state caps, depth bounds, shortest traces.

The reference for "shortest" and "fewest context switches" is an independent
breadth-first search written here over the same state graph (System.moves and
System.apply): it computes, layer by layer, the exact minimum number of context
switches of any path to each state, and compares with what check() returns.
A context switch is two consecutive moves made by different contexts (the
``context`` column of a trace).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from vpmu.check import explore
from vpmu.check.explore import check, collision_probability, replay
from vpmu.check.system import System
from vpmu.check.world import Bounds, WorldSpec, parse_world
from vpmu.cli import main
from vpmu.designs import get_design
from vpmu.report.trace import trace_rows

WORLD_TOML = """
name = "{name}"

[machine]
{machine}
num_gp = 1
gp_width = 5

[[host_event]]
name = "cycles"
event = "cycles"

[guest]
program = ["wrmsr PMC0 -3", "wrmsr EVTSEL0 INSTRUCTIONS|USR|OS|INT|EN", "wrmsr GLOBAL_CTRL GP0",
           "loop 3", "rdpmc 0", "rdmsr GLOBAL_STATUS", "hlt"]
rearm = ["PMC0 -8"]

[bounds]
exits = {exits}
exit_reasons = {reasons}
nmis = {nmis}
"""


def world_text(vendor: str, exits: int = 0, nmis: int = 0) -> str:
    machine = 'vendor = "intel"\nnum_fixed = 0' if vendor == "intel" else 'vendor = "amd"\npmu_version = "perfmonv2"'
    reasons = '["timer", "interrupt"]' if vendor == "intel" else '["interrupt"]'  # SVM: no preemption timer
    return WORLD_TOML.format(name=f"{vendor}-{exits}x{nmis}", machine=machine, exits=exits, nmis=nmis, reasons=reasons)


def world(vendor: str, exits: int = 0, nmis: int = 0) -> WorldSpec:
    return parse_world(tomllib.loads(world_text(vendor, exits, nmis)), "<test>")


def world_file(tmp_path: Path, vendor: str, exits: int = 0, nmis: int = 0) -> str:
    p = tmp_path / f"{vendor}-{exits}x{nmis}.toml"
    p.write_text(world_text(vendor, exits, nmis), encoding="utf-8")
    return str(p)


def system(design: str, w: WorldSpec) -> System:
    return System(get_design(design), w)


def switches(contexts: list[str]) -> int:
    return sum(a != b for a, b in itertools.pairwise(contexts))


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(["check", "--json", *argv])
    return code, json.loads(capsys.readouterr().out)


def without_seconds(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "results": [{k: v for k, v in r.items() if k != "seconds"} for r in doc["results"]]}


# --- an independent breadth-first search ---------------------------------------------------------


@dataclass
class Brute:
    states: int = 0
    transitions: int = 0
    depth: int = 0  # holds: the deepest BFS layer; violated: the shortest violation's length
    violation_depth: int | None = None
    min_switches: int | None = None  # fewest context switches among the shortest violating paths
    violating: set[Any] = field(default_factory=set)


def brute_force(sys_: Any) -> Brute:
    run = lambda s: sys_.running(s)[0]  # noqa: E731
    init = sys_.initial()
    seen = {init}
    # best[s]: the fewest switches of a shortest path to s, counting the switch into
    # s's own context (what matters when s is continued).
    best = {init: 0}
    layer = [init]
    out = Brute(states=1)
    while layer:
        nxt: dict[Any, int] = {}
        end: dict[Any, int] = {}  # violating states of this layer: switches of the trace ending there
        for s in layer:
            for m in sys_.moves(s):
                t, _ = sys_.apply(s, m)
                out.transitions += 1
                if t in seen and t not in nxt and t not in end:
                    continue  # reached at a smaller depth
                if sys_.violation(t):
                    end[t] = min(end.get(t, 1 << 30), best[s])
                else:
                    nxt[t] = min(nxt.get(t, 1 << 30), best[s] + (run(s) != run(t)))
                seen.add(t)
        out.states = len(seen)
        if end:
            out.depth = out.violation_depth = out.depth + 1
            out.min_switches = min(end.values())
            out.violating = set(end)
            return out
        if nxt:
            out.depth += 1
        best.update(nxt)
        layer = list(nxt)
    return out


# --- determinism ---------------------------------------------------------------------------------


def test_same_check_twice_gives_identical_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f_intel = world_file(tmp_path, "intel", exits=1, nmis=1)
    f_amd = world_file(tmp_path, "amd", exits=1, nmis=1)
    argv = ("--design", "no-nmi-gate", "--world", f_intel, "--world", f_amd)
    code1, first = cli_json(capsys, *argv)
    code2, second = cli_json(capsys, *argv)
    assert code1 == code2 == 1
    assert without_seconds(first) == without_seconds(second)
    verdicts = [(r["world"], r["verdict"]) for r in first["results"]]
    assert verdicts == [("intel-1x1", "violated"), ("amd-1x1", "violated")]
    assert all(r["violation"]["trace"] for r in first["results"])


def test_same_holds_check_twice_gives_identical_statistics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("--design", "perf-stays-disabled", "--world", world_file(tmp_path, "intel", exits=1, nmis=1))
    runs = [cli_json(capsys, *argv) for _ in range(2)]
    assert [code for code, _ in runs] == [0, 0]
    a, b = (doc["results"][0] for _, doc in runs)
    assert (a["verdict"], a["states"], a["transitions"], a["depth"]) == (
        b["verdict"],
        b["states"],
        b["transitions"],
        b["depth"],
    )
    assert a["verdict"] == "holds" and a["violation"] is None


def test_trace_rows_are_identical_across_fresh_systems() -> None:
    w = world("intel", exits=1, nmis=1)
    rows = []
    for _ in range(2):
        sy = system("upstream", w)
        r = check(sy)
        rows.append((r.prop, r.message, r.moves, trace_rows(sy, r.states, r.records)))
    assert rows[0] == rows[1]
    # Replaying the moves in yet another system gives the same trace again.
    sy = system("upstream", w)
    again = replay(sy, rows[0][2])
    assert (again.verdict, again.prop, again.message) == ("violated", rows[0][0], rows[0][1])
    assert trace_rows(sy, again.states, again.records) == rows[0][3]


def test_determinism_does_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    """Two processes with different string-hash seeds print the same JSON."""
    f = world_file(tmp_path, "amd", exits=1, nmis=1)
    outs = []
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        p = subprocess.run(
            [sys.executable, "-m", "vpmu.cli", "check", "--json", "--design", "put-keeps-eventsel", "--world", f],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=60,
        )
        assert p.returncode == 1, p.stderr
        outs.append(without_seconds(json.loads(p.stdout)))
    assert outs[0] == outs[1]


# --- state caps and depth bounds: never a false "holds" -------------------------------------------


def test_max_states_below_the_state_count_is_incomplete_never_holds() -> None:
    w = world("intel", exits=1)
    full = check(system("upstream", w))
    assert full.verdict == "holds"
    n = full.stats.states
    for cap in (1, 2, 10, n // 3, n // 2, n - 1):
        r = check(system("upstream", w), max_states=cap)
        assert r.verdict == "incomplete", cap
        assert r.reason == f"state cap reached (--max-states {cap})"
        assert r.prop == "" and r.records == []
    for cap in (n + 1, 2 * n):
        r = check(system("upstream", w), max_states=cap)
        assert (r.verdict, r.stats.states, r.stats.transitions) == ("holds", n, full.stats.transitions)


def test_max_states_on_a_violating_design_is_incomplete_or_the_same_violation() -> None:
    w = world("intel", exits=1, nmis=1)
    full = check(system("put-keeps-eventsel", w))
    assert full.verdict == "violated"
    seen = set()
    for cap in (1, 50, 500, full.stats.states - 1, full.stats.states, full.stats.states + 1):
        r = check(system("put-keeps-eventsel", w), max_states=cap)
        seen.add(r.verdict)
        assert r.verdict in ("incomplete", "violated"), cap
        if r.verdict == "violated":
            assert (r.prop, len(r.records)) == (full.prop, len(full.records))
    assert seen == {"incomplete", "violated"}


def test_cli_max_states_exit_3_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = world_file(tmp_path, "amd", exits=1, nmis=1)
    code, doc = cli_json(capsys, "--world", f, "--max-states", "100")
    assert code == 3
    (r,) = doc["results"]
    assert r["verdict"] == "incomplete"
    assert r["incomplete_reason"] == "state cap reached (--max-states 100)"
    assert r["violation"] is None
    assert 100 <= r["states"] < 200
    # The text summary says so too, and no counterexample is printed.
    assert main(["check", "--world", f, "--max-states", "100"]) == 3
    out = capsys.readouterr().out
    assert "counterexample" not in out
    (line,) = [ln for ln in out.splitlines() if ln.startswith("upstream")]
    assert line.split()[2] == "incomplete" and line.endswith("state cap reached (--max-states 100)")


def test_cli_max_states_incomplete_wins_over_holds_but_not_over_violated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit status across worlds: 1 if any violated, else 3 if any incomplete, else 0."""
    small = world_file(tmp_path, "intel")  # upstream holds here in ~200 states
    big = world_file(tmp_path, "amd", exits=1, nmis=1)  # ~6000 states
    code, doc = cli_json(capsys, "--world", small, "--world", big, "--max-states", "1000")
    assert code == 3
    assert [r["verdict"] for r in doc["results"]] == ["holds", "incomplete"]
    code, doc = cli_json(capsys, "--design", "no-clear", "--world", big, "--world", small, "--max-states", "1000")
    assert code == 1
    assert [r["verdict"] for r in doc["results"]] == ["violated", "violated"]


def test_max_depth_bound_is_incomplete_below_the_shortest_trace() -> None:
    """bounds.max_depth = L - 1 finds nothing (the shortest trace has L steps) and says
    "incomplete"; L finds the same violation."""
    w = world("intel", nmis=1)
    full = check(system("no-nmi-gate", w))
    n = len(full.records)
    assert (full.verdict, full.prop, n) == ("violated", "nmi-handler-hands-off", 16)
    r = check(system("no-nmi-gate", replace(w, bounds=replace(w.bounds, max_depth=n - 1))))
    assert r.verdict == "incomplete"
    assert r.reason == f"depth bound reached (bounds.max_depth = {n - 1})"
    assert r.stats.depth == n - 1
    r = check(system("no-nmi-gate", replace(w, bounds=replace(w.bounds, max_depth=n))))
    assert (r.verdict, r.prop, r.moves) == ("violated", full.prop, full.moves)


def test_max_depth_bound_above_the_graph_depth_still_holds() -> None:
    w = world("amd", exits=1)
    full = check(system("upstream", w))
    assert full.verdict == "holds"
    d = full.stats.depth
    assert check(system("upstream", replace(w, bounds=replace(w.bounds, max_depth=d)))).verdict == "holds"
    assert check(system("upstream", replace(w, bounds=replace(w.bounds, max_depth=d - 1)))).verdict == "incomplete"


def test_max_depth_from_a_world_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "bounded.toml"
    p.write_text(world_text("intel", nmis=1).replace("nmis = 1", "nmis = 1\nmax_depth = 15"), encoding="utf-8")
    code, doc = cli_json(capsys, "--design", "no-nmi-gate", "--world", str(p))
    assert code == 3
    assert doc["results"][0]["incomplete_reason"] == "depth bound reached (bounds.max_depth = 15)"


# --- statistics and shortest traces against the brute force ----------------------------------


@pytest.mark.parametrize(
    ("design", "vendor", "exits", "nmis"),
    [
        ("upstream", "intel", 1, 0),
        ("upstream", "amd", 1, 1),
        ("perf-stays-disabled", "intel", 1, 1),
    ],
)
def test_statistics_match_an_independent_bfs_when_holding(design: str, vendor: str, exits: int, nmis: int) -> None:
    w = world(vendor, exits, nmis)
    r = check(system(design, w))
    b = brute_force(system(design, w))
    assert r.verdict == "holds"
    assert b.violation_depth is None
    assert (r.stats.states, r.stats.transitions, r.stats.depth) == (b.states, b.transitions, b.depth)


VIOLATING = [
    ("no-nmi-gate", "intel", 1, 1),
    ("no-nmi-gate", "amd", 1, 1),
    ("upstream", "intel", 1, 1),
    ("flag-first", "intel", 0, 1),
    ("put-keeps-eventsel", "amd", 1, 1),
    ("no-status-restore", "intel", 1, 0),
    ("lvtpc-before-clear", "amd", 1, 1),
]


@pytest.mark.parametrize(("design", "vendor", "exits", "nmis"), VIOLATING)
def test_counterexample_is_shortest_with_fewest_switches(design: str, vendor: str, exits: int, nmis: int) -> None:
    w = world(vendor, exits, nmis)
    sy = system(design, w)
    r = check(sy)
    b = brute_force(system(design, w))
    assert r.verdict == "violated"
    assert len(r.records) == r.stats.depth == b.violation_depth
    assert switches([rec.context for rec in r.records]) == b.min_switches
    assert r.states[-1] in b.violating
    assert r.stats.states <= b.states  # the checker stops at the end of the violating layer too


# --- the switch preference on hand-made graphs -----------------------------------------------------


@pytest.fixture(autouse=True)
def _hand_made_graphs_hash_their_string_states(monkeypatch: pytest.MonkeyPatch) -> None:
    """state_fingerprint expects tuples of ints; the hand-made graphs below use node names."""
    real = explore.state_fingerprint
    monkeypatch.setattr(explore, "state_fingerprint", lambda s: hash(s) if isinstance(s[0], str) else real(s))


#: Hand-made graphs and patched fingerprint functions need the interpreted explorer: the compiled
#: one (setup.py) checks argument types and binds its module's functions when it is built.
INTERPRETED_ONLY = pytest.mark.skipif(
    not str(explore.__file__).endswith(".py"), reason="needs the interpreted explorer (compiled build)"
)

class Graph:
    """A hand-made state graph with the interface check() uses. States are 1-tuples of
    node names; each node has a context; "V" nodes violate."""

    def __init__(self, edges: dict[str, list[str]], ctx: dict[str, str]) -> None:
        self.edges, self.ctx = edges, ctx
        self.world = SimpleNamespace(bounds=Bounds(max_depth=0))
        self.ghost = SimpleNamespace(message="reached V")

    def initial(self) -> tuple[str]:
        return ("S",)

    def running(self, s: tuple[str]) -> tuple[str, int, None]:
        return self.ctx[s[0]], 0, None

    def moves(self, s: tuple[str]) -> list[tuple[int, int]]:
        return [] if self.violation(s) else [(0, i) for i in range(len(self.edges.get(s[0], [])))]

    def apply(self, s: tuple[str], m: tuple[int, int]) -> tuple[tuple[str], Any]:
        return (self.edges[s[0]][m[1]],), SimpleNamespace(context=self.ctx[s[0]], move=m, hw=[])

    def next_state(self, s: tuple[str], m: tuple[int, int]) -> tuple[str]:
        return self.apply(s, m)[0]

    def violation(self, s: tuple[str]) -> int:
        return 1 if s[0].startswith("V") else 0

    def finished(self, s: tuple[str]) -> bool:
        return not self.edges.get(s[0]) and not self.violation(s)

    props = ("progress",)

    def path(self, r: Any) -> str:
        s, out = self.initial(), ["S"]
        for m in r.moves:
            s = self.apply(s, m)[0]
            out.append(s[0])
        return "".join(out)


@INTERPRETED_ONLY
@pytest.mark.parametrize("fingerprint", [False, True])
def test_prefers_the_later_found_parent_with_fewer_switches(fingerprint: bool) -> None:
    """S(A) reaches V through X(B) (found first) or Y(A); via Y no switch happens."""
    g = Graph({"S": ["X", "Y"], "X": ["V"], "Y": ["V"]}, {"S": "A", "X": "B", "Y": "A", "V": "A"})
    r = check(g, fingerprint=fingerprint)  # type: ignore[arg-type]
    assert (r.verdict, g.path(r)) == ("violated", "SYV")
    assert switches([rec.context for rec in r.records]) == 0


@INTERPRETED_ONLY
@pytest.mark.parametrize("fingerprint", [False, True])
def test_prefers_fewer_switches_when_the_parents_tie(fingerprint: bool) -> None:
    """P1 and P2 are both reached with one switch, but T runs in P2's context, so the
    path through P2 continues without another switch: A A C C (one switch) rather than
    A B B C (two). The path through P1 is found first."""
    g = Graph(
        {"S": ["X", "Y"], "X": ["P1"], "Y": ["P2"], "P1": ["T"], "P2": ["T"], "T": ["V"]},
        {"S": "A", "X": "B", "P1": "B", "Y": "A", "P2": "C", "T": "C", "V": "C"},
    )
    r = check(g, fingerprint=fingerprint)  # type: ignore[arg-type]
    assert g.path(r) == "SYP2TV"
    contexts = [rec.context for rec in r.records]
    assert contexts == ["A", "A", "C", "C"]
    assert switches(contexts) == brute_force(g).min_switches == 1


@INTERPRETED_ONLY
@pytest.mark.parametrize("fingerprint", [False, True])
def test_among_several_violating_states_the_fewest_switches_wins(fingerprint: bool) -> None:
    g = Graph({"S": ["X", "Y"], "X": ["V1"], "Y": ["V2"]}, {"S": "A", "X": "B", "Y": "A", "V1": "B", "V2": "A"})
    r = check(g, fingerprint=fingerprint)  # type: ignore[arg-type]
    assert g.path(r) == "SYV2"


@INTERPRETED_ONLY
@pytest.mark.parametrize("fingerprint", [False, True])
def test_a_longer_path_with_fewer_switches_loses_to_a_shorter_one(fingerprint: bool) -> None:
    g = Graph(
        {"S": ["X", "Y"], "X": ["V"], "Y": ["Z"], "Z": ["V2"]},
        {"S": "A", "X": "B", "Y": "A", "Z": "A", "V": "B", "V2": "A"},
    )
    r = check(g, fingerprint=fingerprint)  # type: ignore[arg-type]
    assert (g.path(r), r.stats.depth) == ("SXV", 2)


# --- fingerprint mode (check(..., fingerprint=True), vpmu check --fingerprint) ----------------------

HOLDING = [
    ("upstream", "intel", 1, 0),
    ("upstream", "amd", 1, 1),
    ("perf-stays-disabled", "intel", 1, 1),
    ("perf-stays-disabled", "amd", 1, 1),
]
# Designs known to be wrong (tests/test_properties.py), on worlds without exits or NMIs too.
KNOWN_BAD = [("lvtpc-before-clear", "intel", 0, 0), ("no-clear", "intel", 0, 0), ("no-clear", "intel", 1, 1)]


def outcome(r: Any) -> tuple[Any, ...]:
    """Everything a run reports except its time and the collision estimate."""
    return (r.verdict, r.stats.states, r.stats.transitions, r.stats.depth, r.prop, r.message, r.moves, r.reason)


@pytest.mark.parametrize(("design", "vendor", "exits", "nmis"), HOLDING + VIOLATING + KNOWN_BAD)
def test_fingerprint_mode_gives_the_same_result_as_exact_mode(design: str, vendor: str, exits: int, nmis: int) -> None:
    w = world(vendor, exits, nmis)
    exact = check(system(design, w))
    fp = check(system(design, w), fingerprint=True)
    assert outcome(fp) == outcome(exact)
    assert fp.states == exact.states  # the replayed counterexample, state by state
    assert exact.collision_probability is None
    if fp.verdict == "holds":
        assert fp.collision_probability == collision_probability(fp.stats.states, 64) > 0
    else:  # a replayed counterexample is exact: no estimate attached
        assert fp.collision_probability is None


def perf_ipi_world(vendor: str) -> WorldSpec:
    """One unrelated NMI and one host perf IPI (a PMI vector and the IPI vector in the IRR)."""
    w = world(vendor, exits=0, nmis=1)
    return replace(w, bounds=replace(w.bounds, perf_ops=1))


def test_fingerprint_mode_on_a_perf_ipi_world_and_a_state_cap() -> None:
    w = perf_ipi_world("intel")
    verdicts = []
    for design in ("upstream", "perf-stays-disabled"):
        r = check(system(design, w), fingerprint=True)
        assert outcome(r) == outcome(check(system(design, w)))
        verdicts.append(r.verdict)
    assert verdicts == ["violated", "holds"]
    r = check(system("perf-stays-disabled", w), max_states=500, fingerprint=True)
    assert (r.verdict, r.reason, r.collision_probability) == (
        "incomplete",
        "state cap reached (--max-states 500)",
        None,
    )


def test_progress_violation_in_fingerprint_mode_carries_the_estimate() -> None:
    """ "progress" fails when no explored state finishes, so, like "holds", it rests on
    nothing having been missed and comes with the collision estimate."""
    storm = parse_world(
        tomllib.loads(world_text("intel").replace('event = "cycles"', 'event = "cycles"\nperiod = 2')), "<test>"
    )
    exact = check(system("upstream", storm))
    assert (exact.verdict, exact.prop) == ("violated", "progress")
    fp = check(system("upstream", storm), fingerprint=True)
    assert outcome(fp) == outcome(exact)
    assert fp.collision_probability == collision_probability(fp.stats.states, 64)


def test_the_collision_probability_is_the_birthday_bound() -> None:
    assert collision_probability(1, 64) == 0.0
    assert collision_probability(2, 64) == float(f"{2 / 2**65:.3g}")
    assert collision_probability(3_300_000, 64) == 2.95e-07  # about n**2 / 2**65
    assert collision_probability(1000, 8) == 1.0  # capped: with 8-bit fingerprints a collision is certain
    assert explore.FINGERPRINT_BITS == sys.hash_info.width == 64


def reachable(sy: System) -> set[Any]:
    """Every state reachable in the world, violating ones included and continued."""
    seen = {sy.initial()}
    layer = list(seen)
    while layer:
        nxt = []
        for s in layer:
            for m in sy.moves(s):
                t, _ = sy.apply(s, m)
                if t not in seen:
                    seen.add(t)
                    nxt.append(t)
        layer = nxt
    return seen


def test_slot_values_hash_to_distinct_lanes() -> None:
    """CPython hashes -1 like -2: two values of a slot with the same hash would make states that
    differ only there always share a fingerprint, whatever the probability estimate says. No slot
    may hold such a pair (values equal modulo 2**61 - 1 are told apart by state_fingerprint)."""
    sy = system("upstream", perf_ipi_world("amd"))
    states = reachable(sy)
    assert len(states) > 10_000
    for i, slot in enumerate(sy.layout.slots):
        values = {s[i] for s in states}
        assert len({hash(v) for v in values}) == len(values), slot.name
    assert len({hash(s) for s in states}) == len(states)
    assert min(min(s) for s in states) >= -1


def test_values_equal_modulo_the_hash_modulus_get_distinct_fingerprints() -> None:
    """hash(1 << 61) == hash(1): a GLOBAL_STATUS with bit 61 and one with bit 0, or IRR vector
    sets 61 bits apart, would always collide; the fingerprint mixes in the quotients."""
    from vpmu.check import explore

    a, b = (0, 1, 5), (0, 1 << 61, 5)
    assert hash(a) == hash(b) and explore.state_fingerprint(a) != explore.state_fingerprint(b)
    assert explore.state_fingerprint((3, 4)) == hash((3, 4))  # narrow states: the plain hash


def test_fingerprints_do_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    """The fingerprint of a state, and a fingerprint-mode check, are the same under any PYTHONHASHSEED."""
    f = world_file(tmp_path, "intel", exits=1, nmis=1)
    code = (
        "from vpmu.check.system import System; from vpmu.check.world import resolve_world; "
        "from vpmu.designs import get_design; import sys; "
        "print(hash(System(get_design('upstream'), resolve_world(sys.argv[1])).initial()))"
    )
    outs = []
    for seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = [sys.executable, "-m", "vpmu.cli", "check", "--json", "--fingerprint", "--design", "perf-stays-disabled"]
        p = subprocess.run([*run, "--world", f], capture_output=True, text=True, env=env, check=False, timeout=60)
        assert p.returncode == 0, p.stderr
        h = subprocess.run([sys.executable, "-c", code, f], capture_output=True, text=True, env=env, check=True)
        outs.append((h.stdout, without_seconds(json.loads(p.stdout))))
    assert outs[0] == outs[1]
    assert outs[0][1]["results"][0]["collision_probability"] > 0


# Forced collisions: a coarse fingerprint makes distinct states share one.


@pytest.fixture
def coarse(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make fingerprints ``bits`` wide (the estimate follows)."""

    def set_bits(bits: int) -> None:
        monkeypatch.setattr(explore, "state_fingerprint", lambda s: hash(s) & ((1 << bits) - 1))
        monkeypatch.setattr(explore, "FINGERPRINT_BITS", bits)

    return set_bits


@pytest.mark.parametrize("bits", [6, 8, 10, 12, 16])
@pytest.mark.parametrize(("design", "vendor", "exits", "nmis"), VIOLATING + KNOWN_BAD)
def test_collisions_never_invent_a_violation(
    coarse: Any, bits: int, design: str, vendor: str, exits: int, nmis: int
) -> None:
    """Whatever collides, a reported safety violation replays to the same violating state; a
    verdict that rests on nothing having been missed ("holds", "progress") carries the estimate."""
    w = world(vendor, exits, nmis)
    coarse(bits)
    r = check(system(design, w), fingerprint=True)
    if r.verdict == "violated" and r.prop != "progress":
        again = replay(system(design, w), r.moves)
        assert (again.verdict, again.prop, again.states[-1]) == ("violated", r.prop, r.states[-1])
        assert len(r.moves) == r.stats.depth
        assert r.collision_probability is None
    elif r.verdict == "incomplete":
        assert r.reason.startswith("fingerprint collision: ")
    else:
        assert r.collision_probability == collision_probability(r.stats.states, bits)


@pytest.mark.parametrize(("design", "vendor", "exits", "nmis"), HOLDING)
def test_collisions_explore_fewer_states(coarse: Any, design: str, vendor: str, exits: int, nmis: int) -> None:
    w = world(vendor, exits, nmis)
    full = check(system(design, w))
    coarse(12)
    r = check(system(design, w), fingerprint=True)
    assert r.stats.states < full.stats.states
    assert r.stats.states <= 1 << 12
    # The design holds: no safety violation can appear. Hidden states can make it look as if the
    # vCPU never finishes (a "progress" violation) or hide every collision from the explorer
    # ("holds"); both then carry the estimate, which a 12-bit fingerprint makes large.
    assert (r.verdict, r.prop) in (("holds", ""), ("incomplete", ""), ("violated", "progress"))
    if r.verdict == "incomplete":
        assert r.reason.startswith("fingerprint collision: ")
    else:
        assert r.collision_probability == collision_probability(r.stats.states, 12) > 0.5


@INTERPRETED_ONLY
def test_a_collision_in_the_same_layer_is_seen_and_blocks_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    g = Graph({"S": ["X", "Y"], "X": ["Z"], "Y": []}, {"S": "A", "X": "A", "Y": "A", "Z": "A"})
    assert check(g, fingerprint=True).verdict == "holds"  # type: ignore[arg-type]
    monkeypatch.setattr(explore, "state_fingerprint", lambda s: hash("X" if s == ("Y",) else s[0]))
    r = check(g, fingerprint=True)  # type: ignore[arg-type]
    assert (r.verdict, r.stats.states) == ("incomplete", 3)
    assert r.reason == "fingerprint collision: 1 state shared a fingerprint with another state and went unexplored"
    assert r.collision_probability is None


@INTERPRETED_ONLY
def test_a_collision_across_layers_hides_a_violation_and_holds_says_how_likely(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Y collides with S (an earlier layer, no longer in memory): Y and the violation behind it
    are never seen. "holds" is then wrong, which is what the probability estimates."""
    g = Graph({"S": ["X"], "X": ["F", "Y"], "Y": ["V"]}, {"S": "A", "X": "A", "F": "A", "Y": "A", "V": "A"})
    assert check(g).verdict == "violated"  # type: ignore[arg-type]
    monkeypatch.setattr(explore, "state_fingerprint", lambda s: hash("S" if s == ("Y",) else s[0]))
    monkeypatch.setattr(explore, "FINGERPRINT_BITS", 1)  # three states, one bit: a collision is certain
    r = check(g, fingerprint=True)  # type: ignore[arg-type]
    assert (r.verdict, r.stats.states, r.collision_probability) == ("holds", 3, 1.0)


@INTERPRETED_ONLY
def test_a_colliding_state_never_takes_over_a_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    """V (violating, reached first via X) and W (reached via Y with fewer switches) share a
    fingerprint. Re-parenting V onto Y's move would make the trace replay to W, which violates
    nothing; the explorer compares the states of the layer before re-parenting."""
    g = Graph(
        {"S": ["X", "Y"], "X": ["V"], "Y": ["W"]},
        {"S": "A", "X": "B", "Y": "A", "V": "A", "W": "A"},
    )
    monkeypatch.setattr(explore, "state_fingerprint", lambda s: hash("V" if s == ("W",) else s[0]))
    r = check(g, fingerprint=True)  # type: ignore[arg-type]
    assert (r.verdict, g.path(r)) == ("violated", "SXV")
    assert replay(g, r.moves).verdict == "violated"  # type: ignore[arg-type]


# The CLI flag.


def test_cli_fingerprint_holds_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = world_file(tmp_path, "amd", exits=1, nmis=1)
    code, doc = cli_json(capsys, "--world", f, "--fingerprint")
    _, exact = cli_json(capsys, "--world", f)
    assert code == 0
    (r,) = doc["results"]
    (e,) = exact["results"]
    assert r["verdict"] == "holds" and "collision_probability" not in e
    assert r["collision_probability"] == collision_probability(r["states"], 64)
    assert {k: v for k, v in r.items() if k not in ("seconds", "collision_probability")} == {
        k: v for k, v in e.items() if k != "seconds"
    }
    assert main(["check", "--world", f, "--fingerprint"]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("upstream")]
    assert line.endswith(f"fingerprints: collision probability {r['collision_probability']:.3g}")


def test_cli_fingerprint_violation_is_the_exact_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = world_file(tmp_path, "intel", exits=1, nmis=1)
    argv = ("--design", "no-nmi-gate", "--world", f)
    code, doc = cli_json(capsys, *argv, "--fingerprint")
    _, exact = cli_json(capsys, *argv)
    assert code == 1
    assert without_seconds(doc) == without_seconds(exact)  # no collision_probability: the trace is exact


def test_cli_fingerprint_takes_no_value(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["check", "--fingerprint=yes"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("vpmu: error: argument --fingerprint: ignored explicit argument 'yes'")
