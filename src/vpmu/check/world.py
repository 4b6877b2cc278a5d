"""Worlds: what a check explores — machine, vCPU, host events, guest program, bounds.

A world is a TOML file (the defaults live in ``vpmu/worlds/``; ``vpmu worlds``
lists them). Every key is validated; a mistake names the file, the key, the
value and what is allowed. Example::

    name = "intel-small"
    description = "one GP + one fixed counter, 2-bit wide"
    cpus = 1                # physical CPUs; with 2 or more the vCPU may migrate (bounds.migrations)

    [machine]               # vpmu.config.MachineConfig fields
    vendor = "intel"
    num_gp = 1
    gp_width = 2

    [vcpu]                  # defaults: the host's counters
    intel_compatible = true

    [[host_event]]
    name = "cycles"
    event = "cycles"        # cycles | instructions | branches
    exclude_guest = true
    pinned = true           # false: flexible; flexible events may share a counter (multiplexing)
    opened = true           # false: another CPU opens it later (a perf op)
    cpu = 0                 # 1: bound to another CPU: never scheduled here, but counts in active_events
    close = false           # true: another CPU may also close (destroy) it (a perf op)

    [guest]
    program = ["wrmsr EVTSEL0 INSTRUCTIONS|OS|USR|INT|EN", "loop 3", "rdpmc 0", "hlt"]
    ack = "late"            # where the guest's PMI handler unmasks LVTPC
    enable = "GP0"          # the GLOBAL_CTRL value its handler restores
    rearm = ["PMC0 -2"]     # counter presets its handler writes back

    [bounds]
    exits = 1               # asynchronous VM-exits the checker may inject
    exit_reasons = ["timer"]  # Intel: timer (fastpath) | interrupt; AMD: interrupt only
    nmis = 1                # unrelated NMIs
    perf_ops = 0            # host perf operations from another CPU: enable/disable an event,
                            # open one (opened = false), rotate flexible events
    migrations = 0          # vCPU migrations between pCPUs (cpus > 1)

    [check]
    properties = []         # empty: all properties

    [vm]
    lifecycle = false       # true: VM creation (perf_create_mediated_pmu) and destruction are modelled,
                            # include-guest (exclude_guest = false) events are allowed
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from vpmu.check import properties as P
from vpmu.check.world_schema import key, keys_of
from vpmu.config import MachineConfig, load_toml
from vpmu.errors import ConfigError, VpmuError
from vpmu.hw import msr as M
from vpmu.hw import virt as V
from vpmu.kernel.env import HostEvent, VcpuSpec

#: Exits the checker may inject at any guest instruction boundary. A preemption-timer
#: exit is handled in KVM's fastpath; an external interrupt (a host timer tick) is not.
ASYNC_EXITS = {"timer": V.EXIT_TIMER, "interrupt": V.EXIT_EXTINT_HOST}
#: SVM has no preemption timer: on AMD a host timer tick is #VMEXIT(INTR), an "interrupt" exit.
NO_TIMER_ON_AMD = "SVM has no preemption timer: on AMD a host timer tick is an 'interrupt' exit (#VMEXIT(INTR))"


def default_exit_reason(vendor: str) -> str:
    """The asynchronous exit a schedule uses when it names none: the VMX preemption timer on
    Intel, a host interrupt on AMD."""
    return "timer" if vendor == "intel" else "interrupt"


def check_exit_reason(reason: str, vendor: str, field: str, where: str = "") -> None:
    """A clear error for an exit reason the vendor does not have."""
    if reason not in ASYNC_EXITS:
        raise ConfigError(field, reason, f"allowed: {', '.join(ASYNC_EXITS)}", where)
    if reason == "timer" and vendor == "amd":
        raise ConfigError(field, reason, f"{NO_TIMER_ON_AMD}; allowed on AMD: interrupt", where)


TOP_KEYS = keys_of("")


@dataclass(frozen=True)
class Bounds:
    exits: int = 1
    exit_reasons: tuple[str, ...] = ("timer",)
    nmis: int = 1
    perf_ops: int = 0  # host perf operations from another CPU (open, enable/disable, rotate)
    max_depth: int = 0  # 0: unbounded (the programs are finite)
    migrations: int = 0  # vCPU migrations between pCPUs (worlds with cpus > 1)


@dataclass(frozen=True)
class GuestSpec:
    program: tuple[str, ...]
    ack: str = "late"
    enable: str = "GP0"
    rearm: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorldSpec:
    name: str
    machine: MachineConfig
    vcpu: VcpuSpec
    host_events: tuple[HostEvent, ...]
    guest: GuestSpec
    bounds: Bounds = field(default_factory=Bounds)
    properties: tuple[str, ...] = ()  # empty: all
    description: str = ""
    source: str = ""
    #: Model the VM's life: perf_create_mediated_pmu() at the first KVM_CREATE_VCPU and
    #: perf_release_mediated_pmu() at destruction (S4, H14); include-guest events are allowed.
    lifecycle: bool = False
    #: Physical CPUs; the vCPU runs on one at a time and may migrate (vpmu.check.smp).
    cpus: int = 1

    def enabled_properties(self) -> tuple[str, ...]:
        chosen = self.properties or tuple(p.name for p in P.PROPERTIES)
        return tuple(n for n in chosen if P.get(n).vendor in ("", self.machine.vendor))


def _table(data: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    t = data.get(key, {})
    if not isinstance(t, dict):
        raise ConfigError(key, t, "must be a TOML table", where)
    return t


def _known(table: Mapping[str, Any], keys: tuple[str, ...], prefix: str, where: str) -> None:
    for k in table:
        if k not in keys:
            raise ConfigError(f"{prefix}{k}", table[k], f"unknown key; allowed: {', '.join(keys)}", where)


def _int(v: Any, name: str, lo: int, hi: int, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ConfigError(name, v, f"allowed: an integer from {lo} to {hi}", where)
    return v


def _bound(table: Mapping[str, Any], name: str, default: int, where: str) -> int:
    """A [bounds] integer, in the range the schema gives (world_schema.KEYS)."""
    k = key("bounds", name)
    assert k.lo is not None and k.hi is not None
    return _int(table.get(name, default), f"bounds.{name}", k.lo, k.hi, where)


def _ints(v: Any, name: str, lo: int, hi: int, where: str, allowed: str) -> tuple[int, ...]:
    """A list of integers, each from lo to hi."""
    if not isinstance(v, list):
        raise ConfigError(name, v, f"allowed: a list of integers; {allowed}", where)
    for x in v:
        if not isinstance(x, int) or isinstance(x, bool) or not lo <= x <= hi:
            raise ConfigError(name, x, allowed if allowed.startswith("allowed") else f"allowed: {allowed}", where)
    return tuple(v)


def _lvtpc(v: Any, where: str) -> int:
    """The guest's initial LVTPC: a name, or a value with only the architectural fields (F-2.2, F-2.3)."""
    allowed = "allowed: " + key("vcpu", "lvtpc").allowed
    if v in ("NMI", "NMI|MASKED"):
        return M.APIC_DM_NMI | (M.APIC_LVT_MASKED if "MASKED" in v else 0)
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 0xFFFFFFFF:
        raise ConfigError("vcpu.lvtpc", v, allowed, where)
    if v & (M.LVTPC_RESERVED | M.APIC_DELIVERY_STATUS) & 0xFFFFFFFF:
        raise ConfigError("vcpu.lvtpc", v, f"reserved or read-only bits set; {allowed}", where)
    dm = v & M.APIC_DM_MASK
    if dm not in (M.APIC_DM_FIXED, M.APIC_DM_SMI, M.APIC_DM_NMI):
        raise ConfigError("vcpu.lvtpc", v, f"delivery mode {dm >> 8:#05b} is not one LVTPC supports; {allowed}", where)
    if dm == M.APIC_DM_FIXED and (v & M.APIC_VECTOR_MASK) < 16:
        raise ConfigError("vcpu.lvtpc", v, f"vectors 0 to 15 are illegal in Fixed mode; {allowed}", where)
    return v


