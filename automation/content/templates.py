"""Message templates: Jinja2 in a sandbox, compiled at load time, rendered without I/O.

Layout under the templates directory (default ``config/templates/``)::

    welcome-1/subject.txt   required: one line (a trailing newline in the file is dropped)
    welcome-1/body.txt      required: the plain-text part
    welcome-1/body.html     optional: the HTML part (autoescaped)
    _layouts/base.html      directories starting with '_' hold layouts and partials for
    _layouts/base.txt       {% extends %} / {% include %}; they are not messages

A message template's name is its directory name. Only ``.html`` files are autoescaped.

Undefined values (chosen so that a typo never silently mails a blank): printing, iterating,
comparing or doing arithmetic with an undefined name is a render error; ``{{ x | default("y") }}``
(which also replaces ``null``), ``{% if x %}`` (false) and ``x is defined`` work; attribute access
on an undefined value stays undefined (``event.cart.url | default(...)`` is fine). Attribute
access on a mapping reads its keys only (``event.items`` is the cart's items, not ``dict.items``).

Sandbox: :class:`jinja2.sandbox.ImmutableSandboxedEnvironment` (no underscore attributes, no
mutation of data), ``range`` capped by Jinja, ``*`` and ``**`` bounded here, every rendered part
at most :data:`MAX_OUTPUT_CHARS`. Context: see :func:`message_context`. Extra filters, in the
contact's ``locale`` attribute (default ``en_US``; ``locale=`` overrides), from
:mod:`automation.content.formats`: ``money`` (``{{ 19.9 | money("EUR") }}`` -> ``€19.90``,
``19,90 €`` for ``de_DE``) and ``datetime`` (an RFC 3339 string or date; ``long`` by default,
a CLDR pattern, or a ``strftime`` format).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from automation.content.formats import contact_locale, datetime_format, money
from automation.content.link_policy import DroppedLink, screen_links
from automation.errors import DefinitionError, RenderError
from engine.mailboxes import HeaderError, check_header_value

PARTS = {"subject": "subject.txt", "text": "body.txt", "html": "body.html"}
MAX_FILE_BYTES = 256 * 1024
MAX_FILES = 2000
MAX_OUTPUT_CHARS = 1_000_000
MAX_REPEAT = 10_000
RESERVED_NAMES = frozenset({"contact", "event", "event_type", "recommendations",
                            "unsubscribe_url", "links", "workflow", "step"})


class StrictChainableUndefined(jinja2.ChainableUndefined, jinja2.StrictUndefined):
    """Undefined that fails when output, iterated or compared, is falsy in ``if`` tests, and
    chains through attribute access (so ``a.b.c | default(...)`` works)."""

    __slots__ = ()

    def __bool__(self) -> bool:  # type: ignore[override]
        return False


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    if isinstance(value, jinja2.Undefined) or value is None or (boolean and not value):
        return default_value
    return value


@jinja2.pass_context
def _money_filter(context: Context, value: Any, currency: Any = "USD",
                  locale: str | None = None) -> str:
    return money(value, currency, locale or _locale_of(context))


@jinja2.pass_context
def _datetime_filter(context: Context, value: Any, format: str = "long",
                     locale: str | None = None) -> str:
    return datetime_format(value, format, locale or _locale_of(context))


def _locale_of(context: Context) -> str | None:
    contact = context.get("contact")
    locale = contact.get("locale") if isinstance(contact, Mapping) else None
    return locale if isinstance(locale, str) else None


_MISSING = object()


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict:  # data, not dict methods: event.items is the items list
            value = obj.get(attribute, _MISSING)  # (a missing key costs no exception)
            return self.undefined(obj=obj, name=attribute) if value is _MISSING else value
        if isinstance(obj, Mapping):  # the type test first: the ABC check is slow
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > 100:
            raise SecurityError("exponent too large")
        if operator == "*":
            for sized, count in ((left, right), (right, left)):
                if isinstance(sized, str | list | tuple) and isinstance(count, int) \
                        and count * max(len(sized), 1) > MAX_REPEAT:
                    raise SecurityError("repetition too large")
        return super().call_binop(context, operator, left, right)


def _environment(sources: Mapping[str, str]) -> _Environment:
    env = _Environment(
        loader=jinja2.DictLoader(dict(sources)),
        undefined=StrictChainableUndefined,
        # asked once per template per render: the answers are remembered (one per file)
        autoescape=functools.lru_cache(maxsize=MAX_FILES + 1)(jinja2.select_autoescape(
            enabled_extensions=("html",), default_for_string=False, default=False)),
        cache_size=-1,  # every template stays compiled; their number is bounded by MAX_FILES
        auto_reload=False,
    )
    env.filters["default"] = _default
    env.filters["d"] = _default
    env.filters["money"] = _money_filter
    env.filters["datetime"] = _datetime_filter
    return env


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    subject: str
    html: str | None
    text: str


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SecurityError):
        return f"sandbox: {exc}"
    if isinstance(exc, jinja2.UndefinedError):
        return f"undefined: {exc}"
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True, slots=True, eq=False)
class JsonTemplate:
    """A JSON value whose string leaves are templates (for webhook bodies)."""

    source: Any
    compiled: Any = field(repr=False)

    def render(self, context: Mapping[str, Any]) -> Any:
        try:
            return _render_json(self.compiled, context)
        except Exception as exc:  # the Jinja boundary: any failure inside a template
            raise RenderError("webhook body", _reason(exc)) from None


def _render_json(node: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(node, jinja2.Template):
        return node.render(context)
    if isinstance(node, list):
        return [_render_json(item, context) for item in node]
    if isinstance(node, dict):
        return {key: _render_json(value, context) for key, value in node.items()}
    return node


class TemplateSet:
    """Every template of a directory, compiled. Build it with :meth:`load` or
    :meth:`from_sources`; both raise :class:`DefinitionError` listing every problem as
    ``FILE:LINE: message``."""

    def __init__(self, env: _Environment, messages: Mapping[str, Mapping[str, jinja2.Template]],
                 sources: Mapping[str, str] | None = None) -> None:
        self._env = env
        self._messages = dict(messages)
        # Jinja's globals (range, dict, ...): no template has globals of its own, so one copy
        # under each message's context serves every part.
        self._globals = dict(env.globals)
        # The texts it was compiled from (compiled templates cannot cross to a worker process).
        self.sources: dict[str, str] = dict(sources or {})

    @property
    def environment(self) -> jinja2.Environment:
        """The environment the templates were compiled in (its filters and tests), for
        analysing their sources."""
        return self._env

    @classmethod
    def load(cls, directory: Path) -> TemplateSet:
        if not directory.is_dir():
            raise DefinitionError(f"{directory}: templates directory not found")
        sources: dict[str, str] = {}
        problems: list[str] = []
        files = sorted(p for p in directory.rglob("*") if p.is_file()
                       and p.suffix in (".txt", ".html") and not p.name.startswith("."))
        if len(files) > MAX_FILES:
            raise DefinitionError(f"{directory}: more than {MAX_FILES} template files")
        for path in files:
            name = path.relative_to(directory).as_posix()
            try:
                data = path.read_bytes()
                if len(data) > MAX_FILE_BYTES:
                    problems.append(f"{path}: larger than {MAX_FILE_BYTES} bytes")
                    continue
                sources[name] = data.decode("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{path}: cannot read: {exc}")
        try:
            result = cls.from_sources(sources, origin=str(directory))
        except DefinitionError as exc:
            problems.extend(exc.problems)
            raise DefinitionError(problems) from None
        if problems:
            raise DefinitionError(problems)
        return result

    @classmethod
    def from_sources(cls, sources: Mapping[str, str], origin: str = "templates") -> TemplateSet:
        """``sources`` maps relative file names (``welcome-1/subject.txt``) to their text."""
        env = _environment(sources)
        problems: list[str] = []
        compiled: dict[str, jinja2.Template] = {}
        for name, source in sorted(sources.items()):
            try:
                compiled[name] = template = env.get_template(name)
                # Jinja gives each template a ChainMap over the environment's globals, which
                # every include and import walks in Python (set(globals)); no template has
                # globals of its own and the environment's never change after loading, so a
                # plain dict with the same items serves.
                template.globals = dict(template.globals)
                references = meta.find_referenced_templates(env.parse(source))
            except jinja2.TemplateSyntaxError as exc:
                problems.append(f"{origin}/{name}:{exc.lineno}: {exc.message}")
                continue
            for reference in references:
                if reference is not None and reference not in sources:
                    problems.append(f"{origin}/{name}: refers to missing template {reference!r}")
        messages: dict[str, dict[str, jinja2.Template]] = {}
        for directory in sorted({name.split("/")[0] for name in sources if "/" in name}):
            if directory.startswith(("_", ".")):
                continue
            missing = [PARTS[p] for p in ("subject", "text")
                       if f"{directory}/{PARTS[p]}" not in sources]
            if missing:
                problems.append(f"{origin}/{directory}: missing " + " and ".join(missing))
                continue
            messages[directory] = {part: compiled[f"{directory}/{file}"]
                                   for part, file in PARTS.items()
                                   if f"{directory}/{file}" in compiled}
        if problems:
            raise DefinitionError(problems)
        return cls(env, messages, sources)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._messages)

    def __contains__(self, name: object) -> bool:
        return name in self._messages

    def render(self, name: str, context: Mapping[str, Any]) -> RenderedMessage:
        """Render all parts; any failure is a :class:`RenderError` with a reason."""
        parts = self._messages.get(name)
        if parts is None:
            raise RenderError(name, "no such template")
        out: dict[str, str] = {}
        # What Template.render does, with the variables and globals merged once for all parts
        # (each part still gets a Context of its own; rendering never writes to this dict).
        variables = {**self._globals, **context}
        env = self._env
        for part, template in parts.items():
            try:
                out[part] = env.concat(template.root_render_func(
                    env.context_class(env, variables, template.name, template.blocks)))
            except Exception as exc:  # the Jinja boundary: any failure inside a template
                raise RenderError(name, f"{PARTS[part]}: {_reason(exc)}") from None
            if len(out[part]) > MAX_OUTPUT_CHARS:
                raise RenderError(name, f"{PARTS[part]}: longer than {MAX_OUTPUT_CHARS} chars")
        subject = out["subject"]
        if not subject.strip():
            raise RenderError(name, "subject.txt: the subject is empty")
        try:
            check_header_value("Subject", subject)
        except HeaderError as exc:
            raise RenderError(name, f"subject.txt: {exc}") from None
        return RenderedMessage(subject, out.get("html"), out["text"])

    def compile_json(self, value: Any, where: str) -> JsonTemplate:
        """Compile the string leaves of a JSON value (text templates, no autoescape)."""
        def compile_node(node: Any, here: str) -> Any:
            if isinstance(node, str):
                if "{" not in node:
                    return node
                try:
                    return self._env.from_string(node)
                except jinja2.TemplateSyntaxError as exc:
                    raise DefinitionError(f"{here}: line {exc.lineno}: {exc.message}") from None
            if isinstance(node, list):
                return [compile_node(item, f"{here}[{i}]") for i, item in enumerate(node)]
            if isinstance(node, dict):
                return {key: compile_node(item, f"{here}.{key}") for key, item in node.items()}
            if isinstance(node, float) and not math.isfinite(node):
                raise DefinitionError(f"{here}: expected a finite number")
            return node
        return JsonTemplate(value, compile_node(value, where))


def dropped_link(report: DroppedLink) -> StrictChainableUndefined:
    """What a template sees instead of a link it may not use: an undefined value, so
    ``| default(...)`` and ``{% if %}`` fall back, and printing it names the reason."""
    return StrictChainableUndefined(hint=f"{report.path}: link dropped: {report.reason}")


def message_context(*, contact_id: str, email: str | None, attributes: Mapping[str, Any],
                    event_type: str, event: Mapping[str, Any], unsubscribe_url: str,
                    recommendations: Sequence[Mapping[str, Any]] = (),
                    links: Mapping[str, str] | None = None, timezone: str | None = None,
                    workflow: str | None = None, step: str | None = None,
                    link_domains: tuple[str, ...] | None = None,
                    dropped: list[DroppedLink] | None = None,
                    consent_confirm_url: str = "") -> dict[str, Any]:
    """The variables a template sees: every contact attribute at top level (``first_name``),
    then ``contact`` ({id, email, timezone, locale, attributes}; ``locale`` is the ``locale``
    attribute when it names a known locale, in Babel's spelling), ``event`` (the trigger event's
    properties), ``event_type``, ``recommendations`` (products: name, url, image_url, price,
    currency), ``unsubscribe_url``, ``consent_confirm_url`` (the contact's signed double opt-in
    link), ``links`` (named URLs), ``workflow`` and ``step``. The
    reserved names win over attributes of the same name.

    With ``link_domains`` (normalised, see :mod:`automation.content.link_policy`; messages
    always pass it), links in ``event`` and ``recommendations`` (event data) to other hosts
    become :func:`dropped_link` values and are reported in ``dropped``."""
    event_data: Any = dict(event)
    products: Any = [dict(product) for product in recommendations]
    if link_domains is not None:
        reports: list[DroppedLink] = [] if dropped is None else dropped
        event_data = screen_links(event_data, link_domains, "event", dropped_link, reports)
        products = screen_links(products, link_domains, "recommendations", dropped_link,
                                reports)
    context: dict[str, Any] = {name: value for name, value in attributes.items()
                               if isinstance(name, str) and name.isidentifier()}
    context.update(
        contact={"id": contact_id, "email": email, "timezone": timezone,
                 "locale": contact_locale(attributes.get("locale")),
                 "attributes": dict(attributes)},
        event=event_data, event_type=event_type,
        recommendations=products,
        unsubscribe_url=unsubscribe_url, consent_confirm_url=consent_confirm_url,
        links=dict(links or {}),
        workflow=workflow, step=step)
    return context
