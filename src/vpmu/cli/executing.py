"""The ``--executor`` (and ``--partitions``) options the campaign commands share (vpmu.check.executor)."""

from __future__ import annotations

import argparse
from typing import Any

from vpmu.cli.common import Once, non_negative_int
from vpmu.errors import VpmuError

EXECUTOR_HELP = (
    "where the runs execute: local (default: --jobs processes on this machine), ray (a Ray started on this "
    "machine), ray://HOST:PORT or HOST:PORT (an existing Ray cluster); Ray is an optional extra: pip install "
    "'vpmu[ray]'"
)


def add_executor_args(
    p: argparse.ArgumentParser,
    jobs: bool = True,
    partitions: bool = False,
    jobs_help: str = "worker processes (default: one per core)",
) -> None:
    p.add_argument("--executor", action=Once, metavar="WHERE", help=EXECUTOR_HELP)
    if jobs:
        p.add_argument("--jobs", type=non_negative_int, default=0, metavar="N", help=jobs_help)
    if partitions:
        p.add_argument(
            "--partitions",
            type=int,
            default=0,
            metavar="N",
            help="split each world's search by state hash over N partitions (Ray actors with --executor ray; "
            "in this process otherwise); the same result as one search (docs/scaling.md)",
        )


def executor_from_args(args: argparse.Namespace) -> Any:
    """The executor the arguments name; None for the default (the command's own local path)."""
    from vpmu.check.executor import make_executor

    jobs = getattr(args, "jobs", 0) or 0
    if jobs < 0:
        raise VpmuError(f"--jobs = {jobs} is not allowed; allowed: an integer >= 1 (0: one per core)")
    parts = getattr(args, "partitions", 0) or 0
    if not 0 <= parts <= 65535:  # a state records its parent's owner in 16 bits
        raise VpmuError(f"--partitions = {parts} is not allowed; allowed: an integer from 1 to 65535")
    if args.executor is None:
        return None
    return make_executor(args.executor, jobs)
