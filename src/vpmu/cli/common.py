"""What several commands share: reading the design, the worlds and the machine from the arguments."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from vpmu.config import VENDORS, MachineConfig
from vpmu.errors import VpmuError

RAW = argparse.RawDescriptionHelpFormatter


def machine_from_args(args: argparse.Namespace) -> MachineConfig:
    if getattr(args, "config", None):
        cfg = MachineConfig.load(args.config)
        if args.vendor and args.vendor != cfg.vendor:
            raise VpmuError(
                f"--vendor {args.vendor} contradicts vendor = {cfg.vendor!r} in {args.config}; drop one of them"
            )
        return cfg
    return MachineConfig(vendor=args.vendor or "intel")


def design_from_args(args: argparse.Namespace) -> Any:
    from vpmu.check.design_file import load_design_file
    from vpmu.designs import get_design

    if getattr(args, "kernel", None):
        if getattr(args, "design", None) or getattr(args, "design_file", None):
            raise VpmuError("--kernel derives the design from the tree; drop --design/--design-file")
        from vpmu.cli.source import derived_design

        return derived_design(args.kernel)
    if getattr(args, "design_file", None):
        if args.design:
            raise VpmuError("give either --design or --design-file, not both")
        return load_design_file(args.design_file)
    return get_design(args.design or "upstream")


def worlds_from_args(args: argparse.Namespace) -> list[Any]:
    from vpmu.check.world import DEFAULT_WORLDS, resolve_world

    if args.world:
        worlds = [resolve_world(w) for w in args.world]
        if args.vendor:
            worlds = [w for w in worlds if w.machine.vendor == args.vendor]
            if not worlds:
                raise VpmuError(f"none of the worlds given is an {args.vendor} world")
        return worlds
    vendors = [args.vendor] if args.vendor else list(VENDORS)
    return [resolve_world(DEFAULT_WORLDS[v]) for v in vendors]


def add_design_world_args(p: argparse.ArgumentParser, many_worlds: bool = True) -> None:
    p.add_argument("--design", action=Once, help="a built-in design (vpmu designs); default upstream")
    p.add_argument("--design-file", action=Once, metavar="FILE", help="a design file (.toml edits or .py)")
    p.add_argument(
        "--kernel",
        action=Once,
        metavar="DIR",
        help="derive the design from a kernel source tree (vpmu source design)",
    )
    p.add_argument(
        "--world",
        action="append" if many_worlds else Once,
        metavar="NAME|FILE",
        help="a built-in world (vpmu worlds) or a world TOML file" + ("; repeatable" if many_worlds else ""),
    )
    p.add_argument("--vendor", action=Once, choices=VENDORS, help="only the default world of this vendor")


# --- flags every command validates the same way --------------------------------------------------------
#
# Use these as argparse ``type=`` / ``action=`` so a bad value is a usage error (status 2) naming the
# flag before any work starts: ``p.add_argument("--jobs", type=non_negative_int)``,
# ``p.add_argument("--html", type=output_path, action=Once)``.


def _int_at_least(text: str, lo: int) -> int:
    try:
        n = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; allowed: an integer >= {lo}") from None
    if n < lo:
        raise argparse.ArgumentTypeError(f"{n} is not allowed; allowed: an integer >= {lo}")
    return n


def non_negative_int(text: str) -> int:
    """An integer >= 0 (``--context``, ``--jobs``: 0 means all / one per core)."""
    return _int_at_least(text, 0)


def positive_int(text: str) -> int:
    """An integer >= 1 (``--max-states``, ``--max-steps``)."""
    return _int_at_least(text, 1)


class Once(argparse.Action):
    """Store a value, refusing the flag a second time (a repeated ``--vendor`` used to keep the last)."""

    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        if getattr(ns, f"_seen_{self.dest}", False):
            raise argparse.ArgumentError(self, "given twice; give it once")
        setattr(ns, f"_seen_{self.dest}", True)
        setattr(ns, self.dest, values)


def output_path(text: str) -> str:
    """A file vpmu will write: checked before any work, so a run is never lost to a bad path.

    Allowed: a new file in an existing, writable directory, or an existing regular file that is
    writable. Refused: an empty name, a directory, a missing directory, a device or pipe (e.g.
    /dev/full: it fails only when written)."""
    if not text:
        raise argparse.ArgumentTypeError("'' is not allowed; allowed: a file name")
    p = Path(text)
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; allowed: a file name")
    if p.exists():
        if not p.is_file():
            raise argparse.ArgumentTypeError(f"{text} is not a regular file; allowed: a regular file")
        if not os.access(p, os.W_OK):
            raise argparse.ArgumentTypeError(f"{text} is not writable")
        return text
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: directory {parent} is not writable")
    return text


def write_output(path: str, text: str, flag: str) -> None:
    """Write an output file; a failure (disk full) is a one-line error naming the flag."""
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise VpmuError(f"{flag} {path}: cannot write: {e.strerror or e}") from None
