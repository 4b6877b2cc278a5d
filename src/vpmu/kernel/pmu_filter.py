"""KVM's PMU event filter (KVM_SET_PMU_EVENT_FILTER), as v7.0 arch/x86/kvm/pmu.c applies it.

A VM's filter is an action (allow or deny), a list of 64-bit event entries, a
fixed-counter bitmap and flags (kernel-mediated-pmu.md §5.5; the uapi layout of
``struct kvm_pmu_event_filter``). The ioctl checks the action, the flags and
the number of events; without ``KVM_PMU_EVENT_FLAG_MASKED_EVENTS`` each entry
is an event select plus unit mask, and entries with any other bit set are
dropped, not refused (convert_to_masked_filter()); with the flag each entry is
a masked entry (event select, umask mask, umask match, exclude) and any other
bit refuses the whole filter (is_masked_filter_valid()).

A GP event is allowed when an include entry matches it and no exclude entry
does, for an allow list; when none matches, for a deny list
(is_gp_event_allowed()). A fixed counter is allowed by the bitmap alone
(is_fixed_event_allowed()).

The filter a VM starts with comes from the world (``vcpu.deny_events``: event
selects denied with any unit mask, i.e. masked entries with umask mask 0;
``vcpu.deny_fixed``: the deny bitmap). Guest programs of conformance cases
change it on the running VM (``set_filter``, guest/program.py): KVM then marks
every PMC for reprogramming and raises KVM_REQ_PMU (kvm/kvm.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from vpmu.errors import VpmuError

KVM_PMU_EVENT_ALLOW = 0
KVM_PMU_EVENT_DENY = 1
KVM_PMU_EVENT_FLAG_MASKED_EVENTS = 1
KVM_PMU_EVENT_FLAGS_VALID_MASK = KVM_PMU_EVENT_FLAG_MASKED_EVENTS
KVM_PMU_EVENT_FILTER_MAX_EVENTS = 300  # pmu.c
EVENTSEL_EVENT = {"intel": 0xFF, "amd": 0xFF | 0xF << 32}  # kvm_pmu_ops.EVENTSEL_EVENT
EVENTSEL_UMASK = 0xFF00
MASKED_UMASK_MASK = 0xFF << 56
MASKED_UMASK_MATCH = 0xFF << 8
MASKED_EXCLUDE = 1 << 55
EINVAL, E2BIG = 22, 7
ACTIONS = {"allow": KVM_PMU_EVENT_ALLOW, "deny": KVM_PMU_EVENT_DENY}


def masked_entry(event_select: int, mask: int, match: int, exclude: bool) -> int:
    """KVM_PMU_ENCODE_MASKED_ENTRY() (uapi asm/kvm.h)."""
    return (
        (event_select & 0xFF)
        | ((event_select & 0xF00) << 24)
        | ((mask & 0xFF) << 56)
        | ((match & 0xFF) << 8)
        | (int(bool(exclude)) << 55)
    )


def raw_event(event_select: int, umask: int) -> int:
    """The selftests' RAW_EVENT(eventsel, umask): AMD EventSelect[11:8] in bits 35:32."""
    return ((event_select & 0xF00) << 24) | (event_select & 0xFF) | ((umask & 0xFF) << 8)


@dataclass(frozen=True)
class EventFilter:
    """``struct kvm_pmu_event_filter`` as userspace passes it."""

    action: int
    events: tuple[int, ...] = ()
    fixed_counter_bitmap: int = 0
    flags: int = 0
    #: nevents as userspace declares it (-1: len(events)); only the ioctl's size check reads it.
    nevents: int = -1

    def describe(self) -> str:
        act = {KVM_PMU_EVENT_ALLOW: "allow", KVM_PMU_EVENT_DENY: "deny"}.get(self.action, f"action {self.action}")
        parts = [act, f"events [{', '.join(hex(e) for e in self.events)}]"]
        if self.fixed_counter_bitmap:
            parts.append(f"fixed bitmap {self.fixed_counter_bitmap:#x}")
        if self.flags:
            parts.append(f"flags {self.flags:#x}")
        if self.nevents >= 0:
            parts.append(f"nevents {self.nevents}")
        return " ".join(parts)

    def ioctl_error(self, vendor: str) -> int:
        """kvm_vm_ioctl_set_pmu_event_filter()'s checks: 0 (accepted), EINVAL or E2BIG."""
        if self.action not in (KVM_PMU_EVENT_ALLOW, KVM_PMU_EVENT_DENY):
            return EINVAL
        if self.flags & ~KVM_PMU_EVENT_FLAGS_VALID_MASK:
            return EINVAL
        if (len(self.events) if self.nevents < 0 else self.nevents) > KVM_PMU_EVENT_FILTER_MAX_EVENTS:
            return E2BIG
        if self.flags & KVM_PMU_EVENT_FLAG_MASKED_EVENTS:  # is_masked_filter_valid()
            valid = EVENTSEL_EVENT[vendor] | MASKED_UMASK_MASK | MASKED_UMASK_MATCH | MASKED_EXCLUDE
            if any(e & ~valid for e in self.events):
                return EINVAL
        return 0


