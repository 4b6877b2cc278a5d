"""A kernel tree on disk: is it one, which release, which of its files the anchors need."""

from __future__ import annotations

import re
from pathlib import Path

from vpmu.errors import VpmuError
from vpmu.source.anchors import FUNCTIONS
from vpmu.source.cparse import CFile, parse_file


def kernel_version(root: Path) -> str:
    """``7.0`` or ``7.0.3-rc1`` from the top Makefile."""
    text = (root / "Makefile").read_text(errors="replace")
    fields: dict[str, str] = dict(re.findall(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)\s*=[ \t]*(\S*)", text, re.M))
    version = f"{fields.get('VERSION', '?')}.{fields.get('PATCHLEVEL', '?')}"
    if fields.get("SUBLEVEL", "0") not in ("", "0"):
        version += f".{fields['SUBLEVEL']}"
    return version + fields.get("EXTRAVERSION", "")


def open_tree(kernel: str) -> Path:
    """Check that ``kernel`` is a kernel tree with every file the anchors name."""
    root = Path(kernel)
    if not root.is_dir():
        raise VpmuError(f"--kernel {kernel}: no such directory")
    mk = root / "Makefile"
    if not mk.is_file() or not re.search(r"^PATCHLEVEL\s*=", mk.read_text(errors="replace"), re.M):
        raise VpmuError(f"--kernel {kernel}: not a kernel tree (no top-level Makefile with VERSION and PATCHLEVEL)")
    missing = sorted({f.path for f in FUNCTIONS if not (root / f.path).is_file()})
    if missing:
        raise VpmuError(
            f"--kernel {kernel}: modelled file {missing[0]} is missing"
            + (f" (and {len(missing) - 1} more: {', '.join(missing[1:])})" if len(missing) > 1 else "")
        )
    return root


def read(root: Path, path: str) -> CFile:
    return parse_file(root / path)
