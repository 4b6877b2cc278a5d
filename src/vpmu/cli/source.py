"""``vpmu source check`` and ``vpmu source design``: the model against a real kernel tree."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from vpmu.cli.common import RAW

SOURCE_SCHEMA = "vpmu.source/1"


def _hit(h: Any, reason: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"line": h.stmt.line, "statement": h.stmt.text}
    if reason:
        out["reason"] = reason
    return out


def source_document(kernel: str, version: str, design: Any, results: list[Any]) -> dict[str, Any]:
    """The vpmu.source/1 document (docs/json-schema.md)."""
    from vpmu.source.anchors import UPSTREAM_VERSION

    fns = []
    for r in results:
        cf = r.cf
        fns.append(
            {
                "function": cf.name,
                "model": cf.model,
                "path": cf.path,
                "kind": cf.kind,
                "found": r.found,
                "line": r.line if r.found else None,
                "condition": r.condition,
                "definitions": r.definitions,
                "ok": r.ok,
                "anchors": [
                    {"step": a.step, "statement": a.c, "status": a.status, "line": a.line or None} for a in r.anchors
                ],
                "foreign": [dict(_hit(h), step=cf.body[h.index].step) for h in r.foreign],
                "unanchored": [_hit(h) for h in r.unanchored],
                "omitted": [_hit(h, cf.body[h.index].why) for h in r.omitted],
            }
        )
    return {
        "schema": SOURCE_SCHEMA,
        "kernel": kernel,
        "version": version,
        "design": design.name,
        "upstream_models": UPSTREAM_VERSION,
        "verdict": "match" if all(r.ok for r in results) else "drift",
        "functions": fns,
    }


def _print_text(doc: dict[str, Any], verbose: bool) -> None:
    print(
        f"kernel tree {doc['kernel']} (Linux {doc['version']}) against design {doc['design']} "
        f"(upstream models {doc['upstream_models']})"
    )
    for f in doc["functions"]:
        where = f"{f['path']}:{f['line']}" if f["found"] else f["path"]
        if not f["found"]:
            print(f"  DRIFT {f['function']:<32} {where}: absent")
            continue
        n = len(f["anchors"])
        ok = sum(a["status"] == "matched" for a in f["anchors"])
        tag = "ok   " if f["ok"] else "DRIFT"
        extra = f", {len(f['omitted'])} left out with a reason" if f["kind"] == "complete" else ""
        twice = f", defined {len(f['definitions'])}x (checked {f['condition'] or 'the first'})" if len(
            f["definitions"]
        ) > 1 else ""
        print(f"  {tag} {f['function']:<32} {where:<36} {f['kind']:<8} {ok}/{n} anchors in order{extra}{twice}")
        for a in f["anchors"]:
            if a["status"] != "matched" or verbose:
                at = f":{a['line']}" if a["line"] else ""
                print(f"        {a['status']:<9} {f['model']}:{a['step']:<22} {f['path']}{at}  {a['statement']}")
        for h in f["foreign"]:
            print(
                f"        other     {f['path']}:{h['line']}  {h['statement']}  (step {h['step']} as another design has "
                "it, not this one)"
            )
        for h in f["unanchored"]:
            print(f"        unknown   {f['path']}:{h['line']}  {h['statement']}  (no step, not on the omitted list)")
        if verbose:
            for h in f["omitted"]:
                print(f"        left out  {f['path']}:{h['line']}  {h['statement']}  -- {h['reason']}")
    bad = sum(not f["ok"] for f in doc["functions"])
    if doc["verdict"] == "match":
        print(f"match: {len(doc['functions'])} functions, every anchor found in order (-v lists each statement)")
    else:
        print(f"drift: {bad} of {len(doc['functions'])} functions differ from design {doc['design']}")


def cmd_source_check(args: argparse.Namespace) -> int:
    from vpmu.check.design_file import load_design_file
    from vpmu.designs import get_design
    from vpmu.errors import VpmuError
    from vpmu.source.match import match_tree
    from vpmu.source.tree import kernel_version, open_tree

    root = open_tree(args.kernel)
    if args.design and args.design_file:
        raise VpmuError("give either --design or --design-file, not both")
    design = load_design_file(args.design_file) if args.design_file else get_design(args.design or "upstream")
    results = match_tree(root, design)
    doc = source_document(args.kernel, kernel_version(root), design, results)
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_text(doc, args.verbose)
    return 0 if doc["verdict"] == "match" else 1


def design_file_text(kernel: str, derived: Any) -> str:
    """The derived design as a TOML design file (docs/design-files.md)."""
    from vpmu.source.tree import kernel_version, open_tree

    version = kernel_version(open_tree(kernel))
    lines = [f"# derived by: vpmu source design --kernel {kernel}  (Linux {version})"]
    if not derived.edits:
        lines.append(f"# the tree is the built-in design {derived.base.name!r} exactly")
    lines += [
        f'name = "{derived.design.name}"',
        f'base = "{derived.base.name}"',
        f'summary = "{derived.design.summary}"',
    ]
    for e in derived.edits:
        lines += ["", "[[edit]]", f'op = "{e.op}"', f'function = "{e.function}"', f'label = "{e.label}"']
        if e.other:
            lines.append(f'other = "{e.other}"')
    return "\n".join(lines) + "\n"


def cmd_source_design(args: argparse.Namespace) -> int:
    from vpmu.source.derive import derive

    sys.stdout.write(design_file_text(args.kernel, derive(args.kernel)))
    return 0


def derived_design(kernel: str) -> Any:
    """``--kernel DIR`` of check/scenarios/conform: the tree's design, its differences from upstream on stderr."""
    from vpmu.source.derive import derive, differences
    from vpmu.source.tree import kernel_version, open_tree

    d = derive(kernel)
    version = kernel_version(open_tree(kernel))
    name = d.design.name if not d.edits else f"{d.design.name} ({d.base.name} + {len(d.edits)} edit(s))"
    diffs = differences(d.design)
    sys.stderr.write(f"vpmu: design from kernel tree {kernel} (Linux {version}): {name}\n")
    sys.stderr.write(
        "vpmu: differences from upstream applied: " + ("; ".join(diffs) if diffs else "none") + "\n"
    )
    return d.design


