"""Consumer lag: Burrow's status rules, lag in seconds, trend and time to catch up.

``record_samples`` turns what the collector read from Kafka into ConsumerPartitionLag rows: each row
carries its commit window forward to the next sample, and recent rows' end offsets make the
offset→time table. The functions above it are pure and take plain values.
"""

from collections import namedtuple
from datetime import UTC, datetime, timedelta

from django.db.models import Max
from django.utils import timezone

from topology.models import ConsumerPartitionLag, LagSecondsMethod, LagStatus

# Burrow's default window: the last 10 commits of a partition.
WINDOW_SAMPLES = 10
# How far back end-offset samples feed the offset→time table (kafka-lag-exporter keeps 60 points).
TABLE_SAMPLES = 60
TABLE_MAX_AGE = timedelta(minutes=15)
# The series latest_for_group returns, from which the group's trend is taken.
TREND_SERIES = timedelta(minutes=15)
# A group in one of these states has members, and members commit: Burrow would see their commits.
ACTIVE_GROUP_STATES = {"stable", "preparingrebalance", "completingrebalance", "assigning", "reconciling"}

SEVERITY = [LagStatus.OK, LagStatus.WARN, LagStatus.STOP, LagStatus.STALL, LagStatus.REWIND]

WindowEntry = namedtuple("WindowEntry", "offset lag at")
Point = namedtuple("Point", "offset time")


def partition_status(window, current_lag, now):
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
    pairs = list(zip(window, window[1:]))
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


def worst_status(statuses):
    statuses = list(statuses)
    return max(statuses, key=SEVERITY.index) if statuses else None


class OffsetTimeTable:
    """When a partition's end offset reached each value, from successive samples of it, so that the
    time a record was written can be estimated without reading it (kafka-lag-exporter's lookup table).

    Flat runs, when producers are idle, keep their first and last point only: the first says when
    the offset was reached, the last that nothing came after.
    """

    def __init__(self, points=()):
        self.points = []
        for point in sorted(points, key=lambda p: p.time):
            self.add(point)

    def add(self, point):
        if self.points:
            last = self.points[-1]
            if point.time <= last.time or point.offset < last.offset:
                return
            if (
                point.offset == last.offset
                and len(self.points) > 1
                and self.points[-2].offset == point.offset
            ):
                self.points[-1] = point
                return
        self.points.append(point)

    def time_of_record(self, offset):
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
        # Before the table starts: extend the longest trend line the table holds.
        first, last = self.points[0], self.points[-1]
        if last.offset == first.offset:
            return None, LagSecondsMethod.UNAVAILABLE
        return _on_line(first, last, target), LagSecondsMethod.EXTRAPOLATED


def _on_line(left, right, offset):
    return left.time + (offset - left.offset) * (right.time - left.time) / (right.offset - left.offset)


def lag_trend(samples):
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


def seconds_to_catch_up(lag_messages, trend):
    """At the present trend, how long until the lag reaches zero; None if it is not shrinking."""
    if lag_messages == 0:
        return 0.0
    if trend is None or trend >= 0:
        return None
    return lag_messages / -trend


Observation = namedtuple(
    "Observation", "group topic partition committed_offset end_offset record_timestamp group_state"
)
Observation.__doc__ = """What the collector read for one partition of one group. ``record_timestamp``
is the timestamp (epoch seconds) of the record at the committed offset, or None if it was not read."""


def next_commit_window(previous, observation, lag, now, group_active):
    """The commit window after this sample: Kafka reports only committed offsets, not commits, so a
    sample counts as a commit when the offset moved, or when the group has members (who keep
    committing, as Burrow would see) — a group without members whose offset stands still is silent."""
    window = list(previous.commit_window) if previous else []
    moved = previous is None or previous.committed_offset != observation.committed_offset
    if moved or group_active:
        window.append([observation.committed_offset, lag, now.timestamp()])
    return window[-WINDOW_SAMPLES:]


def record_samples(observations, now=None):
    """Stores one ConsumerPartitionLag per observation, with its lag in seconds and its status."""
    now = now or timezone.now()
    observations = list(observations)
    previous = {(s.group, s.topic, s.partition): s for s in _latest_samples({o.group for o in observations})}
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
    return ConsumerPartitionLag.objects.bulk_create(rows)


