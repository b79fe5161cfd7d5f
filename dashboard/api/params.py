"""Query parameters shared by the API views, turned into clear 400 errors when they are wrong."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

from topology.window import DEFAULT_WINDOW_SECONDS, MAX_WINDOW_SECONDS, MIN_WINDOW_SECONDS, Window, WindowError


def window_parameters(default: int = DEFAULT_WINDOW_SECONDS) -> list[OpenApiParameter]:
    """The OpenAPI description of ``window`` and ``until``, with the bounds ``window_from`` enforces."""
    return [
        OpenApiParameter(
            "window",
            OpenApiTypes.INT,
            description=f"Seconds before `until`, {MIN_WINDOW_SECONDS} to {MAX_WINDOW_SECONDS}; {default} by default.",
        ),
        OpenApiParameter(
            "until", OpenApiTypes.STR, description="End of the window, ISO 8601 or epoch seconds (default now)."
        ),
    ]


def window_from(request: Request, default: int = DEFAULT_WINDOW_SECONDS) -> Window:
    """The request's window; a bad ``window`` or ``until`` is the same 400 on every endpoint."""
    try:
        return Window.from_params(request.query_params.get("window"), request.query_params.get("until"), default)
    except WindowError as error:
        raise ValidationError({error.parameter: str(error)}) from None


def number_from(request, name, kind=float, default=None, minimum=None, maximum=None):
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValidationError({name: f"must be a {kind.__name__}"}) from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValidationError({name: f"must be between {minimum} and {maximum}"})
    return value


def boolean_from(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise ValidationError({name: "must be true or false"})