def tree_design_name(kernel: str, register: bool) -> str:
    """The name of the tree's design for commands that take designs by name (scenarios, conform).

    A design with edits is registered under its name for this process when ``register``; conform
    runs cases in worker processes, so there the tree must be a built-in design exactly."""
    from vpmu.designs import DESIGNS
    from vpmu.errors import VpmuError

    design = derived_design(kernel)
    if design.name not in DESIGNS:
        if not register:
            raise VpmuError(
                f"--kernel {kernel}: the tree is no built-in design ({design.summary}); conform runs built-in "
                "designs only: use vpmu check --kernel, or vpmu source design > F.toml and "
                "vpmu check --design-file F.toml"
            )
        DESIGNS[design.name] = design
    return str(design.name)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "source",
        help="check a real kernel tree against the model's anchors; derive a design from it",
        description="Every modelled kernel function names its file and every step the C statement(s) it stands "
        "for (src/vpmu/source/anchors.py). `source check` reads the needed files of a kernel tree with "
        "tree-sitter and reports, per function: found or absent, anchors matched in order / missing / "
        "reordered, and statements neither anchored nor left out with a reason. Exit 0: the tree matches the "
        "design; 1: drift; 2: bad input (no such directory, not a kernel tree, a modelled file missing, a "
        "statement no design can express).",
        formatter_class=RAW,
    )
    ss = p.add_subparsers(dest="source_command", metavar="SUBCOMMAND")
    c = ss.add_parser(
        "check",
        help="report how a kernel tree differs from a design (default upstream)",
        epilog="examples:\n  vpmu source check --kernel ~/linux\n  vpmu source check --kernel ~/linux -v\n"
        "  vpmu source check --kernel ~/linux-next --design linux-next --json",
        formatter_class=RAW,
    )
    c.add_argument("--kernel", required=True, metavar="DIR", help="the root of a kernel source tree")
    c.add_argument("--design", help="a built-in design (vpmu designs); default upstream")
    c.add_argument("--design-file", metavar="FILE", help="a design file (.toml edits or .py)")
    c.add_argument("--json", action="store_true", help=f"print the report as JSON (schema {SOURCE_SCHEMA})")
    c.add_argument("-v", "--verbose", action="store_true", help="list every anchor and every statement left out")
    c.set_defaults(handler=cmd_source_check)
    d = ss.add_parser(
        "design",
        help="print the design a kernel tree implements, as a design file",
        epilog="examples:\n  vpmu source design --kernel ~/linux > mine.toml\n  vpmu check --design-file mine.toml",
        formatter_class=RAW,
    )
    d.add_argument("--kernel", required=True, metavar="DIR", help="the root of a kernel source tree")
    d.set_defaults(handler=cmd_source_design)

    def no_sub(args: argparse.Namespace) -> int:
        p.print_help(sys.stderr)
        return 2

    p.set_defaults(handler=no_sub)
