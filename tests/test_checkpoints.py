"""The load/put checkpoints (I5, I6) and KVM's emulation of AMD PerfCntrGlobalStatusSet."""

from __future__ import annotations

import tomllib

from vpmu.check.explore import check
from vpmu.check.system import System
from vpmu.check.world import WorldSpec, parse_world
from vpmu.designs import UPSTREAM, get_design
from vpmu.kernel.lang import CALL, Edit, Step

WORLD = """
[machine]
vendor = "intel"
num_gp = 1
gp_width = 5
num_fixed = 0

[[host_event]]
name = "cycles"
event = "cycles"

[guest]
program = ["wrmsr PMC0 -3", "wrmsr EVTSEL0 INSTRUCTIONS|USR|OS|INT|EN", "loop 3", "rdpmc 0", "hlt"]
rearm = ["PMC0 -8"]

[bounds]
exits = 0
nmis = 0
"""


def world(text: str = WORLD) -> WorldSpec:
    return parse_world(tomllib.loads(text), "t")


def test_put_must_route_pmis_back_to_the_host() -> None:
    """I5: after put, LVTPC is the host's NMI again. Without perf_put_guest_lvtpc() the end-of-put
    check reports it even when no host counter is armed to make the misrouting visible."""
    design = UPSTREAM.derive("put-keeps-lvtpc", "I5 ablation", [Edit("delete", "kvm_mediated_pmu_put", "put_lvtpc")])
    r = check(System(design, world(), ("clean-after-put",)))
    assert (r.verdict, r.prop) == ("violated", "clean-after-put")
    assert "after put LVTPC = Fixed|0xf5" in r.message
    assert r.records[-1].label == "perf_put_guest_context:clear_loaded"  # the last step of put
    assert check(System(get_design("upstream"), world(), ("clean-after-put",))).verdict == "holds"


def test_load_checkpoint_is_judged_when_load_ends_by_a_jump() -> None:
    """I6 is judged when the task leaves kvm_mediated_pmu_load, also by a jump (a guarded call
    skipped at its end), not only by falling through."""
    skip_vendor = Step(
        "vendor_load",
        "if (false) kvm_pmu_call(mediated_load)(vcpu)",
        kind=CALL,
        call="intel_mediated_pmu_load",
        when=lambda s: False,
        when_text="false",
    )
    design = UPSTREAM.derive(
        "skip-vendor-load", "I6 ablation", [Edit("replace", "kvm_mediated_pmu_load", "vendor_load", step=skip_vendor)]
    )
    w = world(WORLD.replace('"loop 3", "rdpmc 0"', '"loop 3", "rdmsr GLOBAL_STATUS", "rdpmc 0"'))
    r = check(System(design, w, ("restored-after-load",)))
    assert (r.verdict, r.prop) == ("violated", "restored-after-load")


def test_amd_guest_status_set_is_emulated_when_intercepted() -> None:
    """A vCPU with fewer counters than the host has its global MSRs intercepted (§5.3); KVM
    emulates a PerfCntrGlobalStatusSet write into pmu->global_status, as the native CPU sets it."""
    text = """
[machine]
vendor = "amd"
num_gp = 2
gp_width = 5

[vcpu]
num_gp = 1

[guest]
program = ["wrmsr GLOBAL_STATUS_SET 1", "rdmsr GLOBAL_STATUS", "hlt"]

[bounds]
exits = 0
nmis = 0
"""
    assert check(System(get_design("upstream"), world(text))).verdict == "holds"
