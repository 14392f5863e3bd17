"""``{{ ... }}`` in job arguments: Jinja2 in an immutable sandbox, rendered on the node.

Imported only when a field holds more than plain ``${NAME}``/``{{ NAME }}`` placeholders,
so a job without templates never loads Jinja.

The sandbox (``ImmutableSandboxedEnvironment``) refuses underscore attributes, Python
internals and mutation of values; undefined names are errors (``StrictUndefined``);
``*``, ``**``, ``%``/``format`` widths and the filters that take a size are bounded and
the output is capped while it is made, so a template cannot allocate without limit; and a
rendering that runs longer than ``RENDER_SECONDS`` is stopped (a trace function on the
template's own code), so a loop in a template cannot hold the agent.

Values that came from a node (``node``, and the structured ``scope`` such as ``query``)
are data.  They are context values, so Jinja never renders them as templates.  A template
that reads any of them is a *node template*: each ``{{ }}`` output is kept apart from
the literal text while rendering (a marker stands in its place), then inserted, shell
-quoted for where it lands when the field is read by ``/bin/sh``.  Statements that capture
output into a value (``{% filter %}``, ``{% macro %}``, ``{% call %}``, block ``{% set %}``,
recursive loops) could carry a node value past that step, so node templates refuse them.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from director.errors import DSLError

__all__ = ["MAX_OUTPUT", "render", "render_text", "template_names"]

MAX_OUTPUT = 1024 * 1024        # characters one rendered field or file may have
RENDER_SECONDS = 5.0            # longest a rendering may run
_MAX_REPEAT = 1024 * 1024       # longest str/list a ``*`` may build
_MAX_POWER = 1024               # largest exponent ``**`` may use
_MAX_BITS = 1 << 16             # largest integer (in bits) ``**`` may build
_MAX_WIDTH = 10_000             # largest width/precision in a format, or size for a filter
_PERCENT_RE = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|[0-9]+)?(?:\.(\*|[0-9]+))?")
_SIZED_FILTERS = ("center", "indent", "wordwrap", "truncate", "format")
_MARK_RE = re.compile("\x00([0-9]+)\x00")
_DOLLAR_RE = re.compile(r"\$\{(?P<a>[A-Za-z_][A-Za-z0-9_]*)\}")
# Statements a node template may use: none of them captures output into a value.
_NODE_STATEMENTS = (nodes.Output, nodes.For, nodes.If, nodes.Assign, nodes.With)


def _check_widths(numbers: Any) -> None:
    for n in numbers:
        if n == "*" or (n and int(n) > _MAX_WIDTH):
            raise TemplateError(f"a format width or precision over {_MAX_WIDTH} (or *)")


def _check_percent(fmt: str) -> None:
    for match in _PERCENT_RE.finditer(fmt):
        _check_widths(match.groups())


def _check_braces(fmt: str) -> None:
    import string

    try:
        specs = [spec for _, _, spec, _ in string.Formatter().parse(fmt) if spec]
    except ValueError:
        return  # str.format raises the same error itself
    for spec in specs:
        _check_widths(re.findall(r"[0-9]+|\{", spec.replace("{", "*")))


def _sized(name: str, original: Any) -> Any:
    def bounded(*args: Any, **kwargs: Any) -> Any:
        values = [*args[1:], *kwargs.values()]
        if any(isinstance(v, int) and not isinstance(v, bool) and abs(v) > _MAX_WIDTH
               for v in values):
            raise TemplateError(f"a size over {_MAX_WIDTH} for the {name} filter")
        if name == "format" and args and isinstance(args[0], str):
            _check_percent(args[0])
        return original(*args, **kwargs)
    for attr in ("jinja_pass_arg",):
        if hasattr(original, attr):
            setattr(bounded, attr, getattr(original, attr))
    return bounded


class _Env(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**", "%"])

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in _SIZED_FILTERS:
            self.filters[name] = _sized(name, self.filters[name])

    def wrap_str_format(self, value: Any) -> Any:
        fmt = getattr(value, "__self__", None)
        if isinstance(fmt, str) and getattr(value, "__name__", "") in ("format", "format_map"):
            _check_braces(fmt)
        return super().wrap_str_format(value)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "%":
            if isinstance(left, str):
                _check_percent(left)
            return left % right
        if operator == "**":
            if isinstance(right, (int, float)) and abs(right) > _MAX_POWER or (
                    isinstance(left, int) and isinstance(right, int)
                    and left.bit_length() * abs(right) > _MAX_BITS):
                raise TemplateError(f"{left!r:.20} ** {right!r:.20} is too large")
            return left ** right
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(times, int) \
                    and len(seq) * times > _MAX_REPEAT:
                raise TemplateError(f"a repetition of {len(seq) * times} items is too large")
        return left * right


_env: _Env | None = None


def _environment() -> _Env:
    global _env
    if _env is None:
        _env = _Env(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False,
                    finalize=_finalize, cache_size=0)
    return _env


# The outputs of the rendering in progress on this thread (COPY workers render too), or
# None: each output is then kept here and a marker stands in the rendered text.
_local = threading.local()


def _finalize(value: Any) -> str:
    text = str(value)
    values = getattr(_local, "values", None)
    if values is None:  # not marking (or a constant folded when the template is compiled)
        return text
    if "\x00" in text:
        raise TemplateError("a template value contains a NUL character")
    values.append(text)
    return f"\x00{len(values) - 1}\x00"


@lru_cache(maxsize=512)
def _parsed(source: str) -> tuple[Any, frozenset[str], str]:
    """(compiled template, names it reads, why it may not read node values or "")."""
    env = _environment()
    try:
        ast = env.parse(source)
        names = frozenset(meta.find_undeclared_variables(ast))
        template = env.from_string(ast)
    except TemplateError as exc:
        raise DSLError(f"template error: {_reason(exc)}") from None
    except RecursionError:
        raise DSLError("template error: nested too deeply") from None
    refused = ""
    for node in ast.find_all(nodes.Stmt):
        if not isinstance(node, _NODE_STATEMENTS) or (isinstance(node, nodes.For)
                                                      and node.recursive):
            refused = type(node).__name__
            break
    return template, names, refused


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc) or type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:200] + "..."


def template_names(source: str) -> frozenset[str]:
    """The top-level names ``source`` reads (a template that does not parse reads none)."""
    try:
        return _parsed(source)[1]
    except DSLError:
        return frozenset()


def render(source: str, args: Mapping[str, Any], node: Mapping[str, Any],
           scope: Mapping[str, Any], *, shell: bool, field: str, quote: Any) -> str:
    """``source`` rendered with the node's values; ``${NAME}`` is replaced in its literal text.

    ``args`` are the operator's values, ``node`` and ``scope`` values from a node; ``quote``
    is ``plan._ShellContext``-like: a factory of lexers whose ``quote`` places a node value.
    """
    template, names, refused = _parsed(source)
    tainted = not names.isdisjoint(node) or not names.isdisjoint(scope)
    if tainted and refused:
        raise DSLError(f"template error: {refused} statements cannot be used in a template that"
                       " reads values from a node; use {{ }}, {% for %}, {% if %}, {% set x = ...%}")
    values: list[str] = []
    rendered = _run(template, {**args, **node, **scope}, values if tainted else None)
    lexer = quote()
    if not tainted:
        # Only operator values went through Jinja; ${NAME} in the result is substituted
        # once (node values quoted for where they land)
        return _dollar(rendered, args, node, lexer if shell else None, field)
    out: list[str] = []
    pieces = _MARK_RE.split(rendered)
    for i, piece in enumerate(pieces):
        if i % 2:
            value = values[int(piece)]
            if shell:
                value = lexer.quote(value, "{{ ... }}", field)
        else:
            value = _dollar(piece, args, node, lexer if shell else None, field)
        out.append(value)
        if shell:
            lexer.feed(value)
    return "".join(out)


def _dollar(text: str, args: Mapping[str, Any], node: Mapping[str, Any], lexer: Any,
            field: str) -> str:
    """``${NAME}`` in literal template text: operator values as written, node values quoted
    (with ``lexer``, the shell's view of everything before ``text``)."""
    if "${" not in text:
        return text
    out: list[str] = []
    pos = 0
    for match in _DOLLAR_RE.finditer(text):
        name = match.group("a")
        if name not in node and name not in args:
            continue
        piece = text[pos:match.start()]
        out.append(piece)
        if lexer is not None:
            lexer.feed(piece)
        if name in node:
            value = str(node[name])
            if lexer is not None:
                value = lexer.quote(value, match.group(0), field)
        else:
            value = str(args[name])
        out.append(value)
        if lexer is not None:
            lexer.feed(value)
        pos = match.end()
    out.append(text[pos:])
    return "".join(out)


def _run(template: Any, context: dict[str, Any], values: list[str] | None = None) -> str:
    _local.values = values
    previous = sys.gettrace()
    sys.settrace(_deadline_tracer(time.monotonic() + RENDER_SECONDS))
    try:
        parts: list[str] = []
        size = 0
        for part in template.generate(context):
            size += len(part)
            if size > MAX_OUTPUT:
                raise DSLError(f"template error: the rendered text is longer than {MAX_OUTPUT} "
                               "characters")
            parts.append(part)
        rendered = "".join(parts)
    except TemplateError as exc:
        raise DSLError(f"template error: {_reason(exc)}") from None
    except RecursionError:
        raise DSLError("template error: nested too deeply") from None
    except (ArithmeticError, TypeError, ValueError, LookupError, AttributeError) as exc:
        raise DSLError(f"template error: {type(exc).__name__}: {_reason(exc)}") from None
    finally:
        sys.settrace(previous)
        _local.values = None
    return rendered


def _deadline_tracer(deadline: float) -> Any:
    """A trace function that follows only the compiled template's frames (not Jinja's or
    ours) and stops the rendering once ``deadline`` has passed."""
    count = 0

    def line(frame: Any, event: str, arg: Any) -> Any:
        nonlocal count
        count += 1
        if not count & 1023 and time.monotonic() > deadline:
            raise TemplateError(f"the template ran longer than {RENDER_SECONDS:g} s")
        return line

    def call(frame: Any, event: str, arg: Any) -> Any:
        return line if frame.f_code.co_filename == "<template>" else None
    return call


def render_text(source: str, values: Mapping[str, Any], what: str) -> str:
    """A whole text (``ADD --blueprint`` file) rendered with ``values``; no shell quoting."""
    try:
        template, _, _ = _parsed(source)
    except DSLError as exc:
        raise DSLError(f"{what}: {exc.message}") from None
    try:
        return _run(template, dict(values))
    except DSLError as exc:
        raise DSLError(f"{what}: {exc.message}") from None

