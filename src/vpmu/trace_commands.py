"""``vpmu trace ...`` (render, show, validate, itf) and ``vpmu completion``.

Trace files are the documents vpmu writes: ``vpmu simulate --trace FILE``
(schema vpmu.trace/1) and ``vpmu check --json`` (vpmu.check/1, whose violated
results carry a counterexample). docs/traces.md describes the formats and the
commands.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

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
    Path(args.html).write_text(page, encoding="utf-8")
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
            print(f"{path}: invalid {report.kind} document, {n} error{'s' * (n != 1)}:")
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
        Path(args.output).write_text(text, encoding="utf-8")
        print(
            f"ITF trace of {view.title}: {len(doc['states'])} states of {len(doc['vars'])} variables "
            f"written to {args.output}"
        )
    return 0


# --- vpmu completion ------------------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z0-9_.:+=/@%-]+")
_FILE_DESTS = {"file", "files", "html", "trace", "config", "design_file", "output", "out"}


def _subparsers(p: argparse.ArgumentParser) -> argparse._SubParsersAction | None:  # type: ignore[type-arg]
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            return a
    return None


def _walk(
    p: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, p
    sub = _subparsers(p)
    if sub is not None:
        for name, child in sub.choices.items():
            yield from _walk(child, (*path, name))


def _children(p: argparse.ArgumentParser) -> list[tuple[str, str]]:
    sub = _subparsers(p)
    if sub is None:
        return []
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    return [(name, helps.get(name, "")) for name in sub.choices]


def _catalog() -> dict[str, list[str]]:
    from vpmu.check import properties as P
    from vpmu.check.world import builtin_worlds
    from vpmu.designs import DESIGNS

    return {"design": list(DESIGNS), "world": list(builtin_worlds()), "property": list(P.BY_NAME)}


def _values(a: argparse.Action, catalog: dict[str, list[str]]) -> tuple[list[str], bool]:
    """What completes a value of this option or positional: (words, whether files do too)."""
    if a.choices is not None and not isinstance(a, argparse._SubParsersAction):
        return [str(c) for c in a.choices], False
    dest = a.dest
    if dest in ("design", "a", "b"):
        return catalog["design"], False
    if dest == "world":
        return catalog["world"], True
    if dest == "property":
        return catalog["property"], False
    metavar = str(a.metavar or "")
    return [], dest in _FILE_DESTS or any(k in metavar for k in ("FILE", "OUT", "TRACE", "PATH"))


def _words(ws: Sequence[str]) -> str:
    return " ".join(w for w in ws if _WORD.fullmatch(w))


def _takes_value(a: argparse.Action) -> bool:
    return bool(a.option_strings) and a.nargs != 0


def bash_script(parser: argparse.ArgumentParser) -> str:
    cat = _catalog()
    nodes = list(_walk(parser))
    walk_cases, value_cases, option_cases, word_cases = [], [], [], []
    for path, p in nodes:
        key = " ".join(path)
        kids = [f'"{key}|{name}"' for name, _ in _children(p)]
        if kids:
            walk_cases.append(f'            {"|".join(kids)}) cmdpath="${{cmdpath:+$cmdpath }}$w" ;;')
        with_value = [s for a in p._actions if _takes_value(a) for s in a.option_strings]
        if with_value:
            walk_cases.append(f'            {"|".join(f""""{key}|{s}" """.strip() for s in with_value)}) skip=1 ;;')
        for a in p._actions:
            if not _takes_value(a):
                continue
            words, files = _values(a, cat)
            if not words and not files:
                action = "COMPREPLY=()"
            else:
                action = f'COMPREPLY=($(compgen -W "{_words(words)}" -- "$cur"))'
                if files:
                    action += '; COMPREPLY+=($(compgen -f -- "$cur")); compopt -o filenames 2>/dev/null'
            pats = "|".join(f'"{key}|{s}"' for s in a.option_strings)
            value_cases.append(f"        {pats}) {action}; return ;;")
        opts = [s for a in p._actions for s in a.option_strings]
        option_cases.append(f'        "{key}") opts="{_words(opts)}" ;;')
        pos_words = [n for n, _ in _children(p)]
        pos_files = False
        for a in p._actions:
            if a.option_strings or isinstance(a, argparse._SubParsersAction):
                continue
            words, files = _values(a, cat)
            pos_words += words
            pos_files = pos_files or files
        if pos_words or pos_files:
            line = f'        "{key}") words="{_words(pos_words)}"'
            if pos_files:
                line += "; files=1"
            word_cases.append(line + " ;;")
    nl = "\n"
    return f"""# bash completion for vpmu, generated by `vpmu completion bash` from its argument parser.
