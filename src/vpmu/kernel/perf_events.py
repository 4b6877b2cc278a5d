"""Host perf's side of the legacy vPMU: the perf events KVM creates for the guest's counters.

Without the mediated PMU, KVM backs every enabled guest counter with a pinned
per-task perf event (Linux v7.0 arch/x86/kvm/pmu.c pmc_reprogram_counter():
attr.pinned, attr.exclude_host, sample_period from the guest's counter value).
This module is what host perf does with such an event, in the calls KVM makes
(kernel/events/core.c v7.0): perf_event_create_kernel_counter(),
perf_event_pause(), perf_event_period(), perf_event_enable(),
perf_event_read_value(), perf_event_release_kernel(), and the PMI handler's
x86_perf_event_update() / x86_perf_event_set_period() (arch/x86/events/core.c).

Where the event goes in hardware (docs/fidelity.md, "Legacy vPMU"):

* perf schedules CPU-pinned events before task-pinned ones before CPU-flexible
  ones (ctx_resched, merge_sched_in). KVM's event for a guest GP counter takes
  the host GP counter it had before if that is free, else the lowest free one
  (x86_schedule_events: the previous assignment, then the first fit; the
  guest's counter numbers do not matter to the host). With no counter free, a
  host flexible event is scheduled out (rotate_necessary: it multiplexes, the
  guest's event wins); with only host pinned events left, perf refuses KVM's
  event, which goes to ERROR and counts nothing until KVM enables it again.
  A guest fixed counter j asks for fixed counter j (host events in the model
  use GP counters only);
* exclude_host: on Intel the counter's bit joins cpuc->intel_ctrl_guest_mask,
  so perf's enable_all leaves it out of PERF_GLOBAL_CTRL in host mode and the
  VM-entry/exit atomic switch turns it on in guest mode only; on AMD the
  selector gets GuestOnly (amd_core_hw_config).

:data:`MECHANISMS` tallies the paths by which legacy departs from a native
PMU, for reports (``vpmu conform --design legacy``); it is instrumentation,
not model state.
"""

from __future__ import annotations

from collections import Counter

from vpmu.hw import msr as M
from vpmu.kernel import perf
from vpmu.kernel.env import KernelEnv

# perf_event state as the model keeps it (include/linux/perf_event.h, v7.0).
NONE, ACTIVE, OFF, ERROR = 0, 1, 2, 3
STATE_NAMES = ("none", "active", "off", "error")
#: attr bits the model keeps per event.
ATTR_EXCLUDE_HOST = 1

#: X86_RAW_EVENT_MASK (event, umask, edge, inv, cmask); AMD64_RAW_EVENT_MASK adds EventSelect[11:8].
RAW_EVENT_MASK = M.EVENTSEL_EVENT | M.EVENTSEL_UMASK | M.EVENTSEL_EDGE | M.EVENTSEL_INV | M.EVENTSEL_CMASK
AMD64_RAW_EVENT_MASK = RAW_EVENT_MASK | M.AMD64_EVENTSEL_EVENT_HI

#: How often each departure mechanism ran since the last reset (instrumentation, not state):
#: refused, multiplexed, min-period, period-offset, overflow-ignored, emulated-overflow, emulated-count.
MECHANISMS: Counter[str] = Counter()


def note(what: str) -> None:
    MECHANISMS[what] += 1


def count(env: KernelEnv) -> int:
    """Guest PMCs: GP 0..n-1, then fixed 0..m-1."""
    return env.vcpu.num_gp + env.vcpu.num_fixed


def fixed(env: KernelEnv, k: int) -> int:
    """The fixed counter index of PMC ``k``, or -1 for a GP counter."""
    return k - env.vcpu.num_gp if k >= env.vcpu.num_gp else -1


def pmc_idx(env: KernelEnv, k: int) -> int:
    """pmc->idx: GP i is i, fixed j is KVM_FIXED_PMC_BASE_IDX + j (its GLOBAL_CTRL bit)."""
    j = fixed(env, k)
    return k if j < 0 else M.FIXED_IDX_BASE + j


def hw_bit(env: KernelEnv, s: list[int], k: int) -> int:
    """The counter's bit in the hardware GLOBAL_CTRL / GLOBAL_STATUS."""
    j = fixed(env, k)
    return 1 << (s[env.lpmc_hw + k] if j < 0 else M.FIXED_IDX_BASE + j)


def width_mask(env: KernelEnv, k: int) -> int:
    return env.cpu.fixed_mask if fixed(env, k) >= 0 else env.cpu.gp_mask


def _read_hw(env: KernelEnv, s: list[int], k: int) -> int:
    j = fixed(env, k)
    return env.cpu.rdpmc(s, s[env.lpmc_hw + k] if j < 0 else M.RDPMC_FIXED | j)


