"""Commands that describe the model: ``info``, ``show``, ``designs``, ``worlds``, ``explain``, ``diff``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from vpmu.cli.common import RAW, Once, design_from_args, machine_from_args
from vpmu.config import VENDORS
from vpmu.errors import VpmuError


def cmd_info(args: argparse.Namespace) -> int:
    from vpmu.hw.layout import Layout
    from vpmu.hw.virt import Cpu

    cpu = Cpu(machine_from_args(args), Layout())
    print("\n".join(cpu.describe()))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from vpmu.check.system import System
    from vpmu.check.world import DEFAULT_WORLDS, resolve_world
    from vpmu.designs import DESIGNS
    from vpmu.kernel.lang import listing

    if args.design_file and args.design is not None:
        # `vpmu show --design-file F FUNCTION`: the one positional names the function.
        if args.function is not None:
            raise VpmuError("give either a design name or --design-file, not both")
        args.function, args.design = args.design, None
    if args.design is None and not args.design_file:
        for d in DESIGNS.values():
            print(f"{d.name:<22} {d.summary}")
        return 0
    design = design_from_args(args)
    world = resolve_world(args.world or DEFAULT_WORLDS[args.vendor or "intel"])
    system = System(design, world)
    fns = system.functions
    if args.function is None:
        print(f"{design.name}: {design.summary}")
        if design.base:
            print(f"  derived from {design.base}")
        for e in design.edits:
            print(f"  edit: {e.describe()}")
        if design.source:
            print(f"  source: {design.source}")
        print(f"functions ({world.name}):")
        for name, fn in fns.items():
            print(f"  {name:<32} {len(fn.steps):>3} steps  {fn.doc}")
        return 0
    if args.function not in fns:
        raise VpmuError(f"design {design.name!r} has no function {args.function!r}; functions: {', '.join(fns)}")
    fn = fns[args.function]
    print(f"{fn.name}  ({design.name}, {world.name}){'  [' + fn.source + ']' if fn.source else ''}")
    if fn.doc:
        print(f"  {fn.doc}")
    print("\n".join(listing(fn)))
    return 0


def cmd_designs(args: argparse.Namespace) -> int:
    from vpmu.designs import DESIGNS

    for d in DESIGNS.values():
        base = f" (from {d.base})" if d.base else ""
        print(f"{d.name:<22} {d.summary}{base}")
        if args.verbose:
            print(f"{'':<22} source: {d.source}")
            for e in d.edits:
                print(f"{'':<22} edit: {e.describe()}")
    return 0


def cmd_worlds(args: argparse.Namespace) -> int:
    from vpmu.check.world import builtin_worlds, resolve_world

    worlds = [resolve_world(args.world)] if args.world else list(builtin_worlds().values())
    for w in worlds:
        m = w.machine
        print(
            f"{w.name}  ({m.vendor}, PMU {m.pmu_version}, {m.num_gp} GP x {m.gp_width} bits"
            + (f", {m.num_fixed} fixed" if m.num_fixed else "")
            + (f", {w.cpus} pCPUs, {w.bounds.migrations} vCPU migrations" if w.cpus > 1 else "")
            + ")"
        )
        if args.world or args.verbose:
            print(f"  {w.description}")
            print(
                "  host events: "
                + (", ".join(f"{e.name} ({e.event}, period {e.period})" for e in w.host_events) or "none")
            )
            print("  guest program:")
            for line in w.guest.program:
                print(f"    {line}")
            print(f"  guest PMI handler: {w.guest.ack} ack, enables {w.guest.enable}, rearm {list(w.guest.rearm)}")
            b = w.bounds
            print(f"  bounds: {b.exits} async exits ({', '.join(b.exit_reasons)}), {b.nmis} unrelated NMIs")
            print(f"  properties: {', '.join(w.enabled_properties())}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from vpmu.check import properties as P

    props = [P.get(args.property)] if args.property else list(P.PROPERTIES)
    for p in props:
        vendor = f" ({p.vendor} only)" if p.vendor else ""
        print(f"{p.name}{vendor}\n  {p.description}\n  source: {p.source}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from vpmu.check.system import System
    from vpmu.check.world import DEFAULT_WORLDS, resolve_world
    from vpmu.designs import get_design
    from vpmu.report.diff import diff_function, diff_path, path_texts

    a, b = get_design(args.a), get_design(args.b)
    if args.kernel and not args.c:
        raise VpmuError("--kernel goes with --c (a patch against that tree); add --c")
    if args.c:
        from vpmu.source.gen import diff_c, unexpressed

        if args.world or args.vendor:
            raise VpmuError("--c prints the C of both vendors' functions; drop --world/--vendor")
        notes = unexpressed(a, b)
        if args.kernel:
            from vpmu.source.gen import diff_c_tree
            from vpmu.source.tree import kernel_version, open_tree

            root = open_tree(args.kernel)
            text = diff_c_tree(root, a, b)
            print(f"vpmu diff {a.name} {b.name} --c --kernel {args.kernel}: a patch to that tree "
                  f"(Linux {kernel_version(root)}, which is design {a.name})")
        else:
            text = diff_c(a, b)
            print(f"vpmu diff {a.name} {b.name} --c: kernel-like C from the anchors (upstream = Linux v7.0)")
        for n in notes:
            print(f"  not in the C below: {n}")
        print()
        sys.stdout.write(text or "no difference in the anchored C\n")
        return 0
    world = resolve_world(args.world or DEFAULT_WORLDS[args.vendor or "intel"])
    sa, sb = System(a, world), System(b, world)
    print(f"{a.name} -> {b.name} ({world.name}); + only in {b.name}, - only in {a.name}, ~ moved, * changed")
    same = True
    for name in sorted(set(sa.functions) | set(sb.functions)):
        lines = diff_function(sa.functions.get(name), sb.functions.get(name))
        if lines:
            same = False
            print(f"{name}:")
            print("\n".join(lines))
    for fn in ("kvm_mediated_pmu_load", "kvm_mediated_pmu_put"):
        pa, pb = path_texts(sa.task, fn), path_texts(sb.task, fn)
        if pa != pb:
            print(f"{fn}, inlined (what runs, in order):")
            print("\n".join(diff_path(pa, pb)))
    if same:
        print("no difference")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "show",
        help="list designs, a design's functions, or a function's steps",
        description="Without arguments: the designs. With a design: its functions (as built for a world). "
        "With a function: its labelled steps, as kernel-like code.",
        epilog="examples:\n  vpmu show\n  vpmu show upstream kvm_mediated_pmu_load\n"
        "  vpmu show v5 perf_load_guest_context --vendor amd",
        formatter_class=RAW,
    )
    p.add_argument("design", nargs="?", help="design name")
    p.add_argument("function", nargs="?", help="function name")
    p.add_argument("--design-file", metavar="FILE", help="show a design file instead of a built-in design")
    p.add_argument("--world", metavar="NAME|FILE", help="build for this world (default: the vendor's default)")
    p.add_argument("--vendor", action=Once, choices=VENDORS, help="build for this vendor's default world")
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser(
        "designs",
        help="list the built-in designs",
        description="List the built-in designs.",
        epilog="examples:\n  vpmu designs\n  vpmu designs -v",
        formatter_class=RAW,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="also print sources and edits")
    p.set_defaults(handler=cmd_designs)

    p = sub.add_parser(
        "worlds",
        help="list the built-in worlds, or describe one",
        description="List the built-in worlds, or describe one (built-in name or TOML file).",
        epilog="examples:\n  vpmu worlds\n  vpmu worlds intel-default",
        formatter_class=RAW,
    )
    p.add_argument("world", nargs="?", help="a world to describe")
    p.add_argument("-v", "--verbose", action="store_true", help="describe every world")
    p.set_defaults(handler=cmd_worlds)

    p = sub.add_parser(
        "explain",
        help="describe a property and its source",
        description="Describe a property (or all) and cite its source.",
        epilog="examples:\n  vpmu explain\n  vpmu explain lvtpc-route-consistent",
        formatter_class=RAW,
    )
    p.add_argument("property", nargs="?", help="property name")
    p.set_defaults(handler=cmd_explain)

    p = sub.add_parser(
        "diff",
        help="step-level difference between two designs",
        description="Per function: inserted, deleted, moved and changed steps; then the inlined load and put "
        "paths side by side, so a step that moved between functions shows where it now runs.",
        epilog="examples:\n  vpmu diff v5 upstream\n  vpmu diff upstream seed-assert --vendor amd\n"
        "  vpmu diff upstream perf-stays-disabled --c > fix.patch\n"
        "  vpmu diff upstream linux-next --c --kernel ~/linux | patch -p1 -d ~/linux",
        formatter_class=RAW,
    )
    p.add_argument("a", help="the first design")
    p.add_argument("b", help="the second design")
    p.add_argument(
        "--c", action="store_true", help="print a unified diff of the kernel-like C of the affected functions"
    )
    p.add_argument(
        "--kernel", metavar="DIR", help="with --c: a patch against this kernel tree (it must be design A)"
    )
    p.add_argument("--world", metavar="NAME|FILE", help="build both for this world")
    p.add_argument("--vendor", action=Once, choices=VENDORS, help="build both for this vendor's default world")
    p.set_defaults(handler=cmd_diff)

    p = sub.add_parser(
        "info",
        help="print the machine a config describes",
        description="Print the machine a config describes: MSRs present, counters, widths, features.",
        epilog="examples:\n  vpmu info\n  vpmu info --vendor amd\n  vpmu info --config machine.toml",
        formatter_class=RAW,
    )
    p.add_argument("--config", metavar="FILE", help="machine TOML file ([machine] table)")
    p.add_argument("--vendor", action=Once, choices=VENDORS, help="vendor (default intel, or the config's)")
    p.set_defaults(handler=cmd_info)
