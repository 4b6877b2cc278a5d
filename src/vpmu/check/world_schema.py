"""The world format as data: every key, its type, range, default and meaning.

:func:`vpmu.check.world.parse_world` takes from here the keys each table may hold
and the range of every bounded integer, and ``docs/worlds.md`` is generated from
the same table (``python -m vpmu.check.world_schema docs/worlds.md`` rewrites the
generated part; a test checks it is current), so the reference and the validator
cannot drift apart. Ranges that depend on the machine (a counter index below
``machine.num_gp``) are checked in ``parse_world`` and stated here in words.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from pathlib import Path

from vpmu.config import MachineConfig


@dataclass(frozen=True)
class Key:
    """One key of a world file."""

    table: str  # "" (top level), "machine", "vcpu", "host_event", "guest", "bounds", "check", "vm"
    name: str
    type: str  # as a user reads it: "integer", "boolean", "string", "list of strings", ...
    default: str  # "required", or the default as TOML / in words
    allowed: str
    meaning: str
    lo: int | None = None  # a bounded integer: the validator checks lo <= value <= hi
    hi: int | None = None


def _machine_keys() -> tuple[Key, ...]:
    """The [machine] table is a MachineConfig (vpmu.config validates it): one row per field."""
    allowed = {
        "vendor": ('"intel"', '"intel" or "amd"', "the CPU vendor"),
        "pmu_version": (
            'Intel 5, AMD "perfmonv2"',
            'Intel 1 to 6; AMD "legacy", "perfctrextcore" or "perfmonv2"',
            "Intel architectural perfmon version (F-1.1); AMD PMU flavour (F-3.1.1, F-3.6)",
        ),
        "num_gp": ("2", "Intel 1 to 8; AMD 1 to 4 (legacy) or 6", "general-purpose counters (F-1.1.3)"),
        "gp_width": ("48", "2 to 48", "bits of a GP counter (small in exhaustive worlds: an overflow is near)"),
        "num_fixed": ("Intel 1 (v1: 0), AMD 0", "Intel v2+ 0 to 4; otherwise 0", "fixed counters (Intel only)"),
        "fixed_width": ("48", "2 to 48", "bits of a fixed counter"),
        "full_width_writes": ("true", "true, false", "IA32_PERF_CAPABILITIES.FW_WRITE (F-1.5.3)"),
        "vmx_save_global_ctrl": ("true", "true, false", 'VM-exit control "save IA32_PERF_GLOBAL_CTRL" (H13)'),
        "host_ack": ('"late"', '"early", "mid", "late"', "where the host PMI handler unmasks LVTPC (F-2.7)"),
        "masked_pmi": ('"drop"', '"drop", "latch"', "an overflow PMI while LVTPC is masked (open point, F-2.8)"),
        "pmi_skid": ("0", "0 to 16", "instructions retired between a PMI and its delivery (F-1.8.5)"),
        "status_set_raises_pmi": ("false", "true, false (AMD: false)", "GLOBAL_STATUS_SET raises a PMI (F-3.6.5)"),
        "transition_cycles": ("0", "0 to 16", "cycles counted across a VM transition (F-4.3.2)"),
        "fixed_high_bits": ('"gp"', '"gp", "truncate"', "a fixed-counter write above its width (F-1.5.5)"),
        "svme_off_filter": ('"linux"', '"linux", "apm"', "Host/GuestOnly with EFER.SVME = 0 (F-3.4)"),
        "rdpmc_fast": ('"gp"', '"gp", "low32"', "RDPMC with ECX[31] on Intel (F-1.11.2)"),
        "vmrun_counts_branch": (
            "false",
            "true, false (true only on AMD)",
            "VMRUN retires as a guest branch (V13; kvm-unit-tests 89126fa4)",
        ),
        "unknown_nmi_panic": (
            "false",
            "true, false",
            "the host's unknown_nmi_panic: an NMI no handler claims panics instead of a warning (V6)",
        ),
    }
    out = []
    for f in fields(MachineConfig):
        default, allow, meaning = allowed[f.name]
        kind = (
            "integer or string"
            if f.name == "pmu_version"
            else {"bool": "boolean", "int": "integer"}.get(str(f.type), "string")
        )
        out.append(Key("machine", f.name, kind, default, allow, meaning))
    return tuple(out)


KEYS: tuple[Key, ...] = (
    Key("", "name", "string", "the file's name", "any string", "the world's name in tables and JSON"),
    Key("", "description", "string", '""', "any string", "what the world is for"),
    Key(
        "",
        "cpus",
        "integer",
        "1",
        "1 to 4",
        "physical CPUs, each with its own PMU, LAPIC and perf state; with 2 or more the vCPU may migrate "
        "(bounds.migrations)",
        1,
        4,
    ),
    Key("", "machine", "table", "{}", "the keys below", "the physical CPU (vpmu.config.MachineConfig)"),
    Key("", "vcpu", "table", "{}", "the keys below", "the vCPU's PMU as userspace configured it"),
    Key("", "host_event", "array of tables", "[]", "[[host_event]] tables", "host perf events on this CPU"),
    Key("", "guest", "table", "required", "the keys below", "the guest program and its PMI handler"),
    Key("", "bounds", "table", "{}", "the keys below", "what the checker may inject"),
    Key("", "check", "table", "{}", "the keys below", "what the checker judges"),
    Key("", "vm", "table", "{}", "the keys below", "the VM's life: creation and destruction"),
    *_machine_keys(),
    Key("vcpu", "num_gp", "integer", "machine.num_gp", "1 to machine.num_gp", "GP counters the guest sees (CPUID)"),
    Key(
        "vcpu",
        "num_fixed",
        "integer",
        "machine.num_fixed",
        "0 to machine.num_fixed",
        "fixed counters the guest sees (CPUID)",
    ),
    Key(
        "vcpu",
        "intel_compatible",
        "boolean",
        "true on Intel, false on AMD",
        "true, false",
        "guest CPUID vendor is Intel-compatible: KVM emulates the LVTPC auto-mask (§3.2, F-2.5)",
    ),
    Key(
        "vcpu",
        "deny_events",
        "list of integers",
        "[]",
        "event selects: Intel 0 to 0xFF (8 bits), AMD 0 to 0xFFF (12 bits: EventSelect[11:8] in bits 35:32)",
        "the VM's PMU event filter denies these event selects (deny list, §5.5)",
    ),
    Key(
        "vcpu",
        "deny_fixed",
        "list of integers",
        "[]",
        "fixed-counter indices 0 to vcpu.num_fixed - 1 (none on AMD)",
        "the event filter denies these fixed counters (§5.5)",
    ),
    Key(
        "vcpu",
        "lvtpc",
        "string or integer",
        '"NMI"',
        '"NMI", "NMI|MASKED", or a 32-bit LVTPC value: vector [7:0] (16 to 255 in Fixed mode), delivery mode '
        "[10:8] Fixed, SMI or NMI, mask [16]; the read-only delivery status [12] and the reserved bits clear "
        "(F-2.2, F-2.3)",
        "the guest's LVTPC when the world starts (Linux guests use NMI delivery)",
        0,
        0xFFFFFFFF,
    ),
    Key(
        "vcpu",
        "version",
        "integer",
        "2",
        "1 to 5 (Intel: CPUID.0AH EAX[7:0]; AMD: 2 PerfMonV2, 1 none); 1 allows no fixed counters on Intel",
        "the guest's PMU version (CPUID), which decides interception and the MSRs it has",
        1,
        5,
    ),
    Key(
        "vcpu",
        "gp_width",
        "integer",
        "machine.gp_width",
        "2 to machine.gp_width",
        "bits of a guest GP counter (CPUID.0AH EAX[23:16])",
    ),
    Key(
        "vcpu",
        "fixed_width",
        "integer",
        "machine.fixed_width",
        "2 to machine.fixed_width",
        "bits of a guest fixed counter (CPUID.0AH EDX[12:5])",
    ),
    Key(
        "vcpu",
        "fixed_bitmap",
        "integer",
        "0",
        "0 to 255",
        "CPUID.0AH ECX fixed-counter bitmap shown to the guest (v5+; v7.0 intel_pmu_refresh() does not read it)",
        0,
        0xFF,
    ),
    Key("host_event", "name", "string", "event<N>", "an identifier, unique", "the event's name in traces"),
    Key("host_event", "event", "string", '"cycles"', '"cycles", "instructions", "branches"', "what it counts"),
    Key(
        "host_event",
        "exclude_guest",
        "boolean",
        "true",
        "true (an include-guest event makes KVM_CREATE_VCPU fail, H14)",
        "the event does not count in guest mode",
    ),
    Key("host_event", "pinned", "boolean", "true", "true, false", "pinned, or flexible (multiplexed, rotated)"),
    Key(
        "host_event",
        "period",
        "integer",
        "2^(gp_width-1) - 1 (perf's max_period)",
        "1 to 2^gp_width - 1",
        "sample period: perf presets the counter to -period",
    ),
    Key(
        "host_event",
        "counter",
        "integer",
        "its index in the list",
        "0 to machine.num_gp - 1; shared only by flexible events",
        "the GP counter perf assigns it",
    ),
    Key(
        "host_event",
        "opened",
        "boolean",
        "true",
        "true, false (false needs bounds.perf_ops >= 1)",
        "open at boot, or opened later by a perf operation from another CPU",
    ),
    Key(
        "host_event",
        "cpu",
        "integer",
        "0",
        "0 (the vCPU's CPU) or 1 (another CPU; only in worlds with cpus = 1)",
        "the CPU the event is bound to: another CPU's event counts only in the system-wide active_events (V3)",
    ),
    Key(
        "host_event",
        "close",
        "boolean",
        "false",
        "true, false (true needs bounds.perf_ops >= 1)",
        "another CPU may also close (destroy) it, as a perf operation",
    ),
    Key(
        "guest",
        "program",
        "list of strings",
        "required",
        "guest instructions (below); ends with hlt (added if missing)",
        "the guest's main program",
    ),
    Key("guest", "ack", "string", '"late"', '"early", "mid", "late"', "where the guest's PMI handler unmasks LVTPC"),
    Key("guest", "enable", "string", '"GP0"', 'a value expression, e.g. "GP0|FIXED0"', "GLOBAL_CTRL its handler sets"),
    Key("guest", "rearm", "list of strings", "[]", '"MSR VALUE" lines, e.g. "PMC0 -8"', "presets its handler writes"),
    Key("bounds", "exits", "integer", "1", "0 to 16", "asynchronous VM-exits the checker may inject", 0, 16),
    Key(
        "bounds",
        "exit_reasons",
        "list of strings",
        'Intel ["timer"], AMD ["interrupt"]',
        '"timer" (Intel only: VMX preemption timer, KVM fastpath), "interrupt" (a host interrupt)',
        "the kinds of injected exits",
    ),
    Key("bounds", "nmis", "integer", "1", "0 to 16", "unrelated NMIs the checker may inject", 0, 16),
    Key(
        "bounds",
        "perf_ops",
        "integer",
        "0",
        "0 to 16",
        "host perf operations from another CPU: enable/disable an event, open one, rotate flexible events",
        0,
        16,
    ),
    Key(
        "bounds",
        "max_depth",
        "integer",
        "0",
        "0 to 100000 (0: unbounded)",
        'longest trace explored; states left at that depth make the verdict "incomplete"',
        0,
        100_000,
    ),
    Key(
        "bounds",
        "migrations",
        "integer",
        "0",
        "0 to 8 (0 in a world with cpus = 1)",
        "vCPU migrations between pCPUs (kvm_arch_vcpu_put on one, kvm_arch_vcpu_load on another)",
        0,
        8,
    ),
    Key(
        "vm",
        "lifecycle",
        "boolean",
        "false",
        "true, false",
        "model VM creation (perf_create_mediated_pmu) and destruction (perf_release_mediated_pmu) (S4, H14)",
    ),
    Key(
        "check",
        "properties",
        "list of strings",
        "[] (every property of the vendor)",
        "property names (vpmu explain); at least one must apply to the world's vendor",
        "the properties judged",
    ),
)

TABLES = ("", "machine", "vcpu", "host_event", "guest", "bounds", "check", "vm")


def keys_of(table: str) -> tuple[str, ...]:
    """The keys a table may hold, in the reference's order."""
    return tuple(k.name for k in KEYS if k.table == table)


