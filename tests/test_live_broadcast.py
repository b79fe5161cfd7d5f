"""Coalescing behind the broadcaster, on the real Redis: marks from writers, slots shared by every process.

The broadcaster is driven tick by tick, and a slot's expiry is its key's deletion, so nothing here waits
on the wall clock."""

import pytest
import redis

from dashboard.live import broadcast
from topology.changes import VIEWS, announce_on_commit

pytestmark = pytest.mark.usefixtures("redis_url")


@pytest.fixture
def broadcasts(monkeypatch):
    """The views the broadcaster decided to compute, in order (the computing itself is tested elsewhere)."""
    calls = []
    monkeypatch.setattr(broadcast, "broadcast", lambda view: calls.append(view) or [{"view": view}])
    return calls


def mark(*views):
    """What a committed write does in its own process: ``views_changed`` reaches the live layer's receiver."""
    broadcast.mark_changed(sender=None, views=frozenset(views))


def expire_slot(view):
    broadcast.redis_client().delete(broadcast.key("slot", view))


def test_a_burst_of_announcements_gives_one_broadcast_now_and_one_trailing(broadcasts):
    ticker = broadcast.Broadcaster()
    for _ in range(200):
        mark("routes")
    ticker.tick()
    assert broadcasts == ["routes"], "the leading edge broadcasts at once"
    mark("routes")
    ticker.tick()
    assert broadcasts == ["routes"], "within the interval the change waits"
    expire_slot("routes")
    ticker.tick()
    assert broadcasts == ["routes", "routes"], "the last change of the burst is broadcast when the slot frees"
    expire_slot("routes")
    ticker.tick()
    assert broadcasts == ["routes", "routes"], "nothing changed since: no more broadcasts"


@pytest.mark.parametrize(
    ("view", "interval_ms"), [("topology", 1000), ("routes", 1000), ("balancers", 5000), ("lag", 5000)]
)
def test_a_broadcast_holds_its_view_for_the_documented_interval(broadcasts, view, interval_ms):
    mark(view)
    broadcast.Broadcaster().tick()
    remaining = broadcast.redis_client().pttl(broadcast.key("slot", view))
    assert interval_ms - 200 < remaining <= interval_ms


def test_views_coalesce_separately(broadcasts):
    mark("routes", "lag")
    broadcast.Broadcaster().tick()
    assert sorted(broadcasts) == ["lag", "routes"]


def test_an_unknown_view_is_refused_where_it_is_announced():
    with pytest.raises(ValueError, match="no-such-view"):
        announce_on_commit("no-such-view")


def test_a_slot_taken_by_another_process_makes_this_one_wait(broadcasts):
    """The slot lives in Redis: a slot taken elsewhere (here: by hand) holds this broadcaster back."""
    broadcast.redis_client().set(broadcast.key("slot", "routes"), "1", px=60_000)
    mark("routes")
    broadcast.Broadcaster().tick()
    assert broadcasts == []
    expire_slot("routes")
    broadcast.Broadcaster().tick()
    assert broadcasts == ["routes"]


def test_two_broadcasters_compute_a_mark_once(broadcasts):
    mark(*VIEWS)
    first, second = broadcast.Broadcaster(), broadcast.Broadcaster()
    first.tick()
    second.tick()
    assert sorted(broadcasts) == sorted(VIEWS)


def test_marking_never_raises_and_stops_asking_a_redis_that_is_down(settings, monkeypatch):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"], "prefix": "down"},
        }
    }
    asked = []

    class DownRedis:
        def pipeline(self, transaction=True):
            asked.append(1)
            raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(broadcast, "redis_client", DownRedis)
    monkeypatch.setattr(broadcast._RedisBackoff, "until", 0.0)
    for _ in range(100):
        mark("topology")
    assert asked == [1], "after the first failure, marks are dropped without asking Redis for a while"


@pytest.mark.django_db(transaction=True)
def test_a_committed_announcement_marks_its_views_for_the_broadcaster(broadcasts):
    announce_on_commit("routes", "lag")
    broadcast.Broadcaster().tick()
    assert sorted(broadcasts) == ["lag", "routes"]
