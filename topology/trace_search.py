"""Trace search by span conditions, as Jaeger's search finds traces.

A trace matches when one of its spans meets every span condition given: its service, its operation,
each ``key=value`` tag among its attributes, and the duration range. All on the same span, as Jaeger's
span readers put them in one query on a span: ``http.route=/a status=500`` finds a span that served
``/a`` with a 500, not a trace where one span served ``/a`` and another failed.

A tag's value is text, as a user types it and as Zipkin sends every tag, while OTLP attributes keep
their type: ``http.response.status_code=500`` matches the number 500 (OTLP) and the text "500"
(Zipkin). Text that reads as a JSON number matches that number and the text; ``true`` and ``false``
match the boolean and the text; anything else matches only the same text.
"""

import math
import re
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Q, QuerySet
from django.db.models.fields.json import KeyTransform
from django.db.models.lookups import Exact

from topology.models import Span

# A stored attribute key is at most this long (longer ones are cut on the way in).
MAX_TAG_KEY_CHARS = 255
# Each tag is one more condition on the span: enough for any question a person types, few enough that
# one search stays one cheap query.
MAX_TAGS = 16
# Go's duration units, as Jaeger's search form takes them (120ms, 1.5s, 2m); µ is either code point.
DURATION_UNITS_US = {"us": 1, "µs": 1, "μs": 1, "ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000}
# No stored span lasts longer than a day: a longer bound is a day and a microsecond, which no span
# reaches (and which a bigint holds, where 10^30 hours would not).
MAX_DURATION_US = 86_400_000_000

# The accepted texts are exactly these patterns, which the OpenAPI schema publishes as they are: each is
# both ECMA-262 and Python syntax, with ASCII digits and whitespace spelled out (\d and \s differ).
DURATION_PATTERN = f"^([0-9]+([.][0-9]+)?({'|'.join(DURATION_UNITS_US)}))?$"
_SPACE = "[ \\t\\n\\r\\f\\v]"
_KEY = f'[^ \\t\\n\\r\\f\\v="\\u0000]{{1,{MAX_TAG_KEY_CHARS}}}'
_QUOTED = '"(?:[^"\\\\\\u0000]|\\\\[^\\u0000])*"'
_BARE = '[^ \\t\\n\\r\\f\\v"\\u0000]*'
_PAIR = f"({_KEY})=({_QUOTED}|{_BARE})"
TAGS_PATTERN = f"^{_SPACE}*({_PAIR}({_SPACE}+{_PAIR}){{0,{MAX_TAGS - 1}}})?{_SPACE}*$"
_DURATION = re.compile(DURATION_PATTERN)
_TAGS = re.compile(TAGS_PATTERN)
_NEXT_PAIR = re.compile(f"{_SPACE}*{_PAIR}(?={_SPACE}|$)")
_ESCAPE = re.compile(r'\\(["\\])')
_JSON_NUMBER = re.compile(r"^-?(?:0|[1-9][0-9]*)([.][0-9]+)?([eE][+-]?[0-9]+)?$")
_BOOLEANS = {"true": True, "false": False}


class SearchError(ValueError):
    """A search parameter that no search accepts; ``parameter`` names which."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


def parse_duration(parameter: str, text: str) -> int | None:
    """Microseconds from a duration with its unit (``120ms``, ``1.5s``, ``250us``); None when empty."""
    match = _DURATION.fullmatch(text)
    if match is None:
        units = ", ".join(DURATION_UNITS_US)
        raise SearchError(parameter, f"must be a number and a unit ({units}), as 120ms or 1.5s")
    if not text:
        return None
    unit = match.group(3)
    return min(round(float(text[: -len(unit)]) * DURATION_UNITS_US[unit]), MAX_DURATION_US + 1)


def parse_tags(text: str) -> tuple[tuple[str, str], ...]:
    """``key=value`` pairs separated by spaces, as logfmt writes them and Jaeger's search form takes
    them. A value with spaces or quotes is written in double quotes, where ``\\"`` is a quote and
    ``\\\\`` a backslash; any other backslash is itself. A key given twice must hold both values, so
    it matches nothing unless they are the same."""
    if _TAGS.fullmatch(text) is None:
        raise SearchError("tags", _what_is_wrong(text))
    return tuple(
        (key, _ESCAPE.sub(r"\1", value[1:-1]) if value.startswith('"') else value)
        for key, value in (match.groups() for match in _NEXT_PAIR.finditer(text))
    )


def _what_is_wrong(text: str) -> str:
    """Where tags that do not parse go wrong, in words."""
    if "\x00" in text:
        return "must not contain NUL"
    position, pairs = 0, 0
    while (match := _NEXT_PAIR.match(text, position)) is not None:
        position, pairs = match.end(), pairs + 1
    if pairs > MAX_TAGS:
        return f"at most {MAX_TAGS} tags"
    rest = text[position:].lstrip(" \t\n\r\f\v")
    where = f"at character {len(text) - len(rest) + 1}"
    key, equals, value = rest.partition("=")
    if not equals or any(char in key for char in " \t\n\r\f\v"):
        return f"{re.split(_SPACE, rest, maxsplit=1)[0][:40]!r} {where} is not key=value"
    if not key:
        return f"a value without a key {where}: write key=value"
    if '"' in key:
        return f"a key cannot hold a quote ({where})"
    if len(key) > MAX_TAG_KEY_CHARS:
        return f"a key is at most {MAX_TAG_KEY_CHARS} characters ({where})"
    if value.startswith('"'):
        return f"the quoted value of {key[:40]!r} must end with a quote, then a space or the end"
    return f'the value of {key[:40]!r} has a quote: put the value in double quotes, with \\" for a quote'


def stored_forms(value: str) -> list[Any]:
    """The JSON values that a tag's text matches: itself, and the number or boolean it reads as."""
    forms: list[Any] = [value]
    number = _JSON_NUMBER.match(value)
    if number is not None:
        parsed = float(value) if number.group(1) or number.group(2) else int(value)
        if math.isfinite(parsed):
            forms.append(parsed)
    elif value in _BOOLEANS:
        forms.append(_BOOLEANS[value])
    return forms


def _attribute_is(key: str, value: Any) -> Q:
    if connection.vendor == "postgresql":
        # jsonb containment: span_attributes_gin (jsonb_path_ops) answers it for any key.
        return Q(attributes__contains={key: value})
    # Elsewhere (SQLite) Django's key transform, whose JSON path quotes the key: a dot in it is part of
    # the key. A key of digits (an array index to it) or holding a double quote is never found there.
    return Q(Exact(KeyTransform(key, "attributes"), value))


def _tag_condition(key: str, value: str) -> Q:
    condition = Q()
    for form in stored_forms(value):
        condition |= _attribute_is(key, form)
    return condition


@dataclass(frozen=True)
class TraceSearch:
    """What a trace's span must be. Empty fields ask nothing; a search that asks nothing of a span
    matches every trace."""

    service: str = ""
    operation: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    min_duration_us: int | None = None
    max_duration_us: int | None = None

    def matching_spans(self) -> QuerySet[Span] | None:
        """The spans that meet every condition; None when no condition is given."""
        conditions = Q()
        if self.service:
            conditions &= Q(service__name=self.service)
        if self.operation:
            conditions &= Q(name=self.operation)
        if self.min_duration_us is not None:
            conditions &= Q(duration_us__gte=self.min_duration_us)
        if self.max_duration_us is not None:
            conditions &= Q(duration_us__lte=self.max_duration_us)
        for key, value in self.tags:
            conditions &= _tag_condition(key, value)
        return Span.objects.filter(conditions) if conditions else None
