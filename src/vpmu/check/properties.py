"""The properties a world is judged against: stable names, one-line descriptions, sources.

Invariant ids I1-I10 are Appendix A.3 of kernel-mediated-pmu.md; hazards
H1-H25 are its §6. How each is detected is in :mod:`vpmu.check.ghost`.
"""

from __future__ import annotations

from dataclasses import dataclass

from vpmu.errors import VpmuError


@dataclass(frozen=True)
class Property:
    name: str
    description: str
    source: str
    vendor: str = ""  # "" both, or "intel" / "amd"


PROPERTIES: tuple[Property, ...] = (
    Property(
        "lvtpc-written-while-enabled",
        "load/put rewrite LVTPC only after their own code (and VM transitions) left PERF_GLOBAL_CTRL at 0",
        "I1 as an ordering of the design's code; H1; PeterZ 2025-08-18 (seed thread). An interrupt handler that "
        "re-enables the PMU in between is judged by lvtpc-route-consistent and no-guest-counting-in-host",
    ),
    Property(
        "lvtpc-route-consistent",
        "guest_lvtpc_loaded holds exactly when LVTPC routes PMIs to 0xF5 whenever a counter can raise a PMI",
        "I2; §2.4",
    ),
    Property(
        "no-guest-counting-in-host",
        "in host mode no counter holding guest programming counts",
        "I3; H2, H7, H8",
    ),
    Property(
        "amd-guest-only",
        "every guest selector in hardware has GuestOnly=1 and HostOnly=0",
        "I4; H8; v6 26/44",
        vendor="amd",
    ),
    Property(
        "clean-after-put",
        "before perf re-schedules host events, guest counters, selectors, fixed control and status are zero",
        "I5; H9, H10",
    ),
    Property(
        "restored-after-load",
        "after load, HW status equals the guest's, HW selectors equal eventsel_hw, LVTPC.mask mirrors the vLVTPC",
        "I6; H10, H22",
    ),
    Property(
        "no-emulated-count-while-loaded",
        "KVM never increments pmc->counter for an emulated instruction while the guest PMU is loaded",
        "I9; H11; v6 28/44",
    ),
    Property(
        "nmi-handler-hands-off",
        "host perf's NMI handler touches no PMU register while guest_lvtpc_loaded",
        "I10; H5",
    ),
    Property(
        "guest-transparency",
        "every counter and status value the guest reads equals what a native CPU with its programming shows",
        "PRODUCT.md Properties; pmu-test-suites.md §12",
    ),
    Property(
        "guest-pmi-accounting",
        "the guest receives exactly the PMIs its own counters raise: none lost, spurious or duplicated",
        "§3.2; H6, H22",
    ),
    Property(
        "host-isolation",
        "every host perf event counts exactly the host-mode events it asked for",
        "PRODUCT.md Properties; H7, H9, H16",
    ),
    Property(
        "host-pmi-accounting",
        "every host overflow with INT reaches host perf exactly once, and never the guest's vector",
        "H1, H5, H6; S13",
    ),
    Property(
        "progress",
        "some schedule lets the vCPU task (and so the guest program) run to completion",
        "checker sanity: a world whose every path loops (e.g. a host PMI storm) proves nothing",
    ),
    Property(
        "no-warn",
        "no WARN_ON_ONCE fires (a WARN on a correct state is a finding: the seed's assertion on AMD)",
        "I8; seed thread (Sean 2025-11-19); §2.6",
    ),
    Property(
        "event-filter",
        "in guest mode no counter runs an event the VM's event filter denies",
        "H19; §5.5; v6 24/44 (kvm_mediated_pmu_refresh_event_filter)",
    ),
    Property(
        "no-unknown-nmi",
        'every NMI is claimed by some NMI_LOCAL handler: no "Uhhuh. NMI received for unknown reason" '
        "(a panic with unknown_nmi_panic)",
        "V6; default_do_nmi(), unknown_nmi_error() (arch/x86/kernel/nmi.c); F1 (a guest PMI delivered as an NMI)",
    ),
    Property(
        "mediated-exclusive",
        "no include-guest core-PMU event exists while the mediated VM exists (worlds with [vm] lifecycle)",
        "H14, §2.2, S4; perf_create_mediated_pmu(), mediated_pmu_account_event() (kernel/events/core.c)",
    ),
)

#: Properties of the mediated vPMU's load/put that do not apply to the legacy perf-based vPMU
#: (design ``legacy``), and why; ``vpmu check --design legacy`` leaves them out.
MEDIATED_ONLY: dict[str, str] = {
    "lvtpc-written-while-enabled": "legacy never switches LVTPC: guest counters raise host NMIs (kvm_perf_overflow)",
    "lvtpc-route-consistent": "legacy never loads a guest LVTPC: guest_lvtpc_loaded stays false, LVTPC stays NMI",
    "clean-after-put": "legacy has no put: KVM's exclude_host events stay in hardware across VM-exits by design",
    "restored-after-load": "legacy has no load: nothing of the guest's is restored into hardware at entry",
    "no-emulated-count-while-loaded": "legacy counts emulated instructions in pmc->emulated_counter, folded in "
    "by pmc_pause_counter(); nothing can overwrite them (H11 is a mediated hazard)",
    "nmi-handler-hands-off": "legacy's guest counters are host perf events: perf's NMI handler must handle them",
}

BY_NAME = {p.name: p for p in PROPERTIES}
INDEX = {p.name: i + 1 for i, p in enumerate(PROPERTIES)}  # 0 = no violation


def get(name: str) -> Property:
    try:
        return BY_NAME[name]
    except KeyError:
        raise VpmuError(f"unknown property {name!r}; known properties: {', '.join(BY_NAME)}") from None


def by_index(i: int) -> Property:
    return PROPERTIES[i - 1]