def key(table: str, name: str) -> Key:
    return next(k for k in KEYS if k.table == table and k.name == name)


# --- the reference page --------------------------------------------------------------------------------

BEGIN = "<!-- generated by `python -m vpmu.check.world_schema docs/worlds.md`: edit vpmu/check/world_schema.py -->"
END = "<!-- end of generated text -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def reference() -> str:
    """The generated part of docs/worlds.md: one table per TOML table, then the guest instruction set."""
    from vpmu.guest import program

    out = [BEGIN, ""]
    for table in TABLES:
        title = "Top level" if not table else f"`[[{table}]]`" if table == "host_event" else f"`[{table}]`"
        out += [f"### {title}", "", "| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
        for k in KEYS:
            if k.table == table:
                cells = (f"`{k.name}`", k.type, k.default, k.allowed, k.meaning)
                out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        out.append("")
    out += ["### The guest instruction set (`guest.program`)", ""]
    # The guest assembler's own docstring, so the reference follows the assembler (reST "::" -> ":").
    doc = (program.__doc__ or "").replace("``", "`").replace("::\n", ":\n")
    out += [line.rstrip() for line in doc.strip().splitlines()]
    out += ["", END]
    return "\n".join(out) + "\n"


def update(text: str) -> str:
    """``text`` (docs/worlds.md) with its generated part replaced by :func:`reference`."""
    if BEGIN not in text or END not in text:
        raise ValueError("docs/worlds.md lacks the generated-text markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END + "\n", 1)
    return head + reference() + tail


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/worlds.md")
    path.write_text(update(path.read_text(encoding="utf-8")), encoding="utf-8")