def _bool(v: Any, name: str, where: str) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(name, v, "allowed: true or false", where)
    return v


def _strs(v: Any, name: str, where: str) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(name, v, "allowed: a list of strings", where)
    return tuple(v)


def parse_world(data: Mapping[str, Any], where: str, default_name: str = "world") -> WorldSpec:
    """Validate a world mapping (as read from TOML)."""
    _known(data, TOP_KEYS, "", where)
    machine_t = _table(data, "machine", where)
    machine = MachineConfig.from_mapping(machine_t, where=f"{where} [machine]")

    vt = _table(data, "vcpu", where)
    _known(vt, keys_of("vcpu"), "vcpu.", where)
    ngp = _int(vt.get("num_gp", machine.num_gp), "vcpu.num_gp", 1, machine.num_gp, where)
    nfx = _int(vt.get("num_fixed", machine.num_fixed), "vcpu.num_fixed", 0, machine.num_fixed, where)
    # An event select is 8 bits on Intel, 12 on AMD (EventSelect[11:8] in bits 35:32; x86-pmu-hardware.md
    # §1.4, §3.3), as kvm.event_allowed() matches it.
    max_event = 0xFF if machine.intel else 0xFFF
    deny = _ints(vt.get("deny_events", []), "vcpu.deny_events", 0, max_event, where, key("vcpu", "deny_events").allowed)
    deny_fixed = _ints(
        vt.get("deny_fixed", []),
        "vcpu.deny_fixed",
        0,
        nfx - 1,
        where,
        "allowed: " + (f"fixed-counter indices 0 to {nfx - 1}" if nfx else "none (the vCPU has no fixed counters)"),
    )
    lvt = _lvtpc(vt.get("lvtpc", "NMI"), where)
    if vt.get("version", 2) == 1 and nfx and machine.intel:
        raise ConfigError(
            "vcpu.num_fixed", nfx, "allowed: 0 with vcpu.version = 1 (no fixed counters before v2)", where
        )
    vcpu = VcpuSpec(
        num_gp=ngp,
        num_fixed=nfx,
        intel_compatible=_bool(vt.get("intel_compatible", machine.intel), "vcpu.intel_compatible", where),
        deny_events=deny,
        deny_fixed=deny_fixed,
        lvtpc=lvt,
        # Guest CPUID: version 1-5 (Intel; AMD: 2 PerfMonV2, 1 none), widths up to the host's.
        version=_int(vt.get("version", 2), "vcpu.version", 1, 5, where),
        gp_width=_int(vt.get("gp_width", machine.gp_width), "vcpu.gp_width", 2, machine.gp_width, where),
        fixed_width=_int(vt.get("fixed_width", machine.fixed_width), "vcpu.fixed_width", 2, machine.fixed_width, where),
        fixed_bitmap=_int(vt.get("fixed_bitmap", 0), "vcpu.fixed_bitmap", 0, 0xFF, where),
    )

    vm_t = _table(data, "vm", where)
    _known(vm_t, keys_of("vm"), "vm.", where)
    lifecycle = _bool(vm_t.get("lifecycle", False), "vm.lifecycle", where)

    events_t = data.get("host_event", [])
    if not isinstance(events_t, list):
        raise ConfigError("host_event", events_t, "must be an array of tables ([[host_event]])", where)
    events: list[HostEvent] = []
    used: dict[int, bool] = {}  # counter -> used by a pinned event
    for n, et in enumerate(events_t):
        pre = f"host_event[{n}]."
        if not isinstance(et, dict):
            raise ConfigError(f"host_event[{n}]", et, "must be a table", where)
        _known(et, keys_of("host_event"), pre, where)
        name = et.get("name", f"event{n}")
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(pre + "name", name, "allowed: an identifier", where)
        if any(e.name == name for e in events):
            raise ConfigError(pre + "name", name, "another host event has this name", where)
        ev = et.get("event", M.CYCLES)
        if ev not in M.EVENT_STREAMS:
            raise ConfigError(pre + "event", ev, f"allowed: {', '.join(M.EVENT_STREAMS)}", where)
        excl = _bool(et.get("exclude_guest", True), pre + "exclude_guest", where)
        if not excl and not lifecycle:
            # H14 (§2.2): the host's events exist before the VM, so perf_create_mediated_pmu()
            # fails and KVM_CREATE_VCPU returns -EBUSY; the other order gets -EOPNOTSUPP.
            raise ConfigError(
                pre + "exclude_guest",
                False,
                'with an include-guest core event on the host, KVM_CREATE_VCPU fails with -EBUSY ("Failed to '
                'enable mediated vPMU, try disabling system wide perf events and nmi_watchdog."); an event '
                "created after the VM gets -EOPNOTSUPP (H14, §2.2); allowed: true "
                "(or false with [vm] lifecycle = true)",
                where,
            )
        counter = _int(et.get("counter", n), pre + "counter", 0, machine.num_gp - 1, where)
        pinned = _bool(et.get("pinned", True), pre + "pinned", where)
        ev_cpu = _int(et.get("cpu", 0), pre + "cpu", 0, 1, where)
        if ev_cpu:  # another CPU's counters are its own
            counter = 0
        elif counter in used and (pinned or used[counter]):
            raise ConfigError(
                pre + "counter",
                counter,
                "another host event already uses this counter; only flexible events (pinned = false) may "
                "share one (perf multiplexes them)",
                where,
            )
        if not ev_cpu:
            used[counter] = used.get(counter, False) or pinned
        # perf's default for counting events: x86_pmu.max_period = cntval_mask >> 1.
        max_period = (1 << (machine.gp_width - 1)) - 1
        period = _int(et.get("period", max_period), pre + "period", 1, (1 << machine.gp_width) - 1, where)
        opened = _bool(et.get("opened", True), pre + "opened", where)
        close = _bool(et.get("close", False), pre + "close", where)
        events.append(HostEvent(name, ev, excl, pinned, period, counter, opened, ev_cpu, close))

    gt = _table(data, "guest", where)
    _known(gt, keys_of("guest"), "guest.", where)
    if "program" not in gt:
        raise ConfigError("guest.program", None, "required: a list of guest instructions", where)
    ack = gt.get("ack", "late")
    if ack not in ("early", "mid", "late"):
        raise ConfigError("guest.ack", ack, "allowed: early, mid, late", where)
    enable = gt.get("enable", "GP0")
    if not isinstance(enable, str):
        raise ConfigError("guest.enable", enable, 'allowed: a value expression such as "GP0|FIXED0"', where)
    guest = GuestSpec(
        _strs(gt["program"], "guest.program", where), ack, enable, _strs(gt.get("rearm", []), "guest.rearm", where)
    )

    bt = _table(data, "bounds", where)
    _known(bt, keys_of("bounds"), "bounds.", where)
    cpus = _int(data.get("cpus", 1), "cpus", 1, key("", "cpus").hi or 1, where)
    migrations = _bound(bt, "migrations", 0, where)
    if migrations and cpus == 1:
        raise ConfigError(
            "bounds.migrations", migrations, "allowed: 0 in a world with one CPU (set cpus = 2 or more)", where
        )
    if cpus > 1 and any(e.cpu for e in events):
        bad = next(e.name for e in events if e.cpu)
        raise ConfigError(
            "host_event.cpu",
            1,
            f"event {bad!r}: with cpus > 1 every host event is system-wide (an instance on each pCPU); allowed: 0",
            where,
        )
    reasons = _strs(bt.get("exit_reasons", [default_exit_reason(machine.vendor)]), "bounds.exit_reasons", where)
    for r in reasons:
        check_exit_reason(r, machine.vendor, "bounds.exit_reasons", where)
    perf_ops = _bound(bt, "perf_ops", 0, where)
    unopened = [e.name for e in events if not e.opened or e.close]
    if unopened and perf_ops == 0:
        raise ConfigError(
            "bounds.perf_ops",
            0,
            f"host event {unopened[0]!r} has opened = false or close = true, and only a perf operation opens "
            "or closes it; allowed: 1 to 16",
            where,
        )
    bounds = Bounds(
        exits=_bound(bt, "exits", 1, where),
        exit_reasons=reasons,
        nmis=_bound(bt, "nmis", 1, where),
        perf_ops=perf_ops,
        max_depth=_bound(bt, "max_depth", 0, where),
        migrations=migrations,
    )

    ct = _table(data, "check", where)
    _known(ct, keys_of("check"), "check.", where)
    props = _strs(ct.get("properties", []), "check.properties", where)
    for p in props:
        if p not in P.BY_NAME:
            raise ConfigError("check.properties", p, f"allowed: {', '.join(P.BY_NAME)}", where)
    if props:
        # No vacuous verdict: a world that judges nothing on its vendor is refused, not "holds".
        applicable = [p for p in props if P.BY_NAME[p].vendor in ("", machine.vendor)]
        if not applicable:
            raise ConfigError(
                "check.properties",
                list(props),
                f"none applies to the world's vendor, {machine.vendor} ("
                + "; ".join(f"{p} is {P.BY_NAME[p].vendor} only" for p in props)
                + "); allowed: at least one property of this vendor (vpmu explain)",
                where,
            )

    name = data.get("name", default_name)
    if not isinstance(name, str):
        raise ConfigError("name", name, "allowed: a string", where)
    desc = data.get("description", "")
    if not isinstance(desc, str):
        raise ConfigError("description", desc, "allowed: a string", where)
    return WorldSpec(name, machine, vcpu, tuple(events), guest, bounds, props, desc, where, lifecycle, cpus)


def load_world(path: str | Path) -> WorldSpec:
    p = Path(path)
    return parse_world(load_toml(p), str(p), default_name=p.stem)


def builtin_worlds() -> dict[str, WorldSpec]:
    """The worlds shipped in ``vpmu/worlds/``, by name."""
    out: dict[str, WorldSpec] = {}
    for entry in sorted(resources.files("vpmu.worlds").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            import tomllib

            data = tomllib.loads(entry.read_text(encoding="utf-8"))
            spec = parse_world(data, f"worlds/{entry.name}", default_name=entry.name[:-5])
            out[spec.name] = spec
    return out


DEFAULT_WORLDS = {"intel": "intel-default", "amd": "amd-default"}


def resolve_world(ref: str) -> WorldSpec:
    """A built-in world by name, or a TOML file by path."""
    worlds = builtin_worlds()
    if ref in worlds:
        return worlds[ref]
    if ref.endswith(".toml") or Path(ref).exists():
        return load_world(ref)
    raise VpmuError(f"unknown world {ref!r}; built-in worlds: {', '.join(worlds)} (or give a .toml path)")
