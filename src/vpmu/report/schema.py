"""Validation of the JSON documents vpmu writes and reads, and loading them as traces.

Three kinds of document are recognised:

* ``vpmu.check/1`` — ``vpmu check --json`` (docs/json-schema.md),
* ``vpmu.trace/1`` — ``vpmu simulate --trace FILE``,
* ITF — the Informal Trace Format of Apalache and Quint (``vpmu trace itf``),
  recognised by its ``"states"`` (or ``"#meta"``) key.

The validator is hand-written (no dependency): it walks the document and
reports every problem with the JSON path of the offending value, e.g.
``results[0].violation.trace[3].changes.LVTPC: expected [old, new] integers, got "x"``.
Keys a version does not define are warnings (a later compatible writer may add
keys), or errors with ``strict=True``.

:class:`TraceView` is a validated trace as the renderers (text, HTML, ITF) use
it: its rows, where it came from, the violated property if any, and the value
of every slot the trace changes before and after every step.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vpmu.errors import VpmuError, show_value

CHECK_SCHEMA = "vpmu.check/1"
TRACE_SCHEMA = "vpmu.trace/1"
SCHEMAS = (CHECK_SCHEMA, TRACE_SCHEMA)
#: The execution contexts a trace step runs in (vpmu.check.system.CONTEXT_LABEL; a test keeps them equal).
CONTEXTS = ("host", "NMI", "IRQ", "guest", "guest PMI")
VENDORS = ("intel", "amd")
VERDICTS = ("holds", "violated", "incomplete")
#: Checker moves: 0 step, 1 interrupt delivery, 2 asynchronous VM-exit, 3 unrelated NMI, 4 host perf operation,
#: 5 vCPU migration (worlds with cpus > 1).
MOVE_KINDS = (0, 1, 2, 3, 4, 5)
MAX_ERRORS = 100

CHECK_KEYS = ("schema", "results")
RESULT_KEYS = ("design", "world", "vendor", "verdict", "states", "transitions", "depth", "seconds", "properties")
RESULT_OPTIONAL = ("violation", "incomplete_reason", "collision_probability")
VIOLATION_KEYS = ("property", "description", "source", "message", "trace")
TRACE_KEYS = ("schema", "design", "world", "contexts", "steps")
#: Optional in vpmu.trace/1 (added compatibly): what ``vpmu simulate`` observed, and its violations.
TRACE_OPTIONAL = ("observations", "violations")
OBSERVATION_KINDS = ("guest read", "guest PMI", "host count")
OBSERVATION_KEYS = ("kind", "what", "seen", "expected", "matches")
STEP_KEYS = ("step", "context", "label", "text", "changes", "hw", "move")

ITF_FORMS = ("#bigint", "#tup", "#set", "#map", "#unserializable")
_BIGINT = re.compile(r"-?[0-9]+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def key_path(base: str, key: str) -> str:
    """``base.key``, or ``base["key"]`` when the key is not a plain identifier."""
    if _IDENT.fullmatch(key):
        return f"{base}.{key}" if base else key
    return f"{base}[{json.dumps(key)}]"


def show(value: Any, limit: int = 60) -> str:
    """A JSON value as it appears in the document, shortened."""
    return show_value(value, limit)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass
class Report:
    """The outcome of validating one document."""

    kind: str  # "vpmu.check/1", "vpmu.trace/1", "ITF", or "unknown"
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dropped: int = 0  # errors beyond MAX_ERRORS, not listed
    summary: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, path: str, message: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(f"{path}: {message}" if path else message)
        else:
            self.dropped += 1

    def lines(self) -> list[str]:
        out = list(self.errors)
        if self.dropped:
            out.append(f"... and {self.dropped} more errors")
        return out


class _Walker:
    """Shared checks; every method reports into one Report and returns whether the value fits."""

    def __init__(self, report: Report, strict: bool) -> None:
        self.r = report
        self.strict = strict

    def obj(self, v: Any, path: str, what: str = "an object") -> bool:
        if isinstance(v, dict):
            return True
        self.r.error(path, f"expected {what}, got {show(v)}")
        return False

    def keys(self, v: dict[str, Any], path: str, required: Sequence[str], optional: Sequence[str], doc: str) -> bool:
        ok = True
        for k in required:
            if k not in v:
                self.r.error(path or "(document)", f"missing key {json.dumps(k)}")
                ok = False
        for k in v:
            if k not in required and k not in optional:
                msg = f"unknown key {json.dumps(k)} (not part of {doc})"
                if self.strict:
                    self.r.error(path or "(document)", msg)
                else:
                    self.r.warnings.append(f"{path or '(document)'}: {msg}; ignored")
        return ok

    def string(self, v: Any, path: str, nonempty: bool = False) -> bool:
        if isinstance(v, str) and (v or not nonempty):
            return True
        self.r.error(path, f"expected a {'non-empty ' if nonempty else ''}string, got {show(v)}")
        return False

    def integer(self, v: Any, path: str, lo: int | None = None) -> bool:
        if is_int(v) and (lo is None or v >= lo):
            return True
        self.r.error(path, f"expected an integer{f' >= {lo}' if lo is not None else ''}, got {show(v)}")
        return False

    def one_of(self, v: Any, path: str, allowed: Sequence[Any]) -> bool:
        if v in allowed and type(v) in {type(a) for a in allowed}:
            return True
        self.r.error(path, f"expected one of {', '.join(show(a) for a in allowed)}, got {show(v)}")
        return False

    def strings(self, v: Any, path: str) -> bool:
        if not isinstance(v, list):
            self.r.error(path, f"expected an array of strings, got {show(v)}")
            return False
        ok = True
        for i, x in enumerate(v):
            ok = self.string(x, f"{path}[{i}]") and ok
        return ok

    def steps(self, rows: Any, path: str, contexts: Sequence[str]) -> bool:
        """An array of trace steps (docs/json-schema.md, "Trace steps")."""
        if not isinstance(rows, list):
            self.r.error(path, f"expected an array of trace steps, got {show(rows)}")
            return False
        last: dict[str, tuple[int, int]] = {}  # slot -> (step index, new value)
        ok = True
        for i, row in enumerate(rows):
            p = f"{path}[{i}]"
            if not self.obj(row, p, "a trace step object"):
                ok = False
                continue
            ok = self.keys(row, p, STEP_KEYS, (), "a trace step") and ok
            if "step" in row and self.integer(row["step"], f"{p}.step", 1) and row["step"] != i + 1:
                self.r.error(
                    f"{p}.step", f"expected {i + 1} (steps are numbered 1, 2, ... in order), got {row['step']}"
                )
                ok = False
            if "context" in row and not self.one_of(row["context"], f"{p}.context", contexts):
                ok = False
            if "label" in row:
                ok = self.string(row["label"], f"{p}.label", nonempty=True) and ok
            if "text" in row:
                ok = self.string(row["text"], f"{p}.text") and ok
            if "hw" in row:
                ok = self.strings(row["hw"], f"{p}.hw") and ok
            if "move" in row:
                ok = self._move(row["move"], f"{p}.move") and ok
            if "changes" in row:
                ok = self._changes(row["changes"], f"{p}.changes", i, last) and ok
        return ok

    def _move(self, v: Any, path: str) -> bool:
        if not (isinstance(v, list) and len(v) == 2 and all(is_int(x) for x in v)):
            self.r.error(path, f"expected [kind, arg] integers, got {show(v)}")
            return False
        if v[0] not in MOVE_KINDS:
            self.r.error(f"{path}[0]", f"expected a move kind {MOVE_KINDS[0]}..{MOVE_KINDS[-1]}, got {v[0]}")
            return False
        return self.integer(v[1], f"{path}[1]", 0)

    def _changes(self, v: Any, path: str, i: int, last: dict[str, tuple[int, int]]) -> bool:
        if not self.obj(v, path, "an object of slot -> [old, new]"):
            return False
        ok = True
        for name, change in v.items():
            p = key_path(path, name)
            if not name:
                self.r.error(p, "expected a slot name, got an empty key")
                ok = False
            if not (isinstance(change, list) and len(change) == 2 and all(is_int(x) for x in change)):
                self.r.error(p, f"expected [old, new] integers, got {show(change)}")
                ok = False
                continue
            old, new = change
            if old == new:
                self.r.error(p, f"old and new are both {old}: a change must change the value")
                ok = False
            if name in last and last[name][1] != old:
                j, prev = last[name]
                self.r.error(
                    p, f"old value {old:#x} does not continue the new value {prev:#x} that step {j + 1} left in {name}"
                )
                ok = False
            last[name] = (i, new)
        return ok


# --- vpmu documents ----------------------------------------------------------------------------


def _schema_field(w: _Walker, doc: dict[str, Any]) -> str | None:
    """The document's schema if this vpmu reads it; reports why not otherwise."""
    s = doc.get("schema")
    if not isinstance(s, str):
        w.r.error("schema", f"expected a schema name such as {json.dumps(CHECK_SCHEMA)}, got {show(s)}")
        return None
    if s in SCHEMAS:
        return s
    name, _, version = s.partition("/")
    known = {x.partition("/")[0]: x for x in SCHEMAS}
    if name in known:
        w.r.error("schema", f"version {json.dumps(version)} of {name} is not supported; this vpmu reads {known[name]}")
    else:
        w.r.error("schema", f"unknown schema {json.dumps(s)}; expected {' or '.join(SCHEMAS)}")
    return None


