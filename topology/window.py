"""The time window a view covers: the last N seconds up to ``until`` (now, or a replay moment)."""

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.utils import timezone
from django.utils.dateparse import parse_datetime

MAX_WINDOW_SECONDS = 14 * 86400
RATE_STEP_SECONDS = 10  # at most 3 % of a 5-minute window, 16 % of a 1-minute one


class WindowError(ValueError):
    pass


def parse_until(value):
    """The end of a window from ISO 8601 (UTC when it names no zone) or epoch seconds."""
    text = str(value)
    try:
        end = datetime.fromtimestamp(float(text), UTC) if text.replace(".", "").isdigit() else parse_datetime(text)
    except (ValueError, OverflowError, OSError):
        # Well-formed but impossible (a 13th month), or an epoch beyond what a datetime holds.
        end = None
    if end is None:
        raise WindowError("until must be an ISO 8601 time or epoch seconds")
    return timezone.make_aware(end, UTC) if timezone.is_naive(end) else end


@dataclass(frozen=True)
class Window:
    seconds: int
    until: datetime

    @classmethod
    def from_params(cls, window=None, until=None, default=300):
        try:
            seconds = int(window) if window not in (None, "") else default
        except ValueError:
            raise WindowError("window must be a whole number of seconds") from None
        if not 60 <= seconds <= MAX_WINDOW_SECONDS:
            raise WindowError(f"window must be between 60 and {MAX_WINDOW_SECONDS} seconds")
        return cls(seconds, parse_until(until) if until not in (None, "") else timezone.now())

    @property
    def since(self):
        return self.until - timedelta(seconds=self.seconds)

    @property
    def first_minute(self):
        return self.since.replace(second=0, microsecond=0)

    def minutes(self):
        """Filter for per-minute rollups: every minute that overlaps the window."""
        return {"minute__gte": self.first_minute, "minute__lte": self.until}

    @property
    def covered_seconds(self):
        """What the rollups of ``minutes()`` span: the window plus the part of its first minute before
        it, which they count too. Rates divide by this, or a short window would read up to twice high.

        It grows in steps of RATE_STEP_SECONDS, not with every second: an idle edge's rate then stays
        put between steps, so live deltas carry the edges whose traffic changed, not every edge."""
        elapsed = (self.until - self.first_minute).total_seconds()
        return math.ceil(elapsed / RATE_STEP_SECONDS) * RATE_STEP_SECONDS

    def per_second(self, count):
        return round(count / self.covered_seconds, 3)
