"""The subset of Go ``text/template`` that Fulcio's ``ci-provider`` templates use.

Fulcio renders ``CIIssuerMetadata`` values with ``text/template`` and ``missingkey=error`` over a
flat map of strings (defaults overlaid by the token's claims, fulcio.md §3.1). The public templates
use field access (``{{ .url }}``), ``index`` for claim names that are not identifiers
(``{{ index . "oidc.circleci.com/project-id" }}``), parentheses, and ``if``/``else``/``end`` with
``eq``. This module supports exactly that, plus ``ne``, ``not``, ``and``, ``or``, raw-string
literals and the ``{{-``/``-}}`` trim markers. Anything else is refused when the configuration is
loaded, so a template either renders like Go's or the CA does not start.

Behaviour kept from Go: ``.missing`` is an error (missingkey=error); ``index . "missing"`` yields
the empty string (the zero value of a Go string map); ``eq`` with several arguments is true if the
first equals any of the others; a string is true in ``if`` when it is non-empty.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Template", "TemplateError", "parse_template"]


class TemplateError(ValueError):
    """A template does not parse, or cannot be rendered with the given data."""


# --- AST -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Text:
    text: str


@dataclass(frozen=True, slots=True)
class _Dot:
    """``.`` itself: the data map."""


@dataclass(frozen=True, slots=True)
class _Field:
    name: str


@dataclass(frozen=True, slots=True)
class _Literal:
    value: str


@dataclass(frozen=True, slots=True)
class _Call:
    func: str
    args: tuple[_Expr, ...]


_Expr = _Dot | _Field | _Literal | _Call


@dataclass(frozen=True, slots=True)
class _Output:
    expr: _Expr


@dataclass(frozen=True, slots=True)
class _If:
    cond: _Expr
    then: tuple[_Node, ...]
    otherwise: tuple[_Node, ...]


_Node = _Text | _Output | _If

_FUNCS = frozenset({"eq", "ne", "index", "not", "and", "or"})

# --- lexing ----------------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lparen>\() | (?P<rparen>\)) |
        (?P<string>"(?:[^"\\]|\\.)*") | (?P<raw>`[^`]*`) |
        (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+) | (?P<dot>\.) |
        (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'"}


def _unquote(literal: str) -> str:
    out: list[str] = []
    it = iter(literal[1:-1])
    for ch in it:
        if ch != "\\":
            out.append(ch)
            continue
        esc = next(it, "")
        if esc not in _ESCAPES:
            raise TemplateError(f"unsupported escape \\{esc} in string literal {literal}")
        out.append(_ESCAPES[esc])
    return "".join(out)


def _tokens(action: str) -> list[tuple[str, str]]:
    pos, out = 0, []
    stripped = action.rstrip()
    while pos < len(stripped):
        m = _TOKEN.match(stripped, pos)
        if m is None or m.end() == pos:
            raise TemplateError(f"unsupported template syntax near {stripped[pos:]!r}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


# --- parsing ---------------------------------------------------------------------------------


class _ExprParser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self._toks = tokens
        self._i = 0

    def _peek(self) -> tuple[str, str] | None:
        return self._toks[self._i] if self._i < len(self._toks) else None

    def pipeline(self, *, until_paren: bool = False) -> _Expr:
        """A command: a single operand, or a function name followed by its operands."""
        first = self._peek()
        if first is None:
            raise TemplateError("empty command")
        if first[0] == "ident":
            self._i += 1
            name = first[1]
            if name not in _FUNCS:
                raise TemplateError(f"unsupported function {name!r}")
            args: list[_Expr] = []
            while (tok := self._peek()) is not None and tok[0] != "rparen":
                args.append(self._operand())
            if until_paren and tok is None:
                raise TemplateError("unclosed parenthesis")
            return _check_arity(_Call(name, tuple(args)))
        operand = self._operand()
        if (tok := self._peek()) is not None and tok[0] != "rparen":
            raise TemplateError(f"unexpected {tok[1]!r} after operand")
        return operand

    def _operand(self) -> _Expr:
        tok = self._peek()
        if tok is None:
            raise TemplateError("missing operand")
        self._i += 1
        kind, text = tok
        if kind == "dot":
            return _Dot()
        if kind == "field":
            parts = text.split(".")[1:]
            if len(parts) != 1:
                # The data is a flat map of strings: ``.a.b`` can never resolve.
                raise TemplateError(f"nested field access {text} is not supported")
            return _Field(parts[0])
        if kind == "string":
            return _Literal(_unquote(text))
        if kind == "raw":
            return _Literal(text[1:-1])
        if kind == "lparen":
            inner = self.pipeline(until_paren=True)
            close = self._peek()
            if close is None or close[0] != "rparen":
                raise TemplateError("unclosed parenthesis")
            self._i += 1
            return inner
        if kind == "ident":
            raise TemplateError(f"function {text!r} used as an operand needs parentheses")
        raise TemplateError(f"unexpected {text!r}")

    def done(self) -> bool:
        return self._i == len(self._toks)


def _check_arity(call: _Call) -> _Call:
    n = len(call.args)
    ok = {
        "eq": n >= 2,
        "ne": n == 2,
        "index": n == 2,
        "not": n == 1,
        "and": n >= 1,
        "or": n >= 1,
    }[call.func]
    if not ok:
        raise TemplateError(f"wrong number of arguments for {call.func}: {n}")
    return call


def _parse_expr(action: str) -> _Expr:
    parser = _ExprParser(_tokens(action))
    expr = parser.pipeline()
    if not parser.done():
        raise TemplateError(f"unexpected trailing tokens in {{{{{action}}}}}")
    return expr


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template. ``source`` is kept for error messages and configuration echoing."""

    source: str
    _nodes: tuple[_Node, ...]

    def render(self, data: Mapping[str, str]) -> str:
        """Render over ``data``; raises ``TemplateError`` when a referenced field is missing."""
        out: list[str] = []
        _render(self._nodes, data, out)
        return "".join(out)


