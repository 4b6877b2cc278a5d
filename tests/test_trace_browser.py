"""The HTML timeline in a real browser: headless Chromium from the distribution's packages.

.ci/run installs Debian's chromium and chromium-driver before the tests; the
tests themselves never install anything: without /usr/bin/chromium they are
skipped, and the reason says how to get it.

Each page is rendered twice: ``--dump-dom`` gives the DOM after the page's
script ran (lanes, blocks, the PMI arrow, the violation marker, the initial
selection), ``--screenshot`` a PNG kept under test-artifacts/ with the HTML. The
PNG is decoded here and must show the PMI arrow's and the violation line's
colours. A WebDriver session (chromedriver on localhost) then presses keys and
hovers a block.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from vpmu.cli import main

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
WINDOW = (1900, 1300)
ARROW_RGB = (0xE8, 0x59, 0x0C)  # .pmi-arrow stroke
VIOLATION_RGB = (0xD2, 0x45, 0x3D)  # .viol-line stroke
GUEST_RGB = (0x1D, 0x7F, 0x4D)  # the guest bars of the CPU mode strip (a colour used nowhere else)


def _missing() -> str | None:
    """Why the browser tests cannot run here, or None. The tests never install anything (that is
    .ci/run's job, which installs Debian's chromium and chromium-driver before the tests)."""
    if CHROMIUM.exists():
        return None
    return (
        f"no browser: {CHROMIUM} is missing; install Debian's chromium and chromium-driver "
        "(.ci/run does: apt-get install chromium chromium-driver)"
    )


@pytest.fixture(scope="session")
def chromium() -> Path:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    return CHROMIUM


def chrome(*args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="vpmu-chromium-") as profile:
        return subprocess.run(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


class Dom(HTMLParser):
    def __init__(self, page: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.texts: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.texts.append(data)

    def find(self, tag: str | None = None, cls: str | None = None) -> list[dict[str, str]]:
        return [
            a
            for t, a in self.elements
            if (tag is None or t == tag) and (cls is None or cls in a.get("class", "").split())
        ]

    def by_id(self, ident: str) -> dict[str, str]:
        (a,) = [a for _, a in self.elements if a.get("id") == ident]
        return a


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA, non-interlaced PNG (what Chromium writes): width, height, RGB rows."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            ihdr = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
    assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rgb = bytes(line) if bpp == 3 else bytes(v for i, v in enumerate(line) if i % 4 != 3)
        rows.append(rgb)
        prev = line
    return w, h, rows


def count_colour(rows: list[bytes], rgb: tuple[int, int, int]) -> int:
    """Pixels of exactly this colour (a fully covered pixel of a line or fill keeps its CSS colour)."""
    pat, n = bytes(rgb), 0
    for row in rows:
        i = row.find(pat)
        while i >= 0:
            if i % 3 == 0:
                n += 1
            i = row.find(pat, i + 1)
    return n


# --- the pages ---------------------------------------------------------------------------------------


#: name -> (vpmu command line, steps, violation step, PMI arrow (from, to) or None)
PAGES: dict[str, tuple[tuple[str, ...], int, int | None, tuple[int, int] | None]] = {
    # H1 ablation: LVTPC written while PERF_GLOBAL_CTRL is set; short, no PMI
    "h1-lvtpc-before-clear": (("check", "--design", "lvtpc-before-clear", "--vendor", "intel"), 10, 10, None),
    # H1 with perf's counter still running at the switch (S13): the host overflow right after
    # LVTPC = 0xF5 raises its PMI on the guest's vector (overflow at 24, the 0xF5 interrupt makes the
    # guest exit at 35) and KVM injects it into the guest
    "h1-host-pmi-to-guest": (
        ("check", "--design", "lvtpc-first-running", "--vendor", "intel", "--property", "guest-pmi-accounting"),
        62,
        62,
        (24, 35),
    ),
    # the default Intel counterexample: a host PMI (PMC0 overflows at 46, NMI delivered at 47), then F1
    "intel-default": (("check", "--vendor", "intel"), 81, 81, (46, 47)),
    # a simulated schedule: guest PMIs through 0xF5 and KVM's injection, guest mode shaded
    "simulate-intel": (("simulate", "--vendor", "intel", "--exits", "every:3"), 0, None, None),
}


def render_page(name: str) -> Path:
    argv = PAGES[name][0]
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / f"{name}.html"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main([*argv, "--html", str(out)])
    return out


@pytest.mark.parametrize("name", list(PAGES))
def test_page_in_chromium(chromium: Path, name: str) -> None:
    _argv, steps, violation, arrow = PAGES[name]
    page = render_page(name)
    url = page.resolve().as_uri()

    p = chrome("--dump-dom", url)
    assert p.returncode == 0, p.stderr[-2000:]
    dom = Dom(p.stdout)
    (body,) = dom.find("body")
    assert body.get("data-ready") == "1", "the page's script did not finish"
    assert "data-errors" not in body, body.get("data-errors")
    lanes = [a["data-context"] for a in dom.find("g", "lane-name")]
    assert lanes == ["host", "NMI", "IRQ", "guest", "guest PMI"]
    texts = [t.strip() for t in dom.texts]
    assert {"PERF_GLOBAL_CTRL", "LVTPC", "GLOBAL_STATUS", "PMC0"} <= set(texts)
    blocks = dom.find("rect", "blk")
    if steps:
        assert len(blocks) == steps
    assert len(dom.find("tr")) == len(blocks) + 1  # the step list, one row per block
    selected = body["data-selected"]
    assert dom.by_id(f"blk-{selected}")["class"].split() == ["blk", "sel"]
    assert "sel" in dom.by_id(f"row-{selected}")["class"].split()
    if violation is not None:
        assert dom.by_id("violation-marker")["data-step"] == str(violation)
        assert selected == str(violation)  # the page opens at the violation
    else:
        assert not [a for _, a in dom.elements if a.get("id") == "violation-marker"]
    arrows = dom.find("path", "pmi-arrow")
    if arrow is not None:
        groups = {(g["data-from"], g["data-to"]) for g in dom.find("g", "pmi")}
        assert (str(arrow[0]), str(arrow[1])) in groups
    if name.startswith("simulate"):
        assert arrows and dom.find("path", "inject-arrow") and dom.find("rect", "guest-shade")
    if name == "h1-lvtpc-before-clear":
        assert not arrows

    png = ARTIFACTS / f"{name}.png"
    png.unlink(missing_ok=True)
    p = chrome(f"--screenshot={png}", f"--window-size={WINDOW[0]},{WINDOW[1]}", url)
    assert p.returncode == 0 and png.exists(), p.stderr[-2000:]
    w, h, rows = png_pixels(png)
    assert (w, h) == WINDOW
    # the colours of what the DOM says is there must be on the screen (the legend alone has ~40 of the arrow's)
    if violation is not None:
        assert count_colour(rows, VIOLATION_RGB) > 1000, "no violation line in the screenshot"
    if arrows:
        assert count_colour(rows, ARROW_RGB) > 200, "no PMI arrow in the screenshot"
    else:
        assert count_colour(rows, ARROW_RGB) < 100
    guest = count_colour(rows, GUEST_RGB)
    if name == "h1-lvtpc-before-clear":
        assert guest == 0  # the H1 ablation's trace never enters the guest
    else:
        assert guest > 150, "no guest mode in the screenshot"


# --- interaction, through WebDriver (chromedriver on localhost) -----------------------------------


class WebDriver:
    """The few W3C WebDriver commands the test needs, over HTTP to a local chromedriver."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        caps = {"browserName": "chrome", "goog:chromeOptions": {"binary": str(CHROMIUM), "args": [*FLAGS]}}
        r = self.call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
        self.session = f"/session/{r['sessionId']}"

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read())["value"]
        except urllib.error.HTTPError as e:  # WebDriver explains the error in the body
            raise AssertionError(f"WebDriver {method} {path}: {e.code} {e.read().decode()[:500]}") from None

    def do(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.call(method, self.session + path, body)

    def js(self, script: str) -> Any:
        return self.do("POST", "/execute/sync", {"script": script, "args": []})

    def keys(self, *keys: str) -> None:
        acts = [a for k in keys for a in ({"type": "keyDown", "value": k}, {"type": "keyUp", "value": k})]
        self.do("POST", "/actions", {"actions": [{"type": "key", "id": "keyboard", "actions": acts}]})

    def element(self, css: str) -> str:
        el = self.do("POST", "/element", {"using": "css selector", "value": css})
        return str(next(iter(el.values())))

    def click(self, css: str) -> None:
        self.do("POST", f"/element/{self.element(css)}/click")

    def hover(self, css: str) -> None:
        origin = {"element-6066-11e4-a52e-4f735466cecf": self.element(css)}
        pointer = {"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}}
        pointer["actions"] = [{"type": "pointerMove", "origin": origin, "x": 0, "y": 0, "duration": 0}]
        self.do("POST", "/actions", {"actions": [pointer]})


@pytest.fixture(scope="module")
def webdriver(chromium: Path) -> Iterator[WebDriver]:
    if not CHROMEDRIVER.exists():
        pytest.skip("no chromedriver: /usr/bin/chromedriver is missing (Debian package chromium-driver)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(CHROMEDRIVER), f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        wd = WebDriver(port)
        try:
            yield wd
        finally:
            wd.call("DELETE", wd.session)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_keyboard_and_hover(webdriver: WebDriver) -> None:
    page = render_page("intel-default")
    webdriver.do("POST", "/url", {"url": page.resolve().as_uri()})
    wd = webdriver
    assert wd.js("return document.body.getAttribute('data-ready')") == "1"
    assert wd.js("return window.__vpmuErrors") == []
    selected = "return document.body.getAttribute('data-selected')"
    assert wd.js(selected) == "81"
    wd.keys("k", "k", "\ue013")  # k, k, ArrowUp
    assert wd.js(selected) == "78"
    assert wd.js("return document.getElementById('blk-78').classList.contains('sel')") is True
    assert wd.js("return document.querySelectorAll('.blk.sel').length") == 1
    assert wd.js("return document.getElementById('row-78').classList.contains('sel')") is True
    wd.keys("j", "\ue015")  # j, ArrowDown
    assert wd.js(selected) == "80"
    wd.keys("\ue011")  # Home
    assert wd.js(selected) == "1"
    assert wd.js("return document.getElementById('detail').textContent").startswith(
        "#1 · host · vcpu_enter_guest:kvm_pmu_handle_event"
    )
    wd.keys("\ue010")  # End
    assert wd.js(selected) == "81"
    assert wd.js("return document.getElementById('tip').hidden") is True
    wd.hover("#blk-66")
    assert wd.js("return document.getElementById('tip').hidden") is False
    tip = wd.js("return document.getElementById('tip').textContent")
    assert tip.startswith("#66 · host · kvm_mediated_pmu_load:clear_global_ctrl")
    assert "GLOBAL_CTRL 0x100000001→0x0" in tip
    assert "wrmsr IA32_PERF_GLOBAL_CTRL <- 0x0" in tip
    wd.hover("#pmi-0 circle.overflow")
    tip = wd.js("return document.getElementById('tip').textContent")
    assert tip == (
        "step 46: PMC0 overflowed in host mode; PMI -> NMI\ndelivered at step 47: NMI delivered: default_do_nmi()"
    )
    wd.click("#blk-30")
    assert wd.js(selected) == "30"
    wd.click("#row-28 td.n")  # the list scrolled to keep row 30 in view: 28 is visible too
    assert wd.js(selected) == "28"
    assert wd.js("return window.__vpmuErrors") == []


def test_missing_browser_is_a_skip_with_the_reason_not_an_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Chromium the tests skip and say how to get it; nothing is installed (no apt-get from a test)."""
    calls: list[object] = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(Path, "exists", lambda self: False)
    reason = _missing()
    assert reason is not None and "chromium is missing" in reason and ".ci/run" in reason
    assert calls == []
