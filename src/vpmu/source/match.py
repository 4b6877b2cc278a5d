"""Match a kernel tree's functions against a design's anchors (``vpmu source check``).

For each anchored kernel function: found or absent; each anchor matched, in
order, missing, or reordered; statements that stand for a step the design
does not have (another design's form, say linux-next's); and, for complete
functions, statements neither anchored nor on the function's omitted list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vpmu.kernel.lang import Design
from vpmu.source import model
from vpmu.source.anchors import COMPLETE, FUNCTIONS, CFunction, Stmt
from vpmu.source.cparse import CFunctionDef, CStatement, tokens
from vpmu.source.tree import read


def _split(toks: tuple[str, ...]) -> list[tuple[str, ...]]:
    out: list[list[str]] = [[]]
    for t in toks:
        if t == "...":
            out.append([])
        else:
            out[-1].append(t)
    return [tuple(p) for p in out]


_PATTERNS: dict[Stmt, tuple[tuple[str, ...], ...]] = {}


def stmt_matches(st: Stmt, toks: tuple[str, ...]) -> bool:
    """Do ``toks`` (a tree statement) match the table statement ``st`` (``...`` matches any tokens)?"""
    parts = _PATTERNS.get(st)
    if parts is None:
        parts = tuple(_split(tokens(st.c)))
        _PATTERNS[st] = parts
    if len(parts) == 1:
        return parts[0] == toks
    first, last = parts[0], parts[-1]
    if toks[: len(first)] != first or (last and toks[len(toks) - len(last) :] != last):
        return False
    i, end = len(first), len(toks) - len(last)
    for mid in parts[1:-1]:
        while i + len(mid) <= end and toks[i : i + len(mid)] != mid:
            i += 1
        if i + len(mid) > end:
            return False
        i += len(mid)
    return i <= end


@dataclass
class Hit:
    """One tree statement and what it is."""

    stmt: CStatement
    index: int  # into the table, -1 if unknown
    kind: str  # "anchor", "omitted", "foreign" (a step of another design), "unknown"


@dataclass
class AnchorResult:
    step: str
    c: str
    status: str  # "matched", "missing", "reordered"
    line: int = 0


@dataclass
class FunctionResult:
    """The verdict on one anchored kernel function."""

    cf: CFunction
    found: bool
    line: int = 0
    condition: str = ""
    definitions: list[int] = field(default_factory=list)
    anchors: list[AnchorResult] = field(default_factory=list)
    foreign: list[Hit] = field(default_factory=list)
    unanchored: list[Hit] = field(default_factory=list)
    omitted: list[Hit] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)
    where: dict[int, CStatement] = field(default_factory=dict)  # table index -> the tree statement it matched

    @property
    def ok(self) -> bool:
        return (
            self.found
            and all(a.status == "matched" for a in self.anchors)
            and not self.foreign
            and not self.unanchored
        )

    def problems(self) -> int:
        return (
            sum(a.status != "matched" for a in self.anchors) + len(self.foreign) + len(self.unanchored)
        )


def classify(cf: CFunction, stmts: tuple[CStatement, ...], design: Design | None) -> list[Hit]:
    """Assign each tree statement to a table statement, in order where a text occurs twice."""
    present = model.present_keys(design, cf) if design is not None else None
    used: set[int] = set()
    last = -1
    out = []
    for s in stmts:
        cands = [k for k, st in enumerate(cf.body) if stmt_matches(st, s.tokens)]
        if not cands:
            out.append(Hit(s, -1, "unknown"))
            continue
        later = [k for k in cands if k > last and k not in used]
        free = [k for k in cands if k not in used]
        k = (later or free or cands)[0]
        used.add(k)
        last = k
        st = cf.body[k]
        if not st.step:
            kind = "omitted"
        elif design is None or (st.applies(model.lineage(design)) and present is not None and st.step in present):
            kind = "anchor"
        else:
            kind = "foreign"
        out.append(Hit(s, k, kind))
    return out


def positions(cf: CFunction, hits: list[Hit]) -> dict[str, int]:
    """Each anchored step's position in the tree: its last statement's."""
    pos: dict[str, int] = {}
    for i, h in enumerate(hits):
        if h.kind == "anchor":
            pos[cf.body[h.index].step] = i
    return pos


def reordered(cf: CFunction, design: Design, pos: dict[str, int]) -> set[str]:
    """Steps found in the tree out of the design's order (in any of its builds)."""
    bad: set[str] = set()
    for seq in model.key_orders(design, cf):
        prev = -1
        for k in seq:
            if k not in pos:
                continue
            if pos[k] < prev:
                bad.add(k)
            else:
                prev = pos[k]
    return bad


