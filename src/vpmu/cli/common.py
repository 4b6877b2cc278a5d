"""What several commands share: reading the design, the worlds and the machine from the arguments."""

from __future__ import annotations

import argparse
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
    p.add_argument("--design", help="a built-in design (vpmu designs); default upstream")
    p.add_argument("--design-file", metavar="FILE", help="a design file (.toml edits or .py)")
    p.add_argument("--kernel", metavar="DIR", help="derive the design from a kernel source tree (vpmu source design)")
    p.add_argument(
        "--world",
        action="append" if many_worlds else "store",
        metavar="NAME|FILE",
        help="a built-in world (vpmu worlds) or a world TOML file" + ("; repeatable" if many_worlds else ""),
    )
    p.add_argument("--vendor", choices=VENDORS, help="only the default world of this vendor")