def parse_template(source: str) -> Template:
    """Parse ``source``, raising ``TemplateError`` for anything outside the supported subset."""
    # Each frame: (nodes collected so far, the pending ``if`` condition, its then-branch or None).
    stack: list[tuple[list[_Node], _Expr | None, list[_Node] | None]] = [([], None, None)]
    pos = 0
    pending_trim = False
    for m in _ACTION.finditer(source):
        text = source[pos : m.start()]
        if pending_trim:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        if text:
            stack[-1][0].append(_Text(text))
        pending_trim = bool(m.group(3))
        pos = m.end()
        body = m.group(2).strip()
        if body.startswith("/*"):
            raise TemplateError("template comments are not supported")
        head, rest = [*body.split(None, 1), ""][:2]
        if head == "if":
            stack.append(([], _parse_expr(rest), None))
        elif head == "else":
            if rest.strip():
                raise TemplateError("'else if' is not supported")
            nodes, cond, then = stack[-1]
            if cond is None or then is not None:
                raise TemplateError("'else' outside of 'if'")
            stack[-1] = ([], cond, nodes)
        elif head == "end":
            if rest.strip() or len(stack) == 1:
                raise TemplateError("unexpected 'end'")
            nodes, cond, then = stack.pop()
            assert cond is not None
            if then is None:
                node = _If(cond, tuple(nodes), ())
            else:
                node = _If(cond, tuple(then), tuple(nodes))
            stack[-1][0].append(node)
        elif head in {"range", "with", "define", "template", "block", "break", "continue"}:
            raise TemplateError(f"'{head}' is not supported")
        else:
            if ":=" in body or "|" in body or "$" in body:
                raise TemplateError(f"variables and pipes are not supported: {{{{{body}}}}}")
            stack[-1][0].append(_Output(_parse_expr(body)))
    if len(stack) != 1:
        raise TemplateError("unclosed 'if'")
    tail = source[pos:]
    if pending_trim:
        tail = tail.lstrip()
    if "{{" in tail:
        raise TemplateError("unclosed action")
    if tail:
        stack[0][0].append(_Text(tail))
    return Template(source, tuple(stack[0][0]))


# --- evaluation ------------------------------------------------------------------------------

_Value = str | Mapping[str, str]


def _eval(expr: _Expr, data: Mapping[str, str]) -> _Value:
    if isinstance(expr, _Dot):
        return data
    if isinstance(expr, _Literal):
        return expr.value
    if isinstance(expr, _Field):
        if expr.name not in data:
            raise TemplateError(f'map has no entry for key "{expr.name}"')
        return data[expr.name]
    args = [_eval(a, data) for a in expr.args]
    if expr.func == "index":
        container, key = args
        if not isinstance(container, Mapping) or not isinstance(key, str):
            raise TemplateError("index needs a map and a string key")
        return container.get(key, "")
    if expr.func in {"eq", "ne"}:
        if not all(isinstance(a, str) for a in args):
            raise TemplateError(f"{expr.func} compares strings only")
        equal = any(args[0] == other for other in args[1:])
        return _bool(equal if expr.func == "eq" else not equal)
    if expr.func == "not":
        return _bool(not _truthy(args[0]))
    if expr.func == "and":
        result = args[0]
        for a in args:
            result = a
            if not _truthy(a):
                break
        return result
    # "or"
    result = args[0]
    for a in args:
        result = a
        if _truthy(a):
            break
    return result


# Booleans only exist transiently inside conditions; a sentinel string keeps the value type simple.
_TRUE, _FALSE = "\x00true", "\x00false"


def _bool(value: bool) -> str:
    return _TRUE if value else _FALSE


def _truthy(value: _Value) -> bool:
    return value != _FALSE and len(value) > 0


def _render(nodes: tuple[_Node, ...], data: Mapping[str, str], out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, _Text):
            out.append(node.text)
        elif isinstance(node, _Output):
            value = _eval(node.expr, data)
            if isinstance(value, Mapping):
                raise TemplateError("cannot print the whole data map")
            out.append({_TRUE: "true", _FALSE: "false"}.get(value, value))
        else:
            branch = node.then if _truthy(_eval(node.cond, data)) else node.otherwise
            _render(branch, data, out)
