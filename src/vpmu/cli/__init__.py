"""The ``vpmu`` command line.

Exit status: 0 success / all properties hold, 1 a violation or mismatch,
2 a usage or input error (one line on stderr, never a traceback),
3 incomplete (a state cap or Ctrl-C stopped the check).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from vpmu import __version__
from vpmu.errors import VpmuError

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
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors with exit status 2 and one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"vpmu: error: {message}\n")
        raise SystemExit(2)


#: Modules that define subcommands: each has ``register(subparsers)``.
COMMAND_MODULES = (
    "vpmu.cli.check",
    "vpmu.cli.model",
    "vpmu.cli.simulate",
    "vpmu.cli.scenarios",
    "vpmu.cli.trace",
    "vpmu.cli.conform",
    "vpmu.cli.completion",
    "vpmu.cli.sweep",
)


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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except VpmuError as e:
        sys.stderr.write(f"vpmu: error: {e}\n")
        return 2
    except KeyboardInterrupt:  # pragma: no cover - interactive
        sys.stderr.write("vpmu: interrupted\n")
        return 3
    except BrokenPipeError:  # pragma: no cover - e.g. `vpmu show | head`
        return 0
