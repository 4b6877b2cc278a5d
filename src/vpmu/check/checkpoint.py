"""Checkpoint files of a long ``vpmu check`` (``--checkpoint FILE``, ``--resume FILE``).

A checkpoint holds the explorer's :class:`~vpmu.check.explore.Search` as a finished BFS
layer left it: the visited set, the per-state parent and move arrays and the frontier.
Resuming from it redoes the layer that was in progress and ends with the result an
uninterrupted run gives (same counts, verdict and counterexample). The file records
what it belongs to (vpmu version, design, world, properties, mode) and a digest of the
design's compiled code and the world; loading refuses a file made for anything else.

Layout: a magic line, a pickled header, a pickled body (the frontier and counters; in
exact mode also the visited states), then the raw arrays (parent ids, move indices, and
in fingerprint mode the fingerprint table), so a 10^8-state checkpoint is written at
disk speed, about 6 bytes per state plus the table's 11-21. A save goes to ``FILE.tmp``
first and replaces ``FILE`` when complete, so an interrupted save keeps the last one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pickle
import signal
from array import array
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

import vpmu
from vpmu.check.fpset import FingerprintSet
from vpmu.errors import VpmuError

if TYPE_CHECKING:
    from vpmu.check.explore import Search
    from vpmu.check.system import System

MAGIC = b"vpmu-checkpoint\n"
FORMAT = 1


@contextlib.contextmanager
def no_interrupt() -> Iterator[None]:
    """Hold SIGINT (Ctrl-C) back for the block: the search is updated, or saved, in one piece.
    A Ctrl-C pressed meanwhile arrives when the block ends."""
    block = hasattr(signal, "pthread_sigmask")
    if block:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        if block:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def identity(system: System) -> str:
    """A digest of what the search explores: the world, the properties, and every compiled step."""
    h = hashlib.sha256()
    world = dataclasses.replace(system.world, source="", description="")
    h.update(repr(world).encode())
    h.update(repr(system.props).encode())
    h.update(repr([slot.name for slot in system.layout.slots]).encode())
    h.update(repr(system.initial()).encode())
    programs = [system.task, system.nmi, *system.irq_programs.values(), system.guest, system.guest_irq]
    for prog in programs:
        for ins in prog.code:
            st = ins.step
            h.update(f"{ins.qualified}|{st.kind}|{st.listing()}|{st.when_text}|{ins.target}\n".encode())
    return h.hexdigest()[:16]


def _header(system: System, fingerprint: bool) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "vpmu": vpmu.__version__,
        "design": system.design.name,
        "world": system.world.name,
        "mode": "fingerprint" if fingerprint else "exact",
        "identity": identity(system),
    }


def probe(path: str) -> None:
    """Refuse a checkpoint path that cannot be written (before the search starts)."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb"):
            pass
        os.remove(tmp)
    except OSError as e:
        raise VpmuError(f"--checkpoint {path}: cannot write it: {e.strerror or e}") from None


def save(path: str, system: System, search: Search) -> None:
    """Write ``search`` to ``path`` (atomically: via ``path.tmp``)."""
    tmp = path + ".tmp"
    body = {
        "frontier": search.frontier,
        "frontier_ids": search.frontier_ids,
        "frontier_switches": search.frontier_switches,
        "depth": search.depth,
        "transitions": search.transitions,
        "collisions": search.collisions,
        "finished_any": search.finished_any,
        "seconds": search.seconds,
        "states": len(search.parent),
        "seen": search.seen.header(),
        "ids": search.ids,
    }
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC)
            pickle.dump(_header(system, search.fingerprint), f, protocol=pickle.HIGHEST_PROTOCOL)
            pickle.dump(body, f, protocol=pickle.HIGHEST_PROTOCOL)
            search.parent.tofile(f)
            search.via.tofile(f)
            search.seen.write(f)
        os.replace(tmp, path)
    except OSError as e:
        raise VpmuError(f"--checkpoint {path}: cannot write it: {e.strerror or e}") from None


def _read(f: BinaryIO, path: str) -> Any:
    try:
        return pickle.load(f)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise VpmuError(f"--resume {path}: damaged or truncated checkpoint ({e})") from None


def load(path: str, system: System, fingerprint: bool) -> Search:
    """The search saved in ``path``; a clear error if it belongs to another run or is damaged."""
    from vpmu.check.explore import Search

    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; errors are reported by name)
    except OSError as e:
        raise VpmuError(f"--resume {path}: cannot read it: {e.strerror or e}") from None
    with f:
        if f.read(len(MAGIC)) != MAGIC:
            raise VpmuError(f"--resume {path}: not a vpmu checkpoint file")
        head = _read(f, path)
        want = _header(system, fingerprint)
        if not isinstance(head, dict) or head.get("format") != FORMAT:
            got = head.get("format") if isinstance(head, dict) else "?"
            raise VpmuError(f"--resume {path}: checkpoint format {got}; this vpmu reads format {FORMAT}")
        labels = {"vpmu": "vpmu version", "design": "design", "world": "world", "mode": "mode"}
        for key, label in labels.items():
            if head.get(key) != want[key]:
                hint = " (pass --fingerprint as the saved run did, or leave it out)" if key == "mode" else ""
                raise VpmuError(
                    f"--resume {path}: the checkpoint's {label} is {head.get(key)!r}; this run's is {want[key]!r}{hint}"
                )
        if head.get("identity") != want["identity"]:
            raise VpmuError(
                f"--resume {path}: design {want['design']!r} or world {want['world']!r} changed since the checkpoint "
                "was saved (their digest differs); start again without --resume"
            )
        body = _read(f, path)
        search = Search(system, fingerprint)
        n = body["states"]
        try:
            search.parent = array("i")
            search.parent.fromfile(f, n)
            search.via = array("H")
            search.via.fromfile(f, n)
            search.seen = FingerprintSet.read(f, body["seen"])
        except (EOFError, ValueError) as e:
            raise VpmuError(f"--resume {path}: damaged or truncated checkpoint ({e})") from None
        if f.read(1):
            raise VpmuError(f"--resume {path}: damaged checkpoint (data after its end)")
    search.ids = body["ids"]
    search.frontier, search.frontier_ids = body["frontier"], body["frontier_ids"]
    search.frontier_switches = body["frontier_switches"]
    search.depth, search.transitions = body["depth"], body["transitions"]
    search.collisions, search.finished_any = body["collisions"], body["finished_any"]
    search.seconds = body["seconds"]
    return search
