"""Traces as data: what each step did, in a versioned, JSON-ready form.

A trace row names the step number, the context it ran in, the design step
(``function:label``) or event, its listing, the state slots it changed (old,
new) and the hardware events it caused. Schema ``vpmu.trace/1`` is described
in docs/json-schema.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vpmu.check.system import CONTEXT_LABEL, StepRecord, System
from vpmu.hw import msr as M
from vpmu.hw.layout import State

TRACE_SCHEMA = "vpmu.trace/1"
CHECK_SCHEMA = "vpmu.check/1"
#: Slots that are bookkeeping of the checker, not machine state, and are not shown by default.
HIDDEN_OWNERS = ("ctx", "ghost")


def fmt_value(system: System, name: str, value: int) -> str:
    if name.endswith("LVTPC"):
        return M.lvtpc_str(value)
    i = system.layout.index(name)
    return system.layout.fmt(i, value)


def changes(
    system: System, before: State, after: State, hidden: Sequence[str] = HIDDEN_OWNERS
) -> list[tuple[str, int, int]]:
    out = []
    for name, old, new in system.layout.diff(before, after):
        if system.layout.slots[system.layout.index(name)].owner in hidden:
            continue
        out.append((name, old, new))
    return out


def hw_event_str(system: System, kind: str, a: int, b: int) -> str:
    vendor = system.cpu.cfg.vendor
    if kind == "wrmsr":
        return f"wrmsr {M.msr_name(vendor, a)} <- {b:#x}"
    if kind == "rdmsr":
        return f"rdmsr {M.msr_name(vendor, a)} -> {b:#x}"
    if kind == "rdpmc":
        return f"rdpmc {a:#x} -> {b:#x}"
    if kind == "lvtpc":
        return f"LVTPC <- {M.lvtpc_str(a)}"
    if kind == "overflow":
        return f"overflow {a:#x} in {'guest' if b else 'host'} mode"
    if kind == "pmi":
        route = {-1: "dropped (LVTPC masked)", 2: "NMI", -2: "SMI"}.get(a, f"vector {a:#x}")
        return f"PMI -> {route}"
    if kind == "vmexit":
        return f"VM-exit (PERF_GLOBAL_CTRL now {b:#x})"
    if kind == "vmcs_load_pgc":
        return f"VM-entry loads PERF_GLOBAL_CTRL = {a:#x}"
    return f"{kind} {a:#x} {b:#x}"


def trace_rows(system: System, states: Sequence[State], records: Sequence[StepRecord]) -> list[dict[str, Any]]:
    rows = []
    for n, rec in enumerate(records):
        before, after = states[n], states[n + 1]
        rows.append(
            {
                "step": n + 1,
                "context": CONTEXT_LABEL.get(rec.context, rec.context),
                "label": rec.label,
                "text": rec.text,
                "changes": {name: [old, new] for name, old, new in changes(system, before, after)},
                "hw": [hw_event_str(system, *e) for e in rec.hw],
                "move": list(rec.move),
            }
        )
    return rows


def observation_rows(journal: Sequence[tuple[str, str, int, int]]) -> list[dict[str, Any]]:
    """A simulation's observations for a vpmu.trace/1 document (docs/json-schema.md): per guest read,
    guest PMI and host perf read, what was seen and what the reference (native CPU, ghost) expected.
    A guest PMI is seen = 1 with expected = 1 if one was owed, 0 if it is spurious."""
    return [
        {"kind": kind, "what": what, "seen": seen, "expected": expect, "matches": seen == expect}
        for kind, what, seen, expect in journal
    ]
