"""What the README and docs/consul.md say beat offers, and on which queue: dashboard/celery.py."""

from dashboard.celery import app


def entry(task):
    [found] = [entry for entry in app.conf.beat_schedule.values() if entry["task"] == task]
    return found


def test_beat_offers_a_span_consumer_run_every_second_that_expires_unclaimed():
    spans = entry("collectors.consume_spans")
    assert spans["schedule"] == 1.0
    assert spans["options"]["expires"] == 2


def test_beat_offers_a_route_hop_settling_run_every_15_seconds_as_for_unpaired_spans():
    hops = entry("collectors.settle_route_hops")
    unpaired = entry("collectors.resolve_unpaired_spans")
    assert (hops["schedule"], hops["options"]["expires"]) == (15.0, 15)
    assert (unpaired["schedule"], unpaired["options"]["expires"]) == (15.0, 15)


def test_consumer_lag_is_sampled_every_five_seconds():
    assert entry("collectors.sample_consumer_lag")["schedule"] == 5.0


def test_beat_offers_a_consul_sync_every_two_seconds_expiring_after_two():
    consul = entry("collectors.sync_consul")
    assert (consul["schedule"], consul["options"]["expires"]) == (2.0, 2)


def test_the_span_consumer_has_the_spans_queue_and_every_other_collector_the_default_one():
    assert {queue.name for queue in app.conf.task_queues} == {"celery", "spans"}
    assert app.conf.task_routes == {"collectors.consume_spans": {"queue": "spans"}}
