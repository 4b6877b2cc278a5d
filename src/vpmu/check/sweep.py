"""A sweep: one design (or several) checked across a grid of machines and world bounds.

The grid's axes (each a list of values; an axis left out keeps the base world's value):

========== ============================== =============================================
axis        world key                      values
========== ============================== =============================================
vendor      (the base world)               intel, amd
pmu_version machine.pmu_version            Intel 1-6 (F-1.1); AMD legacy, perfctrextcore,
                                           perfmonv2 (F-3.1); each applies to its vendor
ack         guest.ack                      early, mid, late (where the guest's PMI handler
                                           unmasks LVTPC)
counters    machine.num_gp                 1-8 general-purpose counters
exits       bounds.exits                   0-16 asynchronous VM-exits
nmis        bounds.nmis                    0-16 unrelated NMIs
perf_ops    bounds.perf_ops                0-16 host perf operations from another CPU
========== ============================== =============================================

Each vendor's base world is its default world (``vpmu worlds``) or a ``--world`` given for it.
Every grid point is a world validated like a world file before anything runs; a point that is
not a valid world is a user error naming the point. Each (point, design) is one run of
:func:`vpmu.check.explore.check`, the unit an executor (vpmu.check.executor) distributes.
"""

from __future__ import annotations

import itertools
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from vpmu.config import ACK_PLACEMENTS, AMD_VERSIONS, VENDORS, load_toml
from vpmu.errors import Fault, VpmuError

#: The axes, in table order, with the world key each sets.
AXES = ("vendor", "pmu_version", "ack", "counters", "exits", "nmis", "perf_ops")
_KEY = {
    "pmu_version": ("machine", "pmu_version"),
    "ack": ("guest", "ack"),
    "counters": ("machine", "num_gp"),
    "exits": ("bounds", "exits"),
    "nmis": ("bounds", "nmis"),
    "perf_ops": ("bounds", "perf_ops"),
}
_RANGE = {"counters": (1, 8), "exits": (0, 16), "nmis": (0, 16), "perf_ops": (0, 16)}
INTEL_VERSIONS = (1, 2, 3, 4, 5, 6)
#: Keys of a grid file besides the axes.
FILE_KEYS = ("designs", "worlds", "max_states", "fingerprint", "grid")


@dataclass(frozen=True)
class Grid:
    """Axis values (an empty tuple: the base world's value), the designs and the base worlds."""

    axes: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    designs: tuple[str, ...] = ()
    worlds: tuple[str, ...] = ()
    max_states: int | None = None
    fingerprint: bool = False


def parse_axis(axis: str, values: Sequence[Any], where: str) -> tuple[Any, ...]:
    """Validate one axis's values (from a flag, comma-separated, or a grid file's list)."""
    if axis not in AXES:
        raise VpmuError(f"{where}: unknown axis {axis!r}; allowed: {', '.join(AXES)}")
    out: list[Any] = []
    for raw in values:
        v: Any = raw
        if isinstance(v, str) and axis not in ("vendor", "ack") and v.strip().isdigit():
            v = int(v.strip())
        elif isinstance(v, str):
            v = v.strip()
        if axis == "vendor" and v not in VENDORS:
            raise VpmuError(f"{where}: vendor = {v!r} is not allowed; allowed: {', '.join(VENDORS)}")
        if axis == "ack" and v not in ACK_PLACEMENTS:
            raise VpmuError(f"{where}: ack = {v!r} is not allowed; allowed: {', '.join(ACK_PLACEMENTS)}")
        if axis == "pmu_version" and (isinstance(v, bool) or (v not in INTEL_VERSIONS and v not in AMD_VERSIONS)):
            raise VpmuError(
                f"{where}: pmu_version = {v!r} is not allowed; allowed: 1-6 (Intel) or "
                f"{', '.join(AMD_VERSIONS)} (AMD)"
            )
        if axis in _RANGE:
            lo, hi = _RANGE[axis]
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise VpmuError(f"{where}: {axis} = {v!r} is not allowed; allowed: an integer from {lo} to {hi}")
        if v not in out:
            out.append(v)
    if not out:
        raise VpmuError(f"{where}: {axis} has no values; give at least one")
    return tuple(out)


