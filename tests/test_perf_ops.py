"""Host perf reconfiguring by IPI while a mediated guest runs (bounds.perf_ops; §2.3, H15)."""

from __future__ import annotations

import pytest

from vpmu.check.explore import check
from vpmu.check.system import DELIVER, PERF_OP, STEP, System
from vpmu.check.world import resolve_world
from vpmu.designs import get_design


@pytest.mark.parametrize("world", ["intel-perf-ops", "amd-perf-ops"])
def test_upstream_holds_with_host_perf_reconfiguring(world: str) -> None:
    """Disabling and re-enabling the host event at any point keeps every property."""
    r = check(System(get_design("upstream"), resolve_world(world)))
    assert r.verdict == "holds", r.message
    assert r.stats.states > 10_000  # the IPIs really multiply the interleavings


@pytest.mark.parametrize(
    ("world", "dispatch"),
    [
        # VMX acknowledges the vector on exit and KVM dispatches it in handle_exit_irqoff (F-4.4.2).
        ("intel-perf-ops", "vcpu_enter_guest:handle_exit_irqoff"),
        # SVM leaves it pending in the APIC; it is taken when IRQs are enabled (F-5.4).
        ("amd-perf-ops", "vcpu_enter_guest:local_irq_enable"),
    ],
)
def test_ipi_in_guest_mode_is_handled_after_put(world: str, dispatch: str) -> None:
    """A perf IPI arriving in guest mode makes the guest exit; the host handles it only after
    put (§1.1), so the event toggles with guest_ctx_loaded clear and H15's refusal is not needed."""
    system = System(get_design("upstream"), resolve_world(world))
    env, cpu = system.env, system.cpu
    s = system.initial()
    while not s[cpu.mode]:  # run to the first VM-entry
        s, _ = system.apply(s, (STEP, 0))
    s, rec = system.apply(s, (PERF_OP, 0))
    assert "perf_event_disable(cycles)" in rec.text
    assert system.moves(s)[0] == (DELIVER, 0)
    s, rec = system.apply(s, (DELIVER, 0))
    assert rec.label == "VM-exit" and not s[cpu.mode]
    labels = []
    while s[env.ipi_event] >= 0:
        s, rec = system.apply(s, system.moves(s)[0])
        labels.append(rec.label)
    assert labels.index("perf_put_guest_context:clear_loaded") < labels.index(dispatch)
    assert labels.index(dispatch) < labels.index("perf_event_ipi:event_function")
    assert not s[env.ev_enabled[0]] and not s[env.ev_active[0]]


def test_simulated_perf_ipis_toggle_the_host_event_and_keep_counts_exact() -> None:
    """`simulate --perf-ops every:K`: another CPU disables, then re-enables, the host event; perf's
    reads still equal the host-mode events it asked for, and the guest's count is native."""
    from vpmu.check.simulate import Plan, simulate

    system = System(get_design("upstream"), resolve_world("intel-long"))
    r = simulate(
        system,
        Plan.parse("every:10000", "--exits"),
        reason="interrupt",
        perf_ops=Plan.parse("every:250000", "--perf-ops"),
    )
    assert r.finished and r.perf_ops == 4 and not r.violations
    assert ("guest read", "rdpmc(0x0)", 1_000_001, 1_000_001) in r.journal
    texts = [rec.text for rec in r.records if rec.label == "IPI"]
    assert texts[0].startswith("another CPU calls perf_event_disable(cycles)")
    assert texts[1].startswith("another CPU calls perf_event_enable(cycles)")


def test_random_plans_are_seeded_and_advance_loops_in_bulk() -> None:
    from vpmu.check.simulate import Plan, simulate

    def run(seed: int) -> tuple[int, int, int]:
        system = System(get_design("upstream"), resolve_world("amd-long"))
        r = simulate(system, Plan.parse("random:0.0001", "--exits"), seed=seed)
        return len(r.records), r.exits, r.retired

    assert run(7) == run(7)
    steps, exits, retired = run(7)
    assert retired == 1_000_001 and 50 < exits < 200 and steps < 5_000  # bulk, not one step per instruction
