"""What the checker answers on every default world and every catalog scenario, as plain data.

``tests/test_golden_results.py`` compares it with ``tests/golden/check_results.json``, recorded
with the explorer from before the speed and memory work of issue 15 (main at 1d42369, whose model
already had the changes of issues 11-14): counts, verdicts and counterexamples (their moves) must
not change. Regenerate only on a deliberate
model change::

    python tests/golden_results.py > tests/golden/check_results.json
"""

from __future__ import annotations

import json
from typing import Any

from vpmu.check.explore import check
from vpmu.check.system import System
from vpmu.check.world import DEFAULT_WORLDS, resolve_world
from vpmu.designs import get_design
from vpmu.scenarios import load_catalog
from vpmu.scenarios.run import MAX_STATES

#: Designs checked on each default world: the merged code and a design that holds (its whole space).
DEFAULT_DESIGNS = ("upstream", "perf-stays-disabled")


def summary(system: System, fingerprint: bool = False, max_states: int | None = None) -> dict[str, Any]:
    r = check(system, max_states=max_states, fingerprint=fingerprint)
    return {
        "verdict": r.verdict,
        "property": r.prop,
        "message": r.message,
        "states": r.stats.states,
        "transitions": r.stats.transitions,
        "depth": r.stats.depth,
        "moves": [list(m) for m in r.moves],
        "collision_probability": r.collision_probability,
    }


def default_runs() -> dict[str, Any]:
    out = {}
    for vendor in ("intel", "amd"):
        world = resolve_world(DEFAULT_WORLDS[vendor])
        for design in DEFAULT_DESIGNS:
            out[f"{design}@{world.name}"] = summary(System(get_design(design), world))
    return out


def scenario_runs(fingerprint: bool = False) -> dict[str, Any]:
    out = {}
    for scn in load_catalog().scenarios:
        if not scn.expressible or scn.world is None:
            continue
        system = System(get_design(scn.design), scn.world, scn.properties or None)
        out[scn.id] = summary(system, fingerprint, MAX_STATES)
    return out


def dumps(golden: dict[str, dict[str, Any]]) -> str:
    """One line per run, so a diff of the file shows which runs changed."""
    groups = []
    for group, runs in golden.items():
        lines = [f"  {json.dumps(name)}: {json.dumps(run, separators=(',', ':'))}" for name, run in runs.items()]
        groups.append(f" {json.dumps(group)}: {{\n" + ",\n".join(lines) + "\n }")
    return "{\n" + ",\n".join(groups) + "\n}\n"


if __name__ == "__main__":
    print(dumps({"default": default_runs(), "scenarios": scenario_runs()}), end="")
