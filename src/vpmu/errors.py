"""Errors a user can cause, and the faults the modelled hardware raises."""

from __future__ import annotations


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
        super().__init__(f"{loc}{field} = {value!r} is not allowed; {allowed}")


class Fault(Exception):
    """An architectural fault raised by the modelled CPU (e.g. #GP on a bad WRMSR).

    The caller (kernel or guest code in the model) sees it, as software would.
    """

    def __init__(self, vector: str, reason: str) -> None:
        self.vector = vector
        self.reason = reason
        super().__init__(f"{vector}: {reason}")
