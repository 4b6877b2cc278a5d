"""Benchmark: this tree against a git revision, side by side, as a ratio. Not a test.

It extracts the revision's ``src/`` into a temporary directory (``git archive``:
the repository and its worktrees are left alone), optionally compiles it, and
checks each design on each world with both trees, interleaved round by round,
each run in a fresh process (``PYTHONPATH`` set to that tree's ``src``). It
reports the states per CPU-second of each side (the best of the rounds: CPU time
varies less than wall time on a shared machine) and their ratio, and fails
(exit 1) if the two sides disagree on a verdict, a count or a counterexample.
Whichever side has compiled modules in its ``src`` (``python setup.py build_ext
--inplace`` with ``VPMU_MYPYC=1``, README "Performance") runs compiled; the
report says which. Run::

    python bench/bench_compare.py --rev main                      # perf-stays-disabled on both default worlds
    python bench/bench_compare.py --rev 5b3d218 --rounds 5 --fingerprint
    python bench/bench_compare.py --rev HEAD~3 --design upstream --world my-world.toml
    python bench/bench_compare.py --rev main --rev-compiled       # compile the revision too
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

# Run in the child: one check, its counts and CPU time as JSON on stdout.
CHILD = r"""
import hashlib, json, sys, time
from vpmu.check.explore import check
from vpmu.check.system import System
from vpmu.check.world import resolve_world
from vpmu.designs import get_design
import vpmu.check.explore as X
design, world, fingerprint = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
system = System(get_design(design), resolve_world(world))
c0 = time.process_time()
r = check(system, fingerprint=fingerprint)
cpu = time.process_time() - c0
print(json.dumps({
    "verdict": r.verdict, "property": r.prop, "states": r.stats.states,
    "transitions": r.stats.transitions, "depth": r.stats.depth,
    "moves": hashlib.sha256(repr([tuple(m) for m in r.moves]).encode()).hexdigest()[:12],
    "cpu": cpu, "compiled": not X.__file__.endswith(".py"),
}))
"""


def extract(rev: str, into: Path) -> Path:
    """The revision's src/ under ``into``; returns that src directory."""
    archive = subprocess.run(["git", "-C", str(HERE), "archive", rev, "src"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def compile_tree(src: Path) -> None:
    """Compile a tree's hot modules in place with mypyc (as setup.py does with VPMU_MYPYC=1)."""
    setup = HERE / "setup.py"
    env = {**os.environ, "VPMU_MYPYC": "1", "VPMU_MYPYC_SRC": str(src)}
    done = subprocess.run(
        [sys.executable, str(setup), "-q", "build_ext", "--inplace", "--build-temp", str(src.parent / "build")],
        cwd=src.parent,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        # A revision from before issue 15 lacks annotations mypyc needs.
        raise SystemExit(f"bench_compare: the revision does not compile with mypyc:\n{done.stdout[-2000:]}")


def run(src: Path, design: str, world: str, fingerprint: bool) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, design, world, "1" if fingerprint else "0"],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode:
        raise SystemExit(f"bench_compare: checking {design} on {world} with {src} failed:\n{done.stderr[-2000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", required=True, help="the git revision to compare against (e.g. main, 5b3d218)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3; the best counts)")
    ap.add_argument("--design", action="append", help="design(s) (default: perf-stays-disabled)")
    ap.add_argument("--world", action="append", help="world name(s) or TOML files (default: the default worlds)")
    ap.add_argument("--fingerprint", action="store_true", help="check in fingerprint mode")
    ap.add_argument("--rev-compiled", action="store_true", help="compile the revision's tree with mypyc too")
    ap.add_argument("--src", help="the src directory to measure against the revision (default: this tree's src)")
    args = ap.parse_args()
    designs = args.design or ["perf-stays-disabled"]
    worlds = args.world or ["intel-default", "amd-default"]
    ok = True
    with tempfile.TemporaryDirectory(prefix="vpmu-bench-") as tmp:
        base = extract(args.rev, Path(tmp))
        if args.rev_compiled:
            compile_tree(base)
        sides = {args.rev: base, "this tree": Path(args.src) if args.src else HERE / "src"}
        for design in designs:
            for world in worlds:
                best: dict[str, dict[str, object]] = {}
                for _ in range(args.rounds):
                    for name, src in sides.items():
                        r = run(src, design, world, args.fingerprint)
                        if name not in best or float(r["cpu"]) < float(best[name]["cpu"]):  # type: ignore[arg-type]
                            best[name] = r
                a, b = best[args.rev], best["this tree"]
                keys = ("verdict", "property", "states", "transitions", "depth", "moves")
                same = all(a[k] == b[k] for k in keys)
                ok &= same
                rate = {n: int(r["states"]) / float(r["cpu"]) for n, r in best.items()}  # type: ignore[call-overload,arg-type]
                kind = {n: "compiled" if r["compiled"] else "pure Python" for n, r in best.items()}
                print(
                    f"{design} on {world}{' (fingerprint)' if args.fingerprint else ''}: {a['verdict']}, "
                    f"{a['states']} states, {a['transitions']} transitions"
                    + ("" if same else f"  RESULTS DIFFER: {args.rev} {a} / this tree {b}")
                )
                for n in sides:
                    print(f"  {n:<12} {kind[n]:<11} {float(best[n]['cpu']):7.2f} s cpu  {rate[n]:>9,.0f} states/s")  # type: ignore[arg-type]
                print(f"  ratio (this tree / {args.rev}): {rate['this tree'] / rate[args.rev]:.2f}x", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
