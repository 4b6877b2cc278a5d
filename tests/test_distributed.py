"""The partitioned search (check/distributed.py) gives exactly the local explorer's result.

These run the partitions in this process (no Ray): the protocol is the one the Ray actors
speak, so what is shown here holds there too; tests/test_ray.py repeats the comparison on
a local Ray cluster.
"""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from test_explore import HOLDING, KNOWN_BAD, VIOLATING, outcome, world
from vpmu.check import explore
from vpmu.check.distributed import Partition, check_partitioned, local_group
from vpmu.check.explore import check
from vpmu.check.system import System
from vpmu.check.world import Bounds, WorldSpec
from vpmu.cli import main
from vpmu.designs import get_design


def system(design: str, w: WorldSpec) -> System:
    return System(get_design(design), w)


def partitioned(design: str, w: WorldSpec, n: int, **kw: Any) -> Any:
    group = local_group(lambda: system(design, w), n, kw.get("fingerprint", False))
    return check_partitioned(system(design, w), group, max_depth=w.bounds.max_depth, **kw)


def same(a: Any, b: Any) -> None:
    assert outcome(b) == outcome(a)
    assert b.states == a.states  # the replayed counterexample, state by state
    assert b.collision_probability == a.collision_probability


@pytest.mark.parametrize("fingerprint", [False, True])
@pytest.mark.parametrize(("design", "vendor", "exits", "nmis"), HOLDING[:2] + VIOLATING + KNOWN_BAD[1:])
def test_partitions_give_the_local_result(design: str, vendor: str, exits: int, nmis: int, fingerprint: bool) -> None:
    w = world(vendor, exits, nmis)
    local = check(system(design, w), fingerprint=fingerprint)
    for n in (1, 3):
        same(local, partitioned(design, w, n, fingerprint=fingerprint))


@pytest.mark.parametrize("cap", [1, 2, 60, 65, 100, 2950, 2951, 5000])
def test_a_state_cap_stops_where_the_local_explorer_stops(cap: int) -> None:
    """The cap falls inside a layer: the layer is cut after the same frontier state, with the
    same counts, and a violation found before the cut is reported as locally."""
    for design, vendor in (("upstream", "intel"), ("no-clear", "intel")):
        w = world(vendor, 1, 1)
        same(check(system(design, w), max_states=cap), partitioned(design, w, 3, max_states=cap))


@pytest.mark.parametrize("depth", [1, 20, 200])
def test_a_depth_bound_stops_where_the_local_explorer_stops(depth: int) -> None:
    w = world("intel", 1, 1)
    w = replace(w, bounds=replace(w.bounds, max_depth=depth))
    same(check(system("upstream", w)), partitioned("upstream", w, 2))


def test_forced_fingerprint_collisions_are_handled_as_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    """With 8-bit fingerprints many states collide, in the same layer and across layers: the
    partitions lose the same states and report the same verdict as the local explorer."""
    monkeypatch.setattr(explore, "state_fingerprint", lambda s: hash(s) & 0xFF)
    monkeypatch.setattr(explore, "FINGERPRINT_BITS", 8)
    for design, vendor in (("upstream", "amd"), ("no-clear", "intel"), ("perf-stays-disabled", "intel")):
        w = world(vendor, 1, 1)
        same(check(system(design, w), fingerprint=True), partitioned(design, w, 3, fingerprint=True))


class Graph:
    """A hand-made state graph (states are 1-tuples of names; "V" nodes violate)."""

    props = ("progress",)

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
        return (self.edges[s[0]][m[1]],)

    def violation(self, s: tuple[str]) -> int:
        return 1 if s[0].startswith("V") else 0

    def finished(self, s: tuple[str]) -> bool:
        return not self.edges.get(s[0]) and not self.violation(s)


def path(g: Graph, r: Any) -> str:
    s, out = g.initial(), ["S"]
    for m in r.moves:
        s = g.apply(s, m)[0]
        out.append(s[0])
    return "".join(out)


# Node -> owner: each graph spreads its nodes so that the parents that compete for a state live
# on different partitions from it and from each other.
OWNERS = {"S": 0, "X": 1, "Y": 2, "V": 0, "V1": 1, "V2": 2, "P1": 0, "P2": 1, "T": 2, "Z": 0}