# Install: vpmu completion bash > ~/.local/share/bash-completion/completions/vpmu
#     or:  eval "$(vpmu completion bash)"   (in ~/.bashrc)
_vpmu() {{
    local cur prev cmdpath="" w i skip=0 opts="" words="" files=0
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${{COMP_WORDS[i]}}"
        if ((skip)); then skip=0; continue; fi
        case "$cmdpath|$w" in
{nl.join(walk_cases)}
        esac
    done
    case "$cmdpath|$prev" in
{nl.join(value_cases)}
    esac
    case "$cmdpath" in
{nl.join(option_cases)}
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi
    case "$cmdpath" in
{nl.join(word_cases)}
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
    if ((files)); then
        COMPREPLY+=($(compgen -f -- "$cur"))
        compopt -o filenames 2>/dev/null
    fi
}}
complete -F _vpmu vpmu
"""


def _zq(s: str) -> str:
    """Quote for a zsh single-quoted word."""
    return "'" + s.replace("'", "'\\''") + "'"


def _zhelp(s: str | None) -> str:
    text = (s or "").replace("%(default)s", "").split(";")[0].strip()
    return re.sub(r"\s+", " ", re.sub(r"[\[\]:\\]", " ", text))[:70].strip()


def zsh_script(parser: argparse.ArgumentParser) -> str:
    cat = _catalog()
    walk_cases, arg_cases = [], []
    for path, p in _walk(parser):
        key = " ".join(path)
        kids = _children(p)
        if kids:
            pats = "|".join(f'"{key}|{name}"' for name, _ in kids)
            walk_cases.append(f'      {pats}) cmdpath="${{cmdpath:+$cmdpath }}$w"; start=$i ;;')
        with_value = [s for a in p._actions if _takes_value(a) for s in a.option_strings]
        if with_value:
            walk_cases.append(f'      {"|".join(f""""{key}|{s}" """.strip() for s in with_value)}) skip=1 ;;')
        specs: list[str] = []
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                continue
            if a.option_strings:
                words, files = _values(a, cat)
                rep = "*" if isinstance(a, argparse._AppendAction) else ""
                for s in a.option_strings:
                    spec = f"{rep}{s}[{_zhelp(a.help)}]"
                    if _takes_value(a):
                        name = (str(a.metavar) if a.metavar else a.dest).lower().replace(":", " ")
                        if files and words:
                            spec += f":{name}:_alternative 'names\\:name\\:({_words(words)})' 'files\\:file\\:_files'"
                        elif files:
                            spec += f":{name}:_files"
                        elif words:
                            spec += f":{name}:({_words(words)})"
                        else:
                            spec += f":{name}: "
                    specs.append(_zq(spec))
            else:
                words, files = _values(a, cat)
                many = a.nargs in ("*", "+")
                lead = "*" if many else ""
                opt = ":" if a.nargs == "?" else ""
                name = a.dest
                if files and words:
                    act = f"_alternative 'names\\:name\\:({_words(words)})' 'files\\:file\\:_files'"
                elif files:
                    act = "_files"
                elif words:
                    act = f"({_words(words)})"
                else:
                    act = " "
                specs.append(_zq(f"{lead}:{opt}{name}:{act}"))
        if kids:
            items = " ".join(f'{name}\\:"{_zhelp(h)}"' for name, h in kids)
            specs.append(_zq(f"1:command:(({items}))"))
            specs.append(_zq("*:: :"))
        body = " \\\n        ".join(specs)
        arg_cases.append(f'    "{key}")\n      _arguments -s \\\n        {body} ;;')
    nl = "\n"
    return f"""#compdef vpmu
# zsh completion for vpmu, generated by `vpmu completion zsh` from its argument parser.
# Install: vpmu completion zsh > "${{fpath[1]}}/_vpmu"   (then restart zsh)
#     or:  source <(vpmu completion zsh)                (in ~/.zshrc, after compinit)
_vpmu() {{
  local cmdpath="" w i skip=0 start=1
  for (( i = 2; i < CURRENT; i++ )); do
    w=${{words[i]}}
    if (( skip )); then skip=0; continue; fi
    case "$cmdpath|$w" in
{nl.join(walk_cases)}
    esac
  done
  if (( start > 1 )); then
    shift $(( start - 1 )) words
    (( CURRENT -= start - 1 ))
  fi
  case "$cmdpath" in
{nl.join(arg_cases)}
  esac
}}
if [[ "$funcstack[1]" == _vpmu ]]; then
  _vpmu "$@"
else
  compdef _vpmu vpmu
fi
"""


def cmd_completion(args: argparse.Namespace) -> int:
    from vpmu.cli import build_parser

    parser = build_parser()
    script = bash_script(parser) if args.shell == "bash" else zsh_script(parser)
    sys.stdout.write(script)
    return 0


# --- registration ---------------------------------------------------------------------------------


def _file_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="TRACE.json", help="a vpmu.trace/1 file (simulate --trace) or vpmu.check/1 file")
    p.add_argument(
        "--result",
        type=int,
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
    p.add_argument("--html", required=True, metavar="OUT", help="write the HTML page here")
    p.add_argument(
        "--context",
        type=int,
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
    p.add_argument("--context", type=int, default=0, metavar="N", help="print only the last N steps (0: all)")
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
    p.add_argument("-o", "--output", metavar="OUT", help="write here (default: standard output)")
    p.add_argument(
        "--changed-only", action="store_true", help="only the slots the trace changes, even for a built-in model"
    )
    p.add_argument("--bigint", action="store_true", help='every integer as {"#bigint": "..."}, as Quint writes them')
    p.set_defaults(handler=cmd_itf)

    p = sub.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description="Print a completion script for bash or zsh, generated from vpmu's own argument parser: "
        "commands, options, and the names of designs, worlds and properties.",
        epilog="examples:\n"
        '  eval "$(vpmu completion bash)"                               # this bash session\n'
        "  vpmu completion bash > ~/.local/share/bash-completion/completions/vpmu\n"
        '  vpmu completion zsh > "${fpath[1]}/_vpmu"                    # zsh, then restart it',
        formatter_class=RAW,
    )
    p.add_argument("shell", choices=("bash", "zsh"), help="the shell")
    p.set_defaults(handler=cmd_completion)
