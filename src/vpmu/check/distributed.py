"""One world's breadth-first search split by state hash over several partitions (Ray actors).

For a world too big for one machine (``vpmu check --executor ray --partitions N``).
Each partition owns the states whose fingerprint (:func:`vpmu.check.explore.state_fingerprint`,
seed-independent) is ``k`` modulo N: it keeps their slice of the visited set and, per
state, the parent and the move of the chosen shortest path. A BFS layer is one round:

1. every partition expands the frontier states it owns and sends each successor, as a
   *candidate*, to the successor's owner (one batch per owner);
2. every owner merges the batches it received in discovery order, drops states seen in
   an earlier layer, and for each new state picks the parent exactly as the local
   explorer does (below); it returns to the driver the discovery keys of its new states;
3. the driver merges those keys into the global discovery order, which gives every new
   state the id the local explorer would give it, and sends each owner its ids; the
   owner records them with the next expansion.

The result is the local explorer's (:func:`vpmu.check.explore.check`): the same states,
transitions, depth, verdict and counterexample. The local explorer numbers states in
discovery order: by the id of the state expanded, then by the position of the move in
``System.moves``; it keeps the first parent found unless a later one of the same layer
gives strictly fewer context switches; and among the violating states of the last layer
it reports the one with the fewest switches, then the lowest id. A candidate carries its
*discovery key* (parent id, move position), so an owner that processes its candidates in
key order (each batch is already in key order: a partition expands its frontier by id)
sees them in the order the local explorer does, and makes the same choices. A state cap
(``max_states``) is applied where the local explorer applies it, after the expansion of
the frontier state that crosses it: the layer is then re-merged with the candidates of
the frontier states up to that one.

Costs (measured in docs/scaling.md): per transition, one candidate message to the successor's
owner (the state, its key and move: about 190 bytes pickled); per new state, one 8-byte key to
the driver and one 8-byte id back. Each partition keeps, per owned state, its visited-set
entry (the state, or its fingerprint) and 27 bytes of typed arrays.
"""

from __future__ import annotations

import heapq
import time
from array import array
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Protocol

from vpmu.check import explore as E
from vpmu.check.explore import INCOMPLETE, VIOLATED, Progress, Result, Stats
from vpmu.hw.layout import State

#: A discovery key packs (parent id, move position): parent id << _POS_BITS | position.
_POS_BITS = 24
#: A candidate: (discovery key, successor state, move, the parent's context, the parent's switches, parent owner).
Candidate = tuple[int, State, tuple[int, int], str, int, int]


