"""Breadth-first exploration of a system's state graph.

States are hashable tuples; each state gets an integer id in discovery order
and keeps, per id, its parent id and the move that reached it (its index among
the parent's moves); the number of context switches of the chosen shortest path
is kept for the layer being built and its frontier only, which is all the choice
needs (a switch is two consecutive moves made by different contexts; the context
that makes a move is the one running in the state it starts from). BFS gives the
shortest counterexample; among the shortest, the one with the fewest context
switches (reviewers read ordering bugs by context; checker-anchors.md §3, tlaplus#1084).
The trace is rebuilt by replaying the moves from the initial state, so the
records (hardware events, messages) are exact. Exploration order is fixed,
so the same inputs give the same counts and the same counterexample.

Fingerprint mode (``check(..., fingerprint=True)``, ``vpmu check --fingerprint``)
keys the visited set by a 64-bit fingerprint of each state instead of the state
itself (hash compaction, as TLC's fingerprints and SPIN's hash-compact mode),
and keeps only the finished layers' fingerprints, in a flat table
(:mod:`vpmu.check.fpset`): a run then needs about 30 bytes per state instead
of about 850 (README, "Performance"). Two distinct states that share a
fingerprint make the second look visited, so it and whatever only it leads to
are never explored. That can hide a violation, never invent one: a reported
counterexample is replayed and is exact. It can also hide the state that lets the
vCPU finish, so a "progress" violation, like "holds", comes with the estimated
probability that a collision happened (:func:`collision_probability`).
"""

from __future__ import annotations

import gc
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from vpmu.check import properties as P
from vpmu.check.fpset import FingerprintSet
from vpmu.check.system import Move, StepRecord, System
from vpmu.check.world import WorldSpec
from vpmu.hw.layout import State

HOLDS, VIOLATED, INCOMPLETE = "holds", "violated", "incomplete"

_HASH_MODULUS = sys.hash_info.modulus  # 2**61 - 1 on 64-bit CPython
_WIDE_SUM = _HASH_MODULUS - 2**32  # a state summing to less holds no int >= _HASH_MODULUS (no slot < -1)


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
    # sum() is a cheap filter for max() (3x faster on 76 small ints): it can only miss a wide
    # value if negative slots outweighed it, and the only negative slot value is -1.
    if sum(state) >= _WIDE_SUM and max(state) >= _HASH_MODULUS:
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


class StateGraph(Protocol):
    """What the explorer needs of a system (:class:`~vpmu.check.system.System` has it all;
    tests pass small hand-made graphs). Checkpoints need a real System."""

    world: WorldSpec
    props: tuple[str, ...]
    ghost: Any  # its ``message`` explains a violation

    def initial(self) -> State: ...
    def moves(self, s: State) -> list[Move]: ...
    def next_state(self, state: State, move: Move) -> State: ...
    def apply(self, state: State, move: Move) -> tuple[State, StepRecord]: ...
    def running(self, s: State) -> tuple[str, int, Any]: ...
    def violation(self, s: State) -> int: ...
    def finished(self, s: State) -> bool: ...

class Search:
    """The explorer's memory between BFS layers: everything a checkpoint holds.

    Per state id (ids are given in discovery order): ``parent`` (the id of the state
    it was reached from on the chosen shortest path) and ``via`` (the index of that
    move in ``System.moves(parent)``), in typed arrays of 4 and 2 bytes. The visited
    set: exact mode, ``ids`` maps every state to its id; fingerprint mode, ``seen``
    holds the fingerprints of the finished layers only (the layer being built has its
    own dict), in a flat table of 64-bit ints (:mod:`vpmu.check.fpset`). The frontier is the last finished layer's
    states that do not violate, with their ids and their fewest context switches.
    """

    def __init__(self, system: StateGraph, fingerprint: bool) -> None:
        init = system.initial()
        self.fingerprint = fingerprint
        self.ids: dict[State, int] = {} if fingerprint else {init: 0}
        self.seen = FingerprintSet()
        if fingerprint:
            self.seen.add(state_fingerprint(init))
        self.parent = array("i", [-1])
        self.via = array("H", [0])
        self.frontier: list[State] = [init]
        self.frontier_ids: list[int] = [0]
        self.frontier_switches: list[int] = [0]
        self.depth = 0  # layers finished
        self.transitions = 0
        self.collisions = 0  # same-layer fingerprint collisions seen (fingerprint mode)
        self.finished_any = system.finished(init)
        self.seconds = 0.0  # spent in earlier runs (a resumed search)

    @property
    def states(self) -> int:
        return len(self.parent)

    def path_to(self, i: int, system: StateGraph) -> list[Move]:
        """The moves of the chosen shortest path from the initial state to state ``i``."""
        idx: list[int] = []
        while i > 0:
            idx.append(self.via[i])
            i = self.parent[i]
        s = system.initial()
        path: list[Move] = []
        for k in reversed(idx):
            m = system.moves(s)[k]
            path.append(m)
            s = system.next_state(s, m)
        return path


