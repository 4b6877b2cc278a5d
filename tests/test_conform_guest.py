"""The guest instruction set the conformance cases are written in (guest/program.py, guest/isa.py)."""

from __future__ import annotations

from typing import Any

import pytest

from vpmu.check.simulate import Plan, simulate
from vpmu.check.system import System
from vpmu.check.world import parse_world
from vpmu.designs import get_design
from vpmu.errors import VpmuError


def world(program: list[str], **machine: Any) -> Any:
    m = {"vendor": "intel", "num_gp": 2, "gp_width": 48, "num_fixed": 1, **machine}
    return parse_world({"machine": m, "guest": {"program": program}, "bounds": {"exits": 0, "nmis": 0}}, "test")


def reads(program: list[str], exits: str = "none", **machine: Any) -> list[tuple[str, int, int]]:
    """(what, guest value, native value) of every guest read."""
    system = System(get_design("upstream"), world(program, **machine))
    r = simulate(system, Plan.parse(exits, "--exits"))
    assert r.finished and not r.violations, r.violations
    return [(what, seen, exp) for kind, what, seen, exp in r.journal if kind == "guest read"]


def test_loop_body_ending_in_a_branch_counts_one_branch_per_iteration() -> None:
    program = [
        "wrmsr GLOBAL_CTRL 0",  # the post-RESET value enables the GP counters
        "wrmsr EVTSEL0 BRANCHES|OS|USR|EN",
        "wrmsr EVTSEL1 INSTRUCTIONS|OS|USR|EN",
        "wrmsr GLOBAL_CTRL GP0|GP1",
        "loop 1000 ring=0 branch_every=10",
        "wrmsr GLOBAL_CTRL 0",
        "rdpmc 0 ring=0",
        "rdpmc 1 ring=0",
    ]
    for exits in ("none", "every:7", "every:1"):
        got = reads(program, exits)
        assert [g for _, g, _ in got] == [100, 1001], exits  # the enabling WRMSR counts itself
        assert all(g == n for _, g, n in got)


def test_values_use_guest_variables() -> None:
    program = [
        "wrmsr PMC0 0x10",
        "rdmsr PMC0",
        "mov c 1-$rax",  # a negative value is a counter preset: modulo the width
        "wrmsr PMC1 $c",
        "rdmsr PMC1",
        "wrmsr PMC0 ($rax&~0xff)|0x3",
        "rdmsr PMC0",
    ]
    got = [g for _, g, _ in reads(program)]
    assert got == [0x10, (1 << 48) - 15, ((1 << 48) - 15) & ~0xFF | 3]


def test_gp_fixup_skips_a_faulting_instruction_without_retiring_it() -> None:
    program = [
        ".gp_fixup",
        "wrmsr GLOBAL_CTRL 0",
        "wrmsr EVTSEL0 INSTRUCTIONS|OS|USR|EN",
        "wrmsr GLOBAL_CTRL GP0",
        "rdpmc 64 ring=0",  # #GP: does not retire
        "wrmsr PMC1 0xffffff0123456789",  # wider than the counter: #GP
        "loop 3 ring=0",
        "wrmsr GLOBAL_CTRL 0",
        "rdpmc 0 ring=0",
    ]
    assert [g for _, g, _ in reads(program)] == [1 + 3]  # the enabling WRMSR and the loop


def test_without_gp_fixup_a_guest_fault_is_an_error() -> None:
    system = System(get_design("upstream"), world(["rdpmc 64 ring=0"]))
    with pytest.raises(VpmuError, match="faults"):
        simulate(system, Plan.parse("none", "--exits"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("loop 10 branch_every=3", "must be a divisor of the count 10"),
        (".pmi_handler bogus", "unknown directive"),
        ("check_irq 32", "needs the counting PMI handler"),
        ("mov rax 1", "is not a variable name"),
        ("wrmsr PMC0 1+", "unexpected"),
        ("wrmsr PMC0 FOO", "unknown value 'FOO'"),
        ("rdpmc 0 ring=1", "ring=1 is not allowed"),
    ],
)
def test_bad_guest_lines_are_named(line: str, message: str) -> None:
    with pytest.raises(VpmuError, match=message):
        System(get_design("upstream"), world([line]))


def test_tags_are_unique() -> None:
    with pytest.raises(VpmuError, match="used twice"):
        System(get_design("upstream"), world(["rdpmc 0 @a", "rdpmc 1 @a"]))


def test_kvm_injects_gp_for_intercepted_accesses_the_vcpu_lacks() -> None:
    """A vCPU with fewer counters than the host intercepts RDPMC and the absent counters' MSRs;
    KVM's emulation injects #GP (F-1.11.2, pmu-test-suites §12.12), which a guest with a #GP
    fixup survives and a native CPU with the guest's PMU agrees with; without a fixup the run
    stops with a one-line error naming KVM's #GP."""
    import tomllib

    import pytest

    from vpmu.check.explore import check
    from vpmu.check.system import System
    from vpmu.check.world import parse_world
    from vpmu.designs import get_design
    from vpmu.errors import VpmuError

    text = """
[machine]
vendor = "intel"
num_gp = 2
gp_width = 8
num_fixed = 0
[vcpu]
num_gp = 1
[guest]
program = [".gp_fixup", "rdpmc 1", "rdmsr 0x4c2", "wrmsr 0x4c2 1", "rdpmc 0", "hlt"]
[bounds]
exits = 0
nmis = 0
"""
    world = parse_world(tomllib.loads(text), "gp")
    assert check(System(get_design("upstream"), world)).verdict == "holds"
    no_fixup = parse_world(tomllib.loads(text.replace('".gp_fixup", ', "")), "gp")
    with pytest.raises(VpmuError, match=r"KVM injected #GP into the guest \(RDPMC 0x1: no such counter\)"):
        check(System(get_design("upstream"), no_fixup))
