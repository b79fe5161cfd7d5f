"""Consumer lag: Burrow's status rules, lag in seconds, trend and time to catch up.

``record_samples`` turns what the collector read from Kafka into ConsumerPartitionLag rows: each row
carries its commit window forward to the next sample, and recent rows' end offsets make the
offset→time table. The functions above it are pure and take plain values.
"""

import itertools
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from django.db import transaction
from django.db.models import Count, F, Max, Sum
from django.db.models.functions import TruncHour, TruncMinute
from django.utils import timezone

from topology.changes import LAG, announce_on_commit
from topology.models import ConsumerPartitionLag, LagSecondsMethod, LagStatus
from topology.window import Window

# Burrow's default window: the last 10 commits of a partition.
WINDOW_SAMPLES = 10
# How far back end-offset samples feed the offset→time table (kafka-lag-exporter keeps 60 points).
TABLE_SAMPLES = 60
TABLE_MAX_AGE = timedelta(minutes=15)
# Trends are taken over the last WINDOW_SAMPLES samples within this horizon.
TREND_HORIZON = timedelta(minutes=5)
# A group in one of these states has members, and members commit: Burrow would see their commits.
ACTIVE_GROUP_STATES = {"stable", "preparingrebalance", "completingrebalance", "assigning", "reconciling"}

# Keyed by str: statuses are read from the database as plain text.
SEVERITY: list[str] = [LagStatus.OK, LagStatus.WARN, LagStatus.STOP, LagStatus.STALL, LagStatus.REWIND]

# A partition's commit window as its JSON column keeps it, oldest first: [[offset, lag, epoch seconds]].
CommitWindow = list[list[Any]]
PartitionKey = tuple[str, str, int]  # (group, topic, partition)


class WindowEntry(NamedTuple):
    offset: int
    lag: int
    at: datetime


class Point(NamedTuple):
    offset: int
    time: float


def partition_status(window: Sequence[WindowEntry], current_lag: int, now: datetime) -> LagStatus:
    """Burrow's consumer lag evaluation rules, in Burrow's order.

    ``window`` holds the partition's last commits, oldest first, as WindowEntry(offset, lag, at).
    The lag check comes first, so a caught-up partition on a quiet topic is never STOP.
    """
    if current_lag == 0:
        return LagStatus.OK
    if not window:
        return LagStatus.OK
    span = window[-1].at - window[0].at
    if now - window[-1].at > span:
        return LagStatus.STOP
    if any(entry.lag == 0 for entry in window):
        return LagStatus.OK
    pairs = list(itertools.pairwise(window))
    if any(later.offset < earlier.offset for earlier, later in pairs):
        return LagStatus.REWIND
    if len(window) < WINDOW_SAMPLES:
        # "Never moved" and "never decreased" mean little over two or three commits: a healthy
        # consumer sampled twice with a lag of 3 then 4 is not slow (Burrow calls such a window
        # incomplete). A window fills in WINDOW_SAMPLES commits.
        return LagStatus.OK
    if all(entry.offset == window[-1].offset for entry in window):
        return LagStatus.STALL
    if all(later.lag >= earlier.lag for earlier, later in pairs):
        return LagStatus.WARN
    return LagStatus.OK


def worst_status(statuses: Iterable[str]) -> str | None:
    statuses = list(statuses)
    return max(statuses, key=SEVERITY.index) if statuses else None


