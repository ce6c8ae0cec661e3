"""A small condition language over JSON-like data, compiled once into a fast predicate (pure).

A filter is a mapping; its entries are ANDed. Each entry is either a combinator or a field test::

    {"plan": "pro",                          # equals (shorthand)
     "amount": {"gte": 100, "lt": 1000},     # operators on one field are ANDed
     "items.0.sku": {"exists": true},        # dotted path; a digit indexes a list
     "items.*.sku": "SKU-1",                 # '*': true if ANY list element matches
     "any": [{"country": {"in": ["FR", "DE"]}}, {"vip": true}],
     "not": {"tags": {"contains": "test"}}}

Combinators: ``all: [F, ...]`` (true when empty), ``any: [F, ...]`` (false when empty),
``not: F``. Operators: ``equals``, ``not_equals``, ``in``, ``not_in`` (a list of scalars),
``gt``/``gte``/``lt``/``lte`` (a number or a string), ``exists`` (bool), ``contains`` (list
membership, or substring when both are strings), ``matches`` (a glob such as ``"https://*/sale*"``,
case-sensitive). A mapping value is always an operator mapping: compare with an object through
``{equals: {...}}``. The names ``all``, ``any`` and ``not`` cannot be used as field names.

Semantics, chosen so that no comparison is ever surprising:

* A path that does not resolve, or resolves to ``null``, is *missing*. Every operator is false on a
  missing field except ``exists: false``; ``not`` is plain negation, so ``not: {x: 1}`` is true
  when ``x`` is missing. ``null`` is not accepted as an operand (use ``exists``).
* Types never mix: booleans are not numbers (``true`` never equals ``1``), integers and floats
  compare numerically, a string never equals or orders against a number (every comparison between
  them is false), strings order by code point (so ISO dates order correctly).
* With ``*`` in a path the field test is true when some element satisfies ALL of its operators.

``compile_filter`` raises :class:`DefinitionError` naming the key path of the first problem; the
result is a :class:`Filter`, callable on a mapping. Extensions (used by branch conditions) add
keys handled by a caller-supplied compiler.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from automation.errors import DefinitionError, key_path
from engine.values import ASCII_DIGITS

Predicate = Callable[[Mapping[str, Any]], bool]
ValueTest = Callable[[Any], bool]
# An extension compiles the value under its key (and the key path, for errors) into a predicate.
Extension = Callable[[Any, str], Predicate]

COMBINATORS = frozenset({"all", "any", "not"})
OPERATORS = ("equals", "not_equals", "in", "not_in", "gt", "gte", "lt", "lte", "exists",
             "contains", "matches")
MAX_DEPTH = 12
MAX_NODES = 500
MAX_LIST = 1000
MAX_PATH_SEGMENTS = 16
MAX_TEXT = 1000
_MISSING: Any = object()
_NUMBER_TYPES = (int, float)


@dataclass(frozen=True, slots=True)
class PropertyPath:
    """A dotted path into JSON-like data: ``items.0.sku``, ``attributes.plan``, ``items.*.sku``.

    ``values(data)`` lists every non-null value the path reaches (``*`` fans out over a list; a
    digit segment indexes a list or, failing that, is a mapping key); ``first(data)`` is the first
    of them or ``None``."""

    text: str
    segments: tuple[str, ...]
    has_wildcard: bool = field(init=False, repr=False, compare=False)  # '*' in segments

    def __post_init__(self) -> None:
        object.__setattr__(self, "has_wildcard", "*" in self.segments)

    def values(self, data: Any) -> list[Any]:
        found: list[Any] = []
        _collect(data, self.segments, 0, found)
        return found

    def first(self, data: Any) -> Any:
        if not self.has_wildcard:
            value = _get(data, self.segments)
            return None if value is _MISSING else value
        found = self.values(data)
        return found[0] if found else None


def parse_path(text: Any, where: str, *, allow_wildcard: bool = True) -> PropertyPath:
    """Parse a dotted path, raising :class:`DefinitionError` at ``where`` if it is malformed."""
    if not isinstance(text, str) or not text or len(text) > 200:
        raise DefinitionError(f"{where}: expected a dotted property path such as 'items.0.sku'")
    segments = tuple(text.split("."))
    if any(not segment for segment in segments) or len(segments) > MAX_PATH_SEGMENTS:
        raise DefinitionError(f"{where}: {text!r} is not a dotted property path "
                              f"(non-empty segments, at most {MAX_PATH_SEGMENTS})")
    if "*" in segments and not allow_wildcard:
        raise DefinitionError(f"{where}: {text!r}: '*' is not allowed here (one value needed)")
    return PropertyPath(text, segments)


def _get(data: Any, segments: tuple[str, ...]) -> Any:
    current = data
    for segment in segments:
        if type(current) is dict or isinstance(current, Mapping):  # dict: no ABC check
            current = current.get(segment, _MISSING)
        elif isinstance(current, list | tuple) and ASCII_DIGITS.match(segment):
            index = int(segment)
            current = current[index] if index < len(current) else _MISSING
        else:
            return _MISSING
        if current is _MISSING or current is None:
            return _MISSING
    return current


def _collect(current: Any, segments: tuple[str, ...], start: int, found: list[Any]) -> None:
    for position in range(start, len(segments)):
        segment = segments[position]
        if segment == "*":
            if isinstance(current, list | tuple):
                for element in current:
                    _collect(element, segments, position + 1, found)
            return
        if type(current) is dict:  # _get's first case, without its call
            current = current.get(segment)
            if current is None:
                return
        else:
            current = _get(current, (segment,))
            if current is _MISSING:
                return
    if current is not None and current is not _MISSING:
        found.append(current)


def same_value(left: Any, right: Any) -> bool:
    """Type-strict JSON equality: bools only equal bools, numbers compare numerically, strings only
    equal strings; lists and objects compare element by element under the same rules."""
    left_type, right_type = type(left), type(right)
    if left_type is bool or right_type is bool:
        return left_type is right_type and left == right
    if isinstance(left, _NUMBER_TYPES) and isinstance(right, _NUMBER_TYPES):
        return left == right
    if isinstance(left, str) or isinstance(right, str):
        return isinstance(left, str) and isinstance(right, str) and left == right
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        return len(left) == len(right) and all(map(same_value, left, right))
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(same_value(v, right[k])
                                                    for k, v in left.items())
    return False


def _always(_: Mapping[str, Any]) -> bool:
    return True


@dataclass(frozen=True, slots=True, eq=False)
class Filter:
    """A compiled filter. ``spec`` is the source (JSON-compatible); ``paths`` every field path it
    reads (without extension keys), e.g. to check that a segment only reads known aggregates."""

    spec: Any
    paths: frozenset[str]
    predicate: Predicate = field(repr=False)

    def __call__(self, data: Mapping[str, Any]) -> bool:
        return self.predicate(data)

    def matches(self, data: Mapping[str, Any]) -> bool:
        return self.predicate(data)


MATCH_ALL = Filter({}, frozenset(), _always)


def compile_filter(spec: Any, where: str = "filter",
                   extensions: Mapping[str, Extension] | None = None) -> Filter:
    """Compile a filter spec (``None`` or ``{}`` matches everything)."""
    if spec is None:
        return MATCH_ALL
    compiler = _Compiler(extensions or {})
    predicate = compiler.node(spec, where, 0)
    return Filter(spec, frozenset(compiler.paths), predicate)


def compile_value_test(spec: Any, where: str) -> ValueTest:
    """Compile the operator part of a field test (a value, or an operator mapping) into a test on
    one value; ``None`` stands for a missing value (only ``exists: false`` accepts it)."""
    path = PropertyPath("value", ("value",))
    predicate = _Compiler({}).field_test(path, spec, where)
    return lambda value: predicate({"value": value})


class _Compiler:
    def __init__(self, extensions: Mapping[str, Extension]) -> None:
        self.extensions = extensions
        self.paths: set[str] = set()
        self.nodes = 0

    def count(self, where: str) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise DefinitionError(f"{where}: filter too large (more than {MAX_NODES} tests)")

    def node(self, spec: Any, where: str, depth: int) -> Predicate:
        if depth > MAX_DEPTH:
            raise DefinitionError(f"{where}: filter nested deeper than {MAX_DEPTH} levels")
        if not isinstance(spec, Mapping):
            raise DefinitionError(f"{where}: a filter must be a mapping of field tests, "
                                  f"got {_kind(spec)}")
        parts: list[Predicate] = []
        for key, value in spec.items():
            if not isinstance(key, str):
                raise DefinitionError(f"{where}: keys must be strings, got {key!r}")
            here = key_path(where, key)
            self.count(here)
            if key in ("all", "any"):
                parts.append(self.combine(key, value, here, depth))
            elif key == "not":
                parts.append(_negation(self.node(value, here, depth + 1)))
            elif key in self.extensions:
                parts.append(self.extensions[key](value, here))
            else:
                parts.append(self.field_test(parse_path(key, here), value, here))
        return _conjunction(parts)

    def combine(self, key: str, value: Any, where: str, depth: int) -> Predicate:
        if not isinstance(value, list):
            raise DefinitionError(f"{where}: expected a list of filters, got {_kind(value)}")
        inner = [self.node(item, key_path(where, i), depth + 1) for i, item in enumerate(value)]
        if key == "all":
            return _conjunction(inner)
        return lambda data: any(predicate(data) for predicate in inner)

    def field_test(self, path: PropertyPath, spec: Any, where: str) -> Predicate:
        self.paths.add(path.text)
        operators = dict(spec) if isinstance(spec, Mapping) else {"equals": spec}
        if not operators:
            raise DefinitionError(f"{where}: empty operator mapping (operators: "
                                  + ", ".join(OPERATORS) + ")")
        exists = operators.pop("exists", None)
        if exists is not None and not isinstance(exists, bool):
            raise DefinitionError(f"{key_path(where, 'exists')}: expected true or false")
        tests = [self.value_test(name, operand, where if not isinstance(spec, Mapping)
                                 else key_path(where, name))
                 for name, operand in operators.items()]
        values = path.values if path.has_wildcard else _single(path.segments)
        if exists is False:
            if tests:  # "absent and ...": never true, but keep it explicit rather than clever
                return lambda data: False
            return lambda data: not values(data)
        if not tests:
            return lambda data: bool(values(data))
        if len(tests) == 1:
            test = tests[0]
            return lambda data: any(test(value) for value in values(data))
        return lambda data: any(all(test(value) for test in tests) for value in values(data))

    def value_test(self, name: Any, operand: Any, where: str) -> ValueTest:
        if name not in OPERATORS:
            raise DefinitionError(f"{where}: unknown operator {name!r} (operators: "
                                  + ", ".join(OPERATORS) + "; compare with an object through "
                                  "{equals: {...}})")
        if operand is None:
            raise DefinitionError(f"{where}: null is not a value to compare with; "
                                  "use {exists: false}")
        if name in ("equals", "not_equals"):
            _check_json(operand, where, 0)
            if name == "equals":
                return lambda value: same_value(value, operand)
            return lambda value: not same_value(value, operand)
        if name in ("in", "not_in"):
            return _membership(name, operand, where)
        if name in ("gt", "gte", "lt", "lte"):
            return _comparison(name, operand, where)
        if name == "contains":
            _check_scalar(operand, where)
            return lambda value: _contains(value, operand)
        if not isinstance(operand, str) or len(operand) > 256:
            raise DefinitionError(f"{where}: expected a glob pattern string (at most 256 chars)")
        return lambda value: isinstance(value, str) and fnmatchcase(value, operand)


def _single(segments: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    def values(data: Any) -> tuple[Any, ...]:
        value = _get(data, segments)
        return () if value is _MISSING else (value,)
    return values


def _negation(inner: Predicate) -> Predicate:
    return lambda data: not inner(data)


def _conjunction(parts: Sequence[Predicate]) -> Predicate:
    if not parts:
        return _always
    if len(parts) == 1:
        return parts[0]
    frozen = tuple(parts)
    return lambda data: all(part(data) for part in frozen)


def _membership(name: str, operand: Any, where: str) -> ValueTest:
    if not isinstance(operand, list) or len(operand) > MAX_LIST:
        raise DefinitionError(f"{where}: expected a list of at most {MAX_LIST} values")
    for index, item in enumerate(operand):
        _check_scalar(item, key_path(where, index))
    strings = frozenset(item for item in operand if isinstance(item, str))
    others = tuple(item for item in operand if not isinstance(item, str))

    def member(value: Any) -> bool:
        if isinstance(value, str):
            return value in strings
        return any(same_value(value, item) for item in others)
    if name == "in":
        return member
    return lambda value: not member(value)


def _comparison(name: str, operand: Any, where: str) -> ValueTest:
    if isinstance(operand, bool) or not isinstance(operand, int | float | str):
        raise DefinitionError(f"{where}: expected a number or a string, got {_kind(operand)}")
    if isinstance(operand, float) and not math.isfinite(operand):
        raise DefinitionError(f"{where}: expected a finite number")
    kind: tuple[type, ...] = (str,) if isinstance(operand, str) else _NUMBER_TYPES
    bound: Any = operand
    if name == "gt":
        return lambda v: type(v) is not bool and isinstance(v, kind) and v > bound
    if name == "gte":
        return lambda v: type(v) is not bool and isinstance(v, kind) and v >= bound
    if name == "lt":
        return lambda v: type(v) is not bool and isinstance(v, kind) and v < bound
    return lambda v: type(v) is not bool and isinstance(v, kind) and v <= bound


def _contains(value: Any, operand: Any) -> bool:
    if isinstance(value, list | tuple):
        return any(same_value(element, operand) for element in value)
    return isinstance(value, str) and isinstance(operand, str) and operand in value


def _check_scalar(value: Any, where: str) -> None:
    if value is None or not isinstance(value, str | int | float):
        raise DefinitionError(f"{where}: expected a string, number or boolean, "
                              f"got {_kind(value)}")
    _check_json(value, where, 0)


def _check_json(value: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise DefinitionError(f"{where}: value nested too deeply")
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise DefinitionError(f"{where}: string longer than {MAX_TEXT} characters")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise DefinitionError(f"{where}: expected a finite number")
    elif isinstance(value, list):
        for item in value:
            _check_json(item, where, depth + 1)
    elif isinstance(value, Mapping):
        for item in value.values():
            _check_json(item, where, depth + 1)
    elif value is not None and not isinstance(value, int):
        raise DefinitionError(f"{where}: {_kind(value)} is not a JSON value")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__