def _check_doc(w: _Walker, doc: dict[str, Any]) -> None:
    w.keys(doc, "", CHECK_KEYS, (), CHECK_SCHEMA)
    results = doc.get("results")
    if "results" not in doc:
        return
    if not isinstance(results, list):
        w.r.error("results", f"expected an array of results, got {show(results)}")
        return
    if not results:
        w.r.error("results", "expected at least one result, got []")
    steps = violations = 0
    for i, res in enumerate(results):
        p = f"results[{i}]"
        if not w.obj(res, p, "a result object"):
            continue
        w.keys(res, p, RESULT_KEYS, RESULT_OPTIONAL, f"a {CHECK_SCHEMA} result")
        for k in ("design", "world"):
            if k in res:
                w.string(res[k], f"{p}.{k}", nonempty=True)
        if "vendor" in res:
            w.one_of(res["vendor"], f"{p}.vendor", VENDORS)
        verdict = res.get("verdict")
        if "verdict" in res and not w.one_of(verdict, f"{p}.verdict", VERDICTS):
            verdict = None
        for k in ("states", "transitions", "depth"):
            if k in res:
                w.integer(res[k], f"{p}.{k}", 0)
        if "seconds" in res:
            s = res["seconds"]
            if isinstance(s, bool) or not isinstance(s, int | float) or s < 0:
                w.r.error(f"{p}.seconds", f"expected a number >= 0, got {show(s)}")
        props = res.get("properties")
        if "properties" in res and w.strings(props, f"{p}.properties") and not props:
            w.r.error(f"{p}.properties", "expected at least one property name, got []")
        if verdict == "incomplete":
            if "incomplete_reason" not in res:
                w.r.error(p, 'missing key "incomplete_reason" (required when the verdict is "incomplete")')
            else:
                w.string(res["incomplete_reason"], f"{p}.incomplete_reason", nonempty=True)
        elif "incomplete_reason" in res and verdict is not None:
            w.r.error(f"{p}.incomplete_reason", f'present only when the verdict is "incomplete", not {show(verdict)}')
        if "collision_probability" in res:
            _collision_probability(w, res["collision_probability"], f"{p}.collision_probability", verdict)
        if "violation" not in res:
            w.r.error(p, 'missing key "violation" (null unless the verdict is "violated")')
            continue
        v = res["violation"]
        if verdict in ("holds", "incomplete") and v is not None:
            w.r.error(f"{p}.violation", f"expected null for verdict {show(verdict)}, got an object")
            continue
        if v is None:
            if verdict == "violated":
                w.r.error(f"{p}.violation", 'expected the violation object for verdict "violated", got null')
            continue
        if not w.obj(v, f"{p}.violation", "null or a violation object"):
            continue
        violations += 1
        w.keys(v, f"{p}.violation", VIOLATION_KEYS, (), f"a {CHECK_SCHEMA} violation")
        for k in ("property", "message"):
            if k in v:
                w.string(v[k], f"{p}.violation.{k}", nonempty=True)
        for k in ("description", "source"):
            if k in v:
                w.string(v[k], f"{p}.violation.{k}")
        if isinstance(props, list) and isinstance(v.get("property"), str) and v["property"] not in props:
            w.r.error(f"{p}.violation.property", f"{show(v['property'])} is not among {p}.properties")
        if "trace" in v:
            trace = v["trace"]
            if w.steps(trace, f"{p}.violation.trace", CONTEXTS):
                if not trace:
                    w.r.error(f"{p}.violation.trace", "expected at least one step (the counterexample), got []")
                elif is_int(res.get("depth")) and res["depth"] != len(trace):
                    w.r.error(f"{p}.depth", f"is {res['depth']} but the counterexample has {len(trace)} steps")
            if isinstance(trace, list):
                steps += len(trace)
    n = len(results)
    verdicts = [r.get("verdict") for r in results if isinstance(r, dict)]
    counts = ", ".join(f"{verdicts.count(x)} {x}" for x in VERDICTS if x in verdicts)
    w.r.summary = f"{n} result{'s' * (n != 1)}: {counts}" + (
        f"; {violations} counterexample{'s' * (violations != 1)} of {steps} steps in all" if violations else ""
    )


