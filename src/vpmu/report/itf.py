"""Export a trace to the Informal Trace Format (ITF) that Apalache and Quint read.

ITF (Apalache ADR-015) is a JSON object ``{"#meta": {...}, "vars": [...],
"states": [{"#meta": {"index": i}, var: value, ...}, ...]}``. Integers that a
JSON number cannot carry exactly (beyond ±(2^53 - 1)) are written as
``{"#bigint": "..."}``.

State 0 is the machine before the first step; state *i* is the machine after
step *i*. The variables are the machine and kernel state slots (checker
bookkeeping is never in a trace): every slot the trace changes, plus — when
the trace's design and world are built in and the trace starts from their
initial state — every other machine and kernel slot with its constant value.
Each state's ``#meta`` also names the step that led to it (its label and
context), which ITF readers ignore.
"""

from __future__ import annotations

from typing import Any

from vpmu import __version__
from vpmu.report.schema import SlotModel, TraceView

ITF_DESCRIPTION_URL = "https://apalache-mc.org/docs/adr/015adr-trace.html"
SAFE = (1 << 53) - 1


def itf_int(v: int, bigint: bool = False) -> int | dict[str, str]:
    """An integer as ITF writes it: a JSON number when exact, else ``{"#bigint": "..."}`` (always, with ``bigint``)."""
    return v if -SAFE <= v <= SAFE and not bigint else {"#bigint": str(v)}


def to_itf(
    view: TraceView, model: SlotModel | None = None, changed_only: bool = False, bigint: bool = False
) -> dict[str, Any]:
    """The trace as an ITF document. ``model`` (schema.slot_model) adds the slots the trace leaves alone.

    ``bigint``: every integer as ``{"#bigint": "..."}``, as Quint writes them (readers accept both).
    """
    changed = view.slots()
    full = model is not None and model.initial is not None and not changed_only
    if full:
        assert model is not None and model.initial is not None
        names = list(model.order) + [n for n in changed if n not in model.initial]
        initial = {n: model.initial[n] for n in model.order}
        initial.update(view.initial())
    else:
        names = changed
        initial = view.initial()
    what = f"counterexample of {view.violation.prop}" if view.violation else "trace"
    meta: dict[str, Any] = {
        "format": "ITF",
        "format-description": ITF_DESCRIPTION_URL,
        "source": view.source,
        "description": f"vpmu {__version__}: {what} of {view.title}, {len(view.rows)} steps "
        f"(from a {view.kind} document); state i is the machine after step i",
        "varTypes": {n: "Int" for n in names},
        "vpmu": {
            "design": view.design,
            "world": view.world,
            "schema": view.kind,
            "slots": "all machine and kernel slots" if full else "the slots the trace changes",
        },
    }
    if view.violation:
        v = view.violation
        meta["vpmu"]["violation"] = {"property": v.prop, "message": v.message, "step": v.step}
    if view.result_index is not None:
        meta["vpmu"]["result"] = view.result_index
    states: list[dict[str, Any]] = []
    for i, values in enumerate(view.states(initial)):
        smeta: dict[str, Any] = {"index": i}
        if i:
            row = view.rows[i - 1]
            smeta.update(step=row["step"], context=row["context"], label=row["label"])
        state: dict[str, Any] = {"#meta": smeta}
        for n in names:
            state[n] = itf_int(values[n], bigint)
        states.append(state)
    return {"#meta": meta, "vars": names, "states": states}
