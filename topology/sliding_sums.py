"""Per-key sums of a rollup over the live windows, kept up to date from the rows that changed.

A live view of 25,000 edges recomputed every second spent more than a core to find that almost
nothing changed (issue 11: 1,082 ms for ``topology_snapshot`` at 5,000 services and 25,000 edges). A
stream processor keeps a sliding window's aggregate instead: it adds what arrives and subtracts the
slice that leaves. Here:

* the *recent* minutes (the current one and the one before, which still receive spans) are summed
  per key once for every window, and re-read from the rollups for the keys whose rows changed;
* each window keeps the sum of its *older* minutes per key. When the minute turns, the minute that
  became older is added to it and the minute that left the window is subtracted (two minutes of rows
  read, once a minute). A late span for an older minute re-reads that key's older sum.

Which rows changed comes from the writers (``topology.changes.ChangedRows``: rollup primary keys),
read back from the rollups, so a value is never carried outside the database. A key is left wrong
until its next change or the next rebuild (the live layer's REBUILD_SECONDS, 10 minutes) by a lost
announcement, or by a late write to the minute that is leaving a window, committed between the
broadcaster's taking of the changed rows and its reading of that minute (its keepers apply the rows
they took before they slide, so a late write taken with the turn of the minute is right).
``rebuild`` reads every row of the longest window, as a full reading does.
"""

import json
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Sum, Value

from topology.json_list import JSONList
from topology.latency import LatencyHistogram
from topology.models.rollups import Rollup
from topology.window import Window

Key = tuple[Any, ...]
# The minutes that still receive spans: the current one and the one before it (their "recent" sums).
UNSETTLED_MINUTES = 2


@dataclass(frozen=True, slots=True)
class RollupSums:
    """What a key's rollup rows add up to: ``rows`` of them (a key with rows shows, even at 0 calls)."""

    rows: int = 0
    count: int = 0
    errors: int = 0
    negative_delays: int = 0
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)

    def plus(self, other: "RollupSums") -> "RollupSums":
        return RollupSums(
            self.rows + other.rows,
            self.count + other.count,
            self.errors + other.errors,
            self.negative_delays + other.negative_delays,
            self.histogram.copy().merge(other.histogram),
        )

    def minus(self, other: "RollupSums") -> "RollupSums":
        buckets = dict(self.histogram.buckets)
        for bucket, count in other.histogram.buckets.items():
            left = buckets.get(bucket, 0) - count
            if left:
                buckets[bucket] = left
            else:
                buckets.pop(bucket, None)
        return RollupSums(
            self.rows - other.rows,
            self.count - other.count,
            self.errors - other.errors,
            self.negative_delays - other.negative_delays,
            LatencyHistogram(buckets),
        )


NOTHING = RollupSums()