class OffsetTimeTable:
    """When a partition's end offset reached each value, from successive samples of it, so that the
    time a record was written can be estimated without reading it (kafka-lag-exporter's lookup table).

    Flat runs, when producers are idle, keep their first and last point only: the first says when
    the offset was reached, the last that nothing came after.
    """

    def __init__(self, points: Iterable[Point] = ()) -> None:
        self.points: list[Point] = []
        for point in sorted(points, key=lambda p: p.time):
            self.add(point)

    def add(self, point: Point) -> None:
        if self.points:
            last = self.points[-1]
            if point.time <= last.time or point.offset < last.offset:
                return
            if point.offset == last.offset and len(self.points) > 1 and self.points[-2].offset == point.offset:
                self.points[-1] = point
                return
        self.points.append(point)

    def time_of_record(self, offset: int) -> tuple[float | None, LagSecondsMethod]:
        """(epoch seconds, method) at which the record at ``offset`` was written, or (None, UNAVAILABLE).

        That record exists from the moment the end offset passes it, so this looks up when the end
        offset reached ``offset + 1``.
        """
        target = offset + 1
        rising = [(left, right) for left, right in zip(self.points, self.points[1:]) if right.offset > left.offset]
        if not rising:
            return None, LagSecondsMethod.UNAVAILABLE
        for left, right in reversed(rising):
            if left.offset < target <= right.offset:
                return _on_line(left, right, target), LagSecondsMethod.INTERPOLATED
        # Before the table starts: extend the longest trend line the table holds, from its first
        # rise to its last (a trailing idle stretch says nothing about the rate before the table).
        return _on_line(rising[0][0], rising[-1][1], target), LagSecondsMethod.EXTRAPOLATED


def _on_line(left: Point, right: Point, offset: int) -> float:
    return left.time + (offset - left.offset) * (right.time - left.time) / (right.offset - left.offset)


def lag_trend(samples: Sequence[tuple[float, int]]) -> float | None:
    """Least-squares slope of the lag in messages per second over (epoch seconds, lag) samples:
    negative when the consumer is catching up."""
    if len(samples) < 2:
        return None
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_lag = sum(lag for _, lag in samples) / n
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    if not spread:
        return None
    return sum((t - mean_t) * (lag - mean_lag) for t, lag in samples) / spread


def seconds_to_catch_up(lag_messages: int, trend: float | None) -> float | None:
    """At the present trend, how long until the lag reaches zero; None if it is not shrinking."""
    if lag_messages == 0:
        return 0.0
    if trend is None or trend >= 0:
        return None
    return lag_messages / -trend


class Observation(NamedTuple):
    """What the collector read for one partition of one group. ``record_timestamp``
    is the timestamp (epoch seconds) of the record at the committed offset, or None if it was not read."""

    group: str
    topic: str
    partition: int
    committed_offset: int
    end_offset: int
    record_timestamp: float | None
    group_state: str | None


def next_commit_window(
    previous: ConsumerPartitionLag | None, observation: Observation, lag: int, now: datetime, group_active: bool
) -> CommitWindow:
    """The commit window after this sample: Kafka reports only committed offsets, not commits, so a
    sample counts as a commit when the offset moved, or when the group has members (who keep
    committing, as Burrow would see) — a group without members whose offset stands still is silent."""
    window = list(previous.commit_window) if previous else []
    moved = previous is None or previous.committed_offset != observation.committed_offset
    if moved or group_active:
        window.append([observation.committed_offset, lag, now.timestamp()])
    return window[-WINDOW_SAMPLES:]


@transaction.atomic
def record_samples(observations: Iterable[Observation], now: datetime | None = None) -> list[ConsumerPartitionLag]:
    """The one write path of lag samples: one ConsumerPartitionLag per observation, with its lag in
    seconds and its status, announced to the lag view once committed."""
    now = now or timezone.now()
    observations = list(observations)
    previous = {
        (s.group, s.topic, s.partition): s for group in {o.group for o in observations} for s in _group_latest(group)
    }
    tables = _offset_time_tables({(o.topic, o.partition) for o in observations}, now)
    rows = []
    for o in observations:
        lag = max(0, o.end_offset - o.committed_offset)
        lag_seconds, method = _lag_seconds(o, lag, tables.get((o.topic, o.partition)), now)
        before = previous.get((o.group, o.topic, o.partition))
        group_active = (o.group_state or "").lower() in ACTIVE_GROUP_STATES
        window = next_commit_window(before, o, lag, now, group_active)
        moved_at = before.offset_moved_at if before and before.committed_offset == o.committed_offset else now
        rows.append(
            ConsumerPartitionLag(
                group=o.group,
                topic=o.topic,
                partition=o.partition,
                sampled_at=now,
                committed_offset=o.committed_offset,
                end_offset=o.end_offset,
                lag_messages=lag,
                lag_seconds=lag_seconds,
                lag_seconds_method=method,
                offset_moved_at=moved_at,
                commit_window=window,
                group_state=o.group_state or "",
                status=partition_status(_entries(window), lag, now),
            )
        )
    created = ConsumerPartitionLag.objects.bulk_create(rows)
    announce_on_commit(LAG)
    return created


