"""Reading user files: UTF-8 text (a BOM accepted), TOML and JSON, with a bound on nesting.

Every failure is a :class:`~vpmu.errors.VpmuError` naming the file and what is wrong (exit
status 2), never a traceback: bytes that are not UTF-8 are named by line, column and byte;
a structure nested deeper than :data:`MAX_DEPTH` is refused before anything walks it
(the parsers and every validator recurse).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from vpmu.errors import VpmuError

#: Nesting depth allowed in a TOML or JSON input: far more than any vpmu document needs
#: (a trace row is 4 levels deep), far less than Python's recursion limit.
MAX_DEPTH = 64
BOM = "\ufeff"


def decode(data: bytes, where: str) -> str:
    """UTF-8 text; a leading BOM is dropped; other bytes are an error naming their place."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise VpmuError(
            f"{where}: not UTF-8 text: byte 0x{data[e.start]:02x} at line {line}, column {col} "
            f"(offset {e.start}); allowed: a UTF-8 file (a byte order mark is accepted)"
        ) from None
    return text.removeprefix(BOM)


def read_text(path: str | Path) -> str:
    """A user's text file, decoded as UTF-8."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except IsADirectoryError:
        raise VpmuError(f"{p}: cannot read: it is a directory") from None
    except OSError as e:
        raise VpmuError(f"{p}: cannot read: {e.strerror or e}") from None
    return decode(data, str(p))


def nesting(value: Any) -> int:
    """How deeply lists and tables nest in ``value`` (a scalar: 0); iterative, so any depth is safe."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        elif not isinstance(v, list):
            continue
        deepest = max(deepest, d + 1)
        if d + 1 > MAX_DEPTH:
            break
        stack.extend((x, d + 1) for x in v)
    return deepest


def _check_depth(value: Any, where: str) -> Any:
    if nesting(value) > MAX_DEPTH:
        raise VpmuError(f"{where}: nested more than {MAX_DEPTH} levels deep; allowed: at most {MAX_DEPTH}")
    return value


def parse_toml(text: str, where: str) -> dict[str, Any]:
    """TOML text as a table; malformed or too deeply nested TOML is a one-line error."""
    text = text.removeprefix(BOM)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise VpmuError(f"{where}: malformed TOML: {e}") from None
    except RecursionError:
        raise VpmuError(f"{where}: nested more than {MAX_DEPTH} levels deep; allowed: at most {MAX_DEPTH}") from None
    return _check_depth(data, where)  # type: ignore[no-any-return]


def parse_json(text: str, where: str) -> Any:
    """JSON text; malformed or too deeply nested JSON is a one-line error."""
    text = text.removeprefix(BOM)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise VpmuError(f"{where} is not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise VpmuError(f"{where}: nested more than {MAX_DEPTH} levels deep; allowed: at most {MAX_DEPTH}") from None
    return _check_depth(data, where)


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file (UTF-8, nesting bounded)."""
    return parse_toml(read_text(path), str(path))


def load_json(path: str | Path) -> Any:
    """Read a JSON file (UTF-8, nesting bounded)."""
    return parse_json(read_text(path), str(path))
