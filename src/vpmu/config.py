"""The machine a model runs on: vendor, PMU flavour, counters, and the open points.

A :class:`MachineConfig` is frozen and validated at construction; every invalid
value raises :class:`~vpmu.errors.ConfigError` naming the field, the value and
what is allowed. Load one from keyword arguments or from a TOML file
(``[machine]`` table, or the file's top level).

Open points of the hardware reference (x86-pmu-hardware.md §8) are fields here,
with the reference's recommended default; docs/fidelity.md records each choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from vpmu import inputs
from vpmu.errors import ConfigError

VENDORS = ("intel", "amd")
AMD_VERSIONS = ("legacy", "perfctrextcore", "perfmonv2")
ACK_PLACEMENTS = ("early", "mid", "late")
MASKED_PMI_POLICIES = ("drop", "latch")
SVME_OFF_POLICIES = ("linux", "apm")
RDPMC_FAST_POLICIES = ("gp", "low32")
FIXED_HIGH_BITS_POLICIES = ("gp", "truncate")


@dataclass(frozen=True)
class MachineConfig:
    """One physical CPU's PMU and virtualization features.

    Counter widths are small in exhaustive worlds (2-3 bits, so an overflow is a
    few events away) and real (48) in simulation and conformance.
    """

    vendor: str = "intel"
    #: Intel: architectural perfmon version 1..6 (F-1.1). AMD: "legacy" (K7, 4
    #: counters), "perfctrextcore" (6 counters, F-3.1.1) or "perfmonv2" (global
    #: ctl/status, F-3.6).
    pmu_version: int | str = 0  # 0: the vendor's default (Intel 5, AMD "perfmonv2")
    num_gp: int = 2
    gp_width: int = 48
    #: Intel only (AMD has no fixed counters, §0.2). Default: 1 on Intel, 0 on AMD.
    num_fixed: int = -1  # -1: the vendor's default
    fixed_width: int = 48
    #: IA32_PERF_CAPABILITIES.FW_WRITE: full-width IA32_A_PMCx aliases (F-1.5.3).
    full_width_writes: bool = True
    #: VM-exit control "save IA32_PERF_GLOBAL_CTRL" (SPR+; Skylake-Icelake lack it, H13).
    vmx_save_global_ctrl: bool = True
    #: Where the host Intel PMI handler unmasks LVTPC (§3.1, F-2.7).
    host_ack: str = "late"
    #: Overflow with INT while LVTPC.Mask=1: "drop" (KVM's emulation) or "latch"
    #: and deliver on unmask (open point 1, F-2.8).
    masked_pmi: str = "drop"
    #: Instructions the running context may retire between a PMI becoming
    #: deliverable and its delivery (open point 4, F-1.8.5).
    pmi_skid: int = 0
    #: Whether IA32_PERF_GLOBAL_STATUS_SET of an overflow bit raises a PMI on
    #: Intel (open point 2; AMD documents "no", F-3.6.5).
    status_set_raises_pmi: bool = False
    #: Cycles counted by guest-enabled cycle counters across a VM transition
    #: (open point 3, F-4.3.2).
    transition_cycles: int = 0
    #: Fixed-counter write with bits at or above the width: #GP or truncate
    #: (open point 5, F-1.5.5).
    fixed_high_bits: str = "gp"
    #: AMD Host/GuestOnly with EFER.SVME=0: "linux" (HO or GO set => no count)
    #: or "apm" (the APM table) (open point 6, F-3.4).
    svme_off_filter: str = "linux"
    #: RDPMC with ECX[31] on an architectural Intel PMU (open point 7, F-1.11.2).
    rdpmc_fast: str = "gp"
    #: The host kernel's unknown_nmi_panic (or panic_on_unrecovered_nmi) boot parameter: an NMI
    #: no handler claims panics instead of "Dazed and confused, but trying to continue"
    #: (unknown_nmi_error(), arch/x86/kernel/nmi.c; V6).
    unknown_nmi_panic: bool = False
    #: AMD: VMRUN retires as a branch in guest context, counted by the guest's branch counters
    #: (kvm-unit-tests 89126fa4, verified-facts V13). Off by default: see docs/fidelity.md §10.
    vmrun_counts_branch: bool = False

    def __post_init__(self) -> None:
        # Vendor-dependent defaults: Intel v5 with one fixed counter, AMD PerfMonV2.
        if self.pmu_version == 0:
            object.__setattr__(self, "pmu_version", 5 if self.vendor == "intel" else "perfmonv2")
        if self.num_fixed == -1:
            # PMU v1 has no fixed counters (F-1.1.1), so its default is 0 too.
            fixed = 1 if self.vendor == "intel" and self.pmu_version != 1 else 0
            object.__setattr__(self, "num_fixed", fixed)
        _validate(self)

    # -- derived facts -----------------------------------------------------
    @property
    def intel(self) -> bool:
        return self.vendor == "intel"

    @property
    def amd(self) -> bool:
        return self.vendor == "amd"

    @property
    def has_global_regs(self) -> bool:
        """Intel v2+ or AMD PerfMonV2: GLOBAL_CTRL/STATUS exist (F-1.1.2, F-3.6)."""
        if self.intel:
            return int(self.pmu_version) >= 2
        return self.pmu_version == "perfmonv2"

    @property
    def has_status_set(self) -> bool:
        """Intel v4+ STATUS_SET (F-1.1.4) or AMD PerfMonV2 StatusSet (F-3.6.4)."""
        if self.intel:
            return int(self.pmu_version) >= 4
        return self.pmu_version == "perfmonv2"

    @property
    def streamlined_freeze(self) -> bool:
        """Intel v4+ freeze semantics (F-1.9.3) instead of legacy (F-1.9.1)."""
        return self.intel and int(self.pmu_version) >= 4

    @property
    def mediated_capable(self) -> bool:
        """Host supports KVM's mediated vPMU (§2.1, §4.1, §4.2)."""
        if self.intel:
            return int(self.pmu_version) >= 4 and self.full_width_writes
        return self.pmu_version == "perfmonv2"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "") -> MachineConfig:
        """Build from a mapping, rejecting unknown keys by name."""
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(key, data[key], f"unknown field; known fields: {', '.join(sorted(known))}", where)
        try:
            return cls(**dict(data))
        except ConfigError as e:
            if where and not str(e).startswith(where):
                raise ConfigError(e.field, e.value, e.allowed, where) from None
            raise

    @classmethod
    def load(cls, path: str | Path) -> MachineConfig:
        """Load from a TOML file: a ``[machine]`` table, or keys at the top level."""
        data = load_toml(path)
        table = data.get("machine", data)
        if not isinstance(table, dict):
            raise ConfigError("machine", table, "must be a TOML table", str(path))
        return cls.from_mapping(table, where=str(path))


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file: not UTF-8, malformed or too deeply nested is a one-line user error."""
    return inputs.load_toml(path)


def _check_int(field: str, value: object, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(field, value, f"allowed: an integer from {lo} to {hi}")


def _check_bool(field: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(field, value, "allowed: true or false")


def _check_choice(field: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(field, value, f"allowed: {', '.join(choices)}")


def _validate(c: MachineConfig) -> None:
    _check_choice("vendor", c.vendor, VENDORS)
    if c.intel:
        _check_int("pmu_version", c.pmu_version, 1, 6)
        # Intel: up to 8 GP counters per logical CPU with HT off (F-1.1.3).
        _check_int("num_gp", c.num_gp, 1, 8)
        if int(c.pmu_version) >= 2:
            _check_int("num_fixed", c.num_fixed, 0, 4)
        elif c.num_fixed != 0:
            raise ConfigError("num_fixed", c.num_fixed, "allowed: 0 (PMU v1 has no fixed counters, F-1.1.1)")
    else:
        _check_choice("pmu_version", c.pmu_version, AMD_VERSIONS)
        max_gp = 4 if c.pmu_version == "legacy" else 6
        _check_int("num_gp", c.num_gp, 1, max_gp)
        if c.num_fixed != 0:
            raise ConfigError("num_fixed", c.num_fixed, "allowed: 0 (AMD has no fixed counters)")
    _check_int("gp_width", c.gp_width, 2, 48)
    _check_int("fixed_width", c.fixed_width, 2, 48)
    _check_bool("full_width_writes", c.full_width_writes)
    _check_bool("vmx_save_global_ctrl", c.vmx_save_global_ctrl)
    _check_choice("host_ack", c.host_ack, ACK_PLACEMENTS)
    _check_choice("masked_pmi", c.masked_pmi, MASKED_PMI_POLICIES)
    _check_int("pmi_skid", c.pmi_skid, 0, 16)
    _check_bool("status_set_raises_pmi", c.status_set_raises_pmi)
    _check_int("transition_cycles", c.transition_cycles, 0, 16)
    _check_choice("fixed_high_bits", c.fixed_high_bits, FIXED_HIGH_BITS_POLICIES)
    _check_choice("svme_off_filter", c.svme_off_filter, SVME_OFF_POLICIES)
    _check_choice("rdpmc_fast", c.rdpmc_fast, RDPMC_FAST_POLICIES)
    _check_bool("unknown_nmi_panic", c.unknown_nmi_panic)
    _check_bool("vmrun_counts_branch", c.vmrun_counts_branch)
    if c.vmrun_counts_branch and not c.amd:
        raise ConfigError("vmrun_counts_branch", True, 'allowed: true only with vendor = "amd" (VMRUN is SVM\'s)')
    if c.amd and c.status_set_raises_pmi:
        raise ConfigError(
            "status_set_raises_pmi", True, "allowed: false on AMD (StatusSet has no side effects, F-3.6.5)"
        )
