"""The public PMU test suites as guest programs (the cases ``vpmu conform`` runs).

Each :class:`Case` re-expresses one check of kvm-unit-tests ``x86/pmu.c`` or of
the KVM selftests ``pmu_counters_test`` / ``pmu_event_filter_test``
(``../shared/reference/pmu-test-suites.md`` §3, §8) as data: the machine it
runs on, one or more guest programs (one per VM the original creates), and the
original's assertions as :class:`Check` s over the values the guest observed,
named by the tags of the guest's accesses (``rdmsr PMC0 @instructions-0``).

A runner (:mod:`vpmu.conform.runner`) runs each program natively (the reference
CPU: a native PMU with the guest's own programming) and virtualized under a
design and an exit schedule; the guest must observe the same values in both,
and the assertions must hold in both.

Parts of a case the model cannot express are kept, with the reason, as
:class:`Check` s with ``skip`` set or as :class:`Omission` s — never dropped
silently. Cases that do not apply to a vendor are :class:`Omission` s of kind
``n/a``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from vpmu.config import MachineConfig
from vpmu.kernel.env import HostEvent, VcpuSpec

#: What an access produced: the value read (or 0 for a write that succeeded), or
#: None for #GP.
Outcome = int | None
GP: Outcome = None


def show(v: Outcome) -> str:
    return "#GP" if v is None else f"{v:#x}" if v > 9 else str(v)


@dataclass(frozen=True)
class Check:
    """One assertion of the original test, over the outcomes of tagged accesses."""

    name: str  # the original's report name ("instructions-0", "status-1", ...)
    text: str  # what is asserted, readable ("== 10000017", "#GP", "bit 0 set")
    tags: tuple[str, ...]
    test: Callable[..., bool] = field(compare=False)
    #: Non-empty: the model cannot express this assertion; the reason.
    skip: str = ""

    def evaluate(self, values: Mapping[str, Outcome]) -> bool | None:
        """True/False, or None when an access it needs was not observed."""
        if any(t not in values for t in self.tags):
            return None
        try:
            return bool(self.test(*(values[t] for t in self.tags)))
        except TypeError:  # a #GP (None) where a value was needed
            return False


def _is_value(v: Outcome) -> bool:
    return v is not None


def eq(name: str, tag: str, expected: int) -> Check:
    return Check(name, f"== {show(expected)}", (tag,), lambda v: _is_value(v) and v == expected)


def ne(name: str, tag: str, value: int) -> Check:
    return Check(name, f"!= {show(value)}", (tag,), lambda v: _is_value(v) and v != value)


def ge(name: str, tag: str, lo: int) -> Check:
    return Check(name, f">= {lo}", (tag,), lambda v: _is_value(v) and v >= lo)


def lt(name: str, tag: str, hi: int) -> Check:
    return Check(name, f"< {hi}", (tag,), lambda v: _is_value(v) and v < hi)


def within(name: str, tag: str, lo: int, hi: int) -> Check:
    if lo == hi:
        return eq(name, tag, lo)
    return Check(name, f"in [{lo}, {hi}]", (tag,), lambda v: _is_value(v) and lo <= v <= hi)


def faults(name: str, tag: str) -> Check:
    return Check(name, "#GP", (tag,), lambda v: v is None)


def no_fault(name: str, tag: str) -> Check:
    return Check(name, "no fault", (tag,), lambda v: v is not None)


def bit_set(name: str, tag: str, bit: int) -> Check:
    return Check(name, f"bit {bit} set", (tag,), lambda v: _is_value(v) and bool((v >> bit) & 1))


def bit_clear(name: str, tag: str, bit: int) -> Check:
    return Check(name, f"bit {bit} clear", (tag,), lambda v: _is_value(v) and not (v >> bit) & 1)


def skipped(name: str, text: str, reason: str, *tags: str) -> Check:
    return Check(name, text, tuple(tags), lambda *_: True, skip=reason)


@dataclass(frozen=True)
class Vm:
    """One VM of a case: the vCPU userspace configured and the guest program it runs."""

    label: str  # "" for a case's only VM
    vcpu: VcpuSpec
    program: tuple[str, ...]

    def key(self) -> tuple[object, ...]:
        return (self.vcpu, self.program)


@dataclass(frozen=True)
class Case:
    """One public test case as guest programs plus its assertions."""

    suite: str  # "kut", "counters", "filter"
    name: str  # the original's function name, with the pass in brackets
    vendor: str
    title: str
    source: str  # where the reference catalogues it
    machine: MachineConfig
    host_events: tuple[HostEvent, ...]
    vms: tuple[Vm, ...]
    checks: tuple[Check, ...]
    #: Short programs for the step-boundary sweep; empty: the case's own VMs when short.
    sweep: tuple[Vm, ...] = ()
    #: How the re-expression differs from the original, and why.
    notes: tuple[str, ...] = ()
    #: The schedules ``vpmu conform`` runs by default; empty: the runner's defaults by size.
    schedules: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.vendor}/{self.suite}/{self.name}"


@dataclass(frozen=True)
class Omission:
    """A public case (or part) that is not run: ``n/a`` for the vendor, not expressible, or
    expressible and left out of the default run for time (``not run``, with what stands for it)."""

    suite: str
    name: str
    vendor: str  # "intel", "amd" or "both"
    kind: str  # "n/a", "not expressible", or "not run" (expressible, left out for time)
    reason: str


class Program:
    """A guest program under construction (lines of the guest assembly)."""

    def __init__(self, *lines: str) -> None:
        self.lines: list[str] = list(lines)

    def add(self, *lines: str) -> Program:
        self.lines.extend(lines)
        return self

    def extend(self, lines: Sequence[str]) -> Program:
        self.lines.extend(lines)
        return self

    def done(self) -> tuple[str, ...]:
        return tuple(self.lines)


SUITES = {
    "kut": "kvm-unit-tests x86/pmu.c",
    "counters": "KVM selftests x86/pmu_counters_test.c",
    "filter": "KVM selftests x86/pmu_event_filter_test.c",
}


def all_cases() -> list[Case]:
    from vpmu.conform.suites import kut, selftests

    return [*kut.cases(), *selftests.cases()]


def all_omissions() -> list[Omission]:
    from vpmu.conform.suites import kut, selftests

    return [*kut.OMISSIONS, *selftests.OMISSIONS]
