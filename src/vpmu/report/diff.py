"""Step-level difference between two designs, per function and along the inlined load/put paths."""

from __future__ import annotations

from difflib import SequenceMatcher

from vpmu.kernel.lang import Function, Program


def diff_function(a: Function | None, b: Function | None) -> list[str]:
    """Lines describing how ``b`` differs from ``a`` (inserted, deleted, moved, changed steps)."""
    if a is None and b is None:
        return []
    if a is None:
        assert b is not None
        return [f"  + function added ({len(b.steps)} steps)"]
    if b is None:
        return [f"  - function removed ({len(a.steps)} steps)"]
    la, lb = a.labels(), b.labels()
    ta = {s.label: s.listing() for s in a.steps}
    tb = {s.label: s.listing() for s in b.steps}
    out: list[str] = []
    common = [x for x in la if x in tb]
    order_b = [x for x in lb if x in ta]
    moved = set()
    if common != order_b:
        sm = SequenceMatcher(a=common, b=order_b, autojunk=False)
        kept = {common[i] for blk in sm.get_matching_blocks() for i in range(blk.a, blk.a + blk.size)}
        moved = set(common) - kept
    for label in lb:
        if label not in ta:
            out.append(f"  + {label}: {tb[label]}  (inserted at position {lb.index(label) + 1})")
    for label in la:
        if label not in tb:
            out.append(f"  - {label}: {ta[label]}")
    for label in common:
        if label in moved:
            out.append(f"  ~ {label}: moved from position {la.index(label) + 1} to {lb.index(label) + 1}")
        if ta[label] != tb[label]:
            out.append(f"  * {label}: changed\n      was: {ta[label]}\n      now: {tb[label]}")
    return out


def path_texts(program: Program, function: str) -> list[str]:
    """The inlined steps of the first instance of ``function`` in a program, as text lines."""
    spans = program.spans(function)
    if not spans:
        return []
    start, end = spans[0]
    return [f"{ins.qualified:<48} {ins.step.listing()}" for ins in program.code[start:end]]


def diff_path(a: list[str], b: list[str]) -> list[str]:
    """A unified-style diff of two inlined paths (``-`` only in the first, ``+`` only in the second)."""
    out = []
    sm = SequenceMatcher(a=a, b=b, autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            out += [f"    {x}" for x in a[i1:i2]]
        else:
            out += [f"  - {x}" for x in a[i1:i2]]
            out += [f"  + {x}" for x in b[j1:j2]]
    return out
