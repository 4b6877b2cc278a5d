"""Ablation: which steps of a function are load-bearing?

For each step of a function, the design with that step deleted; for each
adjacent pair, the design with the two swapped. Each mutant is checked on the
worlds; a deletion that violates nothing is "not load-bearing in these worlds"
— the honest answer to "can this clear be replaced by an assertion?".
Mutants run in parallel processes when more than one core is available; the
result order is fixed, so output is deterministic.
"""

from __future__ import annotations

import itertools
import os
import pickle
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from vpmu.check.explore import check
from vpmu.check.system import System
from vpmu.check.world import WorldSpec
from vpmu.errors import VpmuError
from vpmu.kernel.lang import Design, Edit


@dataclass(frozen=True)
class Mutation:
    name: str  # "delete clear_global_ctrl", "swap clear_global_ctrl/load_lvtpc"
    edit: Edit | None  # None: the unmodified design (the baseline)


@dataclass(frozen=True)
class Outcome:
    mutation: str
    world: str
    verdict: str
    prop: str
    length: int
    states: int


def mutations(design: Design, function: str, world: WorldSpec) -> list[Mutation]:
    """The baseline, every single-step deletion and every adjacent swap of ``function``."""
    fns = System(design, world).functions
    if function not in fns:
        raise VpmuError(f"design {design.name!r} has no function {function!r}; functions: {', '.join(fns)}")
    labels = fns[function].labels()
    out = [Mutation("(none: baseline)", None)]
    out += [Mutation(f"delete {lb}", Edit("delete", function, lb)) for lb in labels]
    out += [Mutation(f"swap {a} <-> {b}", Edit("swap", function, a, other=b)) for a, b in itertools.pairwise(labels)]
    return out


def _run(args: tuple[Design, Mutation, WorldSpec, int | None]) -> Outcome:
    design, mut, world, max_states = args
    d = design if mut.edit is None else design.derive(f"{design.name}~{mut.name}", mut.name, [mut.edit])
    r = check(System(d, world), max_states=max_states)
    if r.reason == "interrupted":
        raise KeyboardInterrupt  # explore.check returns on Ctrl-C; the whole ablation stops
    return Outcome(mut.name, world.name, r.verdict, r.prop, len(r.records), r.stats.states)


def ablate(
    design: Design,
    function: str,
    worlds: list[WorldSpec],
    max_states: int | None = None,
    jobs: int = 0,
    progress: Callable[[int, int, Outcome], None] | None = None,
    executor: Any = None,
) -> list[Outcome]:
    """Check every mutation of ``function`` on every world; one Outcome per (mutation, world).

    ``progress(done, total, outcome)`` is called as each outcome arrives, in order. ``executor``
    (vpmu.check.executor): where the checks run instead of ``jobs`` local processes."""
    tasks = []
    for world in worlds:
        for mut in mutations(design, function, world):
            tasks.append((design, mut, world, max_states))
    out: list[Outcome] = []

    def done(o: Outcome) -> None:
        out.append(o)
        if progress is not None:
            progress(len(out), len(tasks), o)

    if executor is not None:
        for o in executor.map(_run, tasks):
            done(o)
        return out
    jobs = jobs or (os.cpu_count() or 1)

    if jobs > 1 and len(tasks) > 1 and _picklable(design):
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for o in pool.map(_run, tasks):
                done(o)
        return out
    for t in tasks:
        done(_run(t))
    return out


def _picklable(design: Design) -> bool:
    """Designs with steps made by lambdas (some design files) run in this process."""
    try:
        pickle.dumps(design)
    except (pickle.PicklingError, AttributeError, TypeError):
        return False
    return True