def _write_hw(env: KernelEnv, s: list[int], k: int, value: int) -> None:
    j = fixed(env, k)
    msr = env.GP_COUNTER(s[env.lpmc_hw + k]) if j < 0 else env.FIXED_COUNTER(j)
    env.cpu.wrmsr(s, msr, value & width_mask(env, k))


def event_update(env: KernelEnv, s: list[int], k: int) -> None:
    """x86_perf_event_update(): fold the counter's advance into event->count and period_left."""
    new = _read_hw(env, s, k)
    delta = (new - s[env.lpmc_prev + k]) & width_mask(env, k)
    s[env.lpmc_prev + k] = new
    s[env.lpmc_count + k] += delta
    s[env.lpmc_left + k] -= delta


def set_period(env: KernelEnv, s: list[int], k: int) -> bool:
    """x86_perf_event_set_period(): arm the counter at -left; True when a whole period elapsed.

    perf never arms fewer than 2 events ("certain CPUs don't like it if just 1
    hw_event is left") nor more than x86_pmu.max_period (half the counter range)."""
    left, period = s[env.lpmc_left + k], s[env.lpmc_period + k]
    elapsed = False
    if left <= -period:
        left, elapsed = period, True
    if left <= 0:
        left, elapsed = left + period, True
    s[env.lpmc_left + k] = left
    if left < 2:
        left = 2
        note("min-period")
    left = min(left, width_mask(env, k) >> 1)
    s[env.lpmc_prev + k] = -left & width_mask(env, k)
    _write_hw(env, s, k, -left)
    return elapsed


def hw_config(env: KernelEnv, s: list[int], k: int) -> int:
    """The hardware control perf programs for the event (x86_pmu_hw_config: INT always, USR/OS
    unless excluded, the raw config; AMD exclude_host: GuestOnly). A GP selector, or a fixed
    counter's 4-bit field (intel_pmu_enable_fixed: PMI, USR, OS)."""
    config = s[env.lpmc_config + k]
    if fixed(env, k) >= 0:
        return M.FIXED_PMI | (config & (M.FIXED_OS | M.FIXED_USR))
    amd = env.cpu.cfg.amd
    sel = config & (AMD64_RAW_EVENT_MASK if amd else RAW_EVENT_MASK)
    sel |= M.EVENTSEL_INT | M.EVENTSEL_EN | (config & (M.EVENTSEL_USR | M.EVENTSEL_OS))
    if amd and s[env.lpmc_attr + k] & ATTR_EXCLUDE_HOST:
        sel |= M.AMD64_EVENTSEL_GUESTONLY
    return sel


def _write_control(env: KernelEnv, s: list[int], k: int, on: bool) -> None:
    cpu, j = env.cpu, fixed(env, k)
    if j < 0:
        sel = hw_config(env, s, k)
        cpu.wrmsr(s, env.GP_EVENTSEL(s[env.lpmc_hw + k]), sel if on else sel & ~M.EVENTSEL_EN)
        return
    ctrl = cpu.rdmsr(s, M.MSR_CORE_PERF_FIXED_CTR_CTRL) & ~(0xF << (4 * j))
    if on:
        ctrl |= hw_config(env, s, k) << (4 * j)
    cpu.wrmsr(s, M.MSR_CORE_PERF_FIXED_CTR_CTRL, ctrl)


def x86_pmu_start(env: KernelEnv, s: list[int], k: int) -> None:
    """x86_pmu_start(PERF_EF_RELOAD): arm the counter, enable it; an exclude_host event's
    counter joins the guest mask (intel_set_masks)."""
    set_period(env, s, k)
    _write_control(env, s, k, True)
    if s[env.lpmc_attr + k] & ATTR_EXCLUDE_HOST:
        s[env.cpuc_guest_mask] |= hw_bit(env, s, k)
    s[env.lpmc_state + k] = ACTIVE


def x86_pmu_stop(env: KernelEnv, s: list[int], k: int) -> None:
    """x86_pmu_stop(PERF_EF_UPDATE): disable the counter, fold its count (intel_clear_masks)."""
    _write_control(env, s, k, False)
    s[env.cpuc_guest_mask] &= ~hw_bit(env, s, k)
    event_update(env, s, k)


def _enable_all(env: KernelEnv, s: list[int]) -> None:
    """The x86_pmu_enable() that closes perf's disable/enable bracket around a change."""
    if s[env.cpuc_enabled] and env.cpu.global_ctrl >= 0:
        env.cpu.wrmsr(s, env.PERF_GLOBAL_CTRL, env.enable_all_bits(s))


