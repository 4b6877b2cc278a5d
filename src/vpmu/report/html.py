"""A trace as one self-contained HTML page: a timeline a reviewer reads in a minute.

The page has no external resource (inline CSS, JavaScript and SVG). The
timeline is drawn here, in Python, as static SVG — it shows without JavaScript
— and a small script adds the interaction: hovering a step block shows the
full step and its register changes; a step list below is keyboard navigable
(arrow keys, j/k, Home/End) and highlights the selected block.

Layout, top to bottom, one column per step (plus a final column for the state
after the last step):

* markers: the violated property, at its step, with its message;
* the step number axis, and the step labels (rotated);
* CPU mode: host or guest, with guest mode shaded across every lane (VM-entry
  to VM-exit);
* one lane per context (host, NMI, IRQ, guest, guest PMI): the steps as blocks,
  consecutive steps of one function grouped under the function's name;
* register lanes: PERF_GLOBAL_CTRL, LVTPC (decoded), GLOBAL_STATUS and each
  counter with its event select, as value segments (hex);
* PMI arrows from each overflow (on the overflowing counter's lane) to the
  PMI's delivery (NMI delivered, interrupt 0xf5, VM-exit: external interrupt),
  and on to the guest PMI handler when KVM injects it.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpmu import __version__
from vpmu.errors import VpmuError
from vpmu.report.schema import CHECK_SCHEMA, CONTEXTS, TraceView, formatter, slot_model, view_of

Fmt = Callable[[str, int], str]

CTX_COLOR = {
    "host": "#3b6fd4",
    "NMI": "#d2453d",
    "IRQ": "#c98a00",
    "guest": "#23945a",
    "guest PMI": "#8a4fd0",
}
OTHER_COLOR = "#6b7280"
REG_TITLE = {"GLOBAL_CTRL": "PERF_GLOBAL_CTRL"}

# geometry (px)
NAMES_W = 192
MARK_H = 46
END_W = 132  # the column of the state after the last step
MIN_W = 900
AXIS_H = 18
MODE_H = 18
CTX_H = 30
REG_H = 24
GAP = 10
CHAR_W = 6.6  # 11px monospace
LABEL_ANGLE = 55
MAX_LABEL = 34

_OVERFLOW = re.compile(r"overflow (0x[0-9a-f]+|\d+) in (guest|host) mode")
_PMI = re.compile(r"PMI -> (.*)")


def esc(s: object) -> str:
    return html.escape(str(s), quote=True)


def column_width(n: int) -> int:
    """Wide columns for short traces, 18 px from about 60 steps on."""
    return max(18, min(56, 1100 // max(1, n)))


def short_label(row: dict[str, Any]) -> str:
    """What the rotated step label says: the design step's label, or a short name of the event."""
    label: str = row["label"]
    text: str = row["text"]
    if ":" in label:
        return label.split(":", 1)[1]
    if text.startswith("NMI delivered"):
        return "NMI delivered"
    if text.startswith("an unrelated NMI"):
        return "unrelated NMI (pending)"
    if text.startswith("asynchronous VM-exit: "):
        return "async exit: " + text.split(": ", 1)[1]
    if text.startswith("interrupt "):
        return text.split(":", 1)[0]
    if label == "IPI":
        return "perf IPI pending"
    if label == "timer":
        return "perf mux timer pending"
    return text


def function_of(row: dict[str, Any]) -> str:
    label: str = row["label"]
    return label.split(":", 1)[0] if ":" in label else label


