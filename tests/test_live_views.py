"""The incremental live views (``topology.live_topology``, ``live_routes``, ``live_balancers``) against their full readings,
after random sequences of rollups written through the product's write path, late and early spans,
window slides, deleted services, new registered ones and changes of health. Run on the session's database, and on
SQLite in a subprocess when the session's is PostgreSQL, so both hold on every CI run."""

import os
import random
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.utils import timezone

from dashboard.live.protocol import plain
from topology.balancing import balancers_view
from topology.changes import ChangedRows
from topology.entry_routes import routes_view
from topology.graph import topology_view
from topology.live_balancers import LiveBalancers
from topology.live_routes import LiveRoutes
from topology.live_topology import LiveTopology
from topology.models import Instance, Service
from topology.rollup_batch import RollupBatch
from topology.window import Window

WINDOWS = (300, 900)
# Each kept view, its full reading, and its lists of records.
VIEWS = {
    "topology": (LiveTopology, topology_view, ("nodes", "edges")),
    "routes": (LiveRoutes, routes_view, ("routes",)),
    "balancers": (LiveBalancers, balancers_view, ("services",)),
}
ROOT = Path(__file__).resolve().parents[1]


def comparable(view):
    return {name: value for name, value in view.items() if name != "generated_at"}


def apply(records, changes, name):
    for record_id in changes.remove[name]:
        records.pop(record_id)
    for record in changes.upsert[name]:
        records[record["id"]] = record


def write_rollups(chance, services, instances, now):
    """One ingested batch: calls between random services and requests served by random instances, most
    in the last two minutes, some late (older minutes of the windows or before them), some ahead."""
    batch = RollupBatch()
    for _ in range(chance.randint(1, 12)):
        # Ages around 5 and 15 minutes write to the minute that is about to leave a window.
        age = chance.choice([0, 0, 0, 30, 70, 200, 300, 600, 900, 1300, -90])
        start_us = int((now - timedelta(seconds=age + chance.random() * 50)).timestamp() * 1_000_000)
        latency = chance.choice([-3.0, 1.5, 12.0, 80.0, 400.0])
        error = chance.random() < 0.2
        kind = chance.random()
        if kind < 0.5:
            source, target = chance.sample(services, 2)
            topic = chance.choice(["", "", "orders"])
            batch.add_edge(start_us, source, target, "messaging" if topic else "http", topic, latency, error)
        elif kind < 0.7:
            batch.add_route(start_us, chance.choice(services), chance.choice(["GET /", "POST /pay"]), latency, error)
        else:
            batch.add_instance(start_us, chance.choice(instances), chance.choice([None, services[0]]), latency, error)
    with transaction.atomic():
        batch.save()
    return batch.changed_rows


def check_agreement(keepers, held, now):
    for name, keeper in keepers.items():
        _, full_reading, lists = VIEWS[name]
        for seconds in WINDOWS:
            full = comparable(full_reading(Window(seconds, now)))
            assert comparable(keeper.view(seconds, now)) == full, f"{name}, window {seconds} at {now}"
            # The deltas the keeper returned turn what a client held into the same records.
            for records in lists:
                assert held[name][seconds][records] == {record["id"]: record for record in full[records]}


