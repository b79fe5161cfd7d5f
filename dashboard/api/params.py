"""Query parameters shared by the API views, turned into clear 400 errors when they are wrong."""

from rest_framework.exceptions import ValidationError

from topology.window import Window, WindowError


def window_from(request, default=300):
    try:
        return Window.from_params(request.query_params.get("window"), request.query_params.get("until"), default)
    except WindowError as error:
        raise ValidationError({"window": str(error)}) from None


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


def boolean_from(request, name):
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise ValidationError({name: "must be true or false"})