def _entries(window: CommitWindow) -> list[WindowEntry]:
    return [WindowEntry(offset, lag, datetime.fromtimestamp(at, tz=UTC)) for offset, lag, at in window]


def _offset_time_tables(keys: Collection[tuple[str, int]], now: datetime) -> dict[tuple[str, int], OffsetTimeTable]:
    """{(topic, partition): OffsetTimeTable} from the end offsets sampled lately, whatever the group."""
    points: dict[tuple[str, int], dict[float, int]] = {}
    recent = (
        ConsumerPartitionLag.objects.filter(topic__in={topic for topic, _ in keys}, sampled_at__gte=now - TABLE_MAX_AGE)
        .values_list("topic", "partition", "sampled_at", "end_offset")
        .distinct()
    )
    for topic, partition, sampled_at, end_offset in recent:
        if (topic, partition) in keys:
            # Every group sampled at one moment saw the same end offset: one point per moment.
            points.setdefault((topic, partition), {})[sampled_at.timestamp()] = end_offset
    return {
        key: OffsetTimeTable(Point(offset, time) for time, offset in sorted(series.items())[-TABLE_SAMPLES:])
        for key, series in points.items()
    }


def _lag_seconds(
    observation: Observation, lag: int, table: OffsetTimeTable | None, now: datetime
) -> tuple[float | None, LagSecondsMethod]:
    if lag == 0:
        return 0.0, LagSecondsMethod.CAUGHT_UP
    if observation.record_timestamp is not None:
        # Clocks differ between producer and collector; a record "from the future" is no lag.
        return max(0.0, now.timestamp() - observation.record_timestamp), LagSecondsMethod.RECORD_TIMESTAMP
    table = table or OffsetTimeTable()
    table.add(Point(observation.end_offset, now.timestamp()))
    written_at, method = table.time_of_record(observation.committed_offset)
    if written_at is None:
        return None, method
    return max(0.0, now.timestamp() - written_at), method


# --- Reading the series ---------------------------------------------------------------------------


def _group_latest(group: str) -> list[ConsumerPartitionLag]:
    """The group's newest samples, one per partition: every partition of a run shares its time."""
    latest_at = (
        ConsumerPartitionLag.objects.filter(group=group)
        .order_by("-sampled_at")
        .values_list("sampled_at", flat=True)
        .first()
    )
    if latest_at is None:
        return []
    return list(ConsumerPartitionLag.objects.filter(group=group, sampled_at=latest_at).order_by("topic", "partition"))


def _latest_run() -> dict[str, list[ConsumerPartitionLag]]:
    """Every group's samples from the newest sampling run: the groups the cluster has now, or had
    when it last answered."""
    latest_at = ConsumerPartitionLag.objects.aggregate(at=Max("sampled_at"))["at"]
    if latest_at is None:
        return {}
    by_group: dict[str, list[ConsumerPartitionLag]] = {}
    for sample in ConsumerPartitionLag.objects.filter(sampled_at=latest_at).order_by("group", "topic", "partition"):
        by_group.setdefault(sample.group, []).append(sample)
    return by_group


def _recent_lags(groups: Collection[str], latest_at: datetime) -> dict[PartitionKey, list[tuple[float, int]]]:
    """{(group, topic, partition): [(epoch seconds, lag)]} over the trend horizon, oldest first."""
    recent = (
        ConsumerPartitionLag.objects.filter(group__in=groups, sampled_at__gte=latest_at - TREND_HORIZON)
        .order_by("sampled_at")
        .values_list("group", "topic", "partition", "sampled_at", "lag_messages")
    )
    lags: dict[PartitionKey, list[tuple[float, int]]] = {}
    for group, topic, partition, sampled_at, lag in recent:
        lags.setdefault((group, topic, partition), []).append((sampled_at.timestamp(), lag))
    return lags


