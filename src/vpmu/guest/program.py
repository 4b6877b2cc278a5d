"""Guest programs as data: a tiny assembly of PMU instructions, and a Linux-like PMI handler.

A world (TOML) writes the guest's main program as a list of lines::

    program = [
      "wrmsr EVTSEL0 INSTRUCTIONS|USR|OS|INT|EN",
      "wrmsr PMC0 -2",
      "wrmsr GLOBAL_CTRL GP0",
      "loop 3",          # three ring-3 instructions (one step each in the checker)
      "rdpmc 0",
      "rdmsr GLOBAL_STATUS",
      "hlt",
    ]

Operations: ``wrmsr MSR VALUE``, ``rdmsr MSR``, ``rdpmc N`` (``fixedN`` for
fixed counters), ``loop N [ring=0|3] [branches]``, ``cpuid``, ``lvtpc VALUE``,
``tsc_deadline`` (a WRMSR KVM handles in its fastpath), ``hlt``.
MSR names: EVTSELn, PMCn, PERFCTRn, FIXED_CTRn, FIXED_CTR_CTRL, GLOBAL_CTRL,
GLOBAL_STATUS, GLOBAL_OVF_CTRL, LVTPC. Values are ``|``-joined numbers
(decimal, hex, or negative for a counter preset ``-K``) and names (see
:data:`VALUE_NAMES`).
"""

from __future__ import annotations

from collections.abc import Sequence

from vpmu.errors import VpmuError
from vpmu.guest.isa import GuestIsa
from vpmu.hw import msr as M
from vpmu.hw import virt as V
from vpmu.kernel import kvm
from vpmu.kernel.env import KernelEnv
from vpmu.kernel.lang import IRET, LOOP, Action, Function, Step

VALUE_NAMES: dict[str, int] = {
    "EN": M.EVENTSEL_EN,
    "INT": M.EVENTSEL_INT,
    "USR": M.EVENTSEL_USR,
    "OS": M.EVENTSEL_OS,
    "EDGE": M.EVENTSEL_EDGE,
    "INV": M.EVENTSEL_INV,
    "GUESTONLY": M.AMD64_EVENTSEL_GUESTONLY,
    "HOSTONLY": M.AMD64_EVENTSEL_HOSTONLY,
    "MASKED": M.APIC_LVT_MASKED,
    "NMI": M.APIC_DM_NMI,
}
ACKS = ("early", "mid", "late")


def msr_index(env: KernelEnv, name: str) -> int:
    """Resolve a guest MSR name (vendor-specific addresses) or a number."""
    cfg = env.cpu.cfg
    intel = cfg.intel
    up = name.upper()
    table: dict[str, int] = {"LVTPC": M.MSR_X2APIC_LVTPC, "TSC_DEADLINE": kvm.MSR_IA32_TSC_DEADLINE}
    for i in range(env.vcpu.num_gp):
        table[f"EVTSEL{i}"] = env.GP_EVENTSEL(i)
        if intel:
            table[f"PMC{i}"] = M.MSR_IA32_PMC0 + i if cfg.full_width_writes else M.MSR_IA32_PERFCTR0 + i
            table[f"PERFCTR{i}"] = M.MSR_IA32_PERFCTR0 + i
        else:
            table[f"PMC{i}"] = M.MSR_F15H_PERF_CTR0 + 2 * i
            if i < 4:
                table[f"PERFCTR{i}"] = M.MSR_K7_PERFCTR0 + i
    for j in range(env.vcpu.num_fixed):
        table[f"FIXED_CTR{j}"] = M.MSR_CORE_PERF_FIXED_CTR0 + j
    if intel:
        table.update(
            FIXED_CTR_CTRL=M.MSR_CORE_PERF_FIXED_CTR_CTRL,
            GLOBAL_CTRL=M.MSR_CORE_PERF_GLOBAL_CTRL,
            GLOBAL_STATUS=M.MSR_CORE_PERF_GLOBAL_STATUS,
            GLOBAL_OVF_CTRL=M.MSR_CORE_PERF_GLOBAL_OVF_CTRL,
        )
    else:
        table.update(
            GLOBAL_CTRL=M.MSR_AMD64_PERF_CNTR_GLOBAL_CTL,
            GLOBAL_STATUS=M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS,
            GLOBAL_OVF_CTRL=M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_CLR,
        )
    if up in table:
        return table[up]
    try:
        return int(name, 0)
    except ValueError:
        raise VpmuError(f"unknown MSR {name!r}; known names: {', '.join(sorted(table))}") from None


