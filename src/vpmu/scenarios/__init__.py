"""Canned scenarios: the kernel's review history as executable checks, kept as data.

Every scenario of Appendix C of kernel-mediated-pmu.md that states an outcome,
and one or more per hazard of its §6, is a TOML file in ``catalog/``
(``vpmu scenarios`` runs them). A scenario names a design and a world (an
inline world table in the format of :mod:`vpmu.check.world`, or a built-in
world's name) and what the checker must answer: every property holds, a
named property is violated, or the world is refused when it loads. A
scenario may judge only a subset of the properties; it must then say why
(``expect.restricted``), so a verdict reproduced only by leaving a property
out is visible as such. A scenario the model cannot express yet is listed
with the reason (``expressible = false``), never dropped. Example::

    id = "H1"
    title = "LVTPC switched to 0xF5 before PERF_GLOBAL_CTRL is cleared"
    hazards = ["H1"]
    source = "kernel-mediated-pmu.md H1; PeterZ 2025-08-18 (seed thread)"
    note = "..."
    design = "lvtpc-before-clear"

    [expect]
    verdict = "violated"                   # holds | violated | refused
    property = "lvtpc-written-while-enabled"
    # properties = ["..."]                 # judge only these ...
    # restricted = "why"                   # ... and say why (required with properties)
    # error = "H14"                        # refused: a text the world-load error contains

    [world]                                # or: world = "intel-default"
    [world.machine]
    vendor = "intel"
    ...

    [script]                               # optional: one scripted run and what it shows
    exits = "at:6"                         # vpmu simulate plans (default none)
    exit_reason = "interrupt"
    steps = ["host: kvm_mediated_pmu_load:clear_global_ctrl: wrmsr IA32_PERF_GLOBAL_CTRL <- 0x0"]
    journal = ["guest read rdmsr(IA32_PERF_GLOBAL_STATUS) = 0x1 (native 0x1)"]
    absent = ["kvm_pmu_load_guest_pmcs:load_pmc0: wrmsr IA32_PMC0 <- 0x0"]

User scenarios (``vpmu scenarios --file F.toml``, ``--catalog DIR``) have the same
format and run with the same runner. They may also name a design file instead of a
built-in design (``design_file = "my-variant.toml"``) and a world file
(``world = "my-world.toml"``), both relative to the scenario file; their id is any
name (letters, digits, ``-_.``) and need not match the file name.

Script observations are lines of the scripted run (see :mod:`vpmu.scenarios.run`):
``steps`` and ``journal`` must appear in that order (other lines may come in
between), ``absent`` lines must not appear anywhere. A step line is
``context: function:label`` or ``context: function:label: hardware event``;
the ``context: `` prefix may be left out.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from vpmu.check import properties as P
from vpmu.check.simulate import Plan
from vpmu.check.world import ASYNC_EXITS, WorldSpec, builtin_worlds, check_exit_reason, load_world, parse_world
from vpmu.designs import DESIGNS
from vpmu.errors import VpmuError, show_value
from vpmu.inputs import parse_toml, read_text
from vpmu.kernel.lang import Design

VERDICTS = ("holds", "violated", "refused")
ID_RE = re.compile(r"^(S|H|F)(\d+)(-[A-Za-z0-9]+)*$")
USER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HAZARD_RE = re.compile(r"^H(\d+)$")
TOP_KEYS = (
    "id",
    "title",
    "hazards",
    "source",
    "note",
    "expressible",
    "reason",
    "design",
    "design_file",
    "world",
    "expect",
    "script",
    "slow",
)
EXPECT_KEYS = ("verdict", "property", "properties", "restricted", "error")
SCRIPT_KEYS = ("exits", "nmis", "exit_reason", "seed", "violation", "steps", "journal", "absent")


@dataclass(frozen=True)
class Script:
    """One scripted run (the simulator's schedule) and the observations it must show."""

    exits: str = "none"
    nmis: str = "none"
    exit_reason: str = ""  # "" the vendor's default (Intel: timer, AMD: interrupt)
    seed: int = 0
    violation: str = ""  # the property the scripted run violates ("" none)
    steps: tuple[str, ...] = ()
    journal: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    hazards: tuple[str, ...]
    source: str
    note: str = ""
    expressible: bool = True
    reason: str = ""  # why not expressible
    design: str = ""
    world: WorldSpec | None = None
    world_ref: str = ""  # a built-in world's name, or "" for an inline world
    world_error: str = ""  # the world-load error (expected for "refused")
    verdict: str = ""  # expected: holds | violated | refused
    prop: str = ""  # expected violated property
    error: str = ""  # refused: a text the error contains
    properties: tuple[str, ...] = ()  # judge only these (empty: the world's)
    restricted: str = ""  # why the subset
    script: Script | None = None
    slow: bool = False
    file: str = ""
    #: A user scenario's design from ``design_file`` (None: the built-in design named ``design``).
    design_obj: Design | None = None

    def get_design(self) -> Design:
        """The design the scenario checks."""
        from vpmu.designs import get_design

        return self.design_obj if self.design_obj is not None else get_design(self.design)

    @property
    def expected(self) -> str:
        """The expected verdict as the table prints it."""
        if not self.expressible:
            return "not expressible"
        return f"violated: {self.prop}" if self.verdict == "violated" else self.verdict

    @property
    def vendor(self) -> str:
        return self.world.machine.vendor if self.world else ""

    @property
    def world_name(self) -> str:
        if self.world_ref:
            return self.world_ref
        return self.world.name if self.world else "(refused)" if self.world_error else ""


def sort_key(scenario_id: str) -> tuple[int, int, str]:
    """Appendix C scenarios, then hazards, then findings; by number, then suffix."""
    m = ID_RE.match(scenario_id)
    if not m:
        return (9, 0, scenario_id)
    return ("SHF".index(m.group(1)), int(m.group(2)), scenario_id[m.end(2) :])


def _err(where: str, msg: str) -> VpmuError:
    return VpmuError(f"{where}: {msg}")


def _str(data: Mapping[str, Any], key: str, where: str, required: bool = True) -> str:
    v = data.get(key, "")
    if not isinstance(v, str) or (required and not v.strip()):
        raise _err(where, f"{key} = {show_value(v)} is not allowed; allowed: a non-empty string")
    return v.strip()


def _strs(data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    v = data.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _err(where, f"{key} = {show_value(v)} is not allowed; allowed: a list of strings")
    return tuple(v)


def _known(data: Mapping[str, Any], keys: tuple[str, ...], prefix: str, where: str) -> None:
    for k in data:
        if k not in keys:
            raise _err(where, f"unknown key {prefix}{k!r}; allowed: {', '.join(keys)}")


def _opt(data: Mapping[str, Any], key: str, default: str, prefix: str, where: str) -> str:
    """An optional string value (its default when absent); any other type is an error naming the key."""
    v = data.get(key, default)
    if not isinstance(v, str):
        raise _err(where, f"{prefix}{key} = {show_value(v)} is not allowed; allowed: a string")
    return v


def _script(data: Any, where: str) -> Script:
    if not isinstance(data, dict):
        raise _err(where, "script must be a table ([script])")
    _known(data, SCRIPT_KEYS, "script.", where)
    for key in ("exits", "nmis"):
        Plan.parse(_opt(data, key, "none", "script.", where), f"{where}: script.{key}")
    reason = _opt(data, "exit_reason", "", "script.", where)
    if reason and reason not in ASYNC_EXITS:
        raise _err(
            where, f"script.exit_reason = {show_value(reason)} is not allowed; allowed: {', '.join(ASYNC_EXITS)}"
        )
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise _err(where, f"script.seed = {show_value(seed)} is not allowed; allowed: an integer")
    violation = _opt(data, "violation", "", "script.", where)
    if violation and violation not in P.BY_NAME:
        raise _err(where, f"script.violation = {show_value(violation)} is not allowed; allowed: {', '.join(P.BY_NAME)}")
    return Script(
        exits=_opt(data, "exits", "none", "script.", where),
        nmis=_opt(data, "nmis", "none", "script.", where),
        exit_reason=reason,
        seed=seed,
        violation=violation,
        steps=_strs(data, "steps", where),
        journal=_strs(data, "journal", where),
        absent=_strs(data, "absent", where),
    )


def parse_scenario(data: Mapping[str, Any], where: str, base: Path | None = None) -> Scenario:
    """Validate one scenario mapping (as read from TOML); errors name the file and the key.

    ``base``: a user scenario's directory (files it names are relative to it); None for the catalog."""
    _known(data, TOP_KEYS, "", where)
    sid = _str(data, "id", where)
    if base is not None:
        if not USER_ID_RE.match(sid):
            raise _err(
                where, f"id = {show_value(sid)} is not allowed; allowed: letters, digits, '-', '_', '.' (at most 64)"
            )
    elif not ID_RE.match(sid):
        raise _err(
            where,
            f"id = {show_value(sid)} is not allowed; allowed: S<n>, H<n> or F<n>, optionally -suffix (e.g. S1-amd)",
        )
    title = _str(data, "title", where)
    hazards = _strs(data, "hazards", where)
    for h in hazards:
        m = HAZARD_RE.match(h)
        if not m or not 1 <= int(m.group(1)) <= 25:
            raise _err(
                where, f"hazards: {show_value(h)} is not allowed; allowed: H1 to H25 (kernel-mediated-pmu.md §6)"
            )
    source = _str(data, "source", where)
    note = _str(data, "note", where, required=False)
    expressible = data.get("expressible", True)
    if not isinstance(expressible, bool):
        raise _err(where, f"expressible = {show_value(expressible)} is not allowed; allowed: true or false")
    slow = data.get("slow", False)
    if not isinstance(slow, bool):
        raise _err(where, f"slow = {show_value(slow)} is not allowed; allowed: true or false")
    if not expressible:
        reason = _str(data, "reason", where)
        for k in ("design", "design_file", "world", "expect", "script"):
            if k in data:
                raise _err(where, f"{k} is not allowed with expressible = false (give the reason instead)")
        return Scenario(sid, title, hazards, source, note, False, reason, file=where)
    if "reason" in data:
        raise _err(where, "reason is only for expressible = false")

    design_obj: Design | None = None
    if "design_file" in data:
        if base is None:
            raise _err(where, "design_file is for user scenarios (vpmu scenarios --file); the catalog names designs")
        if "design" in data:
            raise _err(where, "give either design or design_file, not both")
        from vpmu.check.design_file import load_design_file

        design_obj = load_design_file(base / _str(data, "design_file", where))
        design = design_obj.name
    else:
        design = _str(data, "design", where)
        if design not in DESIGNS:
            raise _err(where, f"design = {show_value(design)} is not allowed; known designs: {', '.join(DESIGNS)}")

    et = data.get("expect")
    if not isinstance(et, dict):
        raise _err(where, "expect is required: a table with verdict = holds | violated | refused")
    _known(et, EXPECT_KEYS, "expect.", where)
    verdict = et.get("verdict")
    if verdict not in VERDICTS:
        raise _err(where, f"expect.verdict = {show_value(verdict)} is not allowed; allowed: {', '.join(VERDICTS)}")
    prop = _opt(et, "property", "", "expect.", where)
    if verdict == "violated":
        if prop not in P.BY_NAME:
            raise _err(where, f"expect.property = {show_value(prop)} is not allowed; allowed: {', '.join(P.BY_NAME)}")
    elif prop:
        raise _err(where, f"expect.property is only for verdict = violated (verdict is {show_value(verdict)})")
    props = _strs(et, "properties", where)
    for p in props:
        if p not in P.BY_NAME:
            raise _err(where, f"expect.properties: {show_value(p)} is not allowed; allowed: {', '.join(P.BY_NAME)}")
    restricted = _str(et, "restricted", where, required=False)
    if props and not restricted:
        raise _err(where, "expect.restricted is required with expect.properties: say why only these are judged")
    if restricted and not props:
        raise _err(where, "expect.restricted without expect.properties")
    if prop and props and prop not in props:
        raise _err(where, f"expect.property {prop!r} is not among expect.properties")
    error = _str(et, "error", where, required=verdict == "refused")
    if error and verdict != "refused":
        raise _err(where, "expect.error is only for verdict = refused")

    wt = data.get("world")
    world: WorldSpec | None = None
    world_ref = world_error = ""
    if isinstance(wt, str) and base is not None and wt.endswith(".toml"):
        world, world_ref = load_world(base / wt), wt
    elif isinstance(wt, str):
        worlds = builtin_worlds()
        if wt not in worlds:
            raise _err(where, f"world = {show_value(wt)} is not a built-in world; built-in worlds: {', '.join(worlds)}")
        world, world_ref = worlds[wt], wt
    elif isinstance(wt, dict):
        if "check" in wt:
            raise _err(where, "world.check is not allowed in a scenario; use expect.properties and expect.restricted")
        try:
            world = parse_world(wt, f"{where} [world]", default_name=sid)
        except VpmuError as e:
            if verdict != "refused":
                raise
            world_error = str(e)
    else:
        raise _err(where, "world is required: an inline table ([world]), a built-in world's name or a .toml file")
    if verdict == "refused" and world is not None:
        raise _err(where, "expect.verdict = refused, but the world loads")
    if world is not None:
        vendor = world.machine.vendor
        for p in (*props, prop):
            if p and P.BY_NAME[p].vendor not in ("", vendor):
                raise _err(where, f"property {p!r} is for {P.BY_NAME[p].vendor} only; this world is {vendor}")

    script = _script(data["script"], where) if "script" in data else None
    if script is not None and verdict == "refused":
        raise _err(where, "script is not allowed with expect.verdict = refused")
    if script is not None and world is not None and script.exit_reason:
        try:
            check_exit_reason(script.exit_reason, world.machine.vendor, "script.exit_reason")
        except VpmuError as e:
            raise _err(where, str(e)) from None
    return Scenario(
        sid,
        title,
        hazards,
        source,
        note,
        True,
        "",
        design,
        world,
        world_ref,
        world_error,
        verdict,
        prop,
        error,
        props,
        restricted,
        script,
        slow,
        where,
        design_obj,
    )


@dataclass(frozen=True)
class Catalog:
    scenarios: tuple[Scenario, ...]
    by_id: Mapping[str, Scenario] = field(default_factory=dict)

    def select(self, ids: list[str] | tuple[str, ...]) -> list[Scenario]:
        """The scenarios with these ids, in the order given (all when empty)."""
        if not ids:
            return list(self.scenarios)
        folded = {k.lower(): s for k, s in self.by_id.items()}
        out = []
        for i in ids:
            s = self.by_id.get(i) or folded.get(i.lower())
            if s is None:
                raise VpmuError(f"unknown scenario {i!r}; known scenarios: {', '.join(self.by_id)}")
            out.append(s)
        return out


def parse_file(text: str, where: str) -> Scenario:
    """A scenario of the packaged catalog (its file is named after its id)."""
    scn = parse_scenario(parse_toml(text, where), where)
    stem = where.rsplit("/", 1)[-1].removesuffix(".toml")
    if stem != scn.id:
        raise _err(where, f"id = {scn.id!r} but the file is named {stem}.toml; name the file after the id")
    return scn


@functools.cache
def load_catalog() -> Catalog:
    """Every scenario of ``vpmu/scenarios/catalog/``, in catalog order (S, H, F; by number)."""
    root = resources.files("vpmu.scenarios").joinpath("catalog")
    found = []
    for entry in root.iterdir():
        if entry.name.endswith(".toml"):
            found.append(parse_file(entry.read_text(encoding="utf-8"), f"scenarios/catalog/{entry.name}"))
    found.sort(key=lambda s: sort_key(s.id))
    return Catalog(tuple(found), {s.id: s for s in found})


def load_user_scenarios(files: list[str] | None, catalogs: list[str] | None) -> Catalog:
    """User scenario files (``--file``) and every ``*.toml`` of catalog directories (``--catalog``),
    in the order given (a directory's files by name). Every file is validated before any runs."""
    paths: list[tuple[Path, dict[str, Any]]] = []
    for d in catalogs or []:
        root = Path(d)
        if not root.is_dir():
            raise VpmuError(f"--catalog {d}: not a directory")
        skipped = []
        for f in sorted(root.glob("*.toml")):
            data = parse_toml(read_text(f), str(f))
            if "id" in data:
                paths.append((f, data))
            else:  # a design or world file the scenarios name may sit next to them
                skipped.append(f.name)
        if skipped:
            sys.stderr.write(f"vpmu: --catalog {d}: not scenarios (no id), skipped: {', '.join(skipped)}\n")
        if not any(p.parent == root for p, _ in paths):
            raise VpmuError(f"--catalog {d}: no scenario files (*.toml with an id) in it")
    paths += [(Path(f), parse_toml(read_text(f), f)) for f in files or []]
    out: list[Scenario] = []
    by_id: dict[str, Scenario] = {}
    for p, data in paths:
        where = str(p)
        scn = parse_scenario(data, where, base=p.parent)
        if scn.id in by_id:
            raise _err(where, f"id = {scn.id!r} is also the id of {by_id[scn.id].file}; allowed: a unique id")
        by_id[scn.id] = scn
        out.append(scn)
    return Catalog(tuple(out), by_id)
