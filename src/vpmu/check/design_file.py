"""Design files: a variant written by a user, as TOML (edits by label) or Python.

TOML::

    name = "my-variant"
    base = "upstream"
    summary = "what this variant changes"

    [[edit]]
    op = "delete"                    # delete | swap | replace | insert_before | insert_after
    function = "kvm_mediated_pmu_load"
    label = "clear_global_ctrl"

    [[edit]]
    op = "swap"
    function = "perf_load_guest_lvtpc"
    label = "write_lvtpc"
    other = "set_flag"

    [[edit]]
    op = "insert_after"              # the new step is a copy of an existing one
    function = "kvm_mediated_pmu_load"
    label = "load_pmcs"
    copy = "kvm_mediated_pmu_load:clear_global_ctrl"
    as = "clear_again"               # its label in the new place

Python: a module that defines ``DESIGN`` (a :class:`vpmu.kernel.lang.Design`),
usually ``get_design("upstream").derive(...)`` with :class:`~vpmu.kernel.lang.Edit` s.
A Python design file is code that runs with the user's rights (as ``python F.py``
would); prefer TOML, which is data. It runs inside a guard: ``sys.exit()`` and any
exception it raises, when it loads or later from its steps, are a one-line error
(status 2) naming the file, never a silent exit or a traceback.

Every error names the file, the line of the ``[[edit]]`` and what is wrong.
Edits are checked against both vendors' default machines when the file loads,
so a wrong label is reported before any checking starts.
"""

from __future__ import annotations

import runpy
from dataclasses import replace
from pathlib import Path
from typing import Any

from vpmu.designs import DESIGNS, get_design
from vpmu.errors import VpmuError, show_value
from vpmu.inputs import parse_toml, read_text
from vpmu.kernel.lang import Design, Edit, Step

OPS = ("delete", "swap", "replace", "insert_before", "insert_after")

#: The Python design files loaded in this process (resolved paths): an exception whose traceback
#: passes through one of them is the file's, not vpmu's (vpmu.cli reports it as bad input).
USER_CODE: set[str] = set()


def load_design_file(path: str | Path) -> Design:
    p = Path(path)
    if p.suffix == ".py":
        return _load_python(p)
    if p.suffix != ".toml":
        raise VpmuError(f"{p}: a design file is .toml or .py")
    return _load_toml(p)


def _load_python(p: Path) -> Design:
    if not p.is_file():
        raise VpmuError(f"{p}: cannot read: {'it is a directory' if p.is_dir() else 'no such file'}")
    USER_CODE.add(str(p.resolve()))
    try:
        ns = runpy.run_path(str(p))
    except VpmuError as e:
        raise VpmuError(f"{p}: {e}") from None
    except SystemExit as e:  # sys.exit() in a design file must not end vpmu silently with its status
        raise VpmuError(f"{p}: the design file called sys.exit({e.code!r}); it must define DESIGN") from None
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # a user's module may raise anything; report it on one line
        raise VpmuError(f"{p}: the design file raised {type(e).__name__}: {e}") from None
    design = ns.get("DESIGN")
    if not isinstance(design, Design):
        raise VpmuError(f"{p}: must define DESIGN, a vpmu.kernel.lang.Design (got {type(design).__name__})")
    _check_name(design.name, str(p))
    _validate(design, str(p))
    return design


def _check_name(name: object, where: str) -> None:
    """A design file may not take a built-in design's name: its results would be reported as that design's."""
    if not isinstance(name, str) or not name.strip():
        raise VpmuError(f"{where}: name = {show_value(name)} is not allowed; allowed: a non-empty string")
    if name in DESIGNS:
        raise VpmuError(
            f"{where}: name = {show_value(name)} is the name of a built-in design; allowed: another name "
            "(results are reported by name)"
        )


def _edit_lines(text: str) -> list[int]:
    return [n + 1 for n, line in enumerate(text.splitlines()) if line.strip().startswith("[[edit]]")]


def _load_toml(p: Path) -> Design:
    text = read_text(p)
    data = parse_toml(text, str(p))
    lines = _edit_lines(text)
    for k in data:
        if k not in ("name", "base", "summary", "edit"):
            raise VpmuError(f"{p}: unknown key {k!r}; allowed: name, base, summary, edit")
    base_name = data.get("base", "upstream")
    if not isinstance(base_name, str):
        raise VpmuError(f"{p}: base = {show_value(base_name)} is not allowed; allowed: a design name (vpmu designs)")
    base = get_design(base_name)
    name = data.get("name", p.stem)
    _check_name(name, str(p))
    summary = data.get("summary")
    if summary is not None and not isinstance(summary, str):
        raise VpmuError(f"{p}: summary = {show_value(summary)} is not allowed; allowed: a string")
    edits_t = data.get("edit", [])
    if not isinstance(edits_t, list):
        raise VpmuError(f"{p}: edit must be an array of tables ([[edit]])")
    edits = []
    for n, et in enumerate(edits_t):
        where = f"{p}:{lines[n]} (edit {n + 1})" if n < len(lines) else f"{p} (edit {n + 1})"
        edits.append(_edit(et, base, where))
    design = base.derive(str(name), summary or f"{base.name} with {len(edits)} edits", edits, source=str(p))
    _validate(design, str(p), lines)
    return design


def _edit(et: Any, base: Design, where: str) -> Edit:
    if not isinstance(et, dict):
        raise VpmuError(f"{where}: must be a table")
    for k in et:
        if k not in ("op", "function", "label", "other", "copy", "as"):
            raise VpmuError(f"{where}: unknown key {k!r}; allowed: op, function, label, other, copy, as")
    op = et.get("op")
    if op not in OPS:
        raise VpmuError(f"{where}: op = {op!r} is not allowed; allowed: {', '.join(OPS)}")
    for k in ("function", "label"):
        if not isinstance(et.get(k), str):
            raise VpmuError(f"{where}: {k} is required (a string)")
    if op == "swap" and not isinstance(et.get("other"), str):
        raise VpmuError(f"{where}: swap needs other = the second label")
    step: Any = None
    if op in ("replace", "insert_before", "insert_after"):
        ref = et.get("copy")
        if not isinstance(ref, str) or ":" not in ref:
            raise VpmuError(f'{where}: {op} needs copy = "function:label" (the step to copy)')
        fn_name, label = ref.split(":", 1)
        new_label = et.get("as", label)
        if not isinstance(new_label, str):
            raise VpmuError(f"{where}: as must be a string")

        def factory(env: Any, fn_name: str = fn_name, label: str = label, new_label: str = new_label) -> Step:
            if fn_name not in base.builders:
                raise VpmuError(f"{where}: copy names unknown function {fn_name!r}")
            fn = base.builders[fn_name](env)
            return replace(fn.steps[fn.index(label, base.name)], label=new_label)

        step = factory
    return Edit(op, et["function"], et["label"], other=et.get("other", ""), step=step, origin=where)


def _validate(design: Design, where: str, lines: list[int] | None = None) -> None:
    """Build the design on both vendors' default machines to surface bad labels now."""
    from vpmu.check.system import System
    from vpmu.check.world import DEFAULT_WORLDS, builtin_worlds

    worlds = builtin_worlds()
    for vendor in ("intel", "amd"):
        try:
            System(design, worlds[DEFAULT_WORLDS[vendor]])
        except VpmuError as e:
            msg = str(e)
            if where in msg:
                raise
            raise VpmuError(f"{where}: {msg}") from None