def _collision_probability(w: _Walker, v: Any, path: str, verdict: Any) -> None:
    """``collision_probability`` (vpmu check --fingerprint): a number from 0 to 1, never with "incomplete"."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
        w.r.error(path, f"expected a number from 0 to 1, got {show(v)}")
    elif verdict == "incomplete":
        w.r.error(path, 'present only when the verdict is "holds" or "violated", not "incomplete"')


def _trace_doc(w: _Walker, doc: dict[str, Any]) -> None:
    w.keys(doc, "", TRACE_KEYS, TRACE_OPTIONAL, TRACE_SCHEMA)
    if "observations" in doc:
        _observations(w, doc["observations"])
    if "violations" in doc:
        w.strings(doc["violations"], "violations")
    for k in ("design", "world"):
        if k in doc:
            w.string(doc[k], k, nonempty=True)
    contexts: Sequence[str] = CONTEXTS
    if "contexts" in doc:
        c = doc["contexts"]
        if w.strings(c, "contexts"):
            if not c:
                w.r.error("contexts", "expected the context names, got []")
            elif len(set(c)) != len(c):
                w.r.error("contexts", f"expected distinct names, got {show(c)}")
            else:
                contexts = c
    if "steps" in doc:
        w.steps(doc["steps"], "steps", contexts)
        if isinstance(doc["steps"], list):
            w.r.summary = f"{len(doc['steps'])} steps"


def _observations(w: _Walker, obs: Any) -> None:
    """``observations`` of a simulate trace (docs/json-schema.md): what each party saw and should have."""
    if not isinstance(obs, list):
        w.r.error("observations", f"expected an array of observations, got {show(obs)}")
        return
    for i, o in enumerate(obs):
        p = f"observations[{i}]"
        if not w.obj(o, p) or not w.keys(o, p, OBSERVATION_KEYS, (), "an observation"):
            continue
        w.one_of(o["kind"], key_path(p, "kind"), OBSERVATION_KINDS)
        w.string(o["what"], key_path(p, "what"))
        ok = w.integer(o["seen"], key_path(p, "seen"), 0)
        ok = w.integer(o["expected"], key_path(p, "expected"), 0) and ok
        matches = w.one_of(o["matches"], key_path(p, "matches"), (True, False))
        if matches and ok and o["matches"] != (o["seen"] == o["expected"]):
            w.r.error(key_path(p, "matches"), f"expected {show(o['seen'] == o['expected'])} (seen vs expected)")


# --- ITF -------------------------------------------------------------------------------------------


def _itf_value(w: _Walker, v: Any, path: str, depth: int = 0) -> None:
    if depth > 64:
        w.r.error(path, "nesting deeper than 64 levels")
        return
    if isinstance(v, bool | str) or is_int(v):
        return
    if isinstance(v, float):
        w.r.error(
            path, f'expected an integer (ITF has no fractions; large ones as {{"#bigint": "..."}}), got {show(v)}'
        )
        return
    if v is None:
        w.r.error(path, "null is not an ITF value")
        return
    if isinstance(v, list):
        for i, x in enumerate(v):
            _itf_value(w, x, f"{path}[{i}]", depth + 1)
        return
    assert isinstance(v, dict)
    special = [k for k in v if k.startswith("#")]
    if not special:  # a record (a variant is a record with "tag" and "value")
        for k, x in v.items():
            _itf_value(w, x, key_path(path, k), depth + 1)
        return
    form = special[0]
    if len(v) != 1:
        w.r.error(path, f"expected a lone {json.dumps(form)} key, got keys {show(sorted(v))}")
        return
    x = v[form]
    p = key_path(path, form)
    if form == "#bigint":
        if not (isinstance(x, str) and _BIGINT.fullmatch(x)):
            w.r.error(p, f"expected a decimal integer string, got {show(x)}")
    elif form in ("#tup", "#set"):
        if not isinstance(x, list):
            w.r.error(p, f"expected an array, got {show(x)}")
        else:
            for i, e in enumerate(x):
                _itf_value(w, e, f"{p}[{i}]", depth + 1)
    elif form == "#map":
        if not isinstance(x, list):
            w.r.error(p, f"expected an array of [key, value] pairs, got {show(x)}")
        else:
            for i, pair in enumerate(x):
                if not (isinstance(pair, list) and len(pair) == 2):
                    w.r.error(f"{p}[{i}]", f"expected a [key, value] pair, got {show(pair)}")
                    continue
                _itf_value(w, pair[0], f"{p}[{i}][0]", depth + 1)
                _itf_value(w, pair[1], f"{p}[{i}][1]", depth + 1)
    elif form == "#unserializable":
        if not isinstance(x, str):
            w.r.error(p, f"expected a string, got {show(x)}")
    else:
        w.r.error(path, f"unknown ITF form {json.dumps(form)}; known: {', '.join(ITF_FORMS)}")


def _itf_doc(w: _Walker, doc: dict[str, Any]) -> None:
    w.keys(doc, "", ("vars", "states"), ("#meta", "params", "loop"), "an ITF trace")
    if "#meta" in doc:
        w.obj(doc["#meta"], key_path("", "#meta"))
    names: list[str] = []
    for k in ("params", "vars"):
        if k in doc and w.strings(doc[k], k):
            names += doc[k]
    states = doc.get("states")
    if "states" not in doc:
        return
    if not isinstance(states, list):
        w.r.error("states", f"expected an array of states, got {show(states)}")
        return
    # Only the names that are strings (w.strings reported the others) are looked for.
    wanted = {v for v in doc["vars"] if isinstance(v, str)} if isinstance(doc.get("vars"), list) else set()
    for i, s in enumerate(states):
        p = f"states[{i}]"
        if not w.obj(s, p, "a state object"):
            continue
        if "#meta" in s and w.obj(s["#meta"], key_path(p, "#meta")):
            idx = s["#meta"].get("index")
            if idx is not None and idx != i:
                w.r.error(key_path(key_path(p, "#meta"), "index"), f"expected {i}, got {show(idx)}")
        for name in sorted(wanted - set(s)):
            w.r.error(p, f"missing variable {json.dumps(name)} (listed in vars)")
        for k, x in s.items():
            if k == "#meta":
                continue
            if isinstance(doc.get("vars"), list) and k not in names:
                w.r.error(key_path(p, k), "not a variable listed in vars")
            _itf_value(w, x, key_path(p, k))
    if "loop" in doc:
        lp = doc["loop"]
        if not (is_int(lp) and 0 <= lp < max(1, len(states))):
            w.r.error("loop", f"expected a state index 0..{max(0, len(states) - 1)}, got {show(lp)}")
    w.r.summary = f"{len(names)} variables, {len(states)} states"


def is_itf(doc: Any) -> bool:
    return isinstance(doc, dict) and "schema" not in doc and ("states" in doc or "#meta" in doc)


def validate(doc: Any, strict: bool = False) -> Report:
    """Validate a parsed document of any kind vpmu knows; never raises."""
    if isinstance(doc, dict) and "schema" in doc:
        r = Report(str(doc["schema"]) if isinstance(doc["schema"], str) else "unknown")
        w = _Walker(r, strict)
        schema = _schema_field(w, doc)
        if schema == CHECK_SCHEMA:
            _check_doc(w, doc)
        elif schema == TRACE_SCHEMA:
            _trace_doc(w, doc)
        return r
    if is_itf(doc):
        r = Report("ITF")
        _itf_doc(_Walker(r, strict), doc)
        return r
    r = Report("unknown")
    if isinstance(doc, dict):
        r.error("(document)", 'missing key "schema": not a vpmu document (nor an ITF trace: no "states")')
    else:
        r.error("(document)", f"expected a JSON object, got {show(doc)}")
    return r


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a VpmuError (exit status 2) if it cannot be read, is not UTF-8 or not JSON,
    or nests too deeply (vpmu.inputs)."""
    from vpmu.inputs import load_json

    return load_json(path)


