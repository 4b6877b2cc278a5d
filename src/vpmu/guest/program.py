"""Guest programs as data: a tiny assembly of PMU instructions, and the guest's PMI handler.

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

Operations:

* ``wrmsr MSR VALUE``, ``rdmsr MSR`` (CPL0; a read leaves its value in ``$rax``);
* ``rdpmc N [ring=0|3]`` (``fixedN`` for fixed counters, or an index expression
  with ``RDPMC_FIXED`` / ``RDPMC_FAST``; ring 3 unless told);
* ``loop N [ring=0|3] [branches | branch_every=P] [ipc=K]`` — N plain instructions
  (ring 3 unless told), every one a branch, or one branch ending each group of P
  (a loop body: ``loop 10000000 ring=0 branch_every=10`` is a million
  iterations of nine instructions and a LOOP), retiring K per core cycle (default 1;
  what a CMASK threshold above 1 needs to count anything);
* ``mov VAR VALUE`` — one instruction: a guest variable takes a value;
* ``cpuid``, ``lvtpc VALUE``, ``tsc_deadline`` (a WRMSR KVM handles in its
  fastpath), ``hlt`` (the program's last instruction ends it; a literal HLT
  before that is emulated and counted by KVM, in its fastpath when the H11
  guard allows, and the guest is woken at once);
* ``fep [branch] [ring=0|3]`` — one instruction behind KVM's forced-emulation
  prefix: #UD exits, KVM's emulator runs and counts it (instructions; with
  ``branch`` also branches: IsBranch instructions count taken or not);
* ``sync`` — a selftest's GUEST_SYNC: an I/O exit to userspace, which KVM completes
  and counts, and userspace resumes the vCPU;
* ``set_filter ACTION [events=E,...] [fixed=BITMAP] [flags=F] [nevents=N]`` — a
  selftest's GUEST_SYNC (an I/O exit to userspace, which KVM completes and counts)
  at which userspace issues KVM_SET_PMU_EVENT_FILTER on the running VM
  (kernel/pmu_filter.py: ACTION allow, deny or a number; the raw 64-bit entries of
  the uapi; a filter the ioctl refuses leaves the current one in place);
* ``check_irq VALUE`` (with the counting handler) — how many PMIs the handler took
  since the last check; if any, the deferred part of the handler re-arms LVTPC with VALUE.

Any access may end with a tag, ``@name``, by which a test runner refers to its
outcome. Directives (no instruction): ``.gp_fixup`` installs a #GP handler that
records the vector in ``$gp`` and skips the faulting instruction;
``.pmi_handler count`` replaces the Linux-like PMI handler by one that only
counts PMIs in ``$pmi`` (see :func:`pmi_handler`).

MSR names: EVTSELn, PMCn, PERFCTRn, K7_EVTSELn (AMD), FIXED_CTRn,
FIXED_CTR_CTRL, GLOBAL_CTRL, GLOBAL_STATUS, GLOBAL_OVF_CTRL, LVTPC, or a number.
Values are expressions of numbers (decimal, hex), names (see
:func:`value_names`), guest variables (``$rax``, ``$name``), ``~ - << >> + & ^ |``
and parentheses; a negative value is a counter preset ``-K`` taken modulo the
counter width.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vpmu.errors import VpmuError
from vpmu.frozen import Frozen
from vpmu.guest.isa import GuestIsa
from vpmu.hw import msr as M
from vpmu.hw import virt as V
from vpmu.kernel import kvm, pmu_filter
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
                table[f"K7_EVTSEL{i}"] = M.MSR_K7_EVNTSEL0 + i
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
            GLOBAL_STATUS_SET=M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_SET,
        )
    if up in table:
        return table[up]
    try:
        return int(name, 0)
    except ValueError:
        raise VpmuError(f"unknown MSR {name!r}; known names: {', '.join(sorted(table))}") from None


# --- values: constant expressions, or expressions over guest variables -----------------------


@dataclass(frozen=True)
class Value(Frozen):
    """A value operand: folded to ``const`` when it names no guest variable, else
    evaluated when the instruction runs (``$rax`` is what the last read returned)."""

    text: str
    const: int | None
    fn: Callable[[list[int]], int]

    def listing(self) -> str:
        return f"{self.const:#x}" if self.const is not None else self.text


_TOKEN = re.compile(r"\s*(?:(0[xX][0-9a-fA-F]+|\d+)|(\$?[A-Za-z_][A-Za-z0-9_]*)|(<<|>>|[|&~+\-()^]))")


def value_names(env: KernelEnv) -> dict[str, int]:
    """The names a value may use on this machine."""
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
    return names


def compile_value(env: KernelEnv, isa: GuestIsa | None, text: str) -> Value:
    """Compile a value expression: numbers, names, ``$var`` (guest variables, with an
    ISA), unary ``-`` and ``~``, binary ``<< >> + - & ^ |`` (C precedence), parentheses.

    A negative result is a counter preset ``-K`` and is taken modulo the counter
    width (the model's convention since the first worlds).
    """
    names = value_names(env)
    tokens: list[tuple[str, str]] = []
    pos, src = 0, text.strip()
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if not m or m.end() == pos:
            raise VpmuError(f"value {text!r}: cannot read {src[pos:]!r}")
        pos = m.end()
        num, name, op = m.groups()
        tokens.append(("num", num) if num else ("name", name) if name else ("op", op))
    if not tokens:
        raise VpmuError("empty value")
    uses_vars = False
    gp_mask = env.cpu.gp_mask
    Fn = Callable[[list[int]], int]
    at = 0

    def peek() -> tuple[str, str]:
        return tokens[at] if at < len(tokens) else ("end", "")

    def take() -> tuple[str, str]:
        nonlocal at
        at += 1
        return tokens[at - 1]

    def atom() -> Fn:
        nonlocal uses_vars
        kind, tok = take() if at < len(tokens) else ("end", "")
        if kind == "num":
            n = int(tok, 0)
            return lambda s: n
        if kind == "name":
            if tok.startswith("$"):
                if isa is None:
                    raise VpmuError(f"value {text!r}: guest variables ({tok}) are not allowed here")
                slot = isa.var(tok[1:])
                uses_vars = True
                return lambda s: s[slot]
            if tok.upper() not in names:
                raise VpmuError(f"unknown value {tok!r}; use numbers or: {', '.join(sorted(names))}")
            n = names[tok.upper()]
            return lambda s: n
        if kind == "op" and tok == "(":
            inner = binary(0)
            if take() != ("op", ")"):
                raise VpmuError(f"value {text!r}: missing ')'")
            return inner
        if kind == "op" and tok in "-~":
            operand = atom()
            return (lambda s: -operand(s)) if tok == "-" else (lambda s: ~operand(s))
        raise VpmuError(f"value {text!r}: unexpected {tok or 'end'!r}")

    levels = (("|",), ("^",), ("&",), ("<<", ">>"), ("+", "-"))

    def binary(level: int) -> Fn:
        if level == len(levels):
            return atom()
        left = binary(level + 1)
        while peek()[0] == "op" and peek()[1] in levels[level]:
            op = take()[1]
            right = binary(level + 1)
            left = _combine(op, left, right)
        return left

    fn = binary(0)
    if at != len(tokens):
        raise VpmuError(f"value {text!r}: unexpected {tokens[at][1]!r}")

    def value(s: list[int]) -> int:
        v = fn(s)
        return v & gp_mask if v < 0 else v

    const = None if uses_vars else value([])
    return Value(text.strip(), const, value)


def _combine(op: str, a: Callable[[list[int]], int], b: Callable[[list[int]], int]) -> Callable[[list[int]], int]:
    if op == "|":
        return lambda s: a(s) | b(s)
    if op == "^":
        return lambda s: a(s) ^ b(s)
    if op == "&":
        return lambda s: a(s) & b(s)
    if op == "<<":
        return lambda s: a(s) << b(s)
    if op == ">>":
        return lambda s: a(s) >> b(s)
    if op == "+":
        return lambda s: a(s) + b(s)
    return lambda s: a(s) - b(s)


def parse_value(env: KernelEnv, text: str) -> int:
    """Evaluate a constant value expression for this machine."""
    v = compile_value(env, None, text)
    assert v.const is not None
    return v.const


# --- assembling a program -------------------------------------------------------------------

OPS = (
    "wrmsr",
    "rdmsr",
    "rdpmc",
    "loop",
    "mov",
    "cpuid",
    "lvtpc",
    "check_irq",
    "tsc_deadline",
    "sync",
    "set_filter",
    "fep",
    "hlt",
)
DIRECTIVES = (".gp_fixup", ".pmi_handler")
HANDLERS = ("linux", "count")


def assemble(env: KernelEnv, isa: GuestIsa, name: str, lines: Sequence[str], where: str = "guest.program") -> Function:
    """Turn program lines into a guest function (the main program ends with ``hlt``)."""
    steps: list[Step] = []
    count: dict[str, int] = {}
    tags: set[str] = set()
    for n, raw in enumerate(lines):
        words = raw.split()
        if not words:
            raise VpmuError(f"{where}[{n}]: empty instruction")
        op = words[0].lower()
        try:
            if op.startswith("."):
                _directive(isa, op, words[1:])
                continue
            tag = ""
            if len(words) > 1 and words[-1].startswith("@"):
                tag = words.pop()[1:]
                if not tag or tag in tags:
                    raise VpmuError(f"tag {'@' + tag!r} is empty or used twice")
                tags.add(tag)
            k = count.get(op, 0)
            count[op] = k + 1
            steps.extend(_instruction(env, isa, op, words[1:], f"{op}{k}", name, tag))
        except VpmuError as e:
            raise VpmuError(f"{where}[{n}] {raw!r}: {e}") from None
    # The program's last HLT ends it (a literal HLT anywhere else); one is added if missing.
    if steps and steps[-1].label.rstrip("0123456789") == "hlt":
        steps[-1] = _hlt_step(isa, steps[-1].label, final=True)
    else:
        steps.append(_hlt_step(isa, "hlt_end", final=True))
    return Function(name, tuple(steps), doc="The guest's main program.", source="world")


def _directive(isa: GuestIsa, op: str, args: list[str]) -> None:
    if op == ".gp_fixup" and not args:
        isa.gp_fixup = True
        isa.var("gp")
    elif op == ".pmi_handler" and len(args) == 1 and args[0] in HANDLERS:
        isa.pmi_handler = args[0]
    else:
        raise VpmuError(
            f"unknown directive {' '.join([op, *args])!r}; allowed: .gp_fixup, .pmi_handler {'|'.join(HANDLERS)}"
        )


def _options(op: str, args: list[str], allowed: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """Split ``key=value`` options (and bare flags) from positional operands."""
    pos: list[str] = []
    opts: dict[str, str] = {}
    for a in args:
        key, eq, val = a.partition("=")
        if key in allowed and (eq or key in ("branches", "branch")):
            opts[key] = val
        elif eq or a in allowed:
            raise VpmuError(f"unknown {op} option {a!r}; allowed: {', '.join(allowed)}")
        else:
            pos.append(a)
    return pos, opts


def _ring(op: str, opts: dict[str, str], default: int) -> int:
    if "ring" not in opts:
        return default
    if opts["ring"] not in ("0", "3"):
        raise VpmuError(f"{op} option ring={opts['ring']} is not allowed; allowed: ring=0, ring=3")
    return int(opts["ring"])


def _instruction(env: KernelEnv, isa: GuestIsa, op: str, args: list[str], label: str, fn: str, tag: str) -> list[Step]:
    def need(n: int) -> None:
        if len(args) != n:
            raise VpmuError(f"{op} takes {n} operand(s), got {len(args)}")

    at = f" @{tag}" if tag else ""
    if op == "wrmsr":
        need(2)
        msr, value = msr_index(env, args[0]), compile_value(env, isa, args[1])
        if value.const is not None:
            v = value.const

            def write(s: list[int]) -> None:
                isa.tag = tag
                isa.wrmsr(s, msr, v)

        else:
            vf = value.fn

            def write(s: list[int]) -> None:
                isa.tag = tag
                isa.wrmsr(s, msr, vf(s))

        return [Step(label, f"wrmsr({args[0]}, {value.listing()}){at}", write)]
    if op == "rdmsr":
        need(1)
        msr = msr_index(env, args[0])

        def read(s: list[int]) -> None:
            isa.tag = tag
            isa.rdmsr(s, msr)

        return [Step(label, f"rdmsr({args[0]}){at}", read)]
    if op == "rdpmc":
        pos, opts = _options(op, args, ("ring",))
        if len(pos) != 1:
            raise VpmuError(f"rdpmc takes 1 operand(s), got {len(pos)}")
        a = pos[0].lower()
        ecx = M.RDPMC_FIXED | int(a[5:]) if a.startswith("fixed") and a[5:].isdigit() else _rdpmc_index(env, pos[0])
        ring = _ring(op, opts, 3)

        def rdpmc(s: list[int]) -> None:
            isa.tag = tag
            isa.rdpmc(s, ecx, ring)

        return [Step(label, f"rdpmc({pos[0]}){at}", rdpmc, ring=ring)]
    if op == "loop":
        pos, opts = _options(op, args, ("ring", "branches", "branch_every", "ipc"))
        if not pos:
            raise VpmuError("loop takes a count: loop N [ring=0|3] [branches | branch_every=P]")
        if len(pos) > 1:
            raise VpmuError(f"unknown loop option {pos[1]!r}; allowed: ring=0, ring=3, branches, branch_every=P")
        try:
            n = int(pos[0], 0)
        except ValueError:
            raise VpmuError(f"loop count {pos[0]!r} is not a number") from None
        if n < 1:
            raise VpmuError(f"loop count {n} must be at least 1")
        ring = _ring(op, opts, 3)
        branches, period = "branches" in opts, 1
        if "branch_every" in opts:
            try:
                period = int(opts["branch_every"], 0)
            except ValueError:
                period = 0
            if period < 1 or n % period:
                raise VpmuError(f"loop branch_every={opts['branch_every']}: must be a divisor of the count {n}")
            branches = True
        ipc = 1
        if "ipc" in opts:
            ipc = int(opts["ipc"]) if opts["ipc"].isdigit() else 0
            if not 1 <= ipc <= 8 or n % ipc:
                raise VpmuError(f"loop ipc={opts['ipc']}: must be 1 to 8 and divide the count {n}")
        slot = env.layout.field(f"guest.{fn}.{label}.left", "guest", init=n, fmt="int")
        if not branches:
            what = ""
        elif period == 1:
            what = " (each a branch)"
        else:
            what = f" ({n // period} iterations of {period}, each ending in a branch)"
        if ipc > 1:
            what += f", {ipc} per cycle"
        return [
            Step(
                label,
                f"{n} instructions at CPL{ring}{what}",
                kind=LOOP,
                ring=ring,
                branch=branches,
                period=period,
                ipc=ipc,
                arg=slot,
            )
        ]
    if op == "mov":
        need(2)
        if not args[0].isidentifier() or args[0] in ("rax", "gp", "pmi"):
            raise VpmuError(f"mov: {args[0]!r} is not a variable name (an identifier other than rax, gp, pmi)")
        dest, value = isa.var(args[0]), compile_value(env, isa, args[1])
        vf = value.fn

        def mov(s: list[int]) -> None:
            s[dest] = vf(s)

        return [Step(label, f"{args[0]} = {value.listing()}", mov)]
    if op == "cpuid":
        need(0)
        return [Step(label, "cpuid", lambda s: isa.exit(s, V.EXIT_CPUID))]
    if op == "lvtpc":
        need(1)
        value_c = parse_value(env, args[0])

        def lvt(s: list[int]) -> None:
            isa.tag = tag
            isa.lvtpc_write(s, value_c)

        return [Step(label, f"apic_write(APIC_LVTPC, {M.lvtpc_str(value_c)}){at}", lvt)]
    if op == "check_irq":
        need(1)
        if isa.pmi_handler != "count":
            raise VpmuError("check_irq needs the counting PMI handler: put '.pmi_handler count' first")
        rearm = parse_value(env, args[0])
        pmi, seen = isa.var("pmi"), isa.var("irq_seen")

        def check(s: list[int]) -> None:
            n = s[pmi]
            s[seen], s[pmi] = n, 0
            if isa.probe is not None:
                isa.probe.irq_check(s, tag, n)

        def ack(s: list[int]) -> None:
            isa.tag = ""
            isa.lvtpc_write(s, rearm)

        return [
            Step(label, f"irq = irq_received; irq_received = 0{at}", check),
            Step(
                f"{label}_handler",
                f"apic_write(APIC_LVTPC, {M.lvtpc_str(rearm)})",
                ack,
                when=lambda s: bool(s[seen]),
                when_text="irq",
            ),
        ]
    if op == "tsc_deadline":
        need(0)
        return [Step(label, "wrmsr(MSR_IA32_TSC_DEADLINE, 1)", lambda s: isa.wrmsr(s, kvm.MSR_IA32_TSC_DEADLINE, 1))]
    if op == "sync":
        need(0)
        return [Step(label, f"GUEST_SYNC (userspace runs the vCPU again){at}", lambda s: isa.ucall(s, 0))]
    if op == "set_filter":
        idx = _register_filter(env, pmu_filter.parse(args))

        def sync(s: list[int]) -> None:
            isa.tag = tag
            isa.ucall(s, idx)

        f = env.filters[idx]
        what = (
            f"KVM_SET_PMU_EVENT_FILTER({f.source.describe()})"
            if f
            else f"KVM_SET_PMU_EVENT_FILTER({' '.join(args)}): refused"
        )
        return [Step(label, f"GUEST_SYNC; userspace: {what}{at}", sync)]
    if op == "fep":
        pos, opts = _options(op, args, ("ring", "branch"))
        if pos:
            raise VpmuError(f"fep takes no operand, got {pos[0]!r}; allowed: fep [branch] [ring=0|3]")
        ring, branch = _ring(op, opts, 0), "branch" in opts

        def fep(s: list[int]) -> None:
            isa.tag = tag
            isa.forced_emulation(s, branch, ring)

        what = "a branch" if branch else "an instruction"
        return [Step(label, f"KVM_FEP {what} (#UD exit; KVM emulates and counts it){at}", fep, ring=ring)]
    if op == "hlt":
        need(0)
        return [_hlt_step(isa, label, final=False)]
    raise VpmuError(f"unknown guest operation {op!r}; allowed: {', '.join(OPS)}")


def _hlt_step(isa: GuestIsa, label: str, final: bool) -> Step:
    if final:
        return Step(label, "hlt", lambda s: isa.exit(s, V.EXIT_HLT, qual=kvm.HLT_FINAL))
    return Step(label, "hlt (literal: KVM emulates and counts it; woken at once)", lambda s: isa.exit(s, V.EXIT_HLT))


def _register_filter(env: KernelEnv, f: pmu_filter.EventFilter) -> int:
    """Add a filter userspace will install (None if the ioctl refuses it); claim the VM's
    current-filter slot on first use."""
    vendor = env.cpu.cfg.vendor
    env.filters.append(None if f.ioctl_error(vendor) else pmu_filter.prepare(f, vendor))
    if env.filter_slot < 0:
        env.filter_slot = env.layout.field("kvm.pmu_event_filter", "kvm", init=0, fmt="int")
    return len(env.filters) - 1


def _rdpmc_index(env: KernelEnv, text: str) -> int:
    names = {"RDPMC_FIXED": M.RDPMC_FIXED, "RDPMC_FAST": M.RDPMC_FAST}
    try:
        return int(text, 0)
    except ValueError:
        pass
    total = 0
    for tok in text.split("|"):
        tok = tok.strip()
        if tok.upper() in names:
            total |= names[tok.upper()]
            continue
        try:
            total |= int(tok, 0)
        except ValueError:
            raise VpmuError(f"rdpmc index {text!r}: use fixedN, numbers, RDPMC_FIXED, RDPMC_FAST") from None
    return total


def pmi_handler(
    env: KernelEnv, isa: GuestIsa, ack: str, enable: int, rearm: Sequence[tuple[int, int]] = ()
) -> Function:
    """The guest's PMI handler, shaped like Linux's (§3.1): Intel-compatible guests
    unmask LVTPC at the chosen ack point; AMD guests never write LVTPC (F-2.6).
    A program that declared ``.pmi_handler count`` gets :func:`counting_pmi_handler`.

    ``enable`` is the GLOBAL_CTRL value the handler restores; ``rearm`` lists
    (MSR, value) counter presets written back after the overflow is acked.
    """
    if ack not in ACKS:
        raise VpmuError(f"guest.ack = {ack!r} is not allowed; allowed: {', '.join(ACKS)}")
    if isa.pmi_handler == "count":
        return counting_pmi_handler(env, isa)
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


def counting_pmi_handler(env: KernelEnv, isa: GuestIsa) -> Function:
    """kvm-unit-tests' handler as a test that measures with interrupts disabled sees it.

    x86/pmu.c measures with RFLAGS.IF = 0, so its handler (count the PMI, unmask
    LVTPC, EOI) runs at ``check_irq()``, after the counters are stopped. The model
    has no guest RFLAGS.IF: KVM injects a PMI at the next VM-entry and a native CPU
    takes it at once. So the PMI is taken when raised, by a handler that only counts
    it in ``$pmi`` and retires no instruction; ``check_irq`` later reads the count and
    does the rest (the LVTPC write). Natively and virtualized alike.
    """
    pmi = isa.var("pmi")

    def count(s: list[int]) -> None:
        s[pmi] += 1

    def iret(s: list[int]) -> None:
        s[env.guest_irq_rip] = -1
        if s[env.virr]:  # another PMI is pending: KVM asked for an interrupt window
            env.cpu.vmexit(s, V.EXIT_IRQ_WINDOW)

    return Function(
        "guest_pmi_handler",
        (
            Step("count", "irq_received++ (the rest runs at check_irq)", count, retire=False),
            Step("iret", "iret", iret, kind=IRET, retire=False),
        ),
        doc="Counts PMIs; LVTPC is re-armed by check_irq (a measurement runs with IF = 0).",
        source="kvm-unit-tests x86/pmu.c cnt_overflow(), check_irq()",
    )