def parse_value(env: KernelEnv, text: str) -> int:
    """Evaluate a ``|``-joined value expression for this machine."""
    vendor = "intel" if env.cpu.cfg.intel else "amd"
    names = dict(VALUE_NAMES)
    for stream, code in M.EVENT_ENCODINGS[vendor].items():
        names[stream.upper()] = code
    for i in range(env.vcpu.num_gp):
        names[f"GP{i}"] = 1 << i
    for j in range(env.vcpu.num_fixed):
        names[f"FIXED{j}"] = 1 << (M.FIXED_IDX_BASE + j)
        names[f"FC{j}_OS"] = M.FIXED_OS << (4 * j)
        names[f"FC{j}_USR"] = M.FIXED_USR << (4 * j)
        names[f"FC{j}_PMI"] = M.FIXED_PMI << (4 * j)
    total = 0
    for tok in text.split("|"):
        tok = tok.strip()
        if tok.upper() in names:
            total |= names[tok.upper()]
            continue
        try:
            n = int(tok, 0)
        except ValueError:
            raise VpmuError(f"unknown value {tok!r}; use numbers or: {', '.join(sorted(names))}") from None
        total |= n & env.cpu.gp_mask if n < 0 else n
    return total


def assemble(env: KernelEnv, isa: GuestIsa, name: str, lines: Sequence[str], where: str = "guest.program") -> Function:
    """Turn program lines into a guest function (the main program ends with ``hlt``)."""
    steps: list[Step] = []
    count: dict[str, int] = {}
    for n, raw in enumerate(lines):
        words = raw.split()
        if not words:
            raise VpmuError(f"{where}[{n}]: empty instruction")
        op = words[0].lower()
        k = count.get(op, 0)
        count[op] = k + 1
        label = f"{op}{k}"
        try:
            steps.append(_instruction(env, isa, op, words[1:], label, name))
        except VpmuError as e:
            raise VpmuError(f"{where}[{n}] {raw!r}: {e}") from None
    if not steps or steps[-1].label.rstrip("0123456789") != "hlt":
        steps.append(_instruction(env, isa, "hlt", [], "hlt_end", name))
    return Function(name, tuple(steps), doc="The guest's main program.", source="world")


OPS = ("wrmsr", "rdmsr", "rdpmc", "loop", "cpuid", "lvtpc", "tsc_deadline", "hlt")


def _instruction(env: KernelEnv, isa: GuestIsa, op: str, args: list[str], label: str, fn: str) -> Step:
    def need(n: int) -> None:
        if len(args) != n:
            raise VpmuError(f"{op} takes {n} operand(s), got {len(args)}")

    if op == "wrmsr":
        need(2)
        msr, value = msr_index(env, args[0]), parse_value(env, args[1])
        return Step(label, f"wrmsr({args[0]}, {value:#x})", lambda s: isa.wrmsr(s, msr, value))
    if op == "rdmsr":
        need(1)
        msr = msr_index(env, args[0])

        def read(s: list[int]) -> None:
            isa.rdmsr(s, msr)

        return Step(label, f"rdmsr({args[0]})", read)
    if op == "rdpmc":
        need(1)
        a = args[0].lower()
        ecx = M.RDPMC_FIXED | int(a[5:]) if a.startswith("fixed") else int(a, 0)

        def rdpmc(s: list[int]) -> None:
            isa.rdpmc(s, ecx, 3)

        return Step(label, f"rdpmc({args[0]})", rdpmc, ring=3)
    if op == "loop":
        if not args:
            raise VpmuError("loop takes a count: loop N [ring=0|3] [branches]")
        try:
            n = int(args[0], 0)
        except ValueError:
            raise VpmuError(f"loop count {args[0]!r} is not a number") from None
        if n < 1:
            raise VpmuError(f"loop count {n} must be at least 1")
        ring, branches = 3, False
        for a in args[1:]:
            if a in ("ring=0", "ring=3"):
                ring = int(a[5:])
            elif a == "branches":
                branches = True
            else:
                raise VpmuError(f"unknown loop option {a!r}; allowed: ring=0, ring=3, branches")
        slot = env.layout.field(f"guest.{fn}.{label}.left", "guest", init=n, fmt="int")
        return Step(
            label,
            f"{n} instructions at CPL{ring}" + (" (each a branch)" if branches else ""),
            kind=LOOP,
            ring=ring,
            branch=branches,
            arg=slot,
        )
    if op == "cpuid":
        need(0)
        return Step(label, "cpuid", lambda s: isa.exit(s, V.EXIT_CPUID))
    if op == "lvtpc":
        need(1)
        value = parse_value(env, args[0])
        return Step(label, f"apic_write(APIC_LVTPC, {M.lvtpc_str(value)})", lambda s: isa.lvtpc_write(s, value))
    if op == "tsc_deadline":
        need(0)
        return Step(label, "wrmsr(MSR_IA32_TSC_DEADLINE, 1)", lambda s: isa.wrmsr(s, kvm.MSR_IA32_TSC_DEADLINE, 1))
    if op == "hlt":
        need(0)
        return Step(label, "hlt", lambda s: isa.exit(s, V.EXIT_HLT))
    raise VpmuError(f"unknown guest operation {op!r}; allowed: {', '.join(OPS)}")