@pytest.mark.parametrize(
    ("edges", "ctx", "expected"),
    [
        # the later-found parent with fewer switches wins
        ({"S": ["X", "Y"], "X": ["V"], "Y": ["V"]}, {"S": "A", "X": "B", "Y": "A", "V": "A"}, "SYV"),
        # parents tie on switches; the one whose context continues wins
        (
            {"S": ["X", "Y"], "X": ["P1"], "Y": ["P2"], "P1": ["T"], "P2": ["T"], "T": ["V"]},
            {"S": "A", "X": "B", "P1": "B", "Y": "A", "P2": "C", "T": "C", "V": "C"},
            "SYP2TV",
        ),
        # among violating states the fewest switches wins, then the first found
        ({"S": ["X", "Y"], "X": ["V1"], "Y": ["V2"]}, {"S": "A", "X": "B", "Y": "A", "V1": "B", "V2": "A"}, "SYV2"),
        ({"S": ["X", "Y"], "X": ["V1"], "Y": ["V2"]}, {"S": "A", "X": "A", "Y": "A", "V1": "A", "V2": "A"}, "SXV1"),
        # shorter beats fewer switches
        (
            {"S": ["X", "Y"], "X": ["V"], "Y": ["Z"], "Z": ["V2"]},
            {"S": "A", "X": "B", "Y": "A", "Z": "A", "V": "B", "V2": "A"},
            "SXV",
        ),
        # progress: every path loops; the trace reaches the last new state
        ({"S": ["X", "Y"], "X": ["S"], "Y": ["X"]}, {"S": "A", "X": "A", "Y": "A"}, "SY"),
    ],
)
def test_tie_breaks_on_hand_made_graphs(
    monkeypatch: pytest.MonkeyPatch, edges: dict[str, list[str]], ctx: dict[str, str], expected: str
) -> None:
    monkeypatch.setattr(explore, "state_fingerprint", lambda s: OWNERS[s[0]])
    g = Graph(edges, ctx)
    local = check(g)  # type: ignore[arg-type]
    assert path(g, local) == expected
    for n in (1, 2, 3):
        r = check_partitioned(g, local_group(lambda: g, n))
        assert (path(g, r), outcome(r)) == (expected, outcome(local))


def test_ignoring_the_switch_count_would_give_another_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison above can fail: an owner that keeps the first parent found (no switch
    preference) reports S X V instead of S Y V."""
    monkeypatch.setattr(explore, "state_fingerprint", lambda s: OWNERS[s[0]])
    monkeypatch.setattr(Partition, "_better", staticmethod(lambda new, old: False))
    g = Graph({"S": ["X", "Y"], "X": ["V"], "Y": ["V"]}, {"S": "A", "X": "B", "Y": "A", "V": "A"})
    assert path(g, check_partitioned(g, local_group(lambda: g, 3))) == "SXV" != path(g, check(g))  # type: ignore[arg-type]


def test_every_partition_owns_a_share_of_the_states() -> None:
    w = world("amd", 1, 1)
    group = local_group(lambda: system("upstream", w), 3)
    r = check_partitioned(system("upstream", w), group)
    owned = [p.owned() for p in group.parts]
    assert sum(owned) == r.stats.states
    assert min(owned) > r.stats.states // 5


def without_seconds(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "results": [{k: v for k, v in r.items() if k != "seconds"} for r in doc["results"]]}


def test_cli_partitions_without_ray_give_the_same_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--json", "--vendor", "intel"]) == 1
    local = json.loads(capsys.readouterr().out)
    assert main(["check", "--json", "--vendor", "intel", "--partitions", "3"]) == 1
    assert without_seconds(json.loads(capsys.readouterr().out)) == without_seconds(local)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--partitions", "-1"], "--partitions = -1 is not allowed; allowed: an integer from 1 to 65535"),
        (["--executor", "cluster"], "--executor = 'cluster' is not allowed; allowed: local, ray"),
        (["--executor", "ray://head:70000"], "--executor = 'ray://head:70000' is not allowed"),
    ],
)
def test_cli_bad_executor_arguments_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert main(["check", "--vendor", "intel", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("command", [["check"], ["conform", "--case", "intel/kut/check_invalid_rdpmc_gp"], ["sweep"]])
def test_executor_ray_without_ray_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # import ray fails
    assert main([*command, "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert "--executor ray needs Ray, an optional extra: pip install 'vpmu[ray]'" in err
    assert "Traceback" not in err