@pytest.mark.django_db
@pytest.mark.parametrize("seed", range(4))
def test_incremental_and_full_readings_agree_after_random_writes_slides_and_deletions(seed):
    chance = random.Random(seed)
    services = [Service.objects.create(name=f"svc-{seed}-{i}", in_traces=True).id for i in range(7)]
    now = timezone.now().replace(second=20, microsecond=0) - timedelta(minutes=40)
    # Seen long before the windows: their owed share does not move with the clock.
    instances = [
        Instance.objects.create(
            service_id=service,
            identity=f"10.0.{service % 250}.{k}:80",
            in_traces=True,
            first_seen=now - timedelta(hours=3),
        ).id
        for service in services
        for k in range(2)
    ]
    keepers = {name: keeper(WINDOWS) for name, (keeper, _, _) in VIEWS.items()}
    held = {name: {seconds: {records: {} for records in VIEWS[name][2]} for seconds in WINDOWS} for name in VIEWS}

    def update(name, changes):
        for seconds, record_changes in changes.items():
            for records in VIEWS[name][2]:
                apply(held[name][seconds][records], record_changes, records)

    for name, keeper in keepers.items():
        update(name, keeper.rebuild(now))
    check_agreement(keepers, held, now)
    for step in range(40):
        operation = chance.choices(
            ["rollups", "slide", "rollups and slide", "delete", "register", "health"], weights=[8, 4, 4, 1, 1, 2]
        )[0]
        rows = ChangedRows()
        if operation == "rollups":
            rows = write_rollups(chance, services, instances, now)
        elif operation == "rollups and slide":
            # Written before the minute turned, taken with it: late rows for the minute that leaves too.
            rows = write_rollups(chance, services, instances, now)
            now += timedelta(seconds=chance.choice([40, 61, 130]))
        elif operation == "slide":
            now += timedelta(seconds=chance.choice([5, 10, 40, 61, 130, 400]))
        elif operation == "delete" and len(services) > 3:
            gone = services.pop(chance.randrange(1, len(services)))
            Service.objects.filter(id=gone).delete()
            instances = list(Instance.objects.filter(id__in=instances).values_list("id", flat=True))
            rows = ChangedRows(services=frozenset({gone}))
        elif operation == "health":
            # Consul's answer for one instance, as the reconcile writes it and announces its service.
            instance = Instance.objects.get(id=chance.choice(instances))
            instance.in_consul, instance.health = True, chance.choice(["passing", "warning", "critical"])
            instance.save(update_fields=["in_consul", "health"])
            rows = ChangedRows(services=frozenset({instance.service_id}))
        elif operation == "register":
            new = Service.objects.create(name=f"registered-{seed}-{step}", in_consul=True)
            rows = ChangedRows(services=frozenset({new.id}))
        for name, keeper in keepers.items():
            update(name, keeper.update(now, rows))
        check_agreement(keepers, held, now)


@pytest.mark.skipif(os.environ.get("LIVE_TOPOLOGY_SUBPROCESS") == "1", reason="already the SQLite run of this file")
@pytest.mark.django_db
def test_incremental_and_full_readings_agree_on_sqlite_too(tmp_path):
    if connection.vendor == "sqlite":
        pytest.skip("the session's database is SQLite: the test above is the SQLite run")
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'live.sqlite3'}",
        "LIVE_TOPOLOGY_SUBPROCESS": "1",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_live_views.py::test_incremental_and_full_readings_agree_after_random_writes_slides_and_deletions",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "4 passed" in result.stdout


