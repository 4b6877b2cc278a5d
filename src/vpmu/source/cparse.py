"""Read C functions out of kernel source files with tree-sitter's C grammar.

A function body is flattened into *statements* in source order, each with
its nesting depth and line. The rules (the anchors table is written in the
same form):

- a simple statement is one statement: ``wrmsrq(MSR, 0);``, ``return;``,
  ``u32 masked = lvtpc & APIC_LVT_MASKED;`` (a declaration without an
  initializer declares nothing the model could run and is skipped);
- an ``if``/``for``/``while`` whose body is one simple statement and has no
  ``else`` is one statement: ``if (pmu->global_status) wrmsrq(...);``;
- otherwise its header (``if (cpuctx->task_ctx)``, ``else``) is a statement
  and the body's statements follow one level deeper;
- a statement-like macro with a block (``scoped_guard (irqsave) { }``,
  ``for_each_set_bit(bit, mask, n) { }``) is a header the same way;
- ``#ifdef`` blocks inside a body are read through (both branches count);
- a label (``done:``) is a statement of its own.

Statements are compared as token sequences: whitespace, line breaks and
comments do not matter. Kernel attributes and macros around functions
(``static __always_inline``, ``noinstr``, ``EXPORT_SYMBOL_FOR_KVM(...)``,
``DEFINE_PER_CPU(...)``) leave tree-sitter's function nodes intact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from vpmu.errors import VpmuError

_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_TOKEN = re.compile(
    r"[A-Za-z_]\w*|0[xX][0-9a-fA-F]+[uUlL]*|\d+[uUlL]*"
    r"|\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'"
    r"|\.\.\.|->|\+\+|--|<<=|>>=|<<|>>|<=|>=|==|!=|&&|\|\||[-+*/%&|^]=|\S"
)
_LOOPS = ("if_statement", "for_statement", "while_statement")
_SKIP = ("comment", "{", "}", "#ifdef", "#ifndef", "#if", "#else", "#elif", "#endif", "preproc_arg")


def tokens(text: str) -> tuple[str, ...]:
    """The C tokens of ``text``, comments dropped."""
    return tuple(_TOKEN.findall(_COMMENT.sub(" ", text)))


def display(text: str) -> str:
    """``text`` on one line, comments dropped."""
    return " ".join(_COMMENT.sub(" ", text).split())


@dataclass(frozen=True)
class CStatement:
    """One flattened statement of a function body."""

    tokens: tuple[str, ...]
    text: str  # one line, as a reader sees it
    line: int  # 1-based line in the file
    depth: int  # 0 for the function's own block
    end: int = 0  # the last line (a header's: the line its body starts on)


@dataclass(frozen=True)
class CFunctionDef:
    """One definition of a function in a file."""

    name: str
    path: str
    line: int
    condition: str  # "" or the #ifdef/#else it is defined under ("#ifdef CONFIG_X", "#else of CONFIG_X")
    statements: tuple[CStatement, ...]


def _parser() -> Any:
    try:
        import tree_sitter_c
        from tree_sitter import Language, Parser
    except ImportError as e:  # pragma: no cover - a core dependency
        raise VpmuError(f"reading C needs tree-sitter and tree-sitter-c ({e}); run: pip install -e .") from None
    return Parser(Language(tree_sitter_c.language()))


_PARSER: Any = None


def _text(src: bytes, node: Any) -> str:
    return src[node.start_byte : node.end_byte].decode("utf-8", "replace")


def _name(node: Any) -> str:
    """The identifier a function_definition's declarator names."""
    d = node.child_by_field_name("declarator")
    while d is not None and d.type != "identifier":
        if d.type == "function_declarator":
            d = d.child_by_field_name("declarator")
        elif d.type in ("pointer_declarator", "parenthesized_declarator", "attributed_declarator"):
            d = d.child_by_field_name("declarator") or (d.named_children[-1] if d.named_children else None)
        else:
            return ""
    return _text_cache(d) if d is not None else ""


def _text_cache(node: Any) -> str:
    t: bytes = node.text
    return t.decode("utf-8", "replace")