def load_grid(path: str) -> Grid:
    """A grid file: optional ``designs``, ``worlds``, ``max_states``, ``fingerprint``, and a
    ``[grid]`` table of axes (each a list)."""
    data = load_toml(path)
    for k in data:
        if k not in FILE_KEYS:
            raise VpmuError(f"{path}: unknown key {k!r}; allowed: {', '.join(FILE_KEYS)}")
    table = data.get("grid", {})
    if not isinstance(table, dict):
        raise VpmuError(f"{path}: grid must be a table ([grid]) of axes; allowed axes: {', '.join(AXES)}")
    axes: dict[str, tuple[Any, ...]] = {}
    for axis, values in table.items():
        if not isinstance(values, list):
            values = [values]
        axes[axis] = parse_axis(axis, values, f"{path} [grid]")
    names: dict[str, tuple[str, ...]] = {}
    for key in ("designs", "worlds"):
        v = data.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise VpmuError(f"{path}: {key} = {v!r} is not allowed; allowed: a list of names")
        names[key] = tuple(v)
    cap = data.get("max_states")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise VpmuError(f"{path}: max_states = {cap!r} is not allowed; allowed: an integer >= 1")
    fp = data.get("fingerprint", False)
    if not isinstance(fp, bool):
        raise VpmuError(f"{path}: fingerprint = {fp!r} is not allowed; allowed: true or false")
    return Grid(axes, names["designs"], names["worlds"], cap, fp)


def world_data(ref: str) -> tuple[str, dict[str, Any]]:
    """A world's name and TOML mapping: a built-in world by name, or a file."""
    for entry in resources.files("vpmu.worlds").iterdir():
        if entry.name == f"{ref}.toml":
            return ref, tomllib.loads(entry.read_text(encoding="utf-8"))
    if ref.endswith(".toml") or Path(ref).exists():
        data = load_toml(ref)
        name = data.get("name", Path(ref).stem)
        return name if isinstance(name, str) else Path(ref).stem, data
    from vpmu.check.world import builtin_worlds

    raise VpmuError(f"unknown world {ref!r}; built-in worlds: {', '.join(builtin_worlds())} (or give a .toml path)")


@dataclass(frozen=True)
class Point:
    """One grid point: the base world, the axis values, and the world they make."""

    base: str
    values: dict[str, Any]  # every axis, as the point's world has it
    world: Any  # vpmu.check.world.WorldSpec
    label: str = ""  # the axes the grid sets, "exits = 1, nmis = 0"


