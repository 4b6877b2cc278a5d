"""Breadth-first exploration of a system's state graph.

States are hashable tuples; the visited set maps each state to an integer id
and keeps, per id, its parent id, the move that reached it, and how many
context switches the chosen shortest path to it makes (a switch is two
consecutive moves made by different contexts; the context that makes a move
is the one running in the state it starts from). BFS gives the shortest
counterexample; among the shortest, the one with the fewest context switches
(reviewers read ordering bugs by context; checker-anchors.md §3, tlaplus#1084).
The trace is rebuilt by replaying the moves from the initial state, so the
records (hardware events, messages) are exact. Exploration order is fixed,
so the same inputs give the same counts and the same counterexample.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vpmu.check import properties as P
from vpmu.check.system import Move, StepRecord, System
from vpmu.hw.layout import State

HOLDS, VIOLATED, INCOMPLETE = "holds", "violated", "incomplete"


@dataclass
class Stats:
    states: int = 0
    transitions: int = 0
    depth: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.states / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Result:
    verdict: str
    stats: Stats
    prop: str = ""  # the violated property's name
    message: str = ""
    moves: list[Move] = field(default_factory=list)
    records: list[StepRecord] = field(default_factory=list)
    states: list[State] = field(default_factory=list)  # states[0] initial, states[i+1] after records[i]
    reason: str = ""  # why incomplete

    @property
    def description(self) -> str:
        return P.BY_NAME[self.prop].description if self.prop else ""

    @property
    def source(self) -> str:
        return P.BY_NAME[self.prop].source if self.prop else ""


Progress = Callable[[Stats, int], None]


def check(
    system: System,
    max_states: int | None = None,
    progress: Progress | None = None,
    progress_every: float = 0.5,
) -> Result:
    """Explore every reachable state; stop at the first BFS layer with a violation.

    The world's ``bounds.max_depth`` (0: none) bounds the trace length: if states
    with enabled moves remain at that depth the verdict is "incomplete", never "holds".
    """
    start = time.perf_counter()
    max_depth = system.world.bounds.max_depth
    init = system.initial()
    ids: dict[State, int] = {init: 0}
    parent: list[int] = [-1]
    via: list[Move] = [(0, 0)]
    # Per state id: the context running in it, and the fewest context switches of a
    # shortest path to it. For a state that continues the path, that count includes
    # the switch into the state's own context (if its parent ran another one); for a
    # violating state, which ends the trace, it does not.
    run_of: list[str] = [system.running(init)[0]]
    switches: list[int] = [0]
    frontier: list[State] = [init]
    stats = Stats(states=1)
    found: list[int] = []
    if system.violation(init):
        found.append(0)
    running = system.running
    moves_of = system.moves
    apply = system.apply
    last_report = start
    depth = 0
    reason = ""
    finished = system.finished
    finished_any = finished(init)
    try:
        while frontier and not found:
            if max_depth and depth >= max_depth and any(moves_of(s) for s in frontier):
                reason = f"depth bound reached (bounds.max_depth = {max_depth})"
                break
            depth += 1
            nxt: list[State] = []
            layer_start = len(parent)
            for s in frontier:
                sid = ids[s]
                ctx = run_of[sid]
                base = switches[sid]
                for m in moves_of(s):
                    t, _ = apply(s, m)
                    stats.transitions += 1
                    tid = ids.get(t)
                    if tid is None:
                        tid = len(parent)
                        ids[t] = tid
                        parent.append(sid)
                        via.append(m)
                        tctx = running(t)[0]
                        run_of.append(tctx)
                        if system.violation(t):
                            switches.append(base)
                            found.append(tid)
                        else:
                            switches.append(base + (ctx != tctx))
                            nxt.append(t)
                            if not finished_any and finished(t):
                                finished_any = True
                    elif tid >= layer_start:
                        sw = base if system.violation(t) else base + (ctx != run_of[tid])
                        if sw < switches[tid]:
                            # Same BFS depth, fewer context switches: prefer this parent.
                            parent[tid], via[tid], switches[tid] = sid, m, sw
                if max_states is not None and len(parent) > max_states:
                    reason = f"state cap reached ({max_states} states)"
                    raise _Stop
                if progress is not None:
                    now = time.perf_counter()
                    if now - last_report >= progress_every:
                        last_report = now
                        stats.states, stats.depth, stats.seconds = len(parent), depth, now - start
                        progress(stats, len(nxt))
            frontier = nxt
    except _Stop:
        pass
    except KeyboardInterrupt:
        reason = "interrupted"
    stats.states = len(parent)
    stats.depth = depth if found or reason else depth - 1 if depth else 0
    stats.seconds = time.perf_counter() - start

    def path_to(i: int) -> list[Move]:
        path: list[Move] = []
        while i > 0:
            path.append(via[i])
            i = parent[i]
        path.reverse()
        return path

    if found:
        return replay(system, path_to(min(found, key=lambda i: (switches[i], i))), stats)
    if reason:
        return Result(INCOMPLETE, stats, reason=reason)
    if not finished_any and "progress" in system.props:
        # Every state was explored and none finishes: the run can only loop.
        r = replay(system, path_to(len(parent) - 1), stats)
        r.verdict, r.prop = VIOLATED, "progress"
        r.message = (
            "no schedule lets the vCPU task finish: every path loops; the trace reaches the last new "
            "state of the loop (a PMI storm when a host event's period is shorter than its PMI handler)"
        )
        return r
    return Result(HOLDS, stats)


class _Stop(Exception):
    pass


def replay(system: System, path: list[Move], stats: Stats | None = None) -> Result:
    """Re-run a path of moves from the initial state, recording every step."""
    s = system.initial()
    states = [s]
    records = []
    for m in path:
        s, rec = system.apply(s, m)
        states.append(s)
        records.append(rec)
    v = system.violation(s)
    prop = P.by_index(v).name if v else ""
    return Result(
        VIOLATED if v else HOLDS,
        stats or Stats(),
        prop=prop,
        message=system.ghost.message if v else "",
        moves=path,
        records=records,
        states=states,
    )