# --- traces as the renderers see them -------------------------------------------------------------------


@dataclass
class Violation:
    prop: str
    description: str
    source: str
    message: str
    step: int  # the step at which it was detected (the last)


@dataclass
class TraceView:
    """A validated trace: rows plus what it came from."""

    rows: list[dict[str, Any]]
    design: str
    world: str
    vendor: str | None = None
    kind: str = TRACE_SCHEMA  # the schema of the document it was read from
    source: str = ""  # file name or command that produced it
    result_index: int | None = None  # which result of a vpmu.check/1 document
    contexts: list[str] = field(default_factory=lambda: list(CONTEXTS))
    violation: Violation | None = None

    @property
    def title(self) -> str:
        return f"{self.design} on {self.world}"

    def slots(self) -> list[str]:
        """Every slot the trace changes, in order of first change."""
        seen: dict[str, None] = {}
        for row in self.rows:
            for name in row["changes"]:
                seen.setdefault(name)
        return list(seen)

    def initial(self) -> dict[str, int]:
        """The value before step 1 of every slot the trace changes (the old value of its first change)."""
        out: dict[str, int] = {}
        for row in self.rows:
            for name, (old, _new) in row["changes"].items():
                out.setdefault(name, old)
        return out

    def states(self, initial: Mapping[str, int] | None = None) -> Iterator[dict[str, int]]:
        """The slot values before step 1, then after each step (len(rows) + 1 states)."""
        cur = dict(initial) if initial is not None else self.initial()
        yield dict(cur)
        for row in self.rows:
            for name, (_old, new) in row["changes"].items():
                cur[name] = new
            yield dict(cur)

    def window(self, last: int) -> tuple[int, list[dict[str, Any]]]:
        """The last ``last`` rows (all when 0) and how many rows come before them."""
        start = max(0, len(self.rows) - last) if last else 0
        return start, self.rows[start:]


