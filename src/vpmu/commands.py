"""Subcommands of the ``vpmu`` CLI: argument definitions and handlers."""

from __future__ import annotations

import argparse
from typing import Any

from vpmu.config import VENDORS, MachineConfig


def _machine(args: argparse.Namespace) -> MachineConfig:
    if getattr(args, "config", None):
        cfg = MachineConfig.load(args.config)
        if args.vendor and args.vendor != cfg.vendor:
            return MachineConfig.from_mapping({**cfg.to_dict(), "vendor": args.vendor})
        return cfg
    return MachineConfig(vendor=args.vendor or "intel")


def cmd_info(args: argparse.Namespace) -> int:
    from vpmu.hw.layout import Layout
    from vpmu.hw.virt import Cpu

    cpu = Cpu(_machine(args), Layout())
    print("\n".join(cpu.describe()))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "info",
        help="print the machine a config describes",
        description="Print the machine a config describes: MSRs present, counters, widths, features.",
        epilog="examples:\n  vpmu info\n  vpmu info --vendor amd\n  vpmu info --config machine.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="FILE", help="machine TOML file ([machine] table)")
    p.add_argument("--vendor", choices=VENDORS, help="vendor (default intel, or the config's)")
    p.set_defaults(handler=cmd_info)
