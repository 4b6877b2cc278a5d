"""The unit of a distributed campaign: one check of a design on a world, as a picklable function.

:class:`vpmu.check.executor.Executor` ships these to worker processes or Ray tasks; the
result is what :func:`vpmu.check.explore.check` returns in this process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vpmu.check.explore import Result, check
from vpmu.check.system import System


@dataclass(frozen=True)
class CheckRun:
    design: Any  # vpmu.kernel.lang.Design
    world: Any  # vpmu.check.world.WorldSpec
    properties: tuple[str, ...] | None = None
    max_states: int | None = None
    fingerprint: bool = False


def check_run(run: CheckRun) -> Result:
    """One exhaustive check (on whichever machine runs it)."""
    return check(System(run.design, run.world, run.properties), max_states=run.max_states, fingerprint=run.fingerprint)