def _first_error(report: Report, where: str) -> VpmuError:
    n = len(report.errors) + report.dropped
    more = f" (and {n - 1} more; vpmu trace validate {where} lists them)" if n > 1 else ""
    what = "a vpmu trace document" if report.kind == "unknown" else f"a valid {report.kind} document"
    return VpmuError(f"{where} is not {what}: {report.errors[0]}{more}")


def view_of(doc: Any, where: str = "(document)", result: int | None = None) -> TraceView:
    """The trace a vpmu.trace/1 document holds, or the counterexample of a vpmu.check/1 result.

    ``result`` picks a result of a check document by index; by default the first violated one.
    """
    if is_itf(doc):
        raise VpmuError(f"{where} is an ITF trace; render the vpmu.check/1 or vpmu.trace/1 file it was exported from")
    report = validate(doc)
    if not report.ok:
        raise _first_error(report, where)
    if doc["schema"] == TRACE_SCHEMA:
        if result is not None:
            raise VpmuError(f"--result applies to {CHECK_SCHEMA} documents; {where} is a {TRACE_SCHEMA} trace")
        return TraceView(
            rows=doc["steps"],
            design=doc["design"],
            world=doc["world"],
            kind=TRACE_SCHEMA,
            source=where,
            contexts=list(doc["contexts"]),
        )
    results = doc["results"]
    if result is None:
        violated = [i for i, r in enumerate(results) if r["violation"] is not None]
        if not violated:
            verdicts = ", ".join(f"{r['design']} on {r['world']}: {r['verdict']}" for r in results)
            raise VpmuError(f"{where} has no counterexample ({verdicts})")
        result = violated[0]
    if not 0 <= result < len(results):
        raise VpmuError(f"--result {result} is out of range: {where} has results 0..{len(results) - 1}")
    res = results[result]
    v = res["violation"]
    if v is None:
        raise VpmuError(
            f"results[{result}] of {where} ({res['design']} on {res['world']}) {res['verdict']}: it has no trace"
        )
    return TraceView(
        rows=v["trace"],
        design=res["design"],
        world=res["world"],
        vendor=res["vendor"],
        kind=CHECK_SCHEMA,
        source=where,
        result_index=result,
        violation=Violation(v["property"], v["description"], v["source"], v["message"], len(v["trace"])),
    )


