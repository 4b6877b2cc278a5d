"""The PMU event filter as KVM applies it, and the filter changed on a running VM."""

from __future__ import annotations

from vpmu.conform.runner import Schedule, cases_by_id, fold_mutation, run_case, run_tasks
from vpmu.kernel.pmu_filter import (
    E2BIG,
    EINVAL,
    KVM_PMU_EVENT_ALLOW,
    KVM_PMU_EVENT_DENY,
    EventFilter,
    masked_entry,
    prepare,
    raw_event,
)


def test_unmasked_entries_match_event_and_umask_and_invalid_bits_drop_the_entry() -> None:
    f = prepare(EventFilter(KVM_PMU_EVENT_DENY, (raw_event(0x3C, 1),)), "intel")
    assert not f.gp_allowed(0x53013C, "intel")  # reference cycles denied
    assert f.gp_allowed(0x53003C, "intel")  # core cycles: another umask
    empty_allow = prepare(EventFilter(KVM_PMU_EVENT_ALLOW, ((1 << 64) - 1,)), "intel")
    assert empty_allow.includes == () and not empty_allow.gp_allowed(0x5300C0, "intel")


def test_masked_entries_include_and_exclude() -> None:
    # test_masked_events' "Only allow loads and stores": include umask & 0x7C == 0, exclude 0x83.
    f = prepare(
        EventFilter(
            KVM_PMU_EVENT_ALLOW, (masked_entry(0xD0, 0x7C, 0, False), masked_entry(0xD0, 0xFF, 0x83, True)), flags=1
        ),
        "intel",
    )
    assert [f.gp_allowed(0xD0 | u << 8, "intel") for u in (0x81, 0x82, 0x83)] == [True, True, False]


def test_ioctl_accept_and_reject_rules() -> None:
    assert EventFilter(KVM_PMU_EVENT_ALLOW, ((1 << 64) - 1,)).ioctl_error("intel") == 0
    assert EventFilter(KVM_PMU_EVENT_ALLOW, ((1 << 64) - 1,), flags=1).ioctl_error("intel") == EINVAL
    assert EventFilter(KVM_PMU_EVENT_ALLOW, (masked_entry(0xFF, 0xFF, 0xFF, True),), flags=1).ioctl_error("intel") == 0
    assert EventFilter(2).ioctl_error("intel") == EINVAL
    assert EventFilter(KVM_PMU_EVENT_ALLOW, flags=2).ioctl_error("intel") == EINVAL
    assert EventFilter(KVM_PMU_EVENT_ALLOW, nevents=301).ioctl_error("intel") == E2BIG
    # EventSelect[11:8] exists only on AMD: a masked entry using it is refused on Intel.
    assert EventFilter(KVM_PMU_EVENT_DENY, (masked_entry(0x1C2, 0, 0, False),), flags=1).ioctl_error("intel") == EINVAL
    assert EventFilter(KVM_PMU_EVENT_DENY, (masked_entry(0x1C2, 0, 0, False),), flags=1).ioctl_error("amd") == 0


def test_running_vm_flow_passes_and_catches_a_broken_refresh() -> None:
    case = cases_by_id()["intel/filter/test_fixed_counter_bitmap[1, running VM]"]
    assert run_case(case, "upstream", Schedule.parse("every:17")).verdict == "pass"
    m = fold_mutation("filter-no-reprogram", run_tasks([(case.id, "none")], "filter-no-reprogram"))
    assert m.by_assertion == [case.id]
    # A fresh VM per filter cannot see it: its first FIXED_CTR_CTRL write marks the counter.
    fresh = "intel/filter/test_fixed_counter_bitmap[1]"
    assert not fold_mutation("filter-no-reprogram", run_tasks([(fresh, "none")], "filter-no-reprogram")).caught


def test_bad_filter_and_loop_options_are_one_line_errors() -> None:
    import pytest

    from vpmu.errors import VpmuError
    from vpmu.kernel.pmu_filter import parse

    with pytest.raises(VpmuError, match="set_filter action 'maybe'"):
        parse(["maybe"])
    with pytest.raises(VpmuError, match="set_filter option 'colour=1'"):
        parse(["deny", "colour=1"])
    with pytest.raises(VpmuError, match="set_filter event 'x'"):
        parse(["deny", "events=x"])
    assert parse(["2", "events=0xc0", "nevents=301"]).ioctl_error("intel") == EINVAL
