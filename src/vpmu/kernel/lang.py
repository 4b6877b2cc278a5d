"""The step language: kernel functions as data.

A :class:`Function` is a named sequence of labelled :class:`Step` s. Each step
is one atomic action (an MSR access, an LVTPC write, a variable update, a
call, a WARN, a VM-entry ...); between any two steps the hardware may act.
Loops over counters are unrolled when a function is built for a machine, so a
function's labels depend on the configuration (``load_pmc0``, ``load_pmc1``).

A :class:`Design` names the builder of every function. A variant is the same
design with :class:`Edit` s applied by label (delete, swap, replace, insert);
an edit naming a label that does not exist is an error listing the labels
that do. :func:`compile_program` inlines calls so that a context's program
counter is a single small integer.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from vpmu.errors import VpmuError
from vpmu.frozen import Frozen

Action = Callable[[list[int]], None]
Cond = Callable[[list[int]], bool]

# Step kinds the runtime treats specially.
OP = "op"
CALL = "call"
VMENTER = "vmenter"  # enter the guest; the context resumes after it at VM-exit
IRET = "iret"  # return from an interrupt handler context
END = "end"  # the context's program is finished
WARN = "warn"  # WARN_ON_ONCE(cond): fires when cond holds
LOOP = "loop"  # guest loop: retires ``arg`` slot's remaining instructions, in chunks
RETURN = "return"  # a goto target: the end of the function (its caller continues)


@dataclass(frozen=True)
class Step(Frozen):
    """One atomic step of a kernel (or guest) function.

    ``text`` is the listing a kernel developer reads (``wrmsr(PERF_GLOBAL_CTRL, 0)``).
    ``when``, if given, guards the whole step (the step still retires its
    instruction when the guard is false: the compare and branch ran).
    ``goto`` jumps to a label of the same function after the step.
    ``ring`` is the guest privilege level a guest step runs at.
    """

    label: str
    text: str
    do: Action | None = None
    when: Cond | None = None
    when_text: str = ""
    goto: str | None = None
    kind: str = OP
    call: str | None = None
    ring: int = 0
    retire: bool = True
    branch: bool = False
    source: str = ""
    arg: int = -1  # LOOP: the state slot holding the instructions left
    #: LOOP with ``branch``: one instruction in every ``period`` is a branch (the last of each
    #: group, like the LOOP at the end of a loop body); 1: every instruction is a branch.
    period: int = 1
    #: LOOP: instructions retired per core cycle (the workload's IPC; 1 unless a program says so).
    ipc: int = 1

    def listing(self) -> str:
        """The step as a line of kernel-like code: ``if (cond) text; goto label``.

        A WARN step's text is the whole statement; its condition is not repeated.
        """
        text = self.text
        if self.goto and "return" not in text:
            text = f"{text}; goto {self.goto}" if text else f"goto {self.goto}"
        if self.when_text and self.kind != WARN:
            text = f"if ({self.when_text}) {text}"
        return text


@dataclass(frozen=True)
class Function(Frozen):
    """A named sequence of steps.

    ``locals`` are state slots used as temporaries by this function; they are
    reset to 0 by its last step so that states stay canonical.
    """

    name: str
    steps: tuple[Step, ...]
    doc: str = ""
    source: str = ""
    locals: tuple[int, ...] = ()

    def labels(self) -> list[str]:
        return [s.label for s in self.steps]

    def index(self, label: str, design: str = "") -> int:
        for i, s in enumerate(self.steps):
            if s.label == label:
                return i
        where = f"design {design!r}, " if design else ""
        raise VpmuError(
            f"{where}function {self.name!r} has no step labelled {label!r}; its labels are: {', '.join(self.labels())}"
        )


Builder = Callable[..., Function]
StepFactory = Callable[..., Step]  # env -> Step, for edits whose step needs the machine


# --- edits -------------------------------------------------------------------


@dataclass(frozen=True)
class Edit(Frozen):
    """An edit of one function of a design, by label."""

    op: str  # "delete", "swap", "replace", "insert_before", "insert_after"
    function: str
    label: str  # a label, or a glob pattern ("clear_eventsel*") for delete
    other: str = ""  # swap: the second label
    step: Step | StepFactory | None = None  # replace / insert: the new step (or env -> step)
    note: str = ""
    origin: str = ""  # where the edit was written (file:line), for error messages

    def describe(self) -> str:
        if self.op == "swap":
            return f"swap {self.function}:{self.label} <-> {self.other}"
        return f"{self.op} {self.function}:{self.label}"

    def apply(self, fn: Function, design: str = "", env: object = None) -> Function:
        try:
            return self._apply(fn, design, env)
        except VpmuError as e:
            if self.origin and self.origin not in str(e):
                raise VpmuError(f"{self.origin}: {e}") from None
            raise

    def _apply(self, fn: Function, design: str, env: object) -> Function:
        steps = list(fn.steps)
        if self.op == "delete" and any(c in self.label for c in "*?["):
            # A pattern names unrolled steps (clear_eventsel0, clear_eventsel1, ...);
            # on a machine without such counters it may match nothing.
            keep = [st for st in steps if not fnmatch.fnmatchcase(st.label, self.label)]
            return replace(fn, steps=tuple(keep))
        i = fn.index(self.label, design)
        if self.op == "delete":
            del steps[i]
        elif self.op == "swap":
            j = fn.index(self.other, design)
            steps[i], steps[j] = steps[j], steps[i]
        elif self.op in ("replace", "insert_before", "insert_after"):
            if self.step is None:
                raise VpmuError(f"edit {self.op} of {self.function}:{self.label} needs a step")
            new = self.step if isinstance(self.step, Step) else self.step(env)
            if self.op != "replace" and new.label in fn.labels():
                raise VpmuError(f"edit {self.op} of {self.function}:{self.label}: label {new.label!r} already exists")
            if self.op == "replace":
                steps[i] = new
            elif self.op == "insert_before":
                steps.insert(i, new)
            else:
                steps.insert(i + 1, new)
        else:
            raise VpmuError(f"unknown edit {self.op!r}; allowed: delete, swap, replace, insert_before, insert_after")
        return replace(fn, steps=tuple(steps))


# --- designs -----------------------------------------------------------------


@dataclass(frozen=True)
class Design(Frozen):
    """A named set of function builders plus the edits that derive it from its base.

    Builders take the kernel environment (see :mod:`vpmu.kernel.env`) and
    return a :class:`Function` for that machine.
    """

    name: str
    summary: str
    builders: Mapping[str, Builder]
    edits: tuple[Edit, ...] = ()
    base: str = ""
    source: str = ""
    notes: str = ""
    # Which functions the design makes up: entry points per context.
    entries: Mapping[str, str] = field(default_factory=dict)
    #: Which vPMU the design is: "mediated" (the guest owns the hardware PMU while it runs) or
    #: "legacy" (every guest counter is a host perf event; vpmu.kernel.kvm_legacy).
    vpmu: str = "mediated"

    def derive(self, name: str, summary: str, edits: Iterable[Edit], source: str = "", notes: str = "") -> Design:
        """A variant of this design: the same builders plus more edits."""
        return Design(
            name=name,
            summary=summary,
            builders=self.builders,
            edits=self.edits + tuple(edits),
            base=self.name,
            source=source,
            notes=notes,
            entries=self.entries,
            vpmu=self.vpmu,
        )

    def with_builders(
        self, name: str, summary: str, builders: Mapping[str, Builder], source: str = "", notes: str = ""
    ) -> Design:
        """A variant that replaces whole functions (for designs that differ structurally)."""
        merged = dict(self.builders)
        merged.update(builders)
        return Design(
            name=name,
            summary=summary,
            builders=merged,
            edits=self.edits,
            base=self.name,
            source=source,
            notes=notes,
            entries=self.entries,
            vpmu=self.vpmu,
        )

    def build(self, env: object) -> dict[str, Function]:
        """Build every function for one machine and apply the edits in order."""
        fns = {name: b(env) for name, b in self.builders.items()}
        for e in self.edits:
            if e.function not in fns:
                where = f"{e.origin}: " if e.origin else ""
                raise VpmuError(
                    f"{where}design {self.name!r}: edit {e.describe()!r} names unknown function "
                    f"{e.function!r}; functions: {', '.join(sorted(fns))}"
                )
            fns[e.function] = e.apply(fns[e.function], self.name, env)
        return fns


# --- compiled programs ------------------------------------------------------------


@dataclass(frozen=True)
class Instr(Frozen):
    """One step of a compiled program: the step, where it came from, where it jumps."""

    step: Step
    function: str  # innermost function the step belongs to
    qualified: str  # "function:label"
    path: tuple[str, ...]  # enclosing call chain, outermost first
    target: int  # pc to jump to when the step's goto fires, else -1
    clear: tuple[int, ...]  # state slots to zero after this step (function locals)
    do: Action | None
    when: Cond | None


@dataclass(frozen=True)
class Program(Frozen):
    """A flat, inlined program for one context; pc indexes :attr:`code`."""

    entry: str
    code: tuple[Instr, ...]

    def spans(self, function: str) -> list[tuple[int, int]]:
        """[start, end) pc ranges of every inlined instance of ``function``."""
        out: list[tuple[int, int]] = []
        start = -1
        for pc, ins in enumerate(self.code):
            inside = function in ins.path or ins.function == function
            if inside and start < 0:
                start = pc
            elif not inside and start >= 0:
                out.append((start, pc))
                start = -1
        if start >= 0:
            out.append((start, len(self.code)))
        return out


def compile_program(fns: Mapping[str, Function], entry: str, max_depth: int = 16) -> Program:
    """Inline calls from ``entry`` into one flat program and resolve jumps."""
    code: list[Instr] = []

    def emit(name: str, path: tuple[str, ...]) -> None:
        if name not in fns:
            raise VpmuError(f"call to unknown function {name!r}; functions: {', '.join(sorted(fns))}")
        if len(path) > max_depth or name in path:
            raise VpmuError(f"recursive or too deep call chain: {' -> '.join((*path, name))}")
        fn = fns[name]
        start = len(code)
        labels: dict[str, int] = {}
        pending: list[tuple[int, str]] = []
        for st in fn.steps:
            labels[st.label] = len(code)
            if st.kind == CALL:
                assert st.call is not None
                if st.when is not None:
                    # A guarded call: a branch step that skips the inlined body.
                    code.append(Instr(st, name, f"{name}:{st.label}", path, -1, (), None, _negate(st.when)))
                    at = len(code) - 1
                    emit(st.call, (*path, name))
                    code[at] = replace(code[at], target=len(code))
                else:
                    emit(st.call, (*path, name))
                continue
            code.append(Instr(st, name, f"{name}:{st.label}", path, -1, (), st.do, st.when))
            if st.goto:
                pending.append((len(code) - 1, st.goto))
        for pc, label in pending:
            if label == RETURN and label not in labels:  # return from an inlined function: its end
                code[pc] = replace(code[pc], target=len(code))
                continue
            if label not in labels:
                raise VpmuError(f"function {name!r}: goto {label!r} names no step; labels: {', '.join(fn.labels())}")
            code[pc] = replace(code[pc], target=labels[label])
        if fn.locals and len(code) > start:
            last = code[-1]
            code[-1] = replace(last, clear=last.clear + fn.locals)

    emit(entry, ())
    return Program(entry, tuple(code))


def _negate(c: Cond) -> Cond:
    return lambda s: not c(s)


def listing(fn: Function, fns: Mapping[str, Function] | None = None, indent: int = 0) -> list[str]:
    """Text listing of a function; calls are expanded one level when ``fns`` is given."""
    width = max((len(s.label) for s in fn.steps), default=0)
    pad = "  " * indent
    out = []
    for st in fn.steps:
        if st.kind != CALL:
            text = st.listing()
        else:
            # A call is listed with the kernel statement it stands for: ``call kvm_pmu_load_guest_pmcs(vcpu)``,
            # ``call intel_mediated_pmu_load  // kvm_pmu_call(mediated_load)(vcpu)``.
            call = str(st.call)
            said = st.text.removesuffix(f" = {call}")
            text = f"call {said}" if said.startswith(call) else f"call {call}" + (f"  // {said}" if said else "")
            if st.when_text:
                text += f"  if ({st.when_text})"
        src = f"    [{st.source}]" if st.source else ""
        out.append(f"{pad}  {st.label:<{width}}  {text}{src}")
    return out
