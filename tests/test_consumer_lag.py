"""Burrow's rules, the offset→time table, trend and catch-up time, and how samples are stored."""

from datetime import timedelta

import pytest
from django.utils import timezone

from topology.consumer_lag import (
    Observation,
    OffsetTimeTable,
    Point,
    WindowEntry,
    group_lag,
    lag_overview,
    lag_trend,
    latest_for_group,
    partition_status,
    record_samples,
    seconds_to_catch_up,
    worst_status,
)
from topology.models import ConsumerPartitionLag
from topology.window import Window

T0 = timezone.now().replace(microsecond=0)


def status(commits, silent_for=0, current_lag=None, step=5):
    """Burrow's status of commits (offset, lag) made every ``step`` seconds, judged ``silent_for``
    seconds after the last one."""
    n = len(commits)
    window = [
        WindowEntry(offset, lag, T0 - timedelta(seconds=step * (n - 1 - i))) for i, (offset, lag) in enumerate(commits)
    ]
    lag = commits[-1][1] if current_lag is None else current_lag
    return partition_status(window, lag, T0 + timedelta(seconds=silent_for))


# --- Burrow's rules, in Burrow's order ------------------------------------------------------------


def test_rule_1_zero_lag_is_ok_even_without_commits_for_ages():
    # An idle topic with a caught-up consumer: Burrow's false STOP, avoided.
    assert status([(100, 0)] * 10, silent_for=3600) == "OK"


def test_rule_2_no_commit_for_longer_than_the_window_is_stop():
    assert status([(90, 5), (100, 10), (110, 20)], silent_for=11) == "STOP"


def test_rule_2_is_not_stop_while_commits_are_recent():
    assert status([(90, 5), (100, 3), (110, 20)], silent_for=9) == "OK"


def test_rule_3_any_zero_lag_in_the_window_is_ok():
    assert status([(100, 0), (100, 10), (100, 20)]) == "OK"


def test_rule_4_an_offset_that_went_back_is_rewind():
    assert status([(100, 5), (120, 5), (90, 40)]) == "REWIND"


def test_rule_5_offsets_that_never_move_are_stall():
    assert status([(100, 5)] * 9 + [(100, 9)]) == "STALL"


