"""The legacy perf-based vPMU (design ``legacy``): what it checks, and that each applicable
property fails on a legacy ablation and holds on ``legacy`` on the same world.

Worlds are small: 5-bit GP counters (Intel: no fixed counter, mid ack), the guest on its
counter 0 as in the default worlds, and a host exclude_guest cycles event on host counter 1;
with one counter (``num_gp=1``, host event on counter 0) the guest's event competes with it.
"""

from __future__ import annotations

import tomllib

import pytest

from vpmu.check import properties as P
from vpmu.check.explore import Result, check
from vpmu.check.system import System
from vpmu.check.world import WorldSpec, parse_world
from vpmu.designs import DESIGNS, LEGACY, get_design
from vpmu.guest.isa import GuestIsa
from vpmu.kernel import perf_events

CAP = 400_000

PROGRAM = [
    "wrmsr PMC0 -3",
    "wrmsr EVTSEL0 INSTRUCTIONS|USR|OS|INT|EN",
    "wrmsr GLOBAL_CTRL GP0",
    "loop 3",
    "rdpmc 0",
    "rdmsr GLOBAL_STATUS",
    "hlt",
]
#: Count, stop, then read (the kvm-unit-tests shape): the stop pauses the perf event.
STOP_THEN_READ = [
    "wrmsr EVTSEL0 INSTRUCTIONS|USR|OS|EN",
    "wrmsr GLOBAL_CTRL GP0",
    "loop 3",
    "wrmsr GLOBAL_CTRL 0",
    "rdpmc 0",
    "hlt",
]


def world(
    vendor: str,
    *,
    counter: int = 1,
    num_gp: int = 2,
    pinned: bool = True,
    exits: int = 1,
    nmis: int = 0,
    deny: str = "",
    program: list[str] | None = None,
) -> WorldSpec:
    machine = (
        'vendor = "intel"\nnum_fixed = 0\nhost_ack = "mid"'
        if vendor == "intel"
        else 'vendor = "amd"\npmu_version = "perfmonv2"'
    )
    lines = ", ".join(f'"{line}"' for line in (program or PROGRAM))
    text = f"""
name = "{vendor}-legacy"

[machine]
{machine}
num_gp = {num_gp}
gp_width = 5
{f"[vcpu]{chr(10)}deny_events = [{deny}]" if deny else ""}

[[host_event]]
name = "cycles"
event = "cycles"
exclude_guest = true
counter = {counter}
pinned = {"true" if pinned else "false"}

[guest]
program = [{lines}]
rearm = ["PMC0 -8"]

[bounds]
exits = {exits}
exit_reasons = {'["timer", "interrupt"]' if vendor == "intel" else '["interrupt"]'}
nmis = {nmis}
"""
    return parse_world(tomllib.loads(text), f"<test {vendor}>")


def run(design: str, w: WorldSpec, properties: tuple[str, ...] | None = None) -> Result:
    return check(System(get_design(design), w, properties), max_states=CAP)


def holds(design: str, w: WorldSpec, properties: tuple[str, ...] | None = None) -> Result:
    r = run(design, w, properties)
    assert r.verdict == "holds", f"{r.verdict}: {r.prop}: {r.message or r.reason}"
    return r


def violated(design: str, w: WorldSpec, prop: str, properties: tuple[str, ...] | None = None) -> Result:
    r = run(design, w, properties)
    assert (r.verdict, r.prop) == ("violated", prop), f"{r.verdict}: {r.prop}: {r.message or r.reason}"
    return r


VENDORS = ("intel", "amd")
SHARED = {"counter": 0, "num_gp": 1}  # the host pinned event holds the only counter


def test_mediated_only_properties_are_left_out() -> None:
    assert set(P.MEDIATED_ONLY) <= set(P.BY_NAME)
    for vendor in VENDORS:
        mediated = set(System(get_design("upstream"), world(vendor)).props)
        assert set(P.MEDIATED_ONLY) <= mediated
        assert set(System(LEGACY, world(vendor)).props) == mediated - set(P.MEDIATED_ONLY)


def test_every_pmu_access_is_intercepted() -> None:
    for vendor in VENDORS:
        isa = GuestIsa(System(LEGACY, world(vendor)).env)
        assert isa.passthrough == frozenset() and isa.rdpmc_exits
        assert GuestIsa(System(get_design("upstream"), world(vendor)).env).passthrough


@pytest.mark.parametrize("vendor", VENDORS)
def test_legacy_holds_when_a_counter_is_free(vendor: str) -> None:
    """The host event holds counter 0 too: perf puts the guest's event on counter 1."""
    perf_events.MECHANISMS.clear()
    holds("legacy", world(vendor, nmis=1, counter=0))
    assert not perf_events.MECHANISMS["refused"]


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_host_pinned_event_refuses_the_guests_event(vendor: str) -> None:
    """CPU-pinned before task-pinned: the guest's event goes to ERROR and its counts are lost."""
    perf_events.MECHANISMS.clear()
    r = violated("legacy", world(vendor, counter=0, num_gp=1), "guest-transparency")
    assert "rdpmc" in r.message
    assert perf_events.MECHANISMS["refused"]


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_host_flexible_event_is_multiplexed_out(vendor: str) -> None:
    """Task-pinned before CPU-flexible: the guest's event wins, the host event waits (host
    isolation still holds: an inactive event is owed nothing)."""
    perf_events.MECHANISMS.clear()
    holds("legacy", world(vendor, counter=0, num_gp=1, pinned=False))
    assert perf_events.MECHANISMS["multiplexed"]


