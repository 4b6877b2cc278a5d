"""Pickling for the model's frozen dataclasses, compiled or not.

Designs and worlds are sent to worker processes (``vpmu ablate``, ``vpmu conform``).
Unpickling restores a plain object by setting its attributes, which a frozen
dataclass compiled by mypyc (the optional compiled build, setup.py) refuses;
rebuilding it through its constructor works in both builds.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any


class Frozen:
    """Base of a frozen dataclass whose fields are all constructor arguments."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), tuple(getattr(self, f.name) for f in fields(self)))  # type: ignore[arg-type]