class _Flattener:
    def __init__(self, src: bytes) -> None:
        self.src = src
        self.out: list[CStatement] = []

    def emit(self, node: Any, depth: int, until: Any = None) -> None:
        """One statement: ``node``, or its header up to where ``until`` (its body) starts."""
        end = until.start_byte if until is not None else node.end_byte
        text = self.src[node.start_byte : end].decode("utf-8", "replace")
        toks = tokens(text)
        if toks:
            last = (until.start_point if until is not None else node.end_point)[0] + 1
            self.out.append(CStatement(toks, display(text), node.start_point[0] + 1, depth, last))

    def block(self, node: Any, depth: int) -> None:
        for child in node.children:
            self.stmt(child, depth)

    def body(self, node: Any, depth: int) -> None:
        if node.type == "compound_statement":
            self.block(node, depth)
        else:
            self.stmt(node, depth)

    def stmt(self, node: Any, depth: int) -> None:
        t = node.type
        if t in _SKIP or not node.is_named:
            return
        if t == "compound_statement":  # a bare block, or the block of scoped_guard (...) { }
            self.block(node, depth + 1)
        elif t in ("preproc_ifdef", "preproc_if", "preproc_else", "preproc_elif", "preproc_elifdef"):
            for child in node.children:
                if child.type not in ("identifier", "preproc_defined", "binary_expression", "parenthesized_expression"):
                    self.stmt(child, depth)
        elif t.startswith("preproc_"):
            return
        elif t == "declaration":
            if any(c.type == "init_declarator" for c in node.children):
                self.emit(node, depth)
        elif t in _LOOPS:
            body = node.child_by_field_name("consequence" if t == "if_statement" else "body")
            alt = node.child_by_field_name("alternative") if t == "if_statement" else None
            if body is None or (body.type != "compound_statement" and alt is None and body.type not in _LOOPS):
                self.emit(node, depth)
            else:
                self.emit(node, depth, until=body)
                self.body(body, depth + 1)
                if alt is not None:
                    inner = alt.named_children[-1] if alt.named_children else None
                    self.emit(alt, depth, until=inner)
                    if inner is not None:
                        self.body(inner, depth + 1)
        elif t == "labeled_statement":
            label = node.child_by_field_name("label")
            if label is not None:
                self.out.append(CStatement(tokens(f"{_text_cache(label)}:"), f"{_text_cache(label)}:",
                                           node.start_point[0] + 1, depth, node.start_point[0] + 1))
            for child in node.named_children[1:]:
                self.stmt(child, depth)
        elif t == "do_statement":
            body = node.child_by_field_name("body")
            self.emit(node, depth, until=body)
            if body is not None:
                self.body(body, depth + 1)
        else:
            self.emit(node, depth)


def _condition(node: Any, src: bytes) -> str:
    """The innermost #ifdef/#else a definition sits in."""
    p = node.parent
    while p is not None:
        if p.type in ("preproc_ifdef", "preproc_if"):
            name = p.child_by_field_name("name") or p.child_by_field_name("condition")
            what = _text(src, name) if name is not None else "?"
            op = _text(src, p.children[0]).strip()
            return f"{op} {what}"
        if p.type in ("preproc_else", "preproc_elif"):
            outer = p.parent
            name = outer.child_by_field_name("name") or outer.child_by_field_name("condition") if outer else None
            return f"#else of {_text(src, name) if name is not None else '?'}"
        p = p.parent
    return ""


@dataclass(frozen=True)
class CFile:
    path: str
    functions: dict[str, tuple[CFunctionDef, ...]]


@lru_cache(maxsize=64)
def _parse_cached(path: str, mtime: float, size: int) -> CFile:
    global _PARSER
    if _PARSER is None:
        _PARSER = _parser()
    src = Path(path).read_bytes()
    tree = _PARSER.parse(src)
    found: dict[str, list[CFunctionDef]] = {}
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "function_definition":
            name = _name(node)
            body = node.child_by_field_name("body")
            if name and body is not None:
                fl = _Flattener(src)
                fl.block(body, 0)
                d = CFunctionDef(name, path, node.start_point[0] + 1, _condition(node, src), tuple(fl.out))
                found.setdefault(name, []).append(d)
            continue
        stack.extend(reversed(node.children))
    for defs in found.values():
        defs.sort(key=lambda d: d.line)
    return CFile(path, {k: tuple(v) for k, v in found.items()})


def parse_file(path: Path) -> CFile:
    """Every function definition of one C file (cached while the file is unchanged)."""
    try:
        st = path.stat()
    except OSError as e:
        raise VpmuError(f"cannot read {path}: {e.strerror}") from None
    return _parse_cached(str(path), st.st_mtime, st.st_size)
