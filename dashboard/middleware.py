import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

log = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'"
)

DATABASE_UNAVAILABLE = "The database is unavailable. meshscope answers again as soon as it is back: try again shortly."
RETRY_AFTER_SECONDS = 10
# Plain HTML, no template: the templates' context processors may reach for the database themselves.
DATABASE_UNAVAILABLE_PAGE = f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Database unavailable (503) · meshscope</title></head>
<body style="font-family: sans-serif; margin: 3rem">
<h1>The database is unavailable</h1>
<p>{DATABASE_UNAVAILABLE}</p>
</body>
</html>
"""


class ContentSecurityPolicyMiddleware:
    """Forbids inline script everywhere: service names come from outside and must never run."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response


class DatabaseUnavailableMiddleware:
    """A database that does not answer is an outage to report, not a bug: a 503 that says so (a page, or
    JSON under /api/) with Retry-After, instead of a 500 "Server Error". OperationalError and
    InterfaceError are what the driver raises when it cannot reach the database or loses the
    connection; every other error stays a 500."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        log.warning("%s %s: the database is unavailable: %s", request.method, request.path, exception)
        response: HttpResponse
        if request.path.startswith("/api/"):
            response = JsonResponse({"detail": DATABASE_UNAVAILABLE}, status=503)
        else:
            response = HttpResponse(DATABASE_UNAVAILABLE_PAGE, status=503, content_type="text/html; charset=utf-8")
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
