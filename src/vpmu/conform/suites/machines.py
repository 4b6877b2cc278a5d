"""The machines the conformance cases run on.

Intel: an architectural PMU v5 host with full-width counter writes (the mediated
vPMU needs v4+ and FW_WRITES, §2.1), 8 GP and 3 fixed 48-bit counters; the guest
is shown version 2 (KVM's cap) with all of them. Eight GP counters is the
architectural maximum per logical CPU (F-1.1.3), so every counter index the
selftests probe (0-7) exists.

AMD: PerfMonV2 with 6 48-bit core counters (§0.2; no fixed counters).

Both hosts run one host perf event beside the guest: an ``exclude_guest``
cycles event on GP counter 0 — the counter every case uses — with a short
period, so host perf has an overflow (an NMI) every hundred or so host
instructions while the guest's context comes and goes.
"""

from __future__ import annotations

from vpmu.config import MachineConfig
from vpmu.hw import msr as M
from vpmu.kernel.env import HostEvent, VcpuSpec

INTEL = MachineConfig(
    vendor="intel", pmu_version=5, num_gp=8, num_fixed=3, gp_width=48, fixed_width=48, full_width_writes=True
)
AMD = MachineConfig(vendor="amd", pmu_version="perfmonv2", num_gp=6, gp_width=48)
MACHINES = {"intel": INTEL, "amd": AMD}

#: Host cycles between two overflows of the host event.
HOST_PERIOD = 97
HOST_EVENTS = (HostEvent("host_cycles", M.CYCLES, exclude_guest=True, pinned=True, period=HOST_PERIOD, counter=0),)


def vcpu(
    vendor: str,
    deny_events: tuple[int, ...] = (),
    deny_fixed: tuple[int, ...] = (),
    num_gp: int = -1,
    num_fixed: int = -1,
    version: int = 2,
    fixed_bitmap: int = 0,
) -> VcpuSpec:
    """The vCPU: by default the host's counters at version 2 (nothing intercepted but selectors
    and FIXED_CTR_CTRL); the CPUID matrix cases give fewer counters or another version."""
    m = MACHINES[vendor]
    return VcpuSpec(
        num_gp=m.num_gp if num_gp < 0 else num_gp,
        num_fixed=m.num_fixed if num_fixed < 0 else num_fixed,
        intel_compatible=m.intel,
        deny_events=deny_events,
        deny_fixed=deny_fixed,
        version=version,
        fixed_bitmap=fixed_bitmap,
    )