@dataclass(frozen=True)
class PreparedFilter:
    """The filter as KVM keeps it after prepare_filter_lists(): masked entries split into
    includes and excludes (each entry: event select, umask mask, umask match)."""

    action: int
    includes: tuple[tuple[int, int, int], ...]
    excludes: tuple[tuple[int, int, int], ...]
    fixed_counter_bitmap: int
    source: EventFilter

    def gp_allowed(self, eventsel: int, vendor: str) -> bool:
        """is_gp_event_allowed()."""
        event = eventsel & EVENTSEL_EVENT[vendor]
        umask = (eventsel >> 8) & 0xFF
        if _contains_match(self.includes, event, umask) and not _contains_match(self.excludes, event, umask):
            return self.action == KVM_PMU_EVENT_ALLOW
        return self.action == KVM_PMU_EVENT_DENY

    def fixed_allowed(self, j: int) -> bool:
        """is_fixed_event_allowed()."""
        bit = bool(self.fixed_counter_bitmap >> j & 1)
        if self.action == KVM_PMU_EVENT_DENY and bit:
            return False
        return not (self.action == KVM_PMU_EVENT_ALLOW and not bit)


def _contains_match(entries: tuple[tuple[int, int, int], ...], event: int, umask: int) -> bool:
    """filter_contains_match(): an entry with this event select whose umask mask/match fits."""
    return any(ev == event and umask & mask == match for ev, mask, match in entries)


def prepare(f: EventFilter, vendor: str) -> PreparedFilter:
    """prepare_filter_lists() for an accepted filter."""
    events = f.events
    if not f.flags & KVM_PMU_EVENT_FLAG_MASKED_EVENTS:  # convert_to_masked_filter()
        keep = EVENTSEL_EVENT[vendor] | EVENTSEL_UMASK
        events = tuple(e | MASKED_UMASK_MASK for e in events if not e & ~keep)
    inc: list[tuple[int, int, int]] = []
    exc: list[tuple[int, int, int]] = []
    for e in events:
        entry = (e & EVENTSEL_EVENT[vendor], (e >> 56) & 0xFF, (e >> 8) & 0xFF)
        (exc if f.flags & KVM_PMU_EVENT_FLAG_MASKED_EVENTS and e & MASKED_EXCLUDE else inc).append(entry)
    return PreparedFilter(f.action, tuple(inc), tuple(exc), f.fixed_counter_bitmap, f)


def from_deny_lists(deny_events: tuple[int, ...], deny_fixed: tuple[int, ...], vendor: str) -> PreparedFilter | None:
    """The world's static filter: deny these event selects (any unit mask; a 12-bit AMD select
    has EventSelect[11:8] in bits 11:8) and these fixed counters. None: no filter."""
    if not deny_events and not deny_fixed:
        return None
    entries = tuple(masked_entry(e, 0, 0, False) for e in deny_events)
    bitmap = sum(1 << j for j in deny_fixed)
    return prepare(EventFilter(KVM_PMU_EVENT_DENY, entries, bitmap, KVM_PMU_EVENT_FLAG_MASKED_EVENTS), vendor)


def parse(words: list[str]) -> EventFilter:
    """``ACTION [events=E,E,...] [fixed=BITMAP] [flags=F] [nevents=N]`` (guest ``set_filter``):
    ACTION is allow, deny or a number (the ioctl refuses anything but 0 and 1)."""
    if not words:
        raise VpmuError("set_filter needs an action: allow, deny or a number")
    act = words[0].lower()
    try:
        action = ACTIONS[act] if act in ACTIONS else int(act, 0)
    except ValueError:
        raise VpmuError(f"set_filter action {words[0]!r} is not allowed; allowed: allow, deny, a number") from None
    opts: dict[str, str] = {}
    for w in words[1:]:
        key, eq, val = w.partition("=")
        if not eq or key not in ("events", "fixed", "flags", "nevents") or key in opts:
            raise VpmuError(
                f"set_filter option {w!r} is not allowed; allowed: events=E,E,... fixed=N flags=N nevents=N"
            )
        opts[key] = val

    def num(text: str, what: str) -> int:
        try:
            v = int(text, 0)
        except ValueError:
            raise VpmuError(f"set_filter {what} {text!r} is not a number") from None
        if not 0 <= v < 1 << 64:
            raise VpmuError(f"set_filter {what} {text!r} must be an unsigned 64-bit number")
        return v

    events = tuple(num(e, "event") for e in opts.get("events", "").split(",") if e)
    return EventFilter(
        action,
        events,
        num(opts.get("fixed", "0"), "fixed"),
        num(opts.get("flags", "0"), "flags"),
        num(opts["nevents"], "nevents") if "nevents" in opts else -1,
    )