@pytest.mark.parametrize(
    ("design", "vendor", "prop", "length", "only", "w"),
    [
        ("legacy-counts-host", "intel", "no-guest-counting-in-host", 43, None, {}),
        ("legacy-counts-host", "amd", "no-guest-counting-in-host", 39, None, {}),
        ("legacy-counts-host", "amd", "amd-guest-only", 39, ("amd-guest-only",), {}),
        ("legacy-no-fold", "intel", "guest-transparency", 105, None, {"program": STOP_THEN_READ}),
        ("legacy-no-fold", "amd", "guest-transparency", 93, None, {"program": STOP_THEN_READ}),
        ("legacy-no-overflow", "intel", "guest-pmi-accounting", 223, ("guest-pmi-accounting",), {}),
        ("legacy-no-overflow", "amd", "guest-pmi-accounting", 191, ("guest-pmi-accounting",), {}),
        ("legacy-no-refuse", "intel", "host-isolation", 190, ("host-isolation", "host-pmi-accounting"), SHARED),
        ("legacy-no-refuse", "amd", "host-isolation", 70, ("host-isolation", "host-pmi-accounting"), SHARED),
        ("legacy-no-filter", "intel", "event-filter", 63, ("event-filter",), {"deny": "0xc0"}),
        ("legacy-no-filter", "amd", "event-filter", 55, ("event-filter",), {"deny": "0xc0"}),
    ],
)
def test_each_applicable_property_fails_on_a_legacy_ablation(
    design: str, vendor: str, prop: str, length: int, only: tuple[str, ...] | None, w: dict[str, object]
) -> None:
    """The first (BFS-shortest) violation is ``prop`` after exactly ``length`` steps (computed once:
    a change means the model or the explorer changed), and ``legacy`` holds it on the same world."""
    wd = world(vendor, **w)  # type: ignore[arg-type]
    assert DESIGNS[design].vpmu == "legacy"
    r = violated(design, wd, prop, only)
    assert len(r.records) == r.stats.depth == length
    holds("legacy", wd, only or (prop,))


# --- vpmu conform --design legacy: native vs mediated vs legacy ---------------------------------


def test_conform_compare_names_the_mechanism(capsys: pytest.CaptureFixture[str]) -> None:
    from vpmu.cli import main

    args = ["conform", "--design", "legacy", "--schedule", "none", "--jobs", "1"]
    # CMASK=2 counts nothing natively and under the mediated vPMU; legacy counts the emulated WRMSR.
    assert main([*args, "--case", "amd/kut/check_gp_counter_cmask[K7]"]) == 1
    out = capsys.readouterr().out
    assert "native vs mediated (upstream) vs legacy" in out
    row = next(line for line in out.splitlines() if line.startswith("amd/kut/check_gp_counter_cmask[K7]"))
    assert row.split()[1:5] == ["pass", "pass", "FAIL", "1/1"] and "emulated-count" in row
    assert main([*args, "--case", "amd/kut/check_rdpmc[K7]"]) == 0


def test_conform_compare_json_and_refusal(capsys: pytest.CaptureFixture[str]) -> None:
    """All six AMD counters programmed: the host's pinned event holds one, perf refuses the last
    of KVM's events, and its counts are lost."""
    import json

    from vpmu.cli import main

    args = ["conform", "--design", "legacy", "--schedule", "none", "--jobs", "1", "--json"]
    assert main([*args, "--case", "amd/kut/check_counters_many[F15h]"]) == 1
    (case,) = json.loads(capsys.readouterr().out)["cases"]
    assert (case["native"], case["mediated"], case["legacy"]) == ("pass", "pass", "FAIL 1/1")
    assert case["mechanisms"][0] == "refused"


def test_asking_for_a_mediated_only_property_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    from vpmu.cli import main

    assert main(["check", "--design", "legacy", "--property", "clean-after-put"]) == 2
    assert "does not apply to design 'legacy'" in capsys.readouterr().err


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_write_to_a_running_counter_offsets_the_sample_period(vendor: str) -> None:
    """pmc_write_counter() (v7.0) takes the new sample period from pmc->counter, which excludes
    what the perf event counted since its last pause: a branch counter written to -3 after 5
    counted branches overflows 5 branches late. (Counting instructions hides it: the emulated
    WRMSR is counted, which requests a reprogram that recomputes the period.)"""
    program = [
        "wrmsr EVTSEL0 BRANCHES|USR|OS|INT|EN",
        "wrmsr GLOBAL_CTRL GP0",
        "loop 5 branches",
        "wrmsr PMC0 -3",
        "loop 3 branches",
        "rdmsr GLOBAL_STATUS",
        "hlt",
    ]
    w = world(vendor, exits=0, program=program)
    perf_events.MECHANISMS.clear()
    r = violated("legacy", w, "guest-transparency")
    assert "GLOBAL_STATUS" in r.message or "GlobalStatus" in r.message
    assert perf_events.MECHANISMS["period-offset"]
    holds("upstream", w)
