"""Whether to colour the output: ``--color``, NO_COLOR (no-color.org), FORCE_COLOR, the terminal.

A module of its own, with no imports from the model, so the CLI sets the mode before any command
module is loaded.
"""

from __future__ import annotations

import os
from typing import TextIO

#: ``--color``: "always", "never", or "auto" (the default: the environment and the terminal decide).
CHOICES = ("auto", "always", "never")
mode = "auto"


def use_color(stream: TextIO) -> bool:
    """Whether to colour ``stream``: ``--color always|never`` first; then a non-empty NO_COLOR turns
    colour off (no-color.org: an empty value does not); then a non-empty FORCE_COLOR other than 0
    turns it on; otherwise colour only on a terminal."""
    if mode != "auto":
        return mode == "always"
    if os.environ.get("NO_COLOR", ""):
        return False
    if os.environ.get("FORCE_COLOR", "") not in ("", "0"):
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