def _partial(cf: CFunction, d: CFunctionDef, design: Design, r: FunctionResult) -> None:
    """Anchors only, in the design's order: each is looked for after the previous one."""
    present = model.present_keys(design, cf)
    orders = model.key_orders(design, cf)
    rank = {k: i for i, k in enumerate(orders[0] if orders else [])}
    expected = [
        (k, st) for k, st in enumerate(cf.body) if st.step and st.applies(model.lineage(design)) and st.step in present
    ]
    expected.sort(key=lambda e: (rank.get(e[1].step, len(rank)), e[0]))
    stmts = d.statements
    at = 0
    for k, st in expected:
        idx = next((i for i in range(at, len(stmts)) if stmt_matches(st, stmts[i].tokens)), -1)
        if idx >= 0:
            r.where[k] = stmts[idx]
            r.anchors.append(AnchorResult(st.step, st.c, "matched", stmts[idx].line))
            at = idx + 1
            continue
        idx = next((i for i in range(len(stmts)) if stmt_matches(st, stmts[i].tokens)), -1)
        status = "reordered" if idx >= 0 else "missing"
        r.anchors.append(AnchorResult(st.step, st.c, status, stmts[idx].line if idx >= 0 else 0))
    r.foreign = [h for h in r.hits if h.kind == "foreign"]


def match_definition(cf: CFunction, d: CFunctionDef, design: Design) -> FunctionResult:
    hits = classify(cf, d.statements, design)
    r = FunctionResult(cf, True, d.line, d.condition, hits=hits)
    if cf.kind != COMPLETE:
        _partial(cf, d, design, r)
        return r
    present = model.present_keys(design, cf)
    pos = positions(cf, hits)
    bad = reordered(cf, design, pos)
    line_of = {h.index: h.stmt.line for h in hits if h.kind == "anchor"}
    r.where = {h.index: h.stmt for h in hits if h.kind == "anchor"}
    for k, st in enumerate(cf.body):
        if not st.step or not st.applies(model.lineage(design)) or st.step not in present:
            continue
        if k not in line_of:
            r.anchors.append(AnchorResult(st.step, st.c, "missing"))
        else:
            r.anchors.append(AnchorResult(st.step, st.c, "reordered" if st.step in bad else "matched", line_of[k]))
    r.foreign = [h for h in hits if h.kind == "foreign"]
    r.omitted = [h for h in hits if h.kind == "omitted"]
    r.unanchored = [h for h in hits if h.kind == "unknown"]
    return r


def match_function(root: Path, cf: CFunction, design: Design) -> FunctionResult:
    """The best-matching definition of ``cf`` in the tree (a function may be defined under #ifdef and #else)."""
    defs = read(root, cf.path).functions.get(cf.name, ())
    if not defs:
        return FunctionResult(cf, False)
    results = [match_definition(cf, d, design) for d in defs]
    best = min(results, key=lambda r: r.problems())
    best.definitions = [d.line for d in defs]
    return best


def match_tree(root: Path, design: Design) -> list[FunctionResult]:
    model.require_mediated(design)
    return [match_function(root, cf, design) for cf in FUNCTIONS]
