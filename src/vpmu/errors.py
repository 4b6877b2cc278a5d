"""Errors a user can cause, the faults the modelled hardware raises, and the exit statuses.

Exit statuses of every ``vpmu`` command (README, ``vpmu --help``):

* 0: success; every property holds; every scenario as expected;
* 1: a violation (or a scenario that differs, an observation that mismatches);
* 2: bad input or usage: one line on stderr naming the field, the value and what is allowed;
* 3: incomplete: a state cap, a depth bound or Ctrl-C stopped the work before a verdict;
* 70: an internal error (a bug in vpmu; ``EX_SOFTWARE`` of sysexits.h): one line, the
  traceback only with ``--debug`` or ``VPMU_DEBUG=1``.
"""

from __future__ import annotations

import json
import math

EXIT_OK, EXIT_VIOLATION, EXIT_INPUT, EXIT_INCOMPLETE, EXIT_INTERNAL = 0, 1, 2, 3, 70


class VpmuError(Exception):
    """A mistake in user input (config, design, world, trace file).

    The CLI prints the message on one line and exits with status 2; it never
    shows a traceback for these.
    """


class ConfigError(VpmuError):
    """An invalid configuration value: names the field, the value and what is allowed."""

    def __init__(self, field: str, value: object, allowed: str, where: str = "") -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        loc = f"{where}: " if where else ""
        if value is None:
            super().__init__(f"{loc}{field} is missing; {allowed}")
        else:
            super().__init__(f"{loc}{field} = {show_value(value)} is not allowed; {allowed}")


class Fault(Exception):
    """An architectural fault raised by the modelled CPU (e.g. #GP on a bad WRMSR).

    The caller (kernel or guest code in the model) sees it, as software would.
    """

    def __init__(self, vector: str, reason: str) -> None:
        self.vector = vector
        self.reason = reason
        super().__init__(f"{vector}: {reason}")


def show_value(value: object, limit: int = 60, depth: int = 3) -> str:
    """A value as a user wrote it in TOML or JSON (``true``, ``"NMI"``, ``[1, 2]``), shortened.

    Never recurses deeper than ``depth`` (a hostile, deeply nested value is shown as ``[…]``),
    so an error message cannot itself fail."""
    text = _show(value, depth)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _show(v: object, depth: int) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v) if abs(v) < 10**30 else f"{'-' if v < 0 else ''}(an integer of {v.bit_length()} bits)"
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return json.dumps(v[:80] + ("…" if len(v) > 80 else ""), ensure_ascii=False)
    if isinstance(v, list | tuple):
        if depth <= 0:
            return "[…]" if v else "[]"
        items = [_show(x, depth - 1) for x in list(v)[:8]]
        return "[" + ", ".join(items) + (", …" if len(v) > 8 else "") + "]"
    if isinstance(v, dict):
        if depth <= 0:
            return "{…}" if v else "{}"
        pairs = [f"{_show(str(k), 0)}: {_show(x, depth - 1)}" for k, x in list(v.items())[:8]]
        return "{" + ", ".join(pairs) + (", …" if len(v) > 8 else "") + "}"
    return f"<{type(v).__name__}>"