def _entries(window):
    return [WindowEntry(offset, lag, datetime.fromtimestamp(at, tz=UTC)) for offset, lag, at in window]


def _offset_time_tables(keys, now):
    """{(topic, partition): OffsetTimeTable} from the end offsets sampled lately, whatever the group."""
    points = {}
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


def _lag_seconds(observation, lag, table, now):
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


def _latest_samples(groups=None):
    """The newest sample of every partition (of the given groups)."""
    samples = ConsumerPartitionLag.objects.all()
    if groups is not None:
        samples = samples.filter(group__in=groups)
    newest = samples.values("group").annotate(at=Max("sampled_at"))
    latest = []
    for row in newest:
        latest.extend(samples.filter(group=row["group"], sampled_at=row["at"]).order_by("topic", "partition"))
    return latest


def _partition_dict(sample, trend):
    return {
        "topic": sample.topic,
        "partition": sample.partition,
        "committed_offset": sample.committed_offset,
        "end_offset": sample.end_offset,
        "lag_messages": sample.lag_messages,
        "lag_seconds": sample.lag_seconds,
        "lag_seconds_method": sample.lag_seconds_method,
        "status": sample.status,
        "trend_messages_per_second": trend,
        "seconds_to_catch_up": seconds_to_catch_up(sample.lag_messages, trend),
    }


def group_lag(group, latest, series):
    """One group's figures from its partitions' newest samples and its (oldest first) series."""
    by_partition = {}
    for sample in series:
        by_partition.setdefault((sample.topic, sample.partition), []).append(
            (sample.sampled_at.timestamp(), sample.lag_messages)
        )
    partitions = [
        _partition_dict(s, lag_trend(by_partition.get((s.topic, s.partition), [])[-WINDOW_SAMPLES:])) for s in latest
    ]
    totals = {}
    for sample in series:
        total = totals.setdefault(sample.sampled_at, {"lag_messages": 0, "lag_seconds": None})
        total["lag_messages"] += sample.lag_messages
        if sample.lag_seconds is not None:
            total["lag_seconds"] = max(total["lag_seconds"] or 0.0, sample.lag_seconds)
    group_points = [(at.timestamp(), t["lag_messages"]) for at, t in sorted(totals.items())][-WINDOW_SAMPLES:]
    trend = lag_trend(group_points)
    lag_messages = sum(p["lag_messages"] for p in partitions)
    seconds = [p["lag_seconds"] for p in partitions if p["lag_seconds"] is not None]
    return {
        "group": group,
        "status": worst_status(p["status"] for p in partitions),
        "sampled_at": latest[0].sampled_at if latest else None,
        "lag_messages": lag_messages,
        "lag_seconds": max(seconds) if seconds else None,
        "trend_messages_per_second": trend,
        "seconds_to_catch_up": seconds_to_catch_up(lag_messages, trend),
        "partitions": partitions,
        "series": [{"at": at, **t} for at, t in sorted(totals.items())],
    }


def lag_overview(minutes=15, now=None):
    """Every sampled group's latest figures, with its series over the last ``minutes``."""
    now = now or timezone.now()
    latest = {}
    for sample in _latest_samples():
        latest.setdefault(sample.group, []).append(sample)
    series = {}
    recent = ConsumerPartitionLag.objects.filter(group__in=latest, sampled_at__gte=now - timedelta(minutes=minutes))
    for sample in recent.order_by("sampled_at", "topic", "partition"):
        series.setdefault(sample.group, []).append(sample)
    return [group_lag(group, latest[group], series.get(group, [])) for group in sorted(latest)]


def latest_for_group(group):
    """How far behind ``group`` is now: {"group", "status", "sampled_at", "lag_messages",
    "lag_seconds", ...}, or None if it was never sampled. /api/ingest/ reports our own consumer so."""
    latest = _latest_samples([group])
    if not latest:
        return None
    recent = ConsumerPartitionLag.objects.filter(
        group=group, sampled_at__gte=latest[0].sampled_at - TREND_SERIES
    ).order_by("sampled_at", "topic", "partition")
    return group_lag(group, latest, list(recent))
