"""Conformance: the public PMU test suites replayed as guest programs.

``suites/`` holds the ported cases (kvm-unit-tests ``x86/pmu.c``, KVM selftests), ``runner`` runs each
case natively and virtualized under exit, NMI and perf schedules and compares what the guest observed.
docs/conformance.md describes both.
"""