class Explorable(Protocol):
    """What the search needs of a System (the public API the local explorer uses)."""

    def initial(self) -> State: ...
    def moves(self, s: State) -> list[tuple[int, int]]: ...
    def apply(self, s: State, m: tuple[int, int]) -> tuple[State, Any]: ...
    def next_state(self, s: State, m: tuple[int, int]) -> State: ...
    def running(self, s: State) -> tuple[str, int, Any]: ...
    def violation(self, s: State) -> int: ...
    def finished(self, s: State) -> bool: ...

    @property
    def props(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class SystemSpec:
    """How a partition builds its own System: a design, a world and the properties (picklable)."""

    design: Any
    world: Any
    properties: tuple[str, ...] | None = None

    def build(self) -> Any:
        from vpmu.check.system import System

        return System(self.design, self.world, self.properties)


@dataclass
class Merged:
    """What an owner reports to the driver after merging a layer's candidates."""

    keys: list[int]  # discovery keys of its new states, ascending
    violating: list[tuple[int, int, int]]  # (switches, key, position in keys) of its violating new states
    finished: bool  # a new non-violating state in which the vCPU task has finished
    collisions: int  # candidates dropped: another state of the layer has their fingerprint
    transitions: int  # candidates received (each transition goes to exactly one owner)


def owner_of(state: State, count: int) -> int:
    """The partition that owns ``state``: its fingerprint modulo the partition count."""
    return E.state_fingerprint(state) % count


class Partition:
    """One slice of the visited set, its states' bookkeeping, and its part of the frontier.

    Plain Python: :class:`LocalGroup` calls it in-process; :class:`RayGroup` makes it a
    Ray actor.
    """

    def __init__(self, index: int, count: int, system: Callable[[], Explorable] | SystemSpec, fingerprint: bool):
        self.index, self.count, self.fingerprint = index, count, fingerprint
        self.system: Explorable = system.build() if isinstance(system, SystemSpec) else system()
        # Committed states (earlier layers): their visited keys (states, or fingerprints), and per
        # state in commit order, which is ascending id: its id, the parent's id and owner, and the
        # move from the parent (typed arrays: a few bytes each, no object per state).
        self.visited: set[Hashable] = set()
        self.gid = array("q")
        self.parent = array("q")
        self.parent_owner = array("H")
        self.move_kind = array("b")
        self.move_arg = array("i")
        # The frontier this partition expands: (state, id, switches), ascending id.
        self.frontier: list[tuple[State, int, int]] = []
        self.inbox: tuple[list[Candidate], ...] = ()
        # The layer being merged: new states in key order and their bookkeeping.
        self._layer: list[tuple[Hashable, State, int, int, tuple[int, int], int, bool]] = []

    def _key(self, s: State) -> Hashable:
        return E.state_fingerprint(s) if self.fingerprint else s

    def seed(self) -> tuple[bool, bool]:
        """Take the initial state if this partition owns it: (violates, finished)."""
        sys_ = self.system
        init = sys_.initial()
        if owner_of(init, self.count) != self.index:
            return False, False
        self._layer = [(self._key(init), init, -1, -1, (0, 0), 0, bool(sys_.violation(init)))]
        self.commit([0])
        return bool(sys_.violation(init)), sys_.finished(init)

    def commit(self, ids: Sequence[int]) -> None:
        """Record the merged layer's new states under their global ids; they become the frontier."""
        frontier = []
        for (key, t, pid, powner, m, sw, viol), gid in zip(self._layer, ids, strict=True):
            self.visited.add(key)
            self.gid.append(gid)
            self.parent.append(pid)
            self.parent_owner.append(max(powner, 0))  # the initial state has no parent
            self.move_kind.append(m[0])
            self.move_arg.append(m[1])
            if not viol:
                frontier.append((t, gid, sw))
        self.frontier = frontier
        self._layer = []
        self.inbox = ()

    def has_moves(self) -> bool:
        return any(self.system.moves(s) for s, _, _ in self.frontier)

    def expand(self, ids: Sequence[int] | None = None) -> list[list[Candidate]]:
        """Commit the last layer (with ``ids``), then expand the frontier: one batch per owner."""
        if ids is not None:
            self.commit(ids)
        sys_, n, me = self.system, self.count, self.index
        fp = E.state_fingerprint
        out: list[list[Candidate]] = [[] for _ in range(n)]
        for s, gid, sw in self.frontier:
            ctx = sys_.running(s)[0]
            base = gid << _POS_BITS
            for pos, m in enumerate(sys_.moves(s)):
                t = sys_.next_state(s, m)
                out[fp(t) % n].append((base | pos, t, m, ctx, sw, me))
        return out

    def merge(self, bound: int | None, *batches: list[Candidate]) -> Merged:
        """Merge the candidates sent to this partition (or, with no batches, those of the last
        call again) in discovery order, as the local explorer would see them; with ``bound``,
        only those expanded from states with id <= bound (a state cap stopped the layer there)."""
        if batches:
            self.inbox = batches
        sys_, fpm, visited = self.system, self.fingerprint, self.visited
        layer: list[tuple[Hashable, State, int, int, tuple[int, int], int, bool]] = []
        ctx_of: list[str] = []
        keys: list[int] = []
        at: dict[Hashable, int] = {}
        finished = False
        collisions = received = 0
        limit = None if bound is None else (bound + 1) << _POS_BITS
        for key, t, m, pctx, base, powner in heapq.merge(*self.inbox, key=itemgetter(0)):
            if limit is not None and key >= limit:
                break
            received += 1
            k = E.state_fingerprint(t) if fpm else t
            if k in visited:
                continue
            p = at.get(k)
            if p is None:
                at[k] = len(layer)
                tctx = sys_.running(t)[0]
                viol = bool(sys_.violation(t))
                sw = base if viol else base + (pctx != tctx)
                layer.append((k, t, key >> _POS_BITS, powner, m, sw, viol))
                ctx_of.append(tctx)
                keys.append(key)
                if not viol and not finished and sys_.finished(t):
                    finished = True
                continue
            k0, t0, _, _, _, sw0, viol0 = layer[p]
            if fpm and t0 != t:
                collisions += 1  # a distinct state with the same fingerprint: lost, never re-parented onto
                continue
            sw = base if viol0 else base + (pctx != ctx_of[p])
            if self._better(sw, sw0):
                layer[p] = (k0, t0, key >> _POS_BITS, powner, m, sw, viol0)
        self._layer = layer
        violating = [(e[5], keys[i], i) for i, e in enumerate(layer) if e[6]]
        return Merged(keys, violating, finished, collisions, received)

    @staticmethod
    def _better(switches: int, old: int) -> bool:
        """A later parent of the same layer replaces the first one only with strictly fewer switches."""
        return switches < old

    def parent_of(self, gid: int) -> tuple[int, int, tuple[int, int]]:
        """(parent id, parent owner, move) of an owned, committed state."""
        import bisect

        i = bisect.bisect_left(self.gid, gid)
        if i == len(self.gid) or self.gid[i] != gid:
            raise KeyError(f"partition {self.index} does not own state {gid}")
        return self.parent[i], self.parent_owner[i], (self.move_kind[i], self.move_arg[i])

    def owned(self) -> int:
        return len(self.gid)

    def peak_rss(self) -> int:
        """This process's peak resident memory in bytes (Linux), for bench/bench_distributed.py."""
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Group(Protocol):
    """The partitions of one search, wherever they run."""

    @property
    def size(self) -> int: ...

    def seed(self) -> list[tuple[bool, bool]]: ...
    def step(self, ids: list[list[int]] | None) -> list[Merged]: ...
    def remerge(self, bound: int) -> list[Merged]: ...
    def commit(self, ids: list[list[int]]) -> None: ...
    def has_moves(self) -> bool: ...
    def parent_of(self, owner: int, gid: int) -> tuple[int, int, tuple[int, int]]: ...
    def close(self) -> None: ...


@dataclass
class LocalGroup:
    """Partitions in this process (tests, measurements): the same protocol, no Ray."""

    parts: list[Partition] = field(default_factory=list)
    #: Count the bytes the messages would take, pickled (the cost measurement in bench/):
    #: candidates from one partition to another, and keys and ids to and from the driver.
    measure: bool = False
    sent_bytes: int = 0
    driver_bytes: int = 0

    @property
    def size(self) -> int:
        return len(self.parts)

    def seed(self) -> list[tuple[bool, bool]]:
        return [p.seed() for p in self.parts]

    def step(self, ids: list[list[int]] | None) -> list[Merged]:
        outs = [p.expand(None if ids is None else ids[j]) for j, p in enumerate(self.parts)]
        merged = [p.merge(None, *[outs[j][k] for j in range(self.size)]) for k, p in enumerate(self.parts)]
        if self.measure:
            import pickle

            n = self.size
            self.sent_bytes += sum(len(pickle.dumps(outs[j][k], 5)) for j in range(n) for k in range(n) if j != k)
            self.driver_bytes += sum(len(pickle.dumps(x, 5)) for x in [*merged, *(ids or [])])
        return merged

    def remerge(self, bound: int) -> list[Merged]:
        return [p.merge(bound) for p in self.parts]

    def commit(self, ids: list[list[int]]) -> None:
        for p, i in zip(self.parts, ids, strict=True):
            p.commit(i)

    def has_moves(self) -> bool:
        return any(p.has_moves() for p in self.parts)

    def parent_of(self, owner: int, gid: int) -> tuple[int, int, tuple[int, int]]:
        return self.parts[owner].parent_of(gid)

    def close(self) -> None:
        pass


def local_group(system: Callable[[], Explorable] | SystemSpec, count: int, fingerprint: bool = False) -> LocalGroup:
    return LocalGroup([Partition(k, count, system, fingerprint) for k in range(count)])


def partition_group(executor: Any, spec: SystemSpec, count: int, fingerprint: bool) -> Group:
    """The partitions of one search on ``executor``: Ray actors, or in this process (no Ray)."""
    if hasattr(executor, "partitions"):
        group: Group = executor.partitions(spec, count, fingerprint)
        return group
    return local_group(spec, count, fingerprint)


class RayGroup:
    """Partitions as Ray actors; candidate batches go from actor to actor through Ray's object
    store (the driver passes references, never the states)."""

    def __init__(self, ray: Any, spec: SystemSpec, count: int, fingerprint: bool) -> None:
        from vpmu.check.executor import ray_get

        self.ray, self.size = ray, count
        self.get: Callable[[Any], Any] = lambda refs: ray_get(ray, refs)
        actor = ray.remote(Partition)
        self.actors = [
            actor.options(scheduling_strategy="SPREAD").remote(k, count, spec, fingerprint) for k in range(count)
        ]

    def seed(self) -> list[tuple[bool, bool]]:
        return list(self.get([a.seed.remote() for a in self.actors]))

    def step(self, ids: list[list[int]] | None) -> list[Merged]:
        n = self.size
        outs = [
            a.expand.options(num_returns=n).remote(None if ids is None else ids[j]) for j, a in enumerate(self.actors)
        ]
        if n == 1:
            outs = [[o] for o in outs]
        # Each owner gets references to its batches; Ray moves them from actor to actor.
        merging = [a.merge.remote(None, *[outs[j][k] for j in range(n)]) for k, a in enumerate(self.actors)]
        return list(self.get(merging))

    def remerge(self, bound: int) -> list[Merged]:
        return list(self.get([a.merge.remote(bound) for a in self.actors]))

    def commit(self, ids: list[list[int]]) -> None:
        self.get([a.commit.remote(i) for a, i in zip(self.actors, ids, strict=True)])

    def has_moves(self) -> bool:
        return any(self.get([a.has_moves.remote() for a in self.actors]))

    def parent_of(self, owner: int, gid: int) -> tuple[int, int, tuple[int, int]]:
        pid, powner, m = self.get(self.actors[owner].parent_of.remote(gid))
        return pid, powner, m

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)