def test_rule_6_moving_offsets_with_a_lag_that_never_decreased_is_warn():
    assert status([(100 + 10 * i, 5 + i // 2) for i in range(10)]) == "WARN"


def test_rule_7_otherwise_ok():
    assert status([(100 + 10 * i, 5 + i % 3) for i in range(10)]) == "OK"


def test_stall_and_warn_wait_for_a_full_window():
    assert status([(100, 5), (100, 5), (100, 9)]) == "OK"
    assert status([(100, 5), (110, 5), (120, 8)]) == "OK"


def test_stall_waits_for_ten_commits():
    assert status([(100, 5)] * 8 + [(100, 9)]) == "OK"
    assert status([(100, 5)] * 9 + [(100, 9)]) == "STALL"


def test_warn_waits_for_ten_commits():
    assert status([(100 + 10 * i, 5 + i) for i in range(9)]) == "OK"
    assert status([(100 + 10 * i, 5 + i) for i in range(10)]) == "WARN"


def test_rewind_is_judged_at_once():
    assert status([(100, 5), (90, 15)]) == "REWIND"


def test_a_single_fresh_commit_is_not_judged_beyond_its_lag():
    assert status([(100, 50)]) == "OK"


def test_a_single_commit_followed_by_silence_is_stop():
    # A group that died before sampling began has one commit in its window, ever.
    assert status([(100, 50)], silent_for=5) == "STOP"


def test_the_group_takes_the_worst_status_in_burrows_order():
    assert worst_status(["OK", "WARN", "OK"]) == "WARN"
    assert worst_status(["WARN", "STOP", "STALL"]) == "STALL"
    assert worst_status(["STALL", "REWIND"]) == "REWIND"
    assert worst_status([]) is None


# --- Offset → time interpolation ------------------------------------------------------------------


def test_interpolation_finds_when_a_record_was_written():
    # 10 records a second: record 149 was written when the end offset reached 150, at t=15.
    table = OffsetTimeTable([Point(0, 0.0), Point(100, 10.0), Point(200, 20.0)])
    assert table.time_of_record(149) == (pytest.approx(15.0), "interpolated")


def test_idle_producers_do_not_make_old_records_look_new():
    table = OffsetTimeTable([Point(100, 0.0), Point(200, 10.0)] + [Point(200, 10.0 + 10 * i) for i in range(1, 30)])
    assert len(table.points) == 3  # the flat run kept as its first and last point
    written_at, method = table.time_of_record(149)
    assert (written_at, method) == (pytest.approx(5.0), "interpolated")


def test_an_offset_older_than_the_table_is_extrapolated():
    table = OffsetTimeTable([Point(1000, 100.0), Point(1100, 110.0), Point(1200, 120.0)])
    assert table.time_of_record(499) == (pytest.approx(50.0), "extrapolated")


def test_extrapolation_ignores_a_trailing_idle_stretch():
    table = OffsetTimeTable([Point(1000, 100.0), Point(1200, 120.0), Point(1200, 500.0)])
    assert table.time_of_record(499) == (pytest.approx(50.0), "extrapolated")


def test_a_table_without_movement_gives_no_estimate():
    assert OffsetTimeTable([Point(5, 1.0), Point(5, 2.0)]).time_of_record(2) == (None, "unavailable")
    assert OffsetTimeTable([Point(5, 1.0)]).time_of_record(2) == (None, "unavailable")


def test_a_record_written_before_an_idle_stretch_dates_from_before_it():
    # Offset 19 exists once the end offset reached 20, at t=10; producers then idled until t=100.
    table = OffsetTimeTable([Point(10, 0.0), Point(20, 10.0), Point(20, 100.0), Point(30, 110.0)])
    assert table.time_of_record(19) == (pytest.approx(10.0), "interpolated")


def test_out_of_order_simultaneous_and_decreasing_points_are_ignored():
    table = OffsetTimeTable()
    for point in (Point(10, 1.0), Point(20, 2.0), Point(15, 3.0), Point(30, 1.5), Point(40, 2.0)):
        table.add(point)
    assert table.points == [Point(10, 1.0), Point(20, 2.0)]


# --- Trend and time to catch up -------------------------------------------------------------------


def test_trend_and_time_to_catch_up():
    samples = [(float(t), 1000 - 50 * t) for t in range(10)]  # shrinking by 50 messages a second
    trend = lag_trend(samples)
    assert trend == pytest.approx(-50)
    assert seconds_to_catch_up(550, trend) == pytest.approx(11)
    assert seconds_to_catch_up(550, 5.0) is None
    assert seconds_to_catch_up(0, None) == 0.0
    assert lag_trend([(1.0, 5)]) is None


def test_two_samples_are_enough_for_a_trend():
    assert lag_trend([(0.0, 100), (10.0, 50)]) == pytest.approx(-5)


def lag_sample(partition, lag):
    return ConsumerPartitionLag(
        group="billing",
        topic="orders",
        partition=partition,
        sampled_at=T0,
        committed_offset=0,
        end_offset=lag,
        lag_messages=lag,
        lag_seconds=None,
        lag_seconds_method="unavailable",
        offset_moved_at=T0,
        commit_window=[],
        status="OK",
    )


def test_each_partition_and_the_group_catch_up_at_their_own_trend():
    # Partition 0 sheds 5 messages a second, partition 1 one: the group, summed, sheds 6.
    recent = {("billing", "orders", 0): [(0.0, 100), (10.0, 50)], ("billing", "orders", 1): [(0.0, 40), (10.0, 30)]}

    lag = group_lag("billing", [lag_sample(0, 50), lag_sample(1, 30)], recent)

    assert [p["seconds_to_catch_up"] for p in lag["partitions"]] == [pytest.approx(10), pytest.approx(30)]
    assert lag["trend_messages_per_second"] == pytest.approx(-6)
    assert lag["seconds_to_catch_up"] == pytest.approx(80 / 6)


# --- Stored samples --------------------------------------------------------------------------------


def observation(committed, end, record_timestamp=None, group_state="Empty", group="billing", partition=0):
    return Observation(group, "orders", partition, committed, end, record_timestamp, group_state)


@pytest.mark.django_db
def test_lag_seconds_comes_from_the_record_at_the_committed_offset():
    [sample] = record_samples([observation(90, 100, record_timestamp=T0.timestamp() - 42)], now=T0)
    assert (sample.lag_messages, sample.lag_seconds, sample.lag_seconds_method) == (
        10,
        pytest.approx(42),
        "record_timestamp",
    )


@pytest.mark.django_db
def test_an_unreadable_record_falls_back_to_the_end_offset_table():
    # The end offset grew by 10 a second for 10 s; then the record at offset 49 could not be read.
    for second in range(10):
        record_samples([observation(0, 10 * second, record_timestamp=1.0)], now=T0 + timedelta(seconds=second))
    [sample] = record_samples([observation(49, 100)], now=T0 + timedelta(seconds=10))
    # Offset 49 was written when the end offset reached 50, at T0+5 s: 5 s ago.
    assert (sample.lag_seconds, sample.lag_seconds_method) == (pytest.approx(5.0), "interpolated")


@pytest.mark.django_db
def test_end_offsets_sampled_over_fifteen_minutes_ago_do_not_date_a_record():
    record_samples([observation(0, 0)], now=T0 - timedelta(minutes=20))
    record_samples([observation(0, 100)], now=T0 - timedelta(minutes=16))
    [sample] = record_samples([observation(49, 200)], now=T0)
    assert (sample.lag_seconds, sample.lag_seconds_method) == (None, "unavailable")


@pytest.mark.django_db
def test_a_caught_up_partition_has_no_lag_in_seconds():
    [sample] = record_samples([observation(100, 100)], now=T0)
    assert (sample.lag_seconds, sample.lag_seconds_method, sample.status) == (0.0, "caught_up", "OK")


@pytest.mark.django_db
def test_a_group_without_members_whose_offset_stopped_is_stop_and_one_with_members_is_stall():
    for second in range(0, 30, 3):
        now = T0 + timedelta(seconds=second)
        record_samples(
            [
                observation(50, 60 + second, group="dead", group_state="Empty"),
                observation(50, 60 + second, group="stuck", group_state="Stable"),
            ],
            now=now,
        )
    latest = {s.group: s.status for s in ConsumerPartitionLag.objects.filter(sampled_at=T0 + timedelta(seconds=27))}
    assert latest == {"dead": "STOP", "stuck": "STALL"}


@pytest.mark.django_db
def test_latest_for_group_sums_partitions_and_takes_the_worst_status():
    for second, (c0, c1) in enumerate([(0, 0), (10, 0), (20, 0)]):
        record_samples(
            [observation(c0, 30, partition=0), observation(c1, 30 + second * 10, partition=1)],
            now=T0 + timedelta(seconds=second * 5),
        )

    lag = latest_for_group("billing")

    assert lag["lag_messages"] == 10 + 50
    assert lag["status"] == "STOP"  # partition 1 has not moved since the first sample, 10 s ago
    assert [p["status"] for p in lag["partitions"]] == ["OK", "STOP"]
    assert latest_for_group("nobody") is None
    [overview] = lag_overview(Window.last(900, until=T0 + timedelta(seconds=10)))
    assert overview["group"] == "billing"
    assert [point["lag_messages"] for point in overview["series"]] == [60, 60, 60]


@pytest.mark.django_db
def test_long_series_are_averaged_per_minute():
    start = T0.replace(second=0)
    for second in range(0, 180, 5):
        record_samples([observation(0, second)], now=start + timedelta(seconds=second))

    [overview] = lag_overview(Window.last(24 * 3600, until=start + timedelta(seconds=180)))

    assert [point["at"] for point in overview["series"]] == [start + timedelta(minutes=m) for m in range(3)]
    assert [point["lag_messages"] for point in overview["series"]] == [
        pytest.approx(v, abs=1) for v in (27.5, 87.5, 147.5)
    ]


@pytest.mark.django_db
def test_the_series_holds_no_sample_from_before_the_window():
    for minutes_ago, lag in ((20, 1000), (10, 10), (0, 20)):
        record_samples([observation(0, lag)], now=T0 - timedelta(minutes=minutes_ago))

    [overview] = lag_overview(Window.last(900, until=T0))

    assert [point["lag_messages"] for point in overview["series"]] == [10, 20]


@pytest.mark.django_db
def test_series_over_more_than_a_day_are_averaged_per_hour():
    start = T0.replace(minute=0, second=0)
    for minutes in range(0, 120, 20):
        record_samples([observation(0, 10 + minutes // 2)], now=start + timedelta(minutes=minutes))

    [overview] = lag_overview(Window.last(2 * 86400, until=start + timedelta(hours=2)))

    assert [point["at"] for point in overview["series"]] == [start, start + timedelta(hours=1)]
    assert [point["lag_messages"] for point in overview["series"]] == [20, 50]


def least_squares_slope(points):
    n = len(points)
    mean_t, mean_lag = sum(t for t, _ in points) / n, sum(lag for _, lag in points) / n
    return sum((t - mean_t) * (lag - mean_lag) for t, lag in points) / sum((t - mean_t) ** 2 for t, _ in points)


@pytest.mark.django_db
def test_the_commit_window_holds_the_last_ten_commits_and_the_trend_the_last_ten_samples():
    # Twelve samples 5 s apart of a group with members, each a commit; the lags zigzag, so that the
    # slope over the last 10 differs from the slope over the last 9 or 11.
    lags = [400, 10, 600, 250, 280, 200, 230, 150, 180, 100, 130, 50]
    for i, lag in enumerate(lags):
        record_samples([observation(10 * i, 10 * i + lag, group_state="Stable")], now=T0 + timedelta(seconds=5 * i))

    lag = latest_for_group("billing")

    [partition] = lag["partitions"]
    assert partition["commits_in_window"] == 10
    last_ten = [((T0 + timedelta(seconds=5 * i)).timestamp(), lags[i]) for i in range(2, 12)]
    assert partition["trend_messages_per_second"] == pytest.approx(least_squares_slope(last_ten))
    assert lag["trend_messages_per_second"] == pytest.approx(least_squares_slope(last_ten))
