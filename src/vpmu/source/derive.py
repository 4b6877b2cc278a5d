"""Derive a design from a kernel tree (``vpmu source design``, ``vpmu check --kernel``).

1. A statement of a complete function that no step of any known design
   stands for, and that is not on the function's omitted list, cannot be
   expressed: the run stops (exit 2) naming file:line and the statement.
2. A known design the tree matches exactly is the answer (``upstream`` first,
   then the built-in designs in ``vpmu show`` order): a tree with the two
   statements of ``perf_load_guest_lvtpc()`` swapped is ``flag-first``. Only
   designs whose every kernel step has anchored C take part (not ``v5`` or
   ``seed-assert``, whose new steps have none: ``vpmu diff upstream v5 --c``).
3. Otherwise the tree must be a known design with whole steps deleted and
   steps reordered: the design with the fewest such edits is taken and the
   edits (``delete``, ``swap`` by label) are applied; the result is checked
   against the tree again. Anything else stops the run (exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vpmu.errors import VpmuError
from vpmu.kernel.lang import Design, Edit
from vpmu.source import model
from vpmu.source.anchors import COMPLETE, FUNCTIONS
from vpmu.source.match import FunctionResult, classify, match_tree
from vpmu.source.tree import open_tree, read


@dataclass(frozen=True)
class Derived:
    design: Design
    base: Design
    edits: tuple[Edit, ...]  # applied to ``base``; empty when the tree is ``base`` exactly


def _unknown_statements(root: Path) -> None:
    for cf in FUNCTIONS:
        defs = read(root, cf.path).functions.get(cf.name, ())
        if not defs:
            raise VpmuError(
                f"{cf.path}: {cf.name}() is absent from the tree, so no design can be derived from it "
                f"(vpmu source check --kernel DIR lists every difference)"
            )
        if cf.kind != COMPLETE:
            continue
        per_def = [[h for h in classify(cf, d.statements, None) if h.kind == "unknown"] for d in defs]
        unknown = min(per_def, key=len)
        if unknown:
            h = unknown[0]
            raise VpmuError(
                f"{cf.path}:{h.stmt.line}: {cf.name}(): statement `{h.stmt.text}` stands for no step of any "
                f"known design and is not on the list of statements the model leaves out; vpmu cannot express it. "
                f"Model it as a new step of {cf.model} in a Python design file (docs/design-files.md) "
                f"and check that with --design-file"
            )


def _edits(base: Design, results: list[FunctionResult]) -> list[Edit] | None:
    """Deletes and swaps that turn ``base`` into the tree, or None if those cannot express it."""
    edits: list[Edit] = []
    # A step may stand for statements of several kernel functions (handle_exit, default_do_nmi's iret):
    # it is deleted when all of them are missing, once.
    by_step: dict[tuple[str, str], list[str]] = {}
    for r in results:
        if not r.found or r.foreign or r.unanchored:
            return None
        for a in r.anchors:
            by_step.setdefault((r.cf.model, a.step), []).append(a.status)
    for (fn, step), statuses in by_step.items():
        if all(s == "missing" for s in statuses):
            everywhere = all(step in labels for labels in model.label_orders(base, fn))
            # a step some machines only have (amd_pmu_check_overflow with PMI skid): an exact pattern,
            # which may match nothing
            pattern = step if everywhere or any(c in step for c in "*?[") else f"[{step[0]}]{step[1:]}"
            edits.append(Edit("delete", fn, pattern, note="absent from the tree"))
        elif "missing" in statuses:
            return None  # part of a step's C is gone: not a deletion of the step
    for r in results:
        cf = r.cf
        if not any(a.status == "reordered" for a in r.anchors):
            continue
        line: dict[str, int] = {}
        for a in r.anchors:
            if a.status != "missing":
                line[a.step] = max(line.get(a.step, 0), a.line)
        orders = model.key_orders(base, cf)
        current = [k for k in (orders[0] if orders else []) if k in line]
        target = sorted(current, key=lambda k: line[k])
        for i, k in enumerate(target):
            if current[i] == k:
                continue
            j = current.index(k)
            if any(c in x for x in (k, current[i]) for c in "*?["):
                return None  # unrolled steps: a swap by label cannot name them
            edits.append(Edit("swap", cf.model, current[i], other=k, note="order in the tree"))
            current[i], current[j] = current[j], current[i]
    return edits


def derive(kernel: str) -> Derived:
    """The design the tree at ``kernel`` implements."""
    from vpmu.designs import DESIGNS, UPSTREAM

    root = open_tree(kernel)
    _unknown_statements(root)
    # Only designs whose every kernel step has anchored C can be recognised in C.
    candidates = [
        d
        for d in (UPSTREAM, *(d for d in DESIGNS.values() if d is not UPSTREAM))
        if d.vpmu == "mediated"
        and not model.unanchored_labels(d) and not any(model.changed_keys(d, cf) for cf in FUNCTIONS)
    ]
    best: tuple[int, Design, list[Edit]] | None = None
    for d in candidates:
        results = match_tree(root, d)
        if all(r.ok for r in results):
            return Derived(d, d, ())
        edits = _edits(d, results)
        if edits is not None and (best is None or len(edits) < best[0]):
            best = (len(edits), d, edits)
    if best is None:
        raise VpmuError(_inexpressible(root, UPSTREAM))
    _, base, edits = best
    derived = base.derive(
        "from-tree",
        f"derived from the kernel tree {kernel}: {base.name} with {len(edits)} edit(s)",
        edits,
        source=f"vpmu source design --kernel {kernel}",
    )
    results = match_tree(root, derived)
    if not all(r.ok for r in results):
        raise VpmuError(_inexpressible(root, derived))
    return Derived(derived, base, tuple(edits))


def _inexpressible(root: Path, design: Design) -> str:
    results = match_tree(root, design)
    kept = {(r.cf.model, a.step) for r in results for a in r.anchors if a.status != "missing"}
    for r in results:
        for h in r.foreign:
            return (
                f"{r.cf.path}:{h.stmt.line}: {r.cf.name}(): statement `{h.stmt.text}` is a step of another design "
                f"that deletions and reorders of a known design cannot combine with the rest of the tree; "
                f"write a design file (docs/design-files.md) for it"
            )
    for r in results:
        for a in r.anchors:
            if a.status == "missing" and (r.cf.model, a.step) in kept:
                return (
                    f"{r.cf.path}: {r.cf.name}(): the statement `{a.c}` of step {r.cf.model}:{a.step} is missing "
                    f"while the step's other statements remain; write a design file (docs/design-files.md) for it"
                )
    return f"the tree at {root} matches no design vpmu can derive; vpmu source check --kernel {root} shows why"


def differences(design: Design) -> list[str]:
    """What ``design`` changes relative to upstream, one line each: its edits and replaced functions."""
    from vpmu.designs import UPSTREAM

    if design is UPSTREAM:
        return []
    out = [e.describe() + (f"  ({e.note})" if e.note else "") for e in design.edits]
    out += [f"replace function {n}" for n, b in sorted(design.builders.items()) if UPSTREAM.builders.get(n) is not b]
    return out
