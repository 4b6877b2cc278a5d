"""The ``vpmu`` command line.

Exit status: 0 success / all properties hold, 1 a violation or mismatch,
2 a usage or input error (one line on stderr, never a traceback),
3 incomplete (a state cap or Ctrl-C stopped the check), 70 an internal error
(a bug in vpmu: one line; the traceback with ``--debug`` or ``VPMU_DEBUG=1``).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from vpmu import __version__
from vpmu.errors import EXIT_INCOMPLETE, EXIT_INPUT, EXIT_INTERNAL, VpmuError
from vpmu.report import color

Handler = Callable[[argparse.Namespace], int]

EPILOG = """\
examples:
  vpmu check                               upstream design on the default Intel and AMD worlds
  vpmu check --design seed-assert --vendor amd
  vpmu show upstream kvm_mediated_pmu_load
  vpmu simulate --world intel-long --exits every:10000
  vpmu ablate --function kvm_mediated_pmu_load
  vpmu scenarios                           every canned scenario: expected vs observed
  vpmu diff v5 upstream
  vpmu info --vendor amd

exit status (every command):
  0   success: every property holds, every scenario as expected
  1   a violation (a counterexample), a scenario that differs, a mismatching observation
  2   bad input or usage (one line naming the field, the value and what is allowed)
  3   incomplete: a state cap, a depth bound or Ctrl-C stopped the work before a verdict
  70  internal error: a bug in vpmu (one line; --debug or VPMU_DEBUG=1 shows the traceback)
"""

#: Where to report an internal error.
BUG_URL = "the vpmu project's issue tracker"
#: Output errors that mean the reader went away or the disk is full, not a bug in vpmu.
OUTPUT_ERRNOS = (errno.EPIPE, errno.ENOSPC, errno.EIO, errno.EFBIG, errno.EDQUOT, errno.EBADF)


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors with exit status 2 on one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, like every input error; the usage is one --help away.
        sys.stderr.write(f"vpmu: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_INPUT)


#: Modules that define subcommands: each has ``register(subparsers)``.
COMMAND_MODULES = (
    "vpmu.cli.check",
    "vpmu.cli.model",
    "vpmu.cli.simulate",
    "vpmu.cli.scenarios",
    "vpmu.cli.trace",
    "vpmu.cli.conform",
    "vpmu.cli.completion",
    "vpmu.cli.source",
    "vpmu.cli.sweep",
)


def _add_common(p: argparse.ArgumentParser, top: bool) -> None:
    """``--debug`` and ``--color`` on the top parser and on every subcommand (a subcommand's default
    must not undo ``vpmu --debug check``)."""
    p.add_argument(
        "--debug",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="on an internal error, print the traceback (also VPMU_DEBUG=1)",
    )
    p.add_argument(
        "--color",
        choices=color.CHOICES,
        default="auto" if top else argparse.SUPPRESS,
        help="colour the output: auto (default: on a terminal, unless NO_COLOR is set non-empty; "
        "FORCE_COLOR forces it), always, never",
    )
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                _add_common(child, False)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="vpmu",
        description="An executable model of x86 PMU virtualization and a checker for it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"vpmu {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    _add_common(p, True)
    return p


def _debug(argv: Sequence[str] | None) -> bool:
    if os.environ.get("VPMU_DEBUG", "") not in ("", "0"):
        return True
    return "--debug" in (sys.argv[1:] if argv is None else argv)


def _silence_stdout() -> None:
    """After a failed write to stdout, point it at /dev/null so the interpreter's final flush
    cannot fail again (Python's documented recipe for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _output_failed(e: OSError) -> bool:
    return isinstance(e, BrokenPipeError) or (e.errno in OUTPUT_ERRNOS and e.filename is None)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (module docstring). Raises only SystemExit from
    argparse: a usage error (status 2), ``--help`` and ``--version`` (status 0)."""
    debug = _debug(argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        color.mode = args.color
        handler: Handler | None = getattr(args, "handler", None)
        if handler is None:
            parser.print_help()
            return EXIT_INPUT
        status = handler(args)
        sys.stdout.flush()
        return status
    except VpmuError as e:
        sys.stderr.write(f"vpmu: error: {e}\n")
        return EXIT_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("vpmu: interrupted; nothing unfinished has a verdict\n")
        return EXIT_INCOMPLETE
    except OSError as e:
        if not _output_failed(e):
            return _internal(e, debug)
        _silence_stdout()
        if isinstance(e, BrokenPipeError):  # e.g. `vpmu show | head`: the reader has all it wants
            return 0
        sys.stderr.write(f"vpmu: error: cannot write the output: {e.strerror or e}\n")
        return EXIT_INPUT
    except SystemExit:  # argparse: --help and --version (0), a usage error (2, one line)
        raise
    except Exception as e:  # the one place that turns a bug into status 70
        return _internal(e, debug)


def _internal(e: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exception(e, file=sys.stderr)
    user = _user_frame(e)
    if user:
        # Code of a Python design file raised it (while vpmu ran its steps): the user's error.
        sys.stderr.write(f"vpmu: error: {user}: the design file's code raised {type(e).__name__}: {_short(e)}\n")
        return EXIT_INPUT
    where = "" if debug else "; run again with --debug (or VPMU_DEBUG=1) for the traceback"
    sys.stderr.write(
        f"vpmu: internal error (a bug in vpmu, not in your input): {type(e).__name__}: {_short(e)}{where}; "
        f"please report it, with the command line and input files, at {BUG_URL}\n"
    )
    return EXIT_INTERNAL


def _short(e: BaseException) -> str:
    try:
        text = str(e).splitlines()[0] if str(e) else ""
    except Exception:  # an exception whose str() fails
        text = ""
    return text[:200]


def _user_frame(e: BaseException) -> str:
    """``file:line`` of the innermost frame of a loaded Python design file in ``e``'s traceback."""
    from vpmu.check.design_file import USER_CODE

    if not USER_CODE:
        return ""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if os.path.realpath(f.filename) in USER_CODE]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