def lag_series(groups: Collection[str], start: datetime, end: datetime) -> dict[str, list[dict[str, Any]]]:
    """{group: [{"at", "lag_messages", "lag_seconds"}]}: the group's total lag in messages and its
    largest lag in seconds, per sample over an hour or less, else averaged per minute or per hour
    so that a week stays a few hundred points."""
    span = end - start
    bucket: F | TruncMinute | TruncHour = F("sampled_at") if span <= timedelta(hours=1) else TruncMinute("sampled_at")
    if span > timedelta(days=1):
        bucket = TruncHour("sampled_at")
    rows = (
        ConsumerPartitionLag.objects.filter(group__in=groups, sampled_at__gte=start, sampled_at__lte=end)
        .annotate(at=bucket)
        .values("group", "at")
        .annotate(total=Sum("lag_messages"), moments=Count("sampled_at", distinct=True), seconds=Max("lag_seconds"))
        .order_by("group", "at")
    )
    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        series.setdefault(row["group"], []).append(
            {"at": row["at"], "lag_messages": round(row["total"] / row["moments"]), "lag_seconds": row["seconds"]}
        )
    return series


def _partition_dict(sample: ConsumerPartitionLag, trend: float | None) -> dict[str, Any]:
    return {
        "topic": sample.topic,
        "partition": sample.partition,
        "committed_offset": sample.committed_offset,
        "end_offset": sample.end_offset,
        "lag_messages": sample.lag_messages,
        "lag_seconds": sample.lag_seconds,
        "lag_seconds_method": sample.lag_seconds_method,
        "status": sample.status,
        "commits_in_window": len(sample.commit_window),
        "trend_messages_per_second": trend,
        "seconds_to_catch_up": seconds_to_catch_up(sample.lag_messages, trend),
    }


def group_lag(
    group: str,
    latest: Sequence[ConsumerPartitionLag],
    recent_lags: Mapping[PartitionKey, Sequence[tuple[float, int]]],
) -> dict[str, Any]:
    """One group's figures from its partitions' newest samples and their recent lags."""
    partitions = [
        _partition_dict(s, lag_trend(recent_lags.get((group, s.topic, s.partition), [])[-WINDOW_SAMPLES:]))
        for s in latest
    ]
    totals: dict[float, int] = {}
    for (g, _, _), points in recent_lags.items():
        if g == group:
            for at, lag in points:
                totals[at] = totals.get(at, 0) + lag
    trend = lag_trend(sorted(totals.items())[-WINDOW_SAMPLES:])
    lag_messages = sum(p["lag_messages"] for p in partitions)
    seconds = [p["lag_seconds"] for p in partitions if p["lag_seconds"] is not None]
    return {
        "group": group,
        "status": worst_status(p["status"] for p in partitions),
        "sampled_at": latest[0].sampled_at,
        "lag_messages": lag_messages,
        "lag_seconds": max(seconds) if seconds else None,
        "trend_messages_per_second": trend,
        "seconds_to_catch_up": seconds_to_catch_up(lag_messages, trend),
        "partitions": partitions,
    }


def lag_overview(window: Window) -> list[dict[str, Any]]:
    """Every group of the newest sampling run: its latest figures, and its series over ``window``."""
    latest = _latest_run()
    if not latest:
        return []
    latest_at = next(iter(latest.values()))[0].sampled_at
    recent_lags = _recent_lags(list(latest), latest_at)
    series = lag_series(list(latest), window.since, window.until)
    return [
        {**group_lag(group, samples, recent_lags), "series": series.get(group, [])}
        for group, samples in sorted(latest.items())
    ]


def latest_for_group(group: str) -> dict[str, Any] | None:
    """How far behind ``group`` is now, or None if it was never sampled: {"group", "status",
    "sampled_at", "lag_messages", "lag_seconds", "trend_messages_per_second", "seconds_to_catch_up",
    "partitions"}. /api/ingest/ reports our own consumer (KAFKA_CONSUMER_GROUP) with it."""
    latest = _group_latest(group)
    if not latest:
        return None
    return group_lag(group, latest, _recent_lags([group], latest[0].sampled_at))