def _ids(merged: Sequence[Merged], start: int) -> list[list[int]]:
    """The global ids of every owner's new states: their rank in the merged discovery order."""
    ids: list[list[int]] = [[] for _ in merged]
    streams = [[(key, k) for key in m.keys] for k, m in enumerate(merged)]
    for g, (_, k) in enumerate(heapq.merge(*streams), start):
        ids[k].append(g)
    return ids


def _cap_bound(merged: Sequence[Merged], start: int, max_states: int) -> int:
    """The id of the frontier state whose expansion makes the state count exceed the cap."""
    nth = max_states - start  # 0-based index, within the layer, of state number max_states + 1
    key = next(k for i, k in enumerate(heapq.merge(*[m.keys for m in merged])) if i == nth)
    return key >> _POS_BITS


def check_partitioned(
    system: Explorable,
    group: Group,
    max_depth: int = 0,
    max_states: int | None = None,
    progress: Progress | None = None,
    progress_every: float = 0.5,
    fingerprint: bool = False,
) -> Result:
    """:func:`vpmu.check.explore.check` over the partitions of ``group``; the same result.

    ``system`` (the driver's own copy) replays the counterexample; the partitions explore.
    ``max_depth``: the world's ``bounds.max_depth`` (0: none).
    """
    start = time.perf_counter()
    stats = Stats(states=1)
    seeded = group.seed()
    found: list[tuple[int, int, int, int]] = []  # (switches, key, position, owner)
    if any(v for v, _ in seeded):
        found.append((0, 0, 0, next(k for k, (v, _) in enumerate(seeded) if v)))
    finished_any = any(f for _, f in seeded)
    init_owner = owner_of(system.initial(), group.size)
    last = (0, init_owner)  # id and owner of the last new state
    ids: list[list[int]] | None = None
    frontier = 0 if found else 1
    depth, reason, collisions = 0, "", 0
    last_report = start
    target: tuple[int, int] | None = (0, init_owner) if found else None
    try:
        while frontier and not found:
            if max_depth and depth >= max_depth and group.has_moves():
                reason = f"depth bound reached (bounds.max_depth = {max_depth})"
                break
            depth += 1
            merged = group.step(ids)
            layer_start = stats.states
            if max_states is not None and layer_start + sum(len(m.keys) for m in merged) > max_states:
                merged = group.remerge(_cap_bound(merged, layer_start, max_states))
                reason = f"state cap reached (--max-states {max_states})"
            ids = _ids(merged, layer_start)
            stats.transitions += sum(m.transitions for m in merged)
            new = sum(len(m.keys) for m in merged)
            stats.states += new
            collisions += sum(m.collisions for m in merged)
            finished_any = finished_any or any(m.finished for m in merged)
            found = [(sw, key, i, k) for k, m in enumerate(merged) for sw, key, i in m.violating]
            if new:
                k = max(range(len(merged)), key=lambda k: merged[k].keys[-1] if merged[k].keys else -1)
                last = (stats.states - 1, k)
            if found:
                group.commit(ids)  # the parents of the violating states, for the trace
                _, _, i, k = min(found)
                target = (ids[k][i], k)
            frontier = new - len(found)
            if reason:
                break
            if progress is not None:
                now = time.perf_counter()
                if now - last_report >= progress_every:
                    last_report = now
                    stats.depth, stats.seconds = depth, now - start
                    progress(stats, frontier)
    except KeyboardInterrupt:
        reason = "interrupted"
    stats.depth = depth if found or reason else depth - 1 if depth else 0
    stats.seconds = time.perf_counter() - start

    def path_to(gid: int, owner: int) -> list[tuple[int, int]]:
        path = []
        while gid > 0:
            gid, owner, m = group.parent_of(owner, gid)
            path.append(m)
        path.reverse()
        return path

    if target is not None:
        return E.replay(system, path_to(*target), stats)  # type: ignore[arg-type]
    if reason:
        return Result(INCOMPLETE, stats, reason=reason)
    if collisions:
        n = f"{collisions} state{'s' * (collisions != 1)}"
        return Result(
            INCOMPLETE,
            stats,
            reason=f"fingerprint collision: {n} shared a fingerprint with another state and went unexplored",
        )
    p = E.collision_probability(stats.states, E.FINGERPRINT_BITS) if fingerprint else None
    if not finished_any and "progress" in system.props:
        r = E.replay(system, path_to(*last), stats)  # type: ignore[arg-type]
        r.verdict, r.prop, r.collision_probability = VIOLATED, "progress", p
        r.message = (
            "no schedule lets the vCPU task finish: every path loops; the trace reaches the last new "
            "state of the loop (a PMI storm when a host event's period is shorter than its PMI handler)"
        )
        return r
    return Result(E.HOLDS, stats, collision_probability=p)
