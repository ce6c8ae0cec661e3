"""Per-recipient substitutions in a message's subject, text and html: a bounded Jinja2 sandbox
(pure; the MTA has its own, it never imports the automation core's templates).

Bounded by construction, since templates come from API clients:

- Jinja2's ``SandboxedEnvironment`` (no attribute access to internals, no unsafe calls);
- only output and ``{% if %}``, and no calls (filters only): no loops, macros,
  assignments, includes or blocks, so the work is linear in the template's size;
- a short list of filters that cannot amplify (no ``center(10**9)``, ``wordwrap``,
  ``replace``, ``batch``...), no globals (``range``, ``lipsum``...);
- ``*``, ``**`` and ``%`` checked: no string or list repeated past :data:`MAX_OUTPUT`
  characters, no exponent past 64, no ``%`` formatting of strings;
- each rendered part at most :data:`MAX_OUTPUT` characters.

A variable the recipient's substitutions do not define is an error for that recipient when
it is output (unless the template gives a ``default``), and false in ``{% if %}``. In
``html`` substituted values are HTML-escaped.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

MAX_OUTPUT = 1_000_000  # characters per rendered part
MAX_EXPONENT = 64
FILTERS = ("abs", "capitalize", "d", "default", "e", "escape", "first", "float", "int",
           "join", "last", "length", "lower", "round", "string", "title", "trim", "truncate",
           "upper", "urlencode")
_ALLOWED_STATEMENTS = (nodes.Output, nodes.If)


class SubstitutionError(ValueError):
    """A template that cannot be used, or a recipient it cannot be rendered for."""


class _MissingValue(StrictUndefined):
    """A substitution the recipient lacks: an error when output, false in ``{% if %}``."""

    def __bool__(self) -> bool:  # type: ignore[override]
        return False


class _BoundedEnvironment(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "%":
            if isinstance(left, str):  # "%*d" % (10**9, 1) would be a gigabyte
                raise SecurityError("string formatting with % is not allowed")
            return operator.mod(left, right)
        if operator_name == "**":
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"exponents are limited to {MAX_EXPONENT}")
            return operator.pow(left, right)
        for sequence, count in ((left, right), (right, left)):
            if isinstance(sequence, str | list | tuple) and isinstance(count, int) \
                    and len(sequence) * count > MAX_OUTPUT:
                raise SecurityError("repetition past the output limit")
        return operator.mul(left, right)

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """No method calls (``"x".center(10**9)``, ``.format``...): filters only."""
        raise SecurityError("calls are not allowed; use the filters")


def _environment(autoescape: bool) -> _BoundedEnvironment:
    environment = _BoundedEnvironment(autoescape=autoescape, undefined=_MissingValue,
                                      keep_trailing_newline=True)
    environment.filters = {name: environment.filters[name] for name in FILTERS}
    environment.globals = {}
    environment.tests = {name: environment.tests[name] for name in
                         ("defined", "undefined", "none", "number", "string", "eq", "ne")}
    return environment


_PLAIN = _environment(False)
_HTML = _environment(True)


@dataclass(frozen=True)
class Template:
    """One part's compiled template (or its literal text when it has no markup)."""

    source: str
    compiled: Any | None  # jinja2.Template

    def render(self, values: dict[str, Any]) -> str:
        if self.compiled is None:
            return self.source
        try:
            pieces: list[str] = []
            size = 0
            for piece in self.compiled.generate(values):
                size += len(piece)
                if size > MAX_OUTPUT:
                    raise SubstitutionError(f"renders past {MAX_OUTPUT} characters")
                pieces.append(piece)
        except SubstitutionError:
            raise
        except SecurityError as exc:
            raise SubstitutionError(f"not allowed: {exc}") from None
        except TemplateError as exc:
            raise SubstitutionError(str(exc)) from None
        except (ArithmeticError, TypeError, ValueError) as exc:  # e.g. 1/0, "a" - 1
            raise SubstitutionError(f"{type(exc).__name__}: {exc}") from None
        return "".join(pieces)


def compile_part(source: str, html: bool = False) -> Template:
    """Compile ``source`` (SubstitutionError naming what is not allowed)."""
    if "{" not in source:
        return Template(source, None)
    environment = _HTML if html else _PLAIN
    try:
        tree = environment.parse(source)
    except TemplateError as exc:
        raise SubstitutionError(f"template syntax: {exc}") from None
    for statement in tree.find_all(nodes.Stmt):
        if not isinstance(statement, _ALLOWED_STATEMENTS):
            raise SubstitutionError(f"only {{{{ ... }}}} and {{% if %}} are allowed, not "
                                    f"{type(statement).__name__.lower()}")
    for used in tree.find_all(nodes.Filter):
        if used.name not in environment.filters:
            raise SubstitutionError(f"unknown or disallowed filter {used.name!r} (allowed: "
                                    f"{', '.join(FILTERS)})")
    try:
        return Template(source, environment.from_string(tree))
    except TemplateError as exc:
        raise SubstitutionError(f"template: {exc}") from None