def minute_floor(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


class SlidingSums:
    """The sums per key of one rollup model over each of ``windows`` (seconds), up to ``now``."""

    def __init__(self, model: type[Rollup], key_fields: Sequence[str], windows: Iterable[int]) -> None:
        self.model = model
        self.key_fields = tuple(key_fields)
        self.windows = tuple(sorted(set(windows)))
        self.has_negative_delays = any(f.name == "negative_delays" for f in model._meta.get_fields())
        self.current: datetime | None = None  # the current minute of the last update
        self.recent: dict[Key, RollupSums] = {}
        self.older: dict[int, dict[Key, RollupSums]] = {seconds: {} for seconds in self.windows}

    # --- the minutes ----------------------------------------------------------------------------

    def _first_minute(self, seconds: int, now: datetime) -> datetime:
        return Window(seconds, now).first_minute

    def _recent_start(self, current: datetime) -> datetime:
        return current - timedelta(minutes=UNSETTLED_MINUTES - 1)

    # --- reading the rollups --------------------------------------------------------------------

    def _sums(self, start: datetime, end: datetime, keys: Collection[Key] | None = None) -> dict[Key, RollupSums]:
        """Each key's sums over the rows with ``start <= minute <= end`` (of ``keys`` only, if given),
        added up by the database: the histograms of a key come as one JSON array (``JSONList``)."""
        if end < start:
            return {}
        rows = self.model._default_manager.filter(minute__gte=start, minute__lte=end)
        if keys is not None:
            if not keys:
                return {}
            # A filter on the first field, then the exact keys here: fewer conditions than one per key.
            rows = rows.filter(**{f"{self.key_fields[0]}__in": {key[0] for key in keys}})
        negative = Sum("negative_delays") if self.has_negative_delays else Value(0)
        grouped = (
            rows.values_list(*self.key_fields)
            .annotate(
                rows_summed=Count("id"),
                count_summed=Sum("count"),
                errors_summed=Sum("errors"),
                negative_summed=negative,
                histograms=JSONList("latency_buckets"),
            )
            .order_by()
        )
        width = len(self.key_fields)
        found = {}
        for values in grouped:
            key = tuple(values[:width])
            if keys is not None and key not in keys:
                continue
            count_rows, count, errors, negative_delays, histograms = values[width:]
            found[key] = RollupSums(
                count_rows, count, errors, negative_delays, LatencyHistogram().merge_all(json.loads(histograms))
            )
        return found

    # --- keeping the sums -----------------------------------------------------------------------

    def rebuild(self, now: datetime) -> None:
        """Every window's sums read afresh from the rollups."""
        current = minute_floor(now)
        recent_start = self._recent_start(current)
        self.current = current
        self.recent = self._sums(recent_start, current)
        self.older = {
            seconds: self._sums(self._first_minute(seconds, now), recent_start - timedelta(minutes=1))
            for seconds in self.windows
        }

    def advance(self, now: datetime) -> set[Key]:
        """Moves the windows to ``now``: when the minute turned, adds the minutes that became older and
        subtracts the minutes that left each window. Returns the keys whose sums changed."""
        current = minute_floor(now)
        if self.current is None:
            self.rebuild(now)
            return self.all_keys()
        if current <= self.current:
            return set()
        previous, self.current = self.current, current
        if current - previous > timedelta(minutes=UNSETTLED_MINUTES + 1):
            # Asleep for minutes (a broadcaster with nobody watching): cheaper read afresh.
            before = self.all_keys()
            self.rebuild(now)
            return before | self.all_keys()
        old_recent_start, recent_start = self._recent_start(previous), self._recent_start(current)
        became_older = self._sums(old_recent_start, recent_start - timedelta(minutes=1))
        # Keys of rows dated ahead of the clock were not in the recent sums: they change too.
        changed: set[Key] = set(became_older)
        for seconds in self.windows:
            older = self.older[seconds]
            for key, sums in became_older.items():
                self._add(older, key, sums)
            old_first, first = self._first_minute(seconds, previous), self._first_minute(seconds, now)
            for key, sums in self._sums(old_first, first - timedelta(minutes=1)).items():
                if key not in older:
                    continue  # its rows there were never counted (deleted since, or re-read)
                left = older[key].minus(sums)
                if left.rows:
                    older[key] = left
                else:
                    del older[key]
                changed.add(key)
        # The recent minutes now start later, and may take in rows dated ahead of the clock.
        before_recent = self.recent
        self.recent = self._sums(recent_start, current)
        return changed | set(before_recent) | set(self.recent)

    def apply(self, changed: Iterable[tuple[Key, datetime]]) -> set[Key]:
        """Re-reads the keys of changed rows, given as (key, minute). Returns the keys re-read."""
        assert self.current is not None, "rebuild first"
        recent_start = self._recent_start(self.current)
        recent_keys: set[Key] = set()
        older_keys: dict[int, set[Key]] = defaultdict(set)
        firsts = {seconds: self._first_minute(seconds, self.current) for seconds in self.windows}
        for key, minute in changed:
            if minute > self.current:
                continue  # dated ahead of the clock: counted when its minute comes
            if minute >= recent_start:
                recent_keys.add(key)
                continue
            for seconds, first in firsts.items():
                if minute >= first:
                    older_keys[seconds].add(key)
        self._replace(self.recent, recent_keys, self._sums(recent_start, self.current, recent_keys))
        for seconds, keys in older_keys.items():
            sums = self._sums(firsts[seconds], recent_start - timedelta(minutes=1), keys)
            self._replace(self.older[seconds], keys, sums)
        return recent_keys | {key for keys in older_keys.values() for key in keys}

    @staticmethod
    def _add(into: dict[Key, RollupSums], key: Key, sums: RollupSums) -> None:
        earlier = into.get(key)
        into[key] = sums if earlier is None else earlier.plus(sums)

    @staticmethod
    def _replace(into: dict[Key, RollupSums], keys: set[Key], sums: dict[Key, RollupSums]) -> None:
        for key in keys:
            if key in sums:
                into[key] = sums[key]
            else:
                into.pop(key, None)

    def forget(self, keys: Iterable[Key]) -> None:
        """Drops keys whose rows were deleted (a deleted service's)."""
        for key in keys:
            self.recent.pop(key, None)
            for older in self.older.values():
                older.pop(key, None)

    def all_keys(self) -> set[Key]:
        return set(self.recent) | {key for sums in self.older.values() for key in sums}

    def total(self, seconds: int, key: Key) -> RollupSums:
        """The key's sums over the window of ``seconds``; NOTHING when it has no row there."""
        older = self.older[seconds].get(key)
        recent = self.recent.get(key)
        if older is None:
            return recent or NOTHING
        return older if recent is None else older.plus(recent)

    def totals(self, seconds: int) -> dict[Key, RollupSums]:
        return {key: sums for key in self.all_keys() if (sums := self.total(seconds, key)).rows}
