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

Fingerprint mode (``check(..., fingerprint=True)``, ``vpmu check --fingerprint``)
keys the visited set by a 64-bit fingerprint of each state instead of the state
itself (hash compaction, as TLC's fingerprints and SPIN's hash-compact mode): a
run then needs about 250 bytes per state, most of it the per-id bookkeeping
below, instead of about 850 (README, "Performance"). Two distinct states that share
a fingerprint make the second look visited, so it and whatever only it leads to
are never explored. That can hide a violation, never invent one: a reported
counterexample is replayed and is exact. It can also hide the state that lets the
vCPU finish, so a "progress" violation, like "holds", comes with the estimated
probability that a collision happened (:func:`collision_probability`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from vpmu.check import properties as P
from vpmu.check.system import Move, StepRecord, System
from vpmu.hw.layout import State

HOLDS, VIOLATED, INCOMPLETE = "holds", "violated", "incomplete"

_HASH_MODULUS = sys.hash_info.modulus  # 2**61 - 1 on 64-bit CPython


def state_fingerprint(state: State) -> int:
    """The fingerprint of a state in fingerprint mode: CPython's hash of the tuple of ints.

    It needs no seed: an int hashes to its value modulo 2**61 - 1 and a tuple mixes
    its items' hashes with fixed constants (xxHash-style since CPython 3.8); only
    str and bytes hashing is salted by PYTHONHASHSEED. So a state has the same
    fingerprint in every run, and fingerprint mode is as deterministic as exact
    mode (tests/test_explore.py runs it under two hash seeds). Each mixing step is
    a bijection, so two states that differ in one slot collide only if that slot's
    values hash alike. Ints equal modulo 2**61 - 1 do (the APIC's 256-bit IRR, a
    GLOBAL_STATUS with bits 61-63): a state holding such a value gets the quotients
    of its wide values mixed in too, so they are told apart. (-1 and -2 also hash
    alike; the model uses -1 for "none" and never -2:
    test_slot_values_hash_to_distinct_lanes.)
    """
    h = hash(state)
    if max(state) >= _HASH_MODULUS:
        h = hash((h, tuple(v // _HASH_MODULUS for v in state if v >= _HASH_MODULUS)))
    return h


#: Bits of a fingerprint (64 on 64-bit CPython builds; 32 on 32-bit ones).
FINGERPRINT_BITS = sys.hash_info.width


def collision_probability(states: int, bits: int) -> float:
    """Estimated probability that two of ``states`` distinct states share a fingerprint.

    The birthday bound n(n-1)/2 pairs x 2**-bits, i.e. n(n-1)/2**65 for 64-bit
    fingerprints, assuming fingerprints behave like independent uniform values.
    A state can only be hidden if two reachable states share a fingerprint, so this
    bounds the chance that the run missed anything; ``states`` is the number
    explored, which equals the number reachable unless a collision did happen.
    Rounded to 3 significant digits (it is an estimate).
    """
    p = states * (states - 1) / 2 ** (bits + 1)
    return float(f"{min(1.0, p):.3g}")


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
    # Fingerprint mode, and the verdict rests on no state having been missed ("holds", or
    # a "progress" violation): the estimated probability that a collision hid a state.
    collision_probability: float | None = None

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
    fingerprint: bool = False,
) -> Result:
    """Explore every reachable state; stop at the first BFS layer with a violation.

    The world's ``bounds.max_depth`` (0: none) bounds the trace length: if states
    with enabled moves remain at that depth the verdict is "incomplete", never "holds".

    ``fingerprint``: remember states by their fingerprint only (module docstring).
    The counts, the verdict and the counterexample are the same as without it unless
    two reachable states share a fingerprint; a "holds" (or "progress") verdict then
    carries the estimated probability of that in ``Result.collision_probability``.
    Two states of the same BFS layer that share a fingerprint are told apart (the
    layer is still in memory): the run goes on, but cannot end in "holds".
    """
    start = time.perf_counter()
    max_depth = system.world.bounds.max_depth
    init = system.initial()
    fp = state_fingerprint if fingerprint else None
    # The visited set: state (exact mode) or fingerprint -> id.
    ids: dict[Hashable, int] = {init if fp is None else fp(init): 0}
    parent: list[int] = [-1]
    via: list[Move] = [(0, 0)]
    # Per state id: the context running in it, and the fewest context switches of a
    # shortest path to it. For a state that continues the path, that count includes
    # the switch into the state's own context (if its parent ran another one); for a
    # violating state, which ends the trace, it does not.
    run_of: list[str] = [system.running(init)[0]]
    switches: list[int] = [0]
    # The layer to expand, with its ids (so they need not be looked up again).
    frontier: list[State] = [init]
    frontier_ids: list[int] = [0]
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
    collisions = 0  # same-layer fingerprint collisions seen (fingerprint mode)
    finished = system.finished
    finished_any = finished(init)
    try:
        while frontier and not found:
            if max_depth and depth >= max_depth and any(moves_of(s) for s in frontier):
                reason = f"depth bound reached (bounds.max_depth = {max_depth})"
                break
            depth += 1
            nxt: list[State] = []
            nxt_ids: list[int] = []
            # Every state first reached in this layer, by id - layer_start: a fingerprint
            # that matches one of them is checked against the state itself.
            layer: list[State] = []
            layer_start = len(parent)
            for s, sid in zip(frontier, frontier_ids, strict=True):
                ctx = run_of[sid]
                base = switches[sid]
                for m in moves_of(s):
                    t, _ = apply(s, m)
                    stats.transitions += 1
                    new = len(parent)
                    # One lookup that also inserts: a state tuple's hash is not cached.
                    tid = ids.setdefault(t if fp is None else fp(t), new)
                    if tid == new:
                        parent.append(sid)
                        via.append(m)
                        layer.append(t)
                        tctx = running(t)[0]
                        run_of.append(tctx)
                        if system.violation(t):
                            switches.append(base)
                            found.append(tid)
                        else:
                            switches.append(base + (ctx != tctx))
                            nxt.append(t)
                            nxt_ids.append(tid)
                            if not finished_any and finished(t):
                                finished_any = True
                    elif tid >= layer_start:
                        if fp is not None and layer[tid - layer_start] != t:
                            # A distinct state with the same fingerprint: t is lost. Never
                            # re-parent onto it, or the trace would replay to t instead.
                            collisions += 1
                            continue
                        sw = base if system.violation(t) else base + (ctx != run_of[tid])
                        if sw < switches[tid]:
                            # Same BFS depth, fewer context switches: prefer this parent.
                            parent[tid], via[tid], switches[tid] = sid, m, sw
                if max_states is not None and len(parent) > max_states:
                    reason = f"state cap reached (--max-states {max_states})"
                    raise _Stop
                if progress is not None:
                    now = time.perf_counter()
                    if now - last_report >= progress_every:
                        last_report = now
                        stats.states, stats.depth, stats.seconds = len(parent), depth, now - start
                        progress(stats, len(nxt))
            frontier, frontier_ids = nxt, nxt_ids
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
    if collisions:
        return Result(INCOMPLETE, stats, reason=_collision_reason(collisions))
    p = collision_probability(stats.states, FINGERPRINT_BITS) if fp is not None else None
    if not finished_any and "progress" in system.props:
        # Every state was explored and none finishes: the run can only loop.
        r = replay(system, path_to(len(parent) - 1), stats)
        r.verdict, r.prop, r.collision_probability = VIOLATED, "progress", p
        r.message = (
            "no schedule lets the vCPU task finish: every path loops; the trace reaches the last new "
            "state of the loop (a PMI storm when a host event's period is shorter than its PMI handler)"
        )
        return r
    return Result(HOLDS, stats, collision_probability=p)


def _collision_reason(collisions: int) -> str:
    """Why a fingerprint-mode run that saw collisions cannot say "holds"."""
    n = f"{collisions} state{'s' * (collisions != 1)}"
    return f"fingerprint collision: {n} shared a fingerprint with another state and went unexplored"


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