def fit(text: str, width: float, char_w: float = CHAR_W) -> str:
    """``text`` cut to ``width`` px with an ellipsis; '' when not even three characters fit."""
    n = int(width // char_w)
    if n >= len(text):
        return text
    return text[: n - 1] + "…" if n >= 3 else ""


@dataclass
class Pmi:
    step: int  # the step that overflowed (1-based)
    mask: int
    mode: str
    route: str
    delivered: int | None = None  # the step that delivered it
    handler: int | None = None  # the guest PMI handler's first step, when KVM injected it


def find_pmis(rows: Sequence[dict[str, Any]]) -> list[Pmi]:
    """Every PMI the trace raises, with the step that delivers it (hw entries "overflow ..." and "PMI -> ...")."""
    out: list[Pmi] = []
    for row in rows:
        mask, mode = 0, ""
        for h in row["hw"]:
            m = _OVERFLOW.match(h)
            if m:
                mask, mode = int(m.group(1), 0), m.group(2)
                continue
            m = _PMI.match(h)
            if m:
                out.append(Pmi(row["step"], mask, mode, m.group(1)))
    for p in out:
        if p.route == "NMI":
            p.delivered = _next(rows, p.step, _nmi_delivery)
        elif p.route.startswith("vector "):
            p.delivered = _next(rows, p.step, _irq_delivery(p.route.split()[1]))
            if p.delivered is not None:
                p.handler = _next(rows, p.delivered, _handler_start(rows))
    return out


def _nmi_delivery(r: dict[str, Any]) -> bool:
    return str(r["text"]).startswith("NMI delivered")


def _irq_delivery(vector: str) -> Callable[[dict[str, Any]], bool]:
    def pred(r: dict[str, Any]) -> bool:
        text = str(r["text"])
        return text.startswith("VM-exit: external interrupt") or text.startswith(f"interrupt {vector}")

    return pred


def _handler_start(rows: Sequence[dict[str, Any]]) -> Callable[[dict[str, Any]], bool]:
    """The first step of the guest's PMI handler (its context begins)."""

    def pred(r: dict[str, Any]) -> bool:
        return bool(r["context"] == "guest PMI") and (r["step"] < 2 or rows[r["step"] - 2]["context"] != "guest PMI")

    return pred


def _next(rows: Sequence[dict[str, Any]], after: int, pred: Callable[[dict[str, Any]], bool]) -> int | None:
    for r in rows[after:]:
        if pred(r):
            return int(r["step"])
    return None


def named_slots(view: TraceView, known: Sequence[str]) -> list[str]:
    """Kernel slots the violation message names (``guest_lvtpc_loaded=1`` -> perf.guest_lvtpc_loaded): lanes too."""
    if view.violation is None:
        return []
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", view.violation.message))
    out = []
    for name in known:
        short = name.rsplit(".", 1)[-1]
        if "." in name and (name in words or (len(short) >= 6 and short in words)):
            out.append(name)
    return out


def counter_slot(bit: int) -> str:
    return f"PMC{bit}" if bit < 32 else f"FIXED_CTR{bit - 32}"


def register_lanes(view: TraceView, known: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """PERF_GLOBAL_CTRL, LVTPC, GLOBAL_STATUS, each counter (with its event select), then ``extra``."""
    changed = set(view.slots())
    gp = sorted((n for n in known if re.fullmatch(r"PMC\d+", n)), key=lambda n: int(n[3:]))
    fixed = sorted((n for n in known if re.fullmatch(r"FIXED_CTR\d+", n)), key=lambda n: int(n[9:]))
    lanes = ["GLOBAL_CTRL", "LVTPC", "GLOBAL_STATUS"]
    for n in gp:
        lanes.append(n)
        if f"EVTSEL{n[3:]}" in known:
            lanes.append(f"EVTSEL{n[3:]}")
    lanes += fixed
    if "FIXED_CTR_CTRL" in changed:
        lanes.append("FIXED_CTR_CTRL")
    lanes += [n for n in extra if n not in lanes]
    return lanes


class _Svg:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, s: str) -> None:
        self.parts.append(s)

    def text(self) -> str:
        return "\n".join(self.parts)


def _tip(lines: Sequence[str]) -> str:
    return esc("\n".join(lines))


class _Timeline:
    """Geometry and drawing of one timeline: one column per step of the window, then the end column."""

    def __init__(
        self,
        view: TraceView,
        fmt: Fmt,
        initial: dict[str, int] | None,
        known: Sequence[str] | None,
        last: int,
        extra_lanes: Sequence[str],
    ) -> None:
        self.view, self.fmt = view, fmt
        self.start, self.rows = view.window(last)
        self.n = len(self.rows)
        self.states = list(view.states(initial))  # states[k]: before global step k + 1
        known_slots = list(known) if known else view.slots()
        for name in extra_lanes:
            if name not in known_slots:
                raise VpmuError(f"--lane {name}: the trace has no slot {name!r}; slots: {', '.join(known_slots)}")
        self.cw = column_width(self.n)
        self.ncols = self.n + 1
        self.contexts = [*CONTEXTS, *sorted({r["context"] for r in view.rows} - set(CONTEXTS))]
        self.lanes = register_lanes(view, known_slots, [*extra_lanes, *named_slots(view, known_slots)])
        longest = min(MAX_LABEL, max([len(short_label(r)) for r in self.rows] + [4]))
        self.label_h = int(longest * CHAR_W * math.sin(math.radians(LABEL_ANGLE))) + 16
        self.y_axis = MARK_H if view.violation is not None else 6
        self.y_labels = self.y_axis + AXIS_H
        self.y_mode = self.y_labels + self.label_h
        y_ctx0 = self.y_mode + MODE_H + 6
        self.ctx_y = {c: y_ctx0 + i * CTX_H for i, c in enumerate(self.contexts)}
        self.y_reg0 = y_ctx0 + len(self.contexts) * CTX_H + GAP
        self.reg_y = {name: self.y_reg0 + i * REG_H for i, name in enumerate(self.lanes)}
        self.height = self.y_reg0 + len(self.lanes) * REG_H + 8
        self.width = max(MIN_W, int(self.right(self.n)) + 16)
        v = view.violation
        self.violation = v if v is not None and self.shown(v.step) else None

    # -- geometry ----------------------------------------------------------------------------------
    def left(self, c: int) -> float:
        """Left edge of window column ``c`` (``c == n``: the column of the state after the last step)."""
        return float(c * self.cw)

    def right(self, c: int) -> float:
        return float((c + 1) * self.cw if c < self.n else self.n * self.cw + max(self.cw, END_W))

    def col_x(self, step: int) -> float:
        """Left edge of the column of a (1-based, global) step."""
        return self.left(step - 1 - self.start)

    def shown(self, step: int) -> bool:
        return self.start < step <= self.start + self.n

    def value(self, name: str, k: int) -> int | None:
        """The value of a slot before global step ``k + 1``; None if the trace does not know it."""
        return self.states[k].get(name)

    def guest_mode(self, k: int) -> bool:
        """Guest mode before global step ``k + 1``: from the MODE slot if known, else from the contexts."""
        v = self.value("MODE", k)
        if v is not None:
            return bool(v)
        rows = self.view.rows
        row = rows[k] if k < len(rows) else rows[-1] if rows else None
        return row is not None and row["context"] in ("guest", "guest PMI")

    # -- drawing -----------------------------------------------------------------------------------
    def names_svg(self) -> str:
        s = _Svg()
        s.add(f'<svg id="lane-names" width="{NAMES_W}" height="{self.height}" role="img" aria-label="lanes">')
        s.add(f'<text class="nm dim" x="{NAMES_W - 10}" y="{self.y_axis + 13}" text-anchor="end">step</text>')
        s.add(f'<text class="nm dim" x="{NAMES_W - 10}" y="{self.y_mode + 13}" text-anchor="end">CPU mode</text>')
        for c in self.contexts:
            y = self.ctx_y[c]
            s.add(
                f'<g class="lane-name" data-context="{esc(c)}"><rect x="8" y="{y + 9}" width="12" height="12" '
                f'rx="3" fill="{CTX_COLOR.get(c, OTHER_COLOR)}"/>'
                f'<text class="nm ctx" x="{NAMES_W - 10}" y="{y + 19}" text-anchor="end">{esc(c)}</text></g>'
            )
        ysep = self.y_reg0 - GAP / 2
        s.add(f'<line class="sep" x1="0" x2="{NAMES_W}" y1="{ysep}" y2="{ysep}"/>')
        for name in self.lanes:
            s.add(
                f'<text class="nm reg" x="{NAMES_W - 10}" y="{self.reg_y[name] + 16}" text-anchor="end">'
                f"{esc(REG_TITLE.get(name, name))}</text>"
            )
        s.add("</svg>")
        return s.text()

    def timeline_svg(self) -> str:
        s = _Svg()
        s.add(
            f'<svg id="timeline" width="{self.width}" height="{self.height}" '
            f'viewBox="0 0 {self.width} {self.height}" role="img" aria-label="timeline of {esc(self.view.title)}">'
        )
        s.add(DEFS)
        for i, c in enumerate(self.contexts):
            if i % 2 == 0:
                s.add(f'<rect class="zebra" x="0" y="{self.ctx_y[c]}" width="{self.width}" height="{CTX_H}"/>')
        for i, name in enumerate(self.lanes):
            if i % 2 == 0:
                s.add(f'<rect class="zebra" x="0" y="{self.reg_y[name]}" width="{self.width}" height="{REG_H}"/>')
        self._mode(s)
        h = self.height - self.y_axis
        s.add(f'<rect id="hovercol" class="hovercol" x="-100" y="{self.y_axis}" width="{self.cw}" height="{h}"/>')
        s.add(f'<rect id="selcol" class="selcol" x="-100" y="{self.y_axis}" width="{self.cw}" height="{h}"/>')
        self._axis(s)
        self._contexts(s)
        for name in self.lanes:
            self._register(s, name)
        for idx, p in enumerate(find_pmis(self.view.rows)):
            if self.shown(p.step):
                self._pmi(s, idx, p)
        self._violation(s)
        s.add("</svg>")
        return s.text()

    def _mode(self, s: _Svg) -> None:
        """The CPU mode strip, and guest mode shaded across every lane (VM-entry to VM-exit)."""
        mode = [self.guest_mode(self.start + c) for c in range(self.ncols)]
        y, c = self.y_mode, 0
        while c < self.ncols:
            e = c
            while e + 1 < self.ncols and mode[e + 1] == mode[c]:
                e += 1
            x0, x1 = self.left(c), self.right(e)
            word = "guest" if mode[c] else "host"
            s.add(f'<rect class="mode {word}" x="{x0 + 1}" y="{y + 2}" width="{x1 - x0 - 2}" height="{MODE_H - 4}"/>')
            s.add(f'<text class="mode-t {word}" x="{x0 + 5}" y="{y + 13}">{esc(fit(word, x1 - x0 - 6))}</text>')
            if mode[c]:
                entry = self.start + c  # the step at whose end the CPU entered guest mode (0: from the start)
                exit_ = self.start + e + 1 if e + 1 < self.ncols else None
                tip = [
                    "guest mode (VMX non-root / SVM guest)",
                    f"VM-entry: step {entry}" if entry else "in guest mode from the start",
                    f"VM-exit: step {exit_}" if exit_ else "still in guest mode at the end",
                ]
                ys = y + MODE_H  # below the strip, which keeps its colour
                s.add(
                    f'<rect class="guest-shade" x="{x0}" y="{ys}" width="{x1 - x0}" height="{self.height - ys}" '
                    f'data-tip="{_tip(tip)}"/>'
                )
                if c > 0:
                    s.add(f'<line class="vm-boundary vm-entry" x1="{x0}" x2="{x0}" y1="{y}" y2="{self.height}"/>')
                if e + 1 < self.ncols:
                    s.add(f'<line class="vm-boundary vm-exit" x1="{x1}" x2="{x1}" y1="{y}" y2="{self.height}"/>')
            c = e + 1

    def _axis(self, s: _Svg) -> None:
        """Step numbers, and each step's label rotated above its column."""
        cw, ya = self.cw, self.y_axis
        every = 1 if cw >= 26 else 5
        for i, row in enumerate(self.rows):
            xm = i * cw + cw / 2
            st = row["step"]
            if every == 1 or st % every == 0 or i == 0:
                s.add(f'<text class="ax" x="{xm}" y="{ya + 13}" text-anchor="middle">{st}</text>')
            else:
                s.add(f'<line class="tick" x1="{xm}" x2="{xm}" y1="{ya + 8}" y2="{ya + 13}"/>')
            lx, ly = xm + 4, self.y_labels + self.label_h - 4
            ev = "" if ":" in row["label"] else " ev"
            s.add(
                f'<text class="lbl{ev}" data-step="{st}" x="{lx}" y="{ly}" '
                f'fill="{CTX_COLOR.get(row["context"], OTHER_COLOR)}" transform="rotate(-{LABEL_ANGLE} {lx} {ly})">'
                f"{esc(fit(short_label(row), MAX_LABEL * CHAR_W))}</text>"
            )
        if self.n:
            xm = (self.left(self.n) + self.right(self.n)) / 2
            s.add(f'<text class="ax dim" x="{xm}" y="{ya + 13}" text-anchor="middle">end</text>')

    def _contexts(self, s: _Svg) -> None:
        """Context lanes: consecutive steps of one function as one labelled run, each step a block in it."""
        rows, cw, i = self.rows, self.cw, 0
        while i < self.n:
            j = i
            event = ":" not in rows[i]["label"]
            while (
                not event
                and j + 1 < self.n
                and rows[j + 1]["context"] == rows[i]["context"]
                and function_of(rows[j + 1]) == function_of(rows[i])
            ):
                j += 1
            row = rows[i]
            y = self.ctx_y[row["context"]]
            color = CTX_COLOR.get(row["context"], OTHER_COLOR)
            x0, x1 = i * cw, (j + 1) * cw
            fn = function_of(row)
            s.add(
                f'<g class="run{" event" if event else ""}" data-function="{esc(fn)}">'
                f'<rect class="run-box" x="{x0 + 1}" y="{y + 3}" width="{x1 - x0 - 2}" height="{CTX_H - 6}" rx="4" '
                f'fill="{color}" stroke="{color}"/>'
            )
            name = fit(short_label(row) if event else fn, x1 - x0 - 8, 6.2)
            if name:
                s.add(f'<text class="run-t{" ev" if event else ""}" x="{x0 + 5}" y="{y + 19}">{esc(name)}</text>')
            for k in range(i, j + 1):
                st = rows[k]["step"]
                s.add(
                    f'<rect class="blk" id="blk-{st}" data-step="{st}" x="{k * cw + 1}" y="{y + 3}" '
                    f'width="{cw - 2}" height="{CTX_H - 6}" rx="3"/>'
                )
            s.add("</g>")
            i = j + 1

    def _register(self, s: _Svg, name: str) -> None:
        """A register lane: its value between changes (a transition at the end of the changing step)."""
        y = self.reg_y[name]
        title = REG_TITLE.get(name, name)
        vals = [self.value(name, self.start + c) for c in range(self.ncols)]
        counter = re.fullmatch(r"PMC\d+|FIXED_CTR\d+", name) is not None
        c = 0
        while c < self.ncols:
            e = c
            while e + 1 < self.ncols and vals[e + 1] == vals[c]:
                e += 1
            run = _counting_run(vals, c) if counter else c
            if run >= c + 2:  # a counter counting at every step: one segment, not a string of tiny ones
                self._counting(s, name, vals, c, run, y)
                c = run + 1
                continue
            x0, x1 = self.left(c), self.right(e)
            v = vals[c]
            first, lastc = self.start + c + 1, self.start + e + 1
            if e == self.ncols - 1:
                span = f"from step {first} to the end" if c < e else "after the last step"
            else:
                span = f"before step {first}" if c == e else f"steps {first}..{lastc}"
            if v is None:
                tip = _tip([f"{title}: not changed in this trace (its value is not recorded)"])
                s.add(
                    f'<rect class="seg unknown" x="{x0 + 1}" y="{y + 4}" width="{x1 - x0 - 2}" '
                    f'height="{REG_H - 8}" data-tip="{tip}"/>'
                )
                label = fit("not changed", x1 - x0 - 8)
                s.add(f'<text class="seg-t dim" x="{x0 + 6}" y="{y + 16}">{esc(label)}</text>')
            else:
                shown = self.fmt(name, v)
                lines = [f"{title} = {shown}" + (f"  ({v:#x})" if name.endswith("LVTPC") else ""), span]
                sl = 3 if x1 - x0 > 8 else 0
                pts = (
                    f"{x0 + sl},{y + 4} {x1 - sl},{y + 4} {x1},{y + REG_H / 2} {x1 - sl},{y + REG_H - 4} "
                    f"{x0 + sl},{y + REG_H - 4} {x0},{y + REG_H / 2}"
                )
                s.add(
                    f'<polygon class="seg {_seg_class(name, v)}" points="{pts}" data-slot="{esc(name)}" '
                    f'data-tip="{_tip(lines)}"/>'
                )
                label = fit(shown, x1 - x0 - 8)
                if label:
                    s.add(f'<text class="seg-t" x="{x0 + 6}" y="{y + 16}">{esc(label)}</text>')
            c = e + 1

    def _counting(self, s: _Svg, name: str, vals: Sequence[int | None], c: int, e: int, y: int) -> None:
        a, b = vals[c], vals[e]
        assert a is not None and b is not None
        x0, x1 = self.left(c), self.right(e)
        tip = _tip(
            [
                f"{name} counting: {self.fmt(name, a)} → {self.fmt(name, b)}",
                f"steps {self.start + c + 1}..{self.start + e + 1}",
            ]
        )
        s.add(
            f'<rect class="seg counting" x="{x0 + 1}" y="{y + 4}" width="{x1 - x0 - 2}" height="{REG_H - 8}" rx="3" '
            f'data-slot="{esc(name)}" data-tip="{tip}"/>'
        )
        label = fit(f"{self.fmt(name, a)}→{self.fmt(name, b)} counting", x1 - x0 - 8)
        if label:
            s.add(f'<text class="seg-t" x="{x0 + 6}" y="{y + 16}">{esc(label)}</text>')

    def _pmi(self, s: _Svg, idx: int, p: Pmi) -> None:
        """An arrow from the overflow (on the counter's lane) to the PMI's delivery, and on to the guest handler."""
        rows, cw = self.view.rows, self.cw
        xs = self.col_x(p.step) + cw
        bits = [b for b in range(64) if p.mask >> b & 1]
        slot = next((counter_slot(b) for b in bits if counter_slot(b) in self.reg_y), None)
        row = rows[p.step - 1]
        ys: float = self.reg_y[slot] + REG_H / 2 if slot else self.ctx_y[row["context"]] + CTX_H / 2
        ctr = ", ".join(counter_slot(b) for b in bits) or "a counter"
        route = p.route.replace("vector ", "")
        tip = [f"step {p.step}: {ctr} overflowed in {p.mode} mode; PMI -> {p.route}"]
        delivered = p.delivered if p.delivered is not None and self.shown(p.delivered) else None
        s.add(f'<g class="pmi" id="pmi-{idx}" data-from="{p.step}" data-to="{delivered or ""}">')
        if delivered is not None:
            d = rows[delivered - 1]
            xe = self.col_x(delivered) + cw / 2
            yc = self.ctx_y[d["context"]]
            ye: float = yc + (CTX_H - 3 if ys > yc else 3)
            tip.append(f"delivered at step {delivered}: {d['text']}")
            s.add(_arrow("pmi-arrow", xs, ys, xe, ye, "arrowhead", tip))
            s.add(f'<text class="pmi-t" x="{max(xs, xe) + 8}" y="{(ys + ye) / 2 + 4}">PMI → {esc(route)}</text>')
            if p.handler is not None and self.shown(p.handler):
                h = rows[p.handler - 1]
                xh = self.col_x(p.handler) + cw / 2
                itip = [f"KVM injects the PMI: the guest's handler starts at step {p.handler}", h["label"]]
                yd, yh = yc + 3, self.ctx_y[h["context"]] + 3
                s.add(_arrow("inject-arrow", xe, yd, xh, yh, "arrowhead-inj", itip, bend=-18))
        elif "dropped" in p.route:
            s.add(f'<text class="pmi-t dropped" x="{xs + 6}" y="{ys - 5}">PMI dropped (LVTPC masked)</text>')
        else:
            xe = self.right(self.n) - 14
            ye = self.ctx_y[row["context"]] + CTX_H / 2
            tip.append("not delivered before the trace ends (pending)")
            s.add(_arrow("pmi-arrow pending", xs, ys, xe, ye, "arrowhead", tip))
            s.add(f'<text class="pmi-t" x="{xe + 4}" y="{ye - 8}" text-anchor="end">PMI → {esc(route)} pending</text>')
        s.add(f'<circle class="overflow" cx="{xs}" cy="{ys}" r="4.5" data-tip="{_tip(tip)}"/>')  # on top
        s.add("</g>")

    def _violation(self, s: _Svg) -> None:
        """The violated property at its step: a line after the step, the block outlined, property and message."""
        v = self.violation
        if v is None:
            return
        cw = self.cw
        xv = self.col_x(v.step) + cw
        yb = self.ctx_y[self.view.rows[v.step - 1]["context"]]
        s.add(f'<g id="violation-marker" class="violation" data-step="{v.step}">')
        s.add(f'<line class="viol-line" x1="{xv}" x2="{xv}" y1="4" y2="{self.height}"/>')
        s.add(
            f'<rect class="viol-blk" x="{self.col_x(v.step) + 1}" y="{yb + 2}" width="{cw - 2}" '
            f'height="{CTX_H - 4}" rx="4"/>'
        )
        room_left, room_right = xv - 6, self.width - xv - 6
        end = room_left > room_right
        room = max(room_left, room_right)
        xt, anchor = (xv - 7, "end") if end else (xv + 7, "start")
        tip = _tip([f"violated: {v.prop}", v.message])
        head = fit(f"✕ violated: {v.prop} (step {v.step})", room, 7.4)
        s.add(f'<text class="viol-t" x="{xt}" y="14" text-anchor="{anchor}" data-tip="{tip}">{esc(head)}</text>')
        for k, line in enumerate(_wrap(v.message, room, 6.3, 2)):
            s.add(
                f'<text class="viol-m" x="{xt}" y="{28 + 13 * k}" text-anchor="{anchor}" data-tip="{tip}">'
                f"{esc(line)}</text>"
            )
        s.add("</g>")


DEFS = (
    "<defs>"
    '<marker id="arrowhead" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
    'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#e8590c"/></marker>'
    '<marker id="arrowhead-inj" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
    'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#8a4fd0"/></marker>'
    '<pattern id="unknown" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
    '<rect width="6" height="6" fill="#f3f4f6"/><line x1="0" y1="0" x2="0" y2="6" stroke="#d1d5db" '
    'stroke-width="2"/></pattern>'
    '<linearGradient id="counting" x1="0" x2="1" y1="0" y2="0"><stop offset="0" stop-color="#eff5ff"/>'
    '<stop offset="1" stop-color="#bcd3fb"/></linearGradient>'
    "</defs>"
)


def render(
    view: TraceView,
    fmt: Fmt | None = None,
    initial: dict[str, int] | None = None,
    known: Sequence[str] | None = None,
    last: int = 0,
    extra_lanes: Sequence[str] = (),
) -> str:
    """The HTML page of a trace. ``initial``/``known``: the model's initial values and slot names, if known."""
    fmt = fmt or formatter(None)
    t = _Timeline(view, fmt, initial, known, last, extra_lanes)
    data = {
        "steps": [_step_data(r, fmt) for r in t.rows],
        "cw": t.cw,
        "start": t.start,
        "violation": t.violation.step if t.violation else None,
        "colors": CTX_COLOR,
    }
    return _page(view, t.names_svg(), t.timeline_svg(), t.rows, fmt, data, t.start)


def _wrap(text: str, width: float, char_w: float, lines: int) -> list[str]:
    """``text`` in at most ``lines`` lines of ``width`` px, the last one cut with an ellipsis."""
    n = max(8, int(width // char_w))
    words, out, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > n:
            out.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}" if cur else w
    out.append(cur)
    if len(out) > lines:
        out = out[:lines]
        out[-1] = out[-1][: n - 1] + "…"
    return [fit(line, n * char_w, char_w) for line in out]


def _counting_run(vals: Sequence[int | None], c: int) -> int:
    """The last column of a run from ``c`` in which the value grows a little at every column."""
    e = c
    while e + 1 < len(vals):
        a, b = vals[e], vals[e + 1]
        if a is None or b is None or not 0 < b - a <= 64:
            break
        e += 1
    return e


def _seg_class(name: str, v: int) -> str:
    if name.endswith("LVTPC"):
        if v & 0x10000:
            return "masked"
        return "nmi" if v & 0x700 == 0x400 else "fixed"
    if name == "GLOBAL_STATUS":
        return "hot" if v else "zero"
    return "zero" if v == 0 else "val"


def _arrow(
    cls: str, xs: float, ys: float, xe: float, ye: float, marker: str, tip: Sequence[str], bend: float = 0
) -> str:
    k = max(24.0, abs(xe - xs) / 2)
    k2 = (ys - ye) / 2
    if bend:
        d = f"M{xs:.1f},{ys:.1f} C{xs:.1f},{ys + bend:.1f} {xe:.1f},{ye + bend:.1f} {xe:.1f},{ye:.1f}"
    else:
        d = f"M{xs:.1f},{ys:.1f} C{xs + k:.1f},{ys:.1f} {xe:.1f},{ye + k2:.1f} {xe:.1f},{ye:.1f}"
    return f'<path class="{cls}" d="{d}" marker-end="url(#{marker})" data-tip="{_tip(tip)}"/>'


def _step_data(row: dict[str, Any], fmt: Fmt) -> dict[str, Any]:
    return {
        "s": row["step"],
        "c": row["context"],
        "l": row["label"],
        "t": row["text"],
        "ch": [[n, fmt(n, old), fmt(n, new)] for n, (old, new) in row["changes"].items()],
        "hw": row["hw"],
    }


def _changes_html(row: dict[str, Any], fmt: Fmt) -> str:
    parts = []
    for n, (old, new) in row["changes"].items():
        parts.append(
            f'<span class="chg"><b>{esc(n)}</b> {esc(fmt(n, old))}<span class="arr">→</span>{esc(fmt(n, new))}</span>'
        )
    return " ".join(parts) or '<span class="dim">–</span>'


def _page(
    view: TraceView,
    names_svg: str,
    timeline_svg: str,
    rows: Sequence[dict[str, Any]],
    fmt: Fmt,
    data: dict[str, Any],
    start: int,
) -> str:
    v = view.violation
    what = "counterexample" if v else "trace"
    head = f"{view.title}: {what} ({len(view.rows)} steps)"
    origin = esc(view.source) if view.source else "vpmu"
    if view.result_index is not None:
        origin += f", results[{view.result_index}]"
    viol = ""
    if v is not None:
        viol = (
            '<section class="vbox" id="violation">'
            f'<div><span class="vtag">violated</span> <b>{esc(v.prop)}</b> — {esc(v.description)}</div>'
            f'<div class="dim">source: {esc(v.source)}</div>'
            f'<div>at step <a href="#row-{v.step}" data-goto="{v.step}">{v.step}</a>: '
            f"<code>{esc(v.message)}</code></div>"
            "</section>"
        )
    window = (
        f'<p class="dim">showing the last {len(rows)} of {len(view.rows)} steps '
        f"(steps {start + 1}..{len(view.rows)})</p>"
        if start
        else ""
    )
    legend = "".join(f'<span class="lg"><i style="background:{CTX_COLOR[c]}"></i>{esc(c)}</span>' for c in CONTEXTS) + (
        '<span class="lg"><i class="lg-guest"></i>guest mode (VM-entry → VM-exit)</span>'
        '<span class="lg"><i class="lg-arrow"></i>PMI: overflow → delivery</span>'
        '<span class="lg"><i class="lg-inj"></i>KVM injects the PMI into the guest</span>'
        '<span class="lg"><i class="lg-viol"></i>violation</span>'
    )
    trs = []
    for r in rows:
        color = CTX_COLOR.get(r["context"], OTHER_COLOR)
        hw = "; ".join(r["hw"])
        trs.append(
            f'<tr id="row-{r["step"]}" data-step="{r["step"]}"'
            f"{' class=viol' if v is not None and r['step'] == v.step else ''}>"
            f'<td class="n">{r["step"]}</td>'
            f'<td class="ctx"><i style="background:{color}"></i>{esc(r["context"])}</td>'
            f'<td class="st"><div class="lb">{esc(r["label"])}</div><code>{esc(r["text"])}</code></td>'
            f'<td class="ch">{_changes_html(r, fmt)}</td>'
            f'<td class="hw">{esc(hw) if hw else "<span class=dim>–</span>"}</td></tr>'
        )
    # no "<" in the blob: the script element cannot end early or start a comment
    blob = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="vpmu {esc(__version__)}">
<title>{esc(head)}</title>
<style>{CSS}</style>
</head>
<body>
<header>
<h1>{esc(head)}</h1>
<p class="dim">design <b>{esc(view.design)}</b> · world <b>{esc(view.world)}</b>{
        f" · vendor <b>{esc(view.vendor)}</b>" if view.vendor else ""
    } · from {origin} · vpmu {esc(__version__)}</p>
</header>
{viol}
<div class="legend">{legend}</div>
{window}
<section class="tl" id="tl">
<div class="names">{names_svg}</div>
<div class="scroll" id="tl-scroll">{timeline_svg}</div>
</section>
<section class="detail" id="detail" aria-live="polite"></section>
<p class="dim keys">Hover a block for the full step · click a block or a row to select it ·
<kbd>↑</kbd>/<kbd>↓</kbd>, <kbd>←</kbd>/<kbd>→</kbd>, <kbd>j</kbd>/<kbd>k</kbd> move the selection ·
<kbd>Home</kbd>/<kbd>End</kbd> first/last step.</p>
<section class="steps" id="steps-box" tabindex="0" aria-label="steps">
<table id="steps">
<thead><tr><th>#</th><th>context</th><th>step</th><th>changed</th><th>hardware</th></tr></thead>
<tbody>
{chr(10).join(trs)}
</tbody>
</table>
</section>
<div id="tip" class="tip" role="tooltip" hidden></div>
<script type="application/json" id="vpmu-data">{blob}</script>
<script>{JS}</script>
</body>
</html>
"""


CSS = """
:root { --mono: "DejaVu Sans Mono", ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
  --sans: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", "Liberation Sans", sans-serif; }
* { box-sizing: border-box; }
body { font-family: var(--sans); font-size: 14px; color: #1f2328; background: #fff; margin: 0;
  padding: 16px 20px 40px; }
h1 { font-size: 19px; margin: 0 0 2px; }
p { margin: 4px 0; }
code, kbd { font-family: var(--mono); font-size: 12px; }
kbd { border: 1px solid #c8ccd1; border-bottom-width: 2px; border-radius: 4px; padding: 0 4px; background: #f6f8fa; }
.dim { color: #6b7280; }
.vbox { border: 1px solid #f1aeb5; border-left: 5px solid #d2453d; background: #fff5f5; border-radius: 6px;
  padding: 8px 12px; margin: 10px 0; line-height: 1.5; }
.vtag { background: #d2453d; color: #fff; border-radius: 4px; padding: 1px 6px; font-weight: 600; font-size: 12px; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 16px; margin: 8px 0 10px; font-size: 12.5px; color: #374151; }
.lg i { display: inline-block; width: 12px; height: 12px; border-radius: 3px; margin-right: 5px; vertical-align: -1px; }
.lg .lg-guest { background: rgba(35,148,90,.16); border: 1px dashed #23945a; }
.lg .lg-arrow { background: none; border-top: 2.5px solid #e8590c; height: 0; width: 22px; vertical-align: 3px; }
.lg .lg-inj { background: none; border-top: 2.5px dashed #8a4fd0; height: 0; width: 22px; vertical-align: 3px; }
.lg .lg-viol { background: none; border-left: 3px solid #d2453d; width: 3px; }
.tl { display: flex; border: 1px solid #d0d7de; border-radius: 8px; overflow: hidden; background: #fff; }
.names { flex: none; background: #f8fafc; border-right: 1px solid #d0d7de; }
.scroll { overflow-x: auto; overflow-y: hidden; flex: 1; }
svg { display: block; }
svg text { font-family: var(--mono); font-size: 11px; }
.nm { font-family: var(--sans); font-size: 12.5px; fill: #1f2328; }
.nm.ctx { font-weight: 600; }
.nm.reg { font-family: var(--mono); font-size: 11.5px; }
.nm.dim, text.dim { fill: #6b7280; }
.sep { stroke: #d0d7de; }
.zebra { fill: #f6f8fa; }
.ax { fill: #57606a; font-size: 10.5px; }
.tick { stroke: #afb8c1; }
.lbl { font-size: 11px; }
.lbl.ev { font-weight: bold; }
.lbl.sel { text-decoration: underline; font-weight: bold; }
.mode.guest { fill: #1d7f4d; }
.mode.host { fill: #e5e7eb; }
.mode-t { fill: #fff; font-family: var(--sans); font-size: 10.5px; font-weight: 600; }
.mode-t.host { fill: #6b7280; font-weight: normal; }
.guest-shade { fill: rgba(35,148,90,.09); }
.vm-boundary { stroke: #23945a; stroke-width: 1.2; stroke-dasharray: 4 3; }
.run-box { fill-opacity: .16; stroke-opacity: .9; stroke-width: 1; }
.run.event .run-box { fill-opacity: .9; }
.run-t { fill: #1f2328; font-size: 10.5px; pointer-events: none; }
.run-t.ev { fill: #fff; font-weight: bold; }
.blk { fill: transparent; stroke: rgba(255,255,255,.0); cursor: pointer; }
.blk:hover { fill: rgba(0,0,0,.12); }
.blk.sel { stroke: #111827; stroke-width: 2.2; fill: rgba(250,204,21,.35); }
.hovercol { fill: rgba(59,111,212,.06); pointer-events: none; }
.selcol { fill: rgba(250,204,21,.22); pointer-events: none; }
.seg { stroke-width: 1; }
.seg.val { fill: #dbeafe; stroke: #3b6fd4; }
.seg.zero { fill: #fff; stroke: #9ca3af; }
.seg.hot { fill: #ffedd5; stroke: #e8590c; }
.seg.nmi { fill: #fde2e1; stroke: #d2453d; }
.seg.fixed { fill: #ede4fb; stroke: #8a4fd0; }
.seg.masked { fill: #e5e7eb; stroke: #6b7280; stroke-dasharray: 3 2; }
.seg.unknown { fill: url(#unknown); stroke: #e5e7eb; }
.seg:hover { stroke-width: 2; }
.seg-t { fill: #1f2328; font-size: 10.5px; pointer-events: none; }
.overflow { fill: #e8590c; stroke: #fff; stroke-width: 1.5; }
.pmi-arrow { fill: none; stroke: #e8590c; stroke-width: 2.4; }
.pmi-arrow.pending { stroke-dasharray: 6 4; }
.pmi-arrow:hover, .inject-arrow:hover { stroke-width: 4; }
.inject-arrow { fill: none; stroke: #8a4fd0; stroke-width: 2; stroke-dasharray: 6 4; }
.pmi-t { fill: #c2410c; font-family: var(--sans); font-size: 11px; font-weight: 600; paint-order: stroke;
  stroke: #fff; stroke-width: 3px; pointer-events: none; }
.viol-line { stroke: #d2453d; stroke-width: 2.5; }
.viol-blk { fill: none; stroke: #d2453d; stroke-width: 2.5; pointer-events: none; }
.viol-t { fill: #b42318; font-family: var(--sans); font-size: 12px; font-weight: 700; }
.viol-m { fill: #7a271a; font-size: 11px; }
.seg.counting { fill: url(#counting); stroke: #3b6fd4; }
.detail { margin: 10px 0 6px; border: 1px solid #d0d7de; border-radius: 8px; padding: 8px 12px; min-height: 62px;
  background: #fbfcfd; line-height: 1.5; }
.detail .h { font-weight: 600; }
.detail .ctxdot, td.ctx i { display: inline-block; width: 10px; height: 10px; border-radius: 3px; margin-right: 5px; }
.keys { font-size: 12.5px; }
.steps { max-height: 46vh; overflow: auto; border: 1px solid #d0d7de; border-radius: 8px; outline: none; }
.steps:focus { box-shadow: 0 0 0 2px rgba(59,111,212,.35); }
table { border-collapse: collapse; width: 100%; font-size: 12.5px; }
thead th { position: sticky; top: 0; background: #f6f8fa; text-align: left; padding: 5px 8px;
  border-bottom: 1px solid #d0d7de; z-index: 1; }
td { padding: 4px 8px; border-bottom: 1px solid #eef0f2; vertical-align: top; }
td.n { text-align: right; color: #57606a; font-family: var(--mono); }
td.ctx { white-space: nowrap; }
td.st .lb { font-family: var(--mono); font-weight: 600; }
td.st code { color: #57606a; white-space: pre-wrap; word-break: break-word; }
td.ch, td.hw { font-family: var(--mono); font-size: 11.5px; }
td.hw { color: #57606a; }
.chg { display: inline-block; margin-right: 10px; white-space: nowrap; }
.chg .arr { color: #9ca3af; margin: 0 2px; }
tr { cursor: pointer; }
tr:hover td { background: #f6f8fa; }
tr.sel td { background: #fff7d6; }
tr.viol td.n { color: #d2453d; font-weight: 700; }
.tip { position: fixed; z-index: 10; max-width: 560px; background: #111827; color: #f9fafb; border-radius: 6px;
  padding: 7px 10px; font-size: 12px; line-height: 1.45; box-shadow: 0 4px 14px rgba(0,0,0,.25); pointer-events: none;
  white-space: pre-wrap; }
.tip .h { font-weight: 700; }
.tip code { color: #c7d2fe; }
.tip .chg b { color: #fde68a; }
"""

JS = r"""
(function () {
  'use strict';
  window.__vpmuErrors = window.__vpmuErrors || [];
  window.addEventListener('error', function (e) {
    window.__vpmuErrors.push(String(e.message));
    document.body.setAttribute('data-errors', window.__vpmuErrors.join(' | '));
  });
  var data = JSON.parse(document.getElementById('vpmu-data').textContent);
  var steps = data.steps, byStep = {};
  steps.forEach(function (s, i) { s.i = i; byStep[s.s] = s; });
  var tip = document.getElementById('tip');
  var detail = document.getElementById('detail');
  var scroller = document.getElementById('tl-scroll');
  var box = document.getElementById('steps-box');
  var selcol = document.getElementById('selcol');
  var hovercol = document.getElementById('hovercol');
  var COLORS = data.colors;
  var current = null;

  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) {
      return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c];
    });
  }
  function stepHtml(s) {
    var h = '<div class="h"><span class="ctxdot" style="background:' + (COLORS[s.c] || '#6b7280') + '"></span>#' +
      s.s + ' · ' + esc(s.c) + ' · ' + esc(s.l) + '</div><code>' + esc(s.t) + '</code>';
    if (s.ch.length) {
      h += '<div>' + s.ch.map(function (c) {
        return '<span class="chg"><b>' + esc(c[0]) + '</b> ' + esc(c[1]) + '<span class="arr">→</span>' +
          esc(c[2]) + '</span>';
      }).join(' ') + '</div>';
    } else {
      h += '<div class="dim">no register or kernel state changed</div>';
    }
    if (s.hw.length) h += '<div class="dim">[' + s.hw.map(esc).join('; ') + ']</div>';
    return h;
  }
  function colX(s) { return (s.s - 1 - data.start) * data.cw; }

  function select(n, scroll) {
    var s = byStep[n];
    if (!s) return;
    if (current !== null) {
      var old = document.querySelectorAll('.sel');
      for (var i = 0; i < old.length; i++) old[i].classList.remove('sel');
    }
    current = n;
    var row = document.getElementById('row-' + n);
    var blk = document.getElementById('blk-' + n);
    if (row) row.classList.add('sel');
    if (blk) blk.classList.add('sel');
    var lbl = document.querySelector('.lbl[data-step="' + n + '"]');
    if (lbl) lbl.classList.add('sel');
    selcol.setAttribute('x', colX(s));
    detail.innerHTML = stepHtml(s);
    document.body.setAttribute('data-selected', String(n));
    if (scroll) {
      var x = colX(s);
      if (x < scroller.scrollLeft + 40 || x > scroller.scrollLeft + scroller.clientWidth - 80) {
        scroller.scrollLeft = Math.max(0, x - scroller.clientWidth / 2);
      }
      if (row) {
        var top = row.offsetTop, head = box.querySelector('thead').offsetHeight;
        if (top - head < box.scrollTop) box.scrollTop = top - head;
        else if (top + row.offsetHeight > box.scrollTop + box.clientHeight) {
          box.scrollTop = top + row.offsetHeight - box.clientHeight;
        }
      }
    }
  }
  function move(delta) {
    var s = byStep[current];
    var i = s ? s.i + delta : 0;
    i = Math.max(0, Math.min(steps.length - 1, i));
    if (steps.length) select(steps[i].s, true);
  }

  function showTip(html, ev) {
    tip.innerHTML = html;
    tip.hidden = false;
    placeTip(ev);
  }
  function placeTip(ev) {
    var pad = 14, w = tip.offsetWidth, h = tip.offsetHeight;
    var x = ev.clientX + pad, y = ev.clientY + pad;
    if (x + w > window.innerWidth - 4) x = Math.max(4, ev.clientX - w - pad);
    if (y + h > window.innerHeight - 4) y = Math.max(4, ev.clientY - h - pad);
    tip.style.left = x + 'px';
    tip.style.top = y + 'px';
  }
  function hideTip() { tip.hidden = true; hovercol.setAttribute('x', -100); }

  var svg = document.getElementById('timeline');
  svg.addEventListener('mouseover', function (ev) {
    var t = ev.target;
    var step = t.getAttribute && t.getAttribute('data-step');
    if (step && byStep[step]) {
      hovercol.setAttribute('x', colX(byStep[step]));
      showTip(stepHtml(byStep[step]), ev);
    } else if (t.getAttribute && t.getAttribute('data-tip')) {
      showTip(esc(t.getAttribute('data-tip')), ev);
    }
  });
  svg.addEventListener('mousemove', function (ev) { if (!tip.hidden) placeTip(ev); });
  svg.addEventListener('mouseout', hideTip);
  svg.addEventListener('click', function (ev) {
    var step = ev.target.getAttribute && ev.target.getAttribute('data-step');
    if (step && byStep[step]) select(Number(step), true);
  });
  document.getElementById('steps').addEventListener('click', function (ev) {
    var tr = ev.target.closest('tr[data-step]');
    if (tr) select(Number(tr.getAttribute('data-step')), true);
  });
  var links = document.querySelectorAll('[data-goto]');
  for (var i = 0; i < links.length; i++) {
    links[i].addEventListener('click', function (ev) {
      ev.preventDefault();
      select(Number(this.getAttribute('data-goto')), true);
    });
  }
  document.addEventListener('keydown', function (ev) {
    if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
    var k = ev.key;
    if (k === 'ArrowDown' || k === 'ArrowRight' || k === 'j') move(1);
    else if (k === 'ArrowUp' || k === 'ArrowLeft' || k === 'k') move(-1);
    else if (k === 'PageDown') move(10);
    else if (k === 'PageUp') move(-10);
    else if (k === 'Home') move(-steps.length);
    else if (k === 'End') move(steps.length);
    else return;
    ev.preventDefault();
  });
  if (steps.length) select(data.violation !== null ? data.violation : steps[0].s, false);
  document.body.setAttribute('data-ready', '1');
})();
"""


#: Without --context, a longer trace is drawn from its last this many steps (a million steps would make a GB page).
MAX_STEPS = 5000


def window_for(view: TraceView, last: int | None) -> tuple[int, str]:
    """The --context to draw with (``None``: all, up to MAX_STEPS) and how the steps drawn are described."""
    n = len(view.rows)
    auto = last is None and n > MAX_STEPS
    if last is None:
        last = MAX_STEPS if auto else 0
    if not last or last >= n:
        return 0, f"{n} steps"
    return last, f"the last {last} of {n} steps" + ("; --context N draws another number" if auto else "")


def render_view(view: TraceView, last: int = 0, extra_lanes: Sequence[str] = ()) -> str:
    """The HTML page of a trace, with slot formats and initial values from its model when it is built in."""
    model = slot_model(view)
    return render(
        view,
        formatter(model),
        initial=model.initial if model else None,
        known=model.order if model and model.initial is not None else None,
        last=last,
        extra_lanes=extra_lanes,
    )


def write_html(doc: dict[str, Any], out: str | Path, where: str) -> str | None:
    """Write the timeline of ``doc`` (as the tool just built it) to ``out``.

    For a vpmu.check/1 document: the counterexample of the first violated result.
    Returns a one-line description, or None when there is nothing to draw (no violation).
    """
    if doc["schema"] == CHECK_SCHEMA and all(r["violation"] is None for r in doc["results"]):
        return None
    view = view_of(doc, where)  # validates: the tool's own output, so an error here is a bug
    last, drawn = window_for(view, None)
    try:
        Path(out).write_text(render_view(view, last), encoding="utf-8")
    except OSError as e:
        raise VpmuError(f"{out}: cannot write: {e.strerror or e}") from None
    return f"timeline of {view.title} ({drawn}) written to {out}"
