"""The HTML timeline (report/html.py): `vpmu trace render`, `check --html`, `simulate --html`.

These tests read the generated page with html.parser; tests/test_trace_browser.py
renders it in headless Chromium.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from vpmu.cli import main
from vpmu.report.html import find_pmis, short_label
from vpmu.report.schema import view_of


class Dom(HTMLParser):
    """Every element as (tag, attributes), and the text of the page."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.texts: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.texts.append(data)

    def find(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[dict[str, str]]:
        out = []
        for t, a in self.elements:
            if tag and t != tag:
                continue
            if cls and cls not in a.get("class", "").split():
                continue
            if all(a.get(k.replace("_", "-")) == v for k, v in attrs.items()):
                out.append(a)
        return out

    @property
    def text(self) -> str:
        return "".join(self.texts)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def check_json(capsys: pytest.CaptureFixture[str], tmp_path: Path, *argv: str) -> Path:
    _code, out, _ = run(capsys, "check", "--json", *argv)
    f = tmp_path / "check.json"
    f.write_text(out)
    return f


# --- check --html, simulate --html ------------------------------------------------------------------


def test_check_html_h1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_file = tmp_path / "h1.html"
    code, out, err = run(
        capsys, "check", "--design", "lvtpc-before-clear", "--vendor", "intel", "--html", str(out_file)
    )
    assert code == 1
    assert err == f"vpmu: timeline of lvtpc-before-clear on intel-default (10 steps) written to {out_file}\n"
    assert "lvtpc-before-clear on intel-default: counterexample (10 steps)" in out  # the table is still printed
    dom = Dom(out_file.read_text())
    assert [a["data-context"] for a in dom.find("g", "lane-name")] == ["host", "NMI", "IRQ", "guest", "guest PMI"]
    assert len(dom.find("rect", "blk")) == 10
    (marker,) = dom.find("g", "violation", id="violation-marker")
    assert marker["data-step"] == "10"
    assert "✕ violated: lvtpc-written-while-enabled (step 10)" in dom.text
    assert "perf_load_guest_lvtpc:write_lvtpc wrote LVTPC = Fixed|0xf5 while PERF_GLOBAL_CTRL = 0x100000001" in dom.text
    lanes = [t for t in dom.text.split() if t in ("PERF_GLOBAL_CTRL", "LVTPC", "GLOBAL_STATUS", "PMC0", "FIXED_CTR0")]
    assert {"PERF_GLOBAL_CTRL", "LVTPC", "GLOBAL_STATUS", "PMC0", "FIXED_CTR0"} <= set(lanes)
    # register values in hex, LVTPC decoded
    segs = {a["data-tip"].split("\n")[0] for a in dom.find(cls="seg") if a.get("data-slot")}
    assert {"PERF_GLOBAL_CTRL = 0x100000001", "PERF_GLOBAL_CTRL = 0x0", "LVTPC = NMI  (0x400)"} <= segs
    assert "LVTPC = Fixed|0xf5  (0xf5)" in segs
    assert not dom.find("path", "pmi-arrow")  # this trace raises no PMI


def test_check_html_with_json_keeps_stdout_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_file = tmp_path / "c.html"
    code, out, err = run(capsys, "check", "--vendor", "intel", "--json", "--html", str(out_file))
    assert code == 1
    assert json.loads(out)["schema"] == "vpmu.check/1"
    assert err == f"vpmu: timeline of upstream on intel-default (81 steps) written to {out_file}\n"
    dom = Dom(out_file.read_text())
    (g,) = dom.find("g", "pmi")
    assert (g["data-from"], g["data-to"]) == ("46", "47")  # PMC0 overflows at 46; the NMI is delivered at 47
    assert len(dom.find("path", "pmi-arrow")) == 1
    assert len(dom.find("circle", "overflow")) == 1
    # the kernel flag the violation message names gets a lane
    assert "perf.guest_lvtpc_loaded" in dom.text


def test_check_html_without_violation(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_file = tmp_path / "none.html"
    code, _, err = run(capsys, "check", "--vendor", "amd", "--max-states", "100", "--html", str(out_file))
    assert code == 3
    assert err == f"vpmu: no counterexample: {out_file} not written\n"
    assert not out_file.exists()


def test_simulate_html(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_file = tmp_path / "sim.html"
    code, out, _ = run(capsys, "simulate", "--vendor", "intel", "--exits", "every:3", "--html", str(out_file))
    assert code == 0
    n = int(out.split("upstream on intel-default: ")[1].split()[0])
    assert out.splitlines()[-1] == f"timeline of upstream on intel-default ({n} steps) written to {out_file}"
    dom = Dom(out_file.read_text())
    assert len(dom.find("rect", "blk")) == n
    assert not dom.find(id="violation-marker")
    assert dom.find("rect", "guest-shade")  # guest mode shaded
    assert dom.find("line", "vm-entry") and dom.find("line", "vm-exit")
    assert dom.find("path", "pmi-arrow") and dom.find("path", "inject-arrow")  # host NMI and guest PMI paths


# --- vpmu trace render ---------------------------------------------------------------------------


def test_render_is_self_contained(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = check_json(capsys, tmp_path, "--vendor", "intel")
    out_file = tmp_path / "c.html"
    code, out, _ = run(capsys, "trace", "render", str(f), "--html", str(out_file))
    assert code == 0 and out == f"timeline of upstream on intel-default (81 steps) written to {out_file}\n"
    page = out_file.read_text()
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    dom = Dom(page)
    assert not dom.find("link") and not dom.find("img") and not dom.find("iframe")
    assert all("src" not in a for _, a in dom.elements)
    scripts = dom.find("script")
    assert len(scripts) == 2 and scripts[0]["type"] == "application/json" and "src" not in scripts[1]
    blob = page.split('<script type="application/json" id="vpmu-data">')[1].split("</script>")[0]
    data = json.loads(blob)
    assert len(data["steps"]) == 81 and data["violation"] == 81
    step = data["steps"][65]
    assert step["l"] == "kvm_mediated_pmu_load:clear_global_ctrl"
    assert step["ch"] == [["GLOBAL_CTRL", "0x100000001", "0x0"]]
    assert len(dom.find("tr", data_step="81")) == 1 and "viol" in dom.find("tr", data_step="81")[0]["class"]


def test_render_options(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = check_json(capsys, tmp_path, "--world", "intel-default", "--world", "amd-default", "--max-states", "19000")
    out_file = tmp_path / "two.html"
    code, _, _ = run(
        capsys, "trace", "render", str(f), "--html", str(out_file), "--context", "12", "--lane", "RFLAGS.IF"
    )
    assert code == 0
    dom = Dom(out_file.read_text())
    assert len(dom.find("rect", "blk")) == 12 and len(dom.find("tr", data_step="70")) == 1
    assert not dom.find("tr", data_step="69")
    assert "showing the last 12 of 81 steps (steps 70..81)" in dom.text
    assert "RFLAGS.IF" in [a.strip() for a in dom.texts]
    code, _, err = run(capsys, "trace", "render", str(f), "--html", str(out_file), "--lane", "NOPE")
    assert code == 2 and err.startswith("vpmu: error: --lane NOPE: the trace has no slot 'NOPE'; slots: PMC0, ")
    code, _, err = run(capsys, "trace", "render", str(f), "--html", str(out_file), "--result", "1")
    assert code == 2 and "(upstream on amd-default) incomplete: it has no trace" in err


def test_render_escapes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = {
        "schema": "vpmu.trace/1",
        "design": "<b>d</b>",
        "world": "w",
        "contexts": ["host"],
        "steps": [
            {
                "step": 1,
                "context": "host",
                "label": "f:<script>alert(1)</script>",
                "text": "a & b </script>",
                "changes": {"LVTPC": [0x400, 0x100F5]},
                "hw": ["PMI -> dropped (LVTPC masked)"],
                "move": [0, 0],
            }
        ],
    }
    f = tmp_path / "t.json"
    f.write_text(json.dumps(doc))
    out_file = tmp_path / "t.html"
    assert run(capsys, "trace", "render", str(f), "--html", str(out_file))[0] == 0
    page = out_file.read_text()
    assert "<script>alert" not in page and "<b>d</b>" not in page
    assert page.count("</script>") == 2  # the data blob cannot close its script element early
    dom = Dom(page)
    assert "LVTPC = Fixed|0xf5|Masked  (0x100f5)" in {a.get("data-tip", "").split("\n")[0] for a in dom.find(cls="seg")}
    assert "PMI dropped (LVTPC masked)" in dom.text


# --- PMI detection ------------------------------------------------------------------------------


def rows_of(path: Path) -> list[dict[str, Any]]:
    return view_of(json.loads(path.read_text()), str(path)).rows


def test_find_pmis_routes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = check_json(capsys, tmp_path, "--vendor", "intel", "--property", "guest-pmi-accounting")
    pmis = find_pmis(rows_of(f))
    assert [(p.step, p.mask, p.mode, p.route, p.delivered) for p in pmis] == [
        (46, 1, "host", "NMI", 47),
        (82, 1, "host", "NMI", None),  # raised by the last step: pending when the trace ends
    ]
    sim = tmp_path / "sim.json"
    run(capsys, "simulate", "--vendor", "intel", "--exits", "every:3", "--trace", str(sim))
    rows = rows_of(sim)
    guest = [p for p in find_pmis(rows) if p.mode == "guest"]
    assert guest, "the simulation overflows a guest counter"
    p = guest[0]
    assert p.route == "vector 0xf5"
    assert p.delivered is not None and rows[p.delivered - 1]["text"] == "VM-exit: external interrupt"
    assert p.handler is not None and rows[p.handler - 1]["context"] == "guest PMI"
    assert rows[p.handler - 2]["context"] != "guest PMI"


def test_short_labels() -> None:
    def row(label: str, text: str) -> dict[str, Any]:
        return {"label": label, "text": text}

    assert short_label(row("kvm_mediated_pmu_load:clear_global_ctrl", "x")) == "clear_global_ctrl"
    assert short_label(row("NMI", "NMI delivered: perf_event_nmi_handler()")) == "NMI delivered"
    assert short_label(row("NMI", "an unrelated NMI arrives (NMI pending)")) == "unrelated NMI (pending)"
    assert short_label(row("VM-exit", "asynchronous VM-exit: preemption timer")) == "async exit: preemption timer"
    assert short_label(row("VM-exit", "VM-exit: external interrupt")) == "VM-exit: external interrupt"
    assert short_label(row("IRQ", "interrupt 0xf5: kvm_handle_guest_mediated_pmi()")) == "interrupt 0xf5"


def test_long_traces_are_windowed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --context a trace longer than MAX_STEPS is drawn from its last MAX_STEPS steps, and says so."""
    import vpmu.report.html as H

    monkeypatch.setattr(H, "MAX_STEPS", 20)
    trace, page = tmp_path / "sim.json", tmp_path / "sim.html"
    code, out, _ = run(capsys, "simulate", "--vendor", "intel", "--trace", str(trace), "--html", str(page))
    n = len(json.loads(trace.read_text())["steps"])
    assert n > 20
    assert out.splitlines()[-1] == (
        f"timeline of upstream on intel-default (the last 20 of {n} steps; --context N draws another number) "
        f"written to {page}"
    )
    assert len(Dom(page.read_text()).find("rect", "blk")) == 20
    code, out, _ = run(capsys, "trace", "render", str(trace), "--html", str(page), "--context", "0")
    assert code == 0 and out == f"timeline of upstream on intel-default ({n} steps) written to {page}\n"
    assert len(Dom(page.read_text()).find("rect", "blk")) == n
    code, out, _ = run(capsys, "trace", "render", str(trace), "--html", str(page), "--context", "5")
    assert out == f"timeline of upstream on intel-default (the last 5 of {n} steps) written to {page}\n"