def check(
    system: StateGraph,
    max_states: int | None = None,
    progress: Progress | None = None,
    progress_every: float = 0.5,
    fingerprint: bool = False,
    checkpoint: str | None = None,
    checkpoint_every: float = 600.0,
    resume: str | None = None,
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

    ``checkpoint``: a file the search is saved to after a layer when ``checkpoint_every``
    seconds have passed since the last save, and when it stops incomplete (Ctrl-C, the
    state cap; the layer in progress is then dropped and redone on resume).
    ``resume``: a checkpoint file to continue from (:mod:`vpmu.check.checkpoint`); the
    result is that of an uninterrupted run.
    """
    from vpmu.check import checkpoint as C

    if (checkpoint is not None or resume is not None) and not isinstance(system, System):
        raise TypeError("checkpoints are made of a vpmu System's search")
    if checkpoint is not None:
        C.probe(checkpoint)  # a path that cannot be written is an error now, not after hours
    start = time.perf_counter()
    search = C.load(resume, cast(System, system), fingerprint) if resume is not None else Search(system, fingerprint)
    gc_was = gc.isenabled()
    # The search allocates millions of tuples and ints that live until it ends: the
    # cyclic collector would scan them again and again and find nothing (issue 15).
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        return _search(system, search, start, max_states, progress, progress_every, checkpoint, checkpoint_every)
    finally:
        if gc_was:
            gc.enable()
        gc.unfreeze()


def _search(
    system: StateGraph,
    search: Search,
    start: float,
    max_states: int | None,
    progress: Progress | None,
    progress_every: float,
    checkpoint: str | None,
    checkpoint_every: float,
) -> Result:
    from vpmu.check import checkpoint as C

    max_depth = system.world.bounds.max_depth
    fp = state_fingerprint if search.fingerprint else None
    ids, seen, parent, via = search.ids, search.seen, search.parent, search.via
    stats = Stats(states=search.states, transitions=search.transitions, depth=search.depth)
    # The ids of the violating states found in the last layer, with their context switches.
    found: list[tuple[int, int]] = []
    init = system.initial()
    if search.depth == 0 and system.violation(init):
        found.append((0, 0))
    running = system.running
    moves_of = system.moves
    next_state = system.next_state
    violation = system.violation
    finished = system.finished
    last_report = last_save = start
    reason = ""
    saved = ""
    frontier, frontier_ids, frontier_sw = search.frontier, search.frontier_ids, search.frontier_switches
    depth = search.depth
    try:
        while frontier and not found:
            if max_depth and depth >= max_depth and any(moves_of(s) for s in frontier):
                reason = f"depth bound reached (bounds.max_depth = {max_depth})"
                break
            depth += 1
            layer_start = len(parent)
            # The states first reached in this layer, by id - layer_start: their key (state
            # or fingerprint) -> id, the state itself (fingerprint mode: a fingerprint that
            # matches one of them is checked against it), its context and fewest switches.
            cur: dict[int, int] = {}  # fingerprint mode
            layer: list[State] = []
            layer_ctx: list[str] = []
            layer_sw: list[int] = []
            transitions = stats.transitions
            collisions = search.collisions
            finished_any = search.finished_any
            try:
                for s, sid, base in zip(frontier, frontier_ids, frontier_sw, strict=True):
                    ctx = running(s)[0]
                    for k, m in enumerate(moves_of(s)):
                        t = next_state(s, m)
                        transitions += 1
                        new = len(parent)
                        if fp is None:
                            # One lookup that also inserts: a state tuple's hash is not cached.
                            tid = ids.setdefault(t, new)
                        else:
                            key = fp(t)
                            if key in seen:
                                continue  # reached in an earlier layer
                            tid = cur.setdefault(key, new)
                        if tid == new:
                            parent.append(sid)
                            via.append(k)
                            layer.append(t)
                            tctx = running(t)[0]
                            layer_ctx.append(tctx)
                            if violation(t):
                                layer_sw.append(base)
                                found.append((tid, base))
                            else:
                                layer_sw.append(base + (ctx != tctx))
                                if not finished_any and finished(t):
                                    finished_any = True
                        elif tid >= layer_start:
                            j = tid - layer_start
                            if fp is not None and layer[j] != t:
                                # A distinct state with the same fingerprint: t is lost. Never
                                # re-parent onto it, or the trace would replay to t instead.
                                collisions += 1
                                continue
                            viol = violation(t)
                            sw = base if viol else base + (ctx != layer_ctx[j])
                            if sw < layer_sw[j]:
                                # Same BFS depth, fewer context switches: prefer this parent.
                                parent[tid], via[tid], layer_sw[j] = sid, k, sw
                                if viol:
                                    found[:] = [(i, sw if i == tid else n) for i, n in found]
                    if max_states is not None and len(parent) > max_states:
                        reason = f"state cap reached (--max-states {max_states})"
                        raise _Stop
                    if progress is not None:
                        now = time.perf_counter()
                        if now - last_report >= progress_every:
                            last_report = now
                            stats.states, stats.depth = len(parent), depth
                            stats.seconds = search.seconds + now - start
                            progress(stats, len(layer))
            except (_Stop, KeyboardInterrupt) as e:
                if isinstance(e, KeyboardInterrupt):
                    reason = "interrupted"
                if checkpoint is None:
                    stats.transitions = transitions
                    search.collisions, search.finished_any = collisions, finished_any
                    raise _Stop from None
                # Drop the unfinished layer: the checkpoint holds the search as the last layer left it.
                with C.no_interrupt():
                    if fp is None:
                        for t in layer:
                            del ids[t]
                        if len(ids) != layer_start:  # interrupted between the insert and the append
                            for t in [t for t, i in ids.items() if i >= layer_start]:
                                del ids[t]
                    del parent[layer_start:], via[layer_start:]
                    found.clear()
                    depth -= 1
                raise _Stop from None
            # The layer is done: commit it to the search in one piece (a Ctrl-C waits).
            with C.no_interrupt():
                stats.transitions = transitions
                search.collisions, search.finished_any = collisions, finished_any
                if fp is not None:
                    seen.update(cur)
                del cur
                keep = [i for i, t in enumerate(layer) if not violation(t)] if found else range(len(layer))
                frontier = [layer[i] for i in keep]
                frontier_ids = [layer_start + i for i in keep]
                frontier_sw = [layer_sw[i] for i in keep]
                del layer, layer_ctx
                search.frontier, search.frontier_ids, search.frontier_switches = frontier, frontier_ids, frontier_sw
                search.depth, search.transitions = depth, stats.transitions
            if found:
                break
            if checkpoint is not None and time.perf_counter() - last_save >= checkpoint_every:
                now = time.perf_counter()
                search.seconds += now - start
                start = now
                with C.no_interrupt():
                    C.save(checkpoint, cast(System, system), search)
                last_save = time.perf_counter()
    except _Stop:
        pass
    except KeyboardInterrupt:  # outside a layer: between layers or while saving
        reason = "interrupted"
    stats.states = len(parent)
    stats.depth = depth if found or reason else depth - 1 if depth else 0
    stats.seconds = search.seconds + time.perf_counter() - start
    if reason and checkpoint is not None:
        search.seconds = stats.seconds
        with C.no_interrupt():
            C.save(checkpoint, cast(System, system), search)
        saved = f"; checkpoint saved to {checkpoint} (--resume it)"
        stats.depth = search.depth

    if found:
        best = min(found, key=lambda f: (f[1], f[0]))[0]
        return replay(system, search.path_to(best, system), stats)
    if reason:
        return Result(INCOMPLETE, stats, reason=reason + saved)
    if search.collisions:
        return Result(INCOMPLETE, stats, reason=_collision_reason(search.collisions))
    p = collision_probability(stats.states, FINGERPRINT_BITS) if fp is not None else None
    if not search.finished_any and "progress" in system.props:
        # Every state was explored and none finishes: the run can only loop.
        r = replay(system, search.path_to(len(parent) - 1, system), stats)
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


def replay(system: StateGraph, path: list[Move], stats: Stats | None = None) -> Result:
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
