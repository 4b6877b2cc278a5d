"""``vpmu trace ...``: render, show, validate, itf.

Trace files are the documents vpmu writes: ``vpmu simulate --trace FILE``
(schema vpmu.trace/1) and ``vpmu check --json`` (vpmu.check/1, whose violated
results carry a counterexample). docs/traces.md describes the formats and the
commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from vpmu.cli.common import Once, non_negative_int, output_path, write_output
from vpmu.errors import VpmuError

RAW = argparse.RawDescriptionHelpFormatter


def _result(args: argparse.Namespace) -> int | None:
    r: int | None = args.result
    if r is not None and r < 0:
        raise VpmuError(f"--result {r} is not allowed; allowed: a result index >= 0")
    return r


def _context(args: argparse.Namespace) -> int:
    n: int = args.context
    if n < 0:
        raise VpmuError(f"--context {n} is not allowed; allowed: an integer >= 0 (0: every step)")
    return n


# --- vpmu trace render ----------------------------------------------------------------------------


def cmd_render(args: argparse.Namespace) -> int:
    from vpmu.report.html import render_view, window_for
    from vpmu.report.schema import load_view

    view = load_view(args.file, _result(args))
    last, drawn = window_for(view, None if args.context is None else _context(args))
    page = render_view(view, last=last, extra_lanes=args.lane or ())
    write_output(args.html, page, "--html")
    print(f"timeline of {view.title} ({drawn}) written to {args.html}")
    return 0


# --- vpmu trace show ------------------------------------------------------------------------------


def trace_table(
    path: str, result: int | None = None, last: int = 0, full: bool = False, color: bool = False
) -> list[str]:
    """A trace file as the compact table ``vpmu check`` prints (report.text.counterexample), from its rows."""
    from vpmu.report.schema import TRACE_SCHEMA, formatter, load_view, slot_model
    from vpmu.report.text import Style, step_lines, violation_lines

    st = Style(color)
    view = load_view(path, result)
    model = slot_model(view)
    fmt = formatter(model)
    rows = view.rows
    what = "counterexample" if view.violation else "trace"
    out = [st.bold(f"{view.title}: {what} ({len(rows)} steps)")]
    regs = None
    if full:
        if model is not None and model.initial is not None:
            order, initial = model.order, model.initial
        else:
            order, initial = view.slots(), view.initial()
        states = list(view.states(initial))

        def regs(step: int) -> str:
            return ", ".join(f"{n}={fmt(n, states[step][n])}" for n in order)

    out += step_lines(rows, fmt, st, last, regs)
    if full and (model is None or model.initial is None):
        out.append(st.dim("(--full: only the slots this trace changes; its design or world is not built in)"))
    v = view.violation
    if v is not None:
        out += violation_lines(v.prop, v.description, v.source, v.step, v.message, st)
    elif view.kind == TRACE_SCHEMA:
        out.append("")
        out.append(st.dim(f"end of trace (step {len(rows)})"))
    return out


def cmd_show(args: argparse.Namespace) -> int:
    from vpmu.report.text import use_color

    lines = trace_table(args.file, _result(args), _context(args), args.full, use_color(sys.stdout))
    print("\n".join(lines))
    return 0


# --- vpmu trace validate --------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from vpmu.report.schema import read_json, validate

    status = 0
    for path in args.files:
        try:
            doc = read_json(path)
        except VpmuError as e:
            sys.stderr.write(f"vpmu: error: {e}\n")
            status = 2
            continue
        report = validate(doc, strict=args.strict)
        if report.ok:
            print(f"{path}: valid {report.kind}" + (f" ({report.summary})" if report.summary else ""))
        else:
            n = len(report.errors) + report.dropped
            what = "not a vpmu or ITF document" if report.kind == "unknown" else f"invalid {report.kind} document"
            print(f"{path}: {what}, {n} error{'s' * (n != 1)}:")
            for line in report.lines():
                print(f"  {line}")
            status = max(status, 1)
        for w in report.warnings:
            print(f"  warning: {w}")
    return status


# --- vpmu trace itf -------------------------------------------------------------------------------


def cmd_itf(args: argparse.Namespace) -> int:
    from vpmu.report.itf import to_itf
    from vpmu.report.schema import load_view, slot_model, validate

    view = load_view(args.file, _result(args))
    doc = to_itf(view, slot_model(view), changed_only=args.changed_only, bigint=args.bigint)
    report = validate(doc)
    assert report.ok, report.errors  # what we write must read back: an error here is a bug
    text = json.dumps(doc, indent=1) + "\n"
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        write_output(args.output, text, "--output")
        print(
            f"ITF trace of {view.title}: {len(doc['states'])} states of {len(doc['vars'])} variables "
            f"written to {args.output}"
        )
    return 0


# --- registration ---------------------------------------------------------------------------------


def _file_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="TRACE.json", help="a vpmu.trace/1 file (simulate --trace) or vpmu.check/1 file")
    p.add_argument(
        "--result",
        type=non_negative_int,
        action=Once,
        metavar="N",
        help="for a vpmu.check/1 file: the counterexample of results[N] (default: the first violated result)",
    )


def register(sub: Any) -> None:
    t = sub.add_parser(
        "trace",
        help="render, print, validate and export trace files",
        description="Work with the trace files vpmu writes: `vpmu simulate --trace FILE` (schema vpmu.trace/1) and "
        "`vpmu check --json` (vpmu.check/1: the counterexample of a violated result). docs/traces.md describes them.",
        epilog="examples:\n"
        "  vpmu check --vendor intel --json > check.json\n"
        "  vpmu trace render check.json --html check.html\n"
        "  vpmu trace show check.json --context 16\n"
        "  vpmu trace validate check.json\n"
        "  vpmu trace itf check.json -o check.itf.json",
        formatter_class=RAW,
    )
    tsub = t.add_subparsers(dest="trace_command", metavar="COMMAND", parser_class=type(t))

    def usage(_args: argparse.Namespace) -> int:  # `vpmu trace` alone: like `vpmu` alone
        t.print_help()
        return 2

    t.set_defaults(handler=usage)

    p = tsub.add_parser(
        "render",
        help="draw a trace as a self-contained HTML timeline",
        description="Draw a trace as one self-contained HTML page (no network): a lane per context with the steps "
        "as blocks, lanes for PERF_GLOBAL_CTRL, LVTPC, GLOBAL_STATUS and the counters, PMI arrows from overflow to "
        "delivery, guest mode shaded, the violated property at its step. Hover a block for the full step; the step "
        "list below moves with the arrow keys or j/k.",
        epilog="examples:\n"
        "  vpmu check --design lvtpc-before-clear --vendor intel --json > h1.json\n"
        "  vpmu trace render h1.json --html h1.html\n"
        "  vpmu simulate --vendor intel --exits every:3 --nmis at:20 --trace sim.json\n"
        "  vpmu trace render sim.json --html sim.html --context 200 --lane perf.guest_lvtpc_loaded\n"
        "  (or directly: vpmu check --html OUT.html, vpmu simulate --html OUT.html)",
        formatter_class=RAW,
    )
    _file_arg(p)
    p.add_argument(
        "--html", required=True, type=output_path, action=Once, metavar="OUT", help="write the HTML page here"
    )
    p.add_argument(
        "--context",
        type=non_negative_int,
        action=Once,
        metavar="N",
        help="draw only the last N steps (0: all; default: all, or the last 5000 of a longer trace)",
    )
    p.add_argument("--lane", action="append", metavar="SLOT", help="also draw a lane for this state slot (repeatable)")
    p.set_defaults(handler=cmd_render)

    p = tsub.add_parser(
        "show",
        help="print a trace as the checker's compact table",
        description="Print a trace file as the table `vpmu check` prints: one line per step with the state it "
        "changed, then its code and hardware events; the violated property at the end.",
        epilog="examples:\n  vpmu trace show check.json\n  vpmu trace show check.json --context 16\n"
        "  vpmu trace show sim.json --full | less -R",
        formatter_class=RAW,
    )
    _file_arg(p)
    p.add_argument("--full", action="store_true", help="also print every register after every step")
    p.add_argument(
        "--context", type=non_negative_int, default=0, metavar="N", help="print only the last N steps (0: all)"
    )
    p.set_defaults(handler=cmd_show)

    p = tsub.add_parser(
        "validate",
        help="check that files follow vpmu.check/1, vpmu.trace/1 or ITF",
        description='Validate JSON documents: vpmu.check/1, vpmu.trace/1 (by their "schema"), or ITF traces (by '
        'their "states"). Every problem is reported with its JSON path. Keys a schema does not define are '
        "warnings (errors with --strict). Exit 0: all valid; 1: an invalid document; 2: a file unreadable or "
        "not JSON.",
        epilog="examples:\n  vpmu trace validate check.json sim.json\n  vpmu trace validate --strict out.itf.json",
        formatter_class=RAW,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="JSON files to validate")
    p.add_argument("--strict", action="store_true", help="unknown keys are errors, not warnings")
    p.set_defaults(handler=cmd_validate)

    p = tsub.add_parser(
        "itf",
        help="export a trace in the Informal Trace Format (Apalache, Quint)",
        description="Export a trace as ITF (Apalache ADR-015): state 0 is the machine before the first step, state i "
        "after step i; the variables are the machine and kernel state slots (all of them when the design and world "
        'are built in, else those the trace changes). Integers beyond 2^53 are written as {"#bigint": "..."}.',
        epilog="examples:\n  vpmu trace itf check.json -o check.itf.json\n"
        "  vpmu trace itf sim.json --changed-only | jq '.states[-1]'",
        formatter_class=RAW,
    )
    _file_arg(p)
    p.add_argument(
        "-o", "--output", type=output_path, action=Once, metavar="OUT", help="write here (default: standard output)"
    )
    p.add_argument(
        "--changed-only", action="store_true", help="only the slots the trace changes, even for a built-in model"
    )
    p.add_argument("--bigint", action="store_true", help='every integer as {"#bigint": "..."}, as Quint writes them')
    p.set_defaults(handler=cmd_itf)