def points(grid: Grid) -> list[Point]:
    """Every grid point, validated (a user error names the first invalid one)."""
    from vpmu.check.world import DEFAULT_WORLDS, parse_world

    vendors = grid.axes.get("vendor", ())
    bases: list[tuple[str, dict[str, Any]]] = []
    if grid.worlds:
        bases = [world_data(w) for w in grid.worlds]
        if vendors:
            bases = [b for b in bases if b[1].get("machine", {}).get("vendor", "intel") in vendors]
            if not bases:
                raise VpmuError(f"none of the worlds given is a world of vendor {' or '.join(vendors)}")
    else:
        bases = [world_data(DEFAULT_WORLDS[v]) for v in (vendors or VENDORS)]
    versions = grid.axes.get("pmu_version", ())
    out: list[Point] = []
    for name, data in bases:
        vendor = data.get("machine", {}).get("vendor", "intel")
        mine = tuple(v for v in versions if (v in INTEL_VERSIONS) == (vendor == "intel"))
        if versions and not mine:
            raise VpmuError(
                f"pmu_version = {', '.join(map(str, versions))}: no value for the {vendor} world {name!r}; "
                f"allowed for {vendor}: {'1-6' if vendor == 'intel' else ', '.join(AMD_VERSIONS)}"
            )
        axes = [a for a in AXES[1:] if a in grid.axes]
        lists = [mine if a == "pmu_version" else grid.axes[a] for a in axes]
        for combo in itertools.product(*lists):
            values = dict(zip(axes, combo, strict=True))
            d = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
            for axis, v in values.items():
                table, key = _KEY[axis]
                d.setdefault(table, {})[key] = v
            label = ", ".join(f"{a} = {v}" for a, v in values.items())
            where = f"grid point {name}" + (f" ({label})" if label else "")
            d["name"] = name
            world = parse_world(d, where, default_name=name)
            m, b = world.machine, world.bounds
            shown = {
                "vendor": m.vendor,
                "pmu_version": m.pmu_version,
                "ack": world.guest.ack,
                "counters": m.num_gp,
                "exits": b.exits,
                "nmis": b.nmis,
                "perf_ops": b.perf_ops,
            }
            out.append(Point(name, shown, world, label))
    return out


@dataclass(frozen=True)
class SweepRun:
    """One (grid point, design) run: the unit a sweep's executor distributes."""

    index: int
    design: Any  # vpmu.kernel.lang.Design
    world: Any
    max_states: int | None = None
    fingerprint: bool = False


@dataclass(frozen=True)
class Verdict:
    """What one run of a sweep found (no trace: ``vpmu check`` on the point prints it)."""

    index: int
    design: str
    verdict: str  # holds | violated | incomplete | error
    prop: str = ""
    states: int = 0
    transitions: int = 0
    depth: int = 0
    length: int = 0  # the counterexample's steps
    reason: str = ""  # incomplete: why; error: the message
    seconds: float = 0.0
    collision_probability: float | None = None

    def cell(self) -> str:
        if self.verdict == "violated":
            return f"violated {self.prop} ({self.length} steps)"
        if self.verdict == "holds":
            return f"holds ({self.states} states)"
        if self.verdict == "incomplete":
            return f"incomplete ({self.states} states)"
        return "error (below)"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "design": self.design,
            "verdict": self.verdict,
            "property": self.prop or None,
            "states": self.states,
            "transitions": self.transitions,
            "depth": self.depth,
            "trace_length": self.length if self.verdict == "violated" else None,
            "seconds": round(self.seconds, 3),
        }
        if self.reason:
            out["incomplete_reason" if self.verdict == "incomplete" else "error"] = self.reason
        if self.collision_probability is not None:
            out["collision_probability"] = self.collision_probability
        return out


def sweep_run(run: SweepRun) -> Verdict:
    """Check one design on one grid point (in whichever process or Ray task runs it)."""
    from vpmu.check.explore import check
    from vpmu.check.system import System

    t0 = time.perf_counter()
    try:
        r = check(System(run.design, run.world), max_states=run.max_states, fingerprint=run.fingerprint)
    except VpmuError as e:  # the point's guest program does not run on its machine
        return Verdict(run.index, run.design.name, "error", reason=str(e), seconds=time.perf_counter() - t0)
    except Fault as e:  # the model itself cannot run this machine: its gap, not a verdict (exit 70)
        why = f"internal: the model faulted on this machine ({e})"
        return Verdict(run.index, run.design.name, "error", reason=why, seconds=time.perf_counter() - t0)
    return Verdict(
        run.index,
        run.design.name,
        r.verdict,
        r.prop,
        r.stats.states,
        r.stats.transitions,
        r.stats.depth,
        len(r.moves),
        r.reason,
        r.stats.seconds,
        r.collision_probability,
    )


def merge(file: Grid | None, flags: Mapping[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    """A flag's values replace the file's for that axis."""
    axes = dict(file.axes) if file else {}
    axes.update(flags)
    return axes