@pytest.mark.django_db(transaction=True)
def test_a_broadcast_reads_the_rows_writes_name_and_everything_when_a_write_names_none(redis_url):
    from django.db.models import F

    from dashboard.live import broadcast
    from tests import seed
    from topology.changes import TOPOLOGY, announce_on_commit
    from topology.models import EdgeRollup

    seed.seed_mesh(traces=1)
    row = EdgeRollup.objects.select_related("source", "target").latest("minute")
    # Three minutes back, among the window's older minutes: the turn of a minute during the test does
    # not re-read it, as it re-reads the two newest.
    EdgeRollup.objects.filter(pk=row.pk).update(minute=row.minute - timedelta(minutes=3))
    broadcast.watch(TOPOLOGY, 300)
    [first] = broadcast.broadcast(TOPOLOGY)
    edge_id = f"{row.source.name}->{row.target.name}/{row.protocol}/{row.topic}"
    before = broadcast._load_state(TOPOLOGY, 300)["data"]
    count = next(edge["count"] for edge in before["edges"] if edge["id"] == edge_id)

    # A change that no write named: the kept view does not read it...
    EdgeRollup.objects.filter(pk=row.pk).update(count=F("count") + 1000)
    announce_on_commit(TOPOLOGY, rows=ChangedRows())
    [unnamed] = broadcast.broadcast(TOPOLOGY)
    assert unnamed["seq"] == first["seq"] + 1 and "edges" not in unnamed["changes"]
    # ...a write naming its row makes it read that row's edge, and only that edge...
    announce_on_commit(TOPOLOGY, rows=ChangedRows(edge_rollups=frozenset({row.pk})))
    [named] = broadcast.broadcast(TOPOLOGY)
    assert [(edge["id"], edge["count"]) for edge in named["changes"]["edges"]["upsert"]] == [(edge_id, count + 1000)]
    # ...and a write that names nothing (retention, a merge) makes it read everything afresh.
    EdgeRollup.objects.filter(pk=row.pk).update(count=F("count") + 1000)
    announce_on_commit(TOPOLOGY)
    [afresh] = broadcast.broadcast(TOPOLOGY)
    assert [(edge["id"], edge["count"]) for edge in afresh["changes"]["edges"]["upsert"]] == [(edge_id, count + 2000)]
    stored = broadcast._load_state(TOPOLOGY, 300)
    assert stored["seq"] == afresh["seq"]
    assert stored["data"]["edges"] == plain(topology_view(Window(300, timezone.now())))["edges"]


def kept_topology_agrees(broadcast, seconds):
    stored = broadcast._load_state("topology", seconds)
    assert stored["data"]["edges"] == plain(topology_view(Window(seconds, timezone.now())))["edges"]
    assert stored["data"]["nodes"] == plain(topology_view(Window(seconds, timezone.now())))["nodes"]


def write_one_call(source, target):
    """One call counted through the write path ingestion uses, its rows named."""
    from topology.changes import TRAFFIC_VIEWS, announce_on_commit

    batch = RollupBatch()
    batch.add_edge(int(timezone.now().timestamp() * 1_000_000), source, target, "http", "", 5.0, False)
    with transaction.atomic():
        batch.save()
        announce_on_commit(*TRAFFIC_VIEWS, rows=batch.changed_rows)


@pytest.mark.django_db(transaction=True)
def test_a_window_nobody_watched_for_a_while_is_stored_whole_when_watched_again(redis_url):
    from dashboard.live import broadcast

    a, b, c = (Service.objects.create(name=name, in_traces=True).id for name in ("a", "b", "c"))
    for seconds in (300, 900):
        broadcast.watch("topology", seconds)
    write_one_call(a, b)
    broadcast.broadcast("topology")
    broadcast.redis_client().delete(broadcast.key("watch", "topology", 900))
    write_one_call(a, b)
    assert [message["window"] for message in broadcast.broadcast("topology")] == [300]
    broadcast.watch("topology", 900)
    write_one_call(b, c)
    broadcast.broadcast("topology")
    kept_topology_agrees(broadcast, 900)
    kept_topology_agrees(broadcast, 300)


@pytest.mark.django_db(transaction=True)
def test_two_broadcasters_taking_turns_never_send_one_anothers_view_back(redis_url):
    from dashboard.live import broadcast

    a, b, c = (Service.objects.create(name=name, in_traces=True).id for name in ("a", "b", "c"))
    broadcast.watch("topology", 300)
    write_one_call(a, b)
    broadcast.broadcast("topology")
    first = dict(broadcast._kept)  # what one process keeps; the other starts with nothing
    broadcast._kept.clear()
    write_one_call(a, b)
    broadcast.broadcast("topology")
    kept_topology_agrees(broadcast, 300)
    broadcast._kept.clear()
    broadcast._kept.update(first)  # the first process's turn again: it did not see the second call
    write_one_call(b, c)
    [message] = broadcast.broadcast("topology")
    kept_topology_agrees(broadcast, 300)
    assert all(edge["count"] == 2 for edge in message["changes"]["edges"]["upsert"] if edge["id"] == "a->b/http/")
