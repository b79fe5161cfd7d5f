"""Query parameters shared by the API views, turned into clear 400 errors when they are wrong."""

import math
from typing import Any, Literal

from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

from topology.window import DEFAULT_WINDOW_SECONDS, MAX_WINDOW_SECONDS, MIN_WINDOW_SECONDS, Window, WindowError

UNTIL_FORMAT = "iso8601-or-epoch-seconds"


def window_parameters(default: int = DEFAULT_WINDOW_SECONDS) -> list[OpenApiParameter]:
    """The OpenAPI description of ``window`` and ``until``, with the bounds ``window_from`` enforces."""
    return [
        OpenApiParameter(
            "window",
            {"type": "integer", "minimum": MIN_WINDOW_SECONDS, "maximum": MAX_WINDOW_SECONDS, "default": default},
            description=f"Seconds before `until`, {MIN_WINDOW_SECONDS} to {MAX_WINDOW_SECONDS}; {default} by default.",
        ),
        OpenApiParameter(
            "until",
            # Not OpenAPI's date-time: epoch seconds are taken too, and a zone may be left out (UTC).
            {"type": "string", "format": UNTIL_FORMAT},
            description="End of the window (default, or empty: now): an ISO 8601 time, UTC when it names no zone, or epoch "
            "seconds (`1764547200` or `1764547200.5`). A time that does not exist, or a window not within the "
            "years 1 to 9999, is a 400.",
        ),
    ]


def window_from(request: Request, default: int = DEFAULT_WINDOW_SECONDS) -> Window:
    """The request's window; a bad ``window`` or ``until`` is the same 400 on every endpoint."""
    try:
        return Window.from_params(request.query_params.get("window"), request.query_params.get("until"), default)
    except WindowError as error:
        raise ValidationError({error.parameter: str(error)}) from None


def number_from(
    request: Request,
    name: str,
    kind: type = float,
    default: Any = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> Any:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValidationError({name: f"must be a {kind.__name__}"}) from None
    if not math.isfinite(value):
        raise ValidationError({name: "must be a finite number"})
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValidationError({name: f"must be between {minimum} and {maximum}"})
    return value


# Names come from spans and Consul and are matched as they are, but never hold NUL, which PostgreSQL
# text cannot store: a parameter with one matches nothing and is refused as such.
TEXT_PATTERN = "^[^\\u0000]*$"
REQUIRED_TEXT_PATTERN = "^[^\\u0000]+$"


def text_parameter(
    name: str, description: str, required: bool = False, location: Literal["query", "path"] = "query"
) -> OpenApiParameter:
    pattern = REQUIRED_TEXT_PATTERN if required else TEXT_PATTERN
    return OpenApiParameter(
        name, {"type": "string", "pattern": pattern}, location, required=required, description=description
    )


def text_from(request: Request, name: str, required: bool = False) -> str:
    value = request.query_params.get(name, "")
    if required and not value:
        raise ValidationError({name: "Required."})
    return checked_text(name, value)


def checked_text(name: str, value: str) -> str:
    if "\x00" in value:
        raise ValidationError({name: "must not contain NUL"})
    return value


TRUE_WORDS = ("1", "true", "yes")
FALSE_WORDS = ("0", "false", "no")


def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


# What boolean_from accepts, in any case, as a JSON Schema pattern (which has no case-insensitive flag).
BOOLEAN_PATTERN = f"^({'|'.join(_any_case(word) for word in TRUE_WORDS + FALSE_WORDS)})$"


def boolean_parameter(name: str, description: str) -> OpenApiParameter:
    return OpenApiParameter(name, {"type": "string", "pattern": BOOLEAN_PATTERN}, description=description)


def boolean_from(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    if raw.lower() in TRUE_WORDS:
        return True
    if raw.lower() in FALSE_WORDS:
        return False
    raise ValidationError({name: "must be true or false"})