def _pick_counter(env: KernelEnv, s: list[int], k: int, avoid: int, refuse: bool) -> int:
    """The host GP counter for KVM's event ``k``: its previous one if free, else the lowest
    free one, else one a host flexible event holds (that event is scheduled out); -1: none."""
    held = env.guest_counters(s)
    host = {ev.counter: (e, ev.pinned) for e, ev in enumerate(env.host_events) if s[env.ev_active[e]]}
    order: list[int] = [s[env.lpmc_hw + k], *range(env.cpu.cfg.num_gp)]
    free = [c for c in order if c != avoid and not held >> c & 1 and c not in host]
    if free:
        return free[0]
    flexible = [c for c in order if c != avoid and not held >> c & 1 and not host[c][1]]
    pinned = [c for c in order if c != avoid and not held >> c & 1 and host[c][1]]
    for c in flexible or ([] if refuse else pinned):  # refuse=False: an ablation clobbers a pinned one
        if not host[c][1]:
            perf.x86_pmu_stop(env, s, host[c][0])
            s[env.rotate_necessary] = 1
            note("multiplexed")
        return c
    return -1


def sched_in(env: KernelEnv, s: list[int], k: int, refuse: bool = True, avoid: int = -1) -> None:
    """ctx_resched() for KVM's task-pinned event: after the CPU-pinned host events, before the
    CPU-flexible ones; with no counter left perf refuses it (ERROR)."""
    if fixed(env, k) < 0:
        c = _pick_counter(env, s, k, avoid, refuse)
        if c < 0:
            s[env.lpmc_state + k] = ERROR
            note("refused")
            return
        s[env.lpmc_hw + k] = c
    x86_pmu_start(env, s, k)


def preempt(env: KernelEnv, s: list[int], counter: int) -> None:
    """A CPU-pinned host event is scheduled in on ``counter``: KVM's event there moves to another
    free counter (perf reschedules the task's events after the CPU's pinned ones), or goes to
    ERROR when none is left."""
    for k in range(env.vcpu.num_gp):
        if s[env.lpmc_state + k] == ACTIVE and s[env.lpmc_hw + k] == counter:
            x86_pmu_stop(env, s, k)
            sched_in(env, s, k, avoid=counter)


def create(env: KernelEnv, s: list[int], k: int, period: int, exclude_host: bool = True, refuse: bool = True) -> None:
    """perf_event_create_kernel_counter(attr, -1, current, kvm_perf_overflow, pmc): the event is
    installed in the vCPU task's context and scheduled in at once."""
    s[env.lpmc_count + k] = 0
    s[env.lpmc_period + k] = s[env.lpmc_left + k] = period
    s[env.lpmc_attr + k] = ATTR_EXCLUDE_HOST if exclude_host else 0
    sched_in(env, s, k, refuse)
    _enable_all(env, s)


def pause(env: KernelEnv, s: list[int], k: int) -> int:
    """perf_event_pause(event, reset=true): disable (an ERROR event stays ERROR), return the
    count and reset it."""
    if s[env.lpmc_state + k] == ACTIVE:
        x86_pmu_stop(env, s, k)
        s[env.lpmc_state + k] = OFF
        _enable_all(env, s)
    elif s[env.lpmc_state + k] != ERROR:
        s[env.lpmc_state + k] = OFF
    value = s[env.lpmc_count + k]
    s[env.lpmc_count + k] = 0
    return value


def period(env: KernelEnv, s: list[int], k: int, value: int) -> None:
    """perf_event_period(): a running event is stopped, gets the new period from now, restarts."""
    s[env.lpmc_period + k] = value
    active = s[env.lpmc_state + k] == ACTIVE
    if active:
        x86_pmu_stop(env, s, k)
    s[env.lpmc_left + k] = 0
    if active:
        x86_pmu_start(env, s, k)
        _enable_all(env, s)


def enable(env: KernelEnv, s: list[int], k: int, refuse: bool = True) -> None:
    """perf_event_enable(): an ERROR event is cleared to OFF first, then scheduled in."""
    if s[env.lpmc_state + k] == ERROR:
        s[env.lpmc_state + k] = OFF
    if s[env.lpmc_state + k] == OFF:
        sched_in(env, s, k, refuse)
        _enable_all(env, s)


def release(env: KernelEnv, s: list[int], k: int) -> None:
    """perf_event_release_kernel()."""
    if s[env.lpmc_state + k] == ACTIVE:
        x86_pmu_stop(env, s, k)
        _enable_all(env, s)
    for base in (env.lpmc_state, env.lpmc_count, env.lpmc_prev, env.lpmc_left, env.lpmc_period, env.lpmc_attr):
        s[base + k] = 0
    s[env.lpmc_hw + k] = 0


def read_value(env: KernelEnv, s: list[int], k: int) -> int:
    """perf_event_read_value(): an active event is updated from its counter first."""
    if s[env.lpmc_state + k] == ACTIVE:
        event_update(env, s, k)
    return s[env.lpmc_count + k]
