"""The time window a view covers: the last N seconds up to ``until`` (now, or a replay moment).

One type and one parser for every reader: the API, the pages, the websockets and the read models. The
bounds are one set: at least a minute (the rollups' grain), at most the 14 days that the rollups are
kept by default (ROLLUP_RETENTION_DAYS).
"""

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

MIN_WINDOW_SECONDS = 60
MAX_WINDOW_SECONDS = 14 * 86400
DEFAULT_WINDOW_SECONDS = 300
# The windows the live views keep computed and push: the pages' 5 minutes, 15 minutes and an hour.
LIVE_WINDOW_SECONDS = (300, 900, 3600)
RATE_STEP_SECONDS = 10  # at most 3 % of a 5-minute window, 16 % of a 1-minute one


class WindowError(ValueError):
    """A ``window`` or ``until`` that no view accepts; ``parameter`` names which."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


def _seconds(window: Any, default: int) -> int:
    if window is None or window == "":
        return default
    try:
        seconds = int(window)
    except (TypeError, ValueError):
        raise WindowError("window", "window must be a whole number of seconds") from None
    if not MIN_WINDOW_SECONDS <= seconds <= MAX_WINDOW_SECONDS:
        raise WindowError("window", f"window must be between {MIN_WINDOW_SECONDS} and {MAX_WINDOW_SECONDS} seconds")
    return seconds


def _moment(until: Any) -> datetime:
    if until is None or until == "":
        return timezone.now()
    text = str(until)
    try:
        moment = (
            datetime.fromtimestamp(float(text), UTC) if text.replace(".", "", 1).isdigit() else parse_datetime(text)
        )
    except (ValueError, OverflowError, OSError):
        moment = None
    if moment is None:
        raise WindowError("until", "until must be an ISO 8601 time or epoch seconds")
    return timezone.make_aware(moment, UTC) if timezone.is_naive(moment) else moment


@dataclass(frozen=True)
class Window:
    seconds: int
    until: datetime

    @classmethod
    def from_params(cls, window: Any = None, until: Any = None, default: int = DEFAULT_WINDOW_SECONDS) -> "Window":
        """The window that request parameters name (``?window=`` seconds, ``?until=`` ISO 8601 or epoch
        seconds), or WindowError with the message every endpoint answers."""
        parsed = cls(_seconds(window, default), _moment(until))
        # Views step minute by minute from the window's first minute to a minute past its end: both must
        # be datetimes Python can hold.
        try:
            parsed.first_minute + timedelta(seconds=parsed.seconds + 120)
        except OverflowError:
            raise WindowError("until", "the window must lie between years 1 and 9999") from None
        return parsed

    @classmethod
    def live(cls, window: Any = None) -> "Window":
        """A window the live views push: one of LIVE_WINDOW_SECONDS, up to now."""
        parsed = cls.from_params(window)
        if parsed.seconds not in LIVE_WINDOW_SECONDS:
            allowed = ", ".join(str(seconds) for seconds in LIVE_WINDOW_SECONDS)
            raise WindowError("window", f"live views cover one of {allowed} seconds")
        return parsed

    @classmethod
    def last(cls, seconds: int, until: datetime | None = None) -> "Window":
        """The last ``seconds`` up to ``until`` (now), for callers that hold numbers, not parameters."""
        return cls.from_params(seconds, until)

    @property
    def since(self) -> datetime:
        return self.until - timedelta(seconds=self.seconds)

    @property
    def first_minute(self) -> datetime:
        return self.since.replace(second=0, microsecond=0)

    def minutes(self) -> dict[str, datetime]:
        """Filter for per-minute rollups: every minute that overlaps the window."""
        return {"minute__gte": self.first_minute, "minute__lte": self.until}

    @property
    def covered_seconds(self) -> int:
        """What the rollups of ``minutes()`` span: the window plus the part of its first minute before
        it, which they count too. Rates divide by this, or a short window would read up to twice high.

        It grows in steps of RATE_STEP_SECONDS, not with every second: an idle edge's rate then stays
        put between steps, so live deltas carry the edges whose traffic changed, not every edge."""
        elapsed = (self.until - self.first_minute).total_seconds()
        return math.ceil(elapsed / RATE_STEP_SECONDS) * RATE_STEP_SECONDS

    def per_second(self, count: int) -> float:
        return round(count / self.covered_seconds, 3)

    def as_dict(self) -> dict[str, Any]:
        """How a view states the window it covers."""
        return {"start": self.since, "end": self.until, "minutes": self.seconds / 60}