def pmi_handler(
    env: KernelEnv, isa: GuestIsa, ack: str, enable: int, rearm: Sequence[tuple[int, int]] = ()
) -> Function:
    """The guest's PMI handler, shaped like Linux's (§3.1): Intel-compatible guests
    unmask LVTPC at the chosen ack point; AMD guests never write LVTPC (F-2.6).

    ``enable`` is the GLOBAL_CTRL value the handler restores; ``rearm`` lists
    (MSR, value) counter presets written back after the overflow is acked.
    """
    if ack not in ACKS:
        raise VpmuError(f"guest.ack = {ack!r} is not allowed; allowed: {', '.join(ACKS)}")
    gc = msr_index(env, "GLOBAL_CTRL")
    gs = msr_index(env, "GLOBAL_STATUS")
    clr = msr_index(env, "GLOBAL_OVF_CTRL")
    rax = env.guest_rax
    unmask = env.vcpu.intel_compatible

    def ack_status(s: list[int]) -> None:
        value = s[rax]
        s[rax] = 0
        if value:
            isa.wrmsr(s, clr, value)

    def read_status(s: list[int]) -> None:
        isa.rdmsr(s, gs)

    def iret(s: list[int]) -> None:
        s[env.guest_irq_rip] = -1
        if s[env.virr]:  # another PMI is pending: KVM asked for an interrupt window
            env.cpu.vmexit(s, V.EXIT_IRQ_WINDOW)

    def unmask_step(label: str) -> Step:
        return Step(label, "apic_write(APIC_LVTPC, APIC_DM_NMI)", lambda s: isa.lvtpc_write(s, M.APIC_DM_NMI))

    steps: list[Step] = []
    if unmask and ack == "early":
        steps.append(unmask_step("early_ack"))
    steps += [
        Step("disable_all", "wrmsr(GLOBAL_CTRL, 0)", lambda s: isa.wrmsr(s, gc, 0)),
        Step("read_status", "status = rdmsr(GLOBAL_STATUS)", read_status),
        Step("ack_status", "if (status) wrmsr(GLOBAL_OVF_CTRL, status)", ack_status),
    ]
    for k, (msr, value) in enumerate(rearm):
        steps.append(
            Step(
                f"rearm{k}",
                f"wrmsr({M.msr_name(env.cpu.cfg.vendor, msr)}, {value:#x})",
                _guest_wrmsr(isa, msr, value),
            )
        )
    if unmask and ack == "mid":
        steps.append(unmask_step("mid_ack"))
    steps.append(Step("enable_all", f"wrmsr(GLOBAL_CTRL, {enable:#x})", lambda s: isa.wrmsr(s, gc, enable)))
    if unmask and ack == "late":
        steps.append(unmask_step("late_ack"))
    steps.append(Step("iret", "iret", iret, kind=IRET))
    return Function(
        "guest_pmi_handler",
        tuple(steps),
        doc=f"Linux-like guest PMI handler, {ack} ack.",
        source="§3.1 (as a guest runs it)",
    )


def _guest_wrmsr(isa: GuestIsa, msr: int, value: int) -> Action:
    def do(s: list[int]) -> None:
        isa.wrmsr(s, msr, value)

    return do