def load_view(path: str | Path, result: int | None = None) -> TraceView:
    return view_of(read_json(path), str(path), result)


# --- what the model knows about the slots ----------------------------------------------------------


@dataclass
class SlotModel:
    """Slot formats and initial values of the model a trace came from (built-in designs and worlds only)."""

    order: list[str]  # machine and kernel slots in layout order
    kinds: dict[str, str]  # slot -> "hex" | "int" | "bool" | "vectors"
    initial: dict[str, int] | None  # None when the trace does not start from the model's initial state


def slot_model(view: TraceView) -> SlotModel | None:
    """Rebuild the System a trace came from, if its design and world are built in; else None.

    The model's initial state is used only if it agrees with every value the trace
    shows before its first change (a file written by another version may not).
    """
    from vpmu.check.system import System
    from vpmu.check.world import builtin_worlds
    from vpmu.designs import DESIGNS
    from vpmu.report.trace import HIDDEN_OWNERS

    worlds = builtin_worlds()
    if view.design not in DESIGNS or view.world not in worlds:
        return None
    system = System(DESIGNS[view.design], worlds[view.world])
    layout = system.layout
    init = system.initial()
    order = [s.name for s in layout.slots if s.owner not in HIDDEN_OWNERS]
    kinds = {s.name: s.fmt for s in layout.slots if s.owner not in HIDDEN_OWNERS}
    values = {s.name: init[i] for i, s in enumerate(layout.slots) if s.owner not in HIDDEN_OWNERS}
    seen = view.initial()
    agrees = all(values.get(name) == v for name, v in seen.items())
    return SlotModel(order, kinds, values if agrees else None)


def formatter(model: SlotModel | None) -> Callable[[str, int], str]:
    """Format a slot value as ``vpmu check`` prints it: LVTPC decoded, else by the slot's kind (hex by default)."""
    from vpmu.hw.layout import format_value
    from vpmu.hw.msr import lvtpc_str

    kinds = model.kinds if model else {}

    def fmt(name: str, value: int) -> str:
        if name.endswith("LVTPC"):
            return lvtpc_str(value)
        return format_value(kinds.get(name, "hex"), value)

    return fmt
