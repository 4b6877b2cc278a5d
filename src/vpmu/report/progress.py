"""Progress on stderr for the long commands (check, conform, ablate, scenarios).

Hand-written rather than ``rich``: vpmu has no runtime dependency (the README's
two commands install nothing else), and what is needed is one line — what runs,
states, states/s, elapsed — rewritten in place on a terminal and printed as
plain lines (every few seconds) in a CI log. That is smaller than a dependency.

``--progress`` turns it on anywhere, at once; ``--no-progress`` turns it off; by
default it is on only when stderr is a terminal, and only once a run has taken
:data:`DELAY` seconds, so quick commands print nothing extra.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

#: Seconds a run takes before the default (terminal) progress shows.
DELAY = 2.0
#: Seconds between two progress lines: rewritten in place on a terminal, appended in a log.
EVERY_TTY, EVERY_LOG = 0.5, 5.0


class Progress:
    """One progress display; ``mode`` True (--progress), False (--no-progress) or None (default)."""

    def __init__(self, mode: bool | None, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        try:
            self.tty = self.stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self.on = mode if mode is not None else self.tty
        self.delay = 0.0 if mode else DELAY
        self.every = EVERY_TTY if self.tty else EVERY_LOG
        self.start = time.perf_counter()
        self.last = -1e9
        self.width = 0  # of the line last written in place

    def _write(self, text: str, final: bool) -> None:
        if self.tty and not final:
            pad = " " * max(0, self.width - len(text))
            self.stream.write(f"\r{text}{pad}")
            self.width = len(text)
        else:
            self.clear()
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Erase the line written in place (before other output)."""
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0

    def states(self, what: str) -> Callable[[Any, int], None] | None:
        """A callback for :func:`vpmu.check.explore.check`: ``what`` (the world) with states, rate, time."""
        if not self.on:
            return None
        begun = time.perf_counter()

        def show(stats: Any, queue: int) -> None:
            now = time.perf_counter()
            if now - begun < self.delay or now - self.last < self.every:
                return
            self.last = now
            self._write(
                f"vpmu: {what}: {stats.states} states, {queue} queued, depth {stats.depth}, "
                f"{stats.rate:.0f} states/s, {stats.seconds:.1f} s",
                final=False,
            )

        return show

    def done(self, text: str) -> None:
        """A finished item (a mutant, a case, a scenario), once the command has run for the delay."""
        if self.on and time.perf_counter() - self.start >= self.delay:
            self._write(f"vpmu: {text} ({time.perf_counter() - self.start:.1f} s)", final=True)


def add_progress_args(p: Any) -> None:
    """``--progress`` / ``--no-progress`` on a command (argparse parser)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="report progress on stderr (states, states/s, elapsed), also when it is not a terminal "
        "(default: on a terminal, after 2 s)",
    )
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress reports")
