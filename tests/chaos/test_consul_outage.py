"""Issue 14, item 2: Consul fails in each of its ways in a row (5xx, gone, slower than the blocking
wait) while its catalog changes, then answers again.

tests/test_consul_collector.py holds each failure on its own, one sync at a time, with the backoff
skipped by hand. Here they come one after the other, in real time, with ``sync_consul`` run as beat
runs it (over and over, whatever the backoff), so what is held is the sequence: the datacenter stays
stale through all three with each one's reason, the backoff doubles across them and Consul is asked
only when it has passed, the stored services and instances do not move while stale (although
Consul's catalog does), and the first round after the outage brings every change in.

The backoff (production: 5 s doubling to 60 s) and the request timeout (10 s) are scaled down so that
each third of OUTAGE_SECONDS sees several attempts.
"""

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from collectors import consul as consul_collector
from collectors import consul_client
from collectors.consul import sync_consul
from demo.embedded import free_port
from tests.chaos.harness import OUTAGE_SECONDS, wait_for
from tests.consul_server import ConsulTestServer
from topology.models import Instance, Service, SourceStatus
from topology.models.services import ConsulDatacenter

pytestmark = [pytest.mark.chaos, pytest.mark.django_db]

BLOCKING_WAIT_SECONDS = 1
REQUEST_TIMEOUT_SECONDS = 1.0  # a blocking query gives up after timeout + wait + wait/16: 2.06 s
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 1.5
BEAT_SECONDS = 0.1  # beat offers a run every 2 s; more often here, to catch a run that ignores the backoff
PHASE_SECONDS = OUTAGE_SECONDS / 3


@pytest.fixture
def consul(settings, monkeypatch):
    monkeypatch.setattr(consul_client, "REQUEST_TIMEOUT_SECONDS", REQUEST_TIMEOUT_SECONDS)
    monkeypatch.setattr(consul_collector, "BACKOFF_FIRST_SECONDS", BACKOFF_FIRST_SECONDS)
    monkeypatch.setattr(consul_collector, "BACKOFF_MAX_SECONDS", BACKOFF_MAX_SECONDS)
    server = ConsulTestServer()
    # A port of our choosing, below the ephemeral range: the server stops and starts again on it, and
    # an ephemeral port could be taken meanwhile by some outgoing connection (demo/embedded.py).
    server.port = free_port()
    with server:
        settings.CONSUL_HTTP_ADDR = server.url
        settings.CONSUL_HTTP_TOKEN = ""
        settings.CONSUL_DATACENTERS = ["dc1"]
        settings.CONSUL_BLOCKING_WAIT_SECONDS = BLOCKING_WAIT_SECONDS
        yield server


def register_web(consul, service_id, port, status="passing", weights=None):
    consul.register(
        "web",
        service_id,
        address="10.1.0.1",
        port=port,
        weights=weights,
        checks=[("http", status, f"HTTP GET: {'200 OK' if status == 'passing' else '503'}")],
    )


def stored_rows():
    return (
        list(Service.objects.order_by("name").values()),
        list(Instance.objects.order_by("identity").values()),
    )


def status():
    return SourceStatus.objects.get(name="consul:dc1")


def retry_after():
    row = ConsulDatacenter.objects.filter(name="dc1").first()
    return row.retry_after if row else None


@dataclass
class Run:
    """One sync_consul run: when, the backoff it found, the failure count before and after it, and
    until when it set the next backoff."""

    phase: str
    started: datetime
    ended: datetime
    due: datetime | None
    failures_before: int
    failures_after: int
    due_next: datetime | None

    @property
    def attempted(self):
        """It asked Consul, and failed."""
        return self.failures_after > self.failures_before


class Beat:
    """Runs sync_consul again and again, recording what each run did."""

    def __init__(self):
        self.runs: list[Run] = []

    def run_for(self, phase, seconds, check):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.run_once(phase, check)
            time.sleep(BEAT_SECONDS)  # beat's period, not a synchronisation

    def run_once(self, phase, check=None):
        before = SourceStatus.objects.filter(name="consul:dc1").first()
        due = retry_after()
        started = timezone.now()
        sync_consul()
        ended = timezone.now()
        after = status()
        run = Run(
            phase=phase,
            started=started,
            ended=ended,
            due=due,
            failures_before=before.consecutive_failures if before else 0,
            failures_after=after.consecutive_failures,
            due_next=retry_after(),
        )
        self.runs.append(run)
        if check is not None:
            check(after, run.attempted)
        return after


def test_consul_failing_three_ways_in_a_row_keeps_the_last_state_stale_backs_off_and_recovers(consul):
    register_web(consul, "web-1", 8080)
    register_web(consul, "web-2", 8081)
    register_web(consul, "web-3", 8082, weights={"Passing": 1, "Warning": 1})
    consul.register("db", "db-1", port=5432, node="db-node", node_address="10.2.0.9")
    beat = Beat()
    assert not beat.run_once("healthy").is_stale
    before_outage = stored_rows()
    assert len(before_outage[1]) == 4

    # While Consul fails, its catalog moves on: none of this may reach the rows until it answers again.
    consul.deregister("web-2")
    consul.set_check("web-1", "critical", "HTTP GET: 503")
    register_web(consul, "web-3", 8082, weights={"Passing": 7, "Warning": 2})
    reasons = {}

    def unchanged_and_stale(phase):
        def check(after, attempted):
            assert after.is_stale, f"{phase}: a failing Consul must leave consul:dc1 stale"
            assert stored_rows() == before_outage, f"{phase}: rows changed while Consul was stale"
            if attempted:
                reasons.setdefault(phase, set()).add(after.stale_reason)

        return check

    outage_started = time.monotonic()
    consul.fail_with(500, "rpc error making call: No cluster leader")
    beat.run_for("500", PHASE_SECONDS, unchanged_and_stale("500"))
    consul.stop()
    beat.run_for("stopped", PHASE_SECONDS, unchanged_and_stale("stopped"))
    consul.start()  # on the same port, but every answer now comes after PHASE_SECONDS
    consul.hang(PHASE_SECONDS)
    beat.run_for("slow", PHASE_SECONDS, unchanged_and_stale("slow"))
    outage = time.monotonic() - outage_started

    consul.recover()
    recovered_at = time.monotonic()
    wait_for(lambda: not beat.run_once("recovered").is_stale, 30, "consul:dc1 fresh again")
    recovery = time.monotonic() - recovered_at

    failing_runs = [run for run in beat.runs if run.phase in ("500", "stopped", "slow")]
    attempts = [run for run in failing_runs if run.attempted]
    skipped = [run for run in failing_runs if not run.attempted]
    print(
        f"[consul] outage {outage:.1f} s (500, then stopped, then answering after {PHASE_SECONDS:.0f} s, "
        f"{PHASE_SECONDS:.0f} s each): {len(failing_runs)} runs, {len(attempts)} asked Consul and failed, "
        f"{len(skipped)} waited out the backoff; rows unchanged throughout"
    )
    for phase in ("500", "stopped", "slow"):
        for reason in sorted(reasons[phase]):
            print(f"[consul] {phase}: {reason[:160]}")
    print(f"[consul] backoffs set (s): {[round((run.due_next - run.ended).total_seconds(), 2) for run in attempts]}")
    print(f"[consul] fresh again {recovery:.1f} s after Consul answered; its changes applied")

    # Every failure was an attempt the backoff allowed, and set the next backoff, doubling to its cap.
    # sync_consul reads the clock between a run's start and end: a run that asked Consul ended after
    # the backoff was over, and a run that did not began before it was.
    for number, run in enumerate(attempts, 1):
        assert run.due is None or run.ended >= run.due, f"attempt {number} ({run.phase}) came during its backoff"
        assert run.failures_after == number
        # The backoff runs from the failure, which came between the run's start and end.
        wanted = timedelta(seconds=min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** (number - 1)))
        assert run.started + wanted <= run.due_next <= run.ended + wanted, (number, run, wanted)
    for run in skipped:
        assert run.due is not None and run.started < run.due, f"a {run.phase} run neither asked nor backed off"
    assert {run.phase for run in attempts} == {"500", "stopped", "slow"}
    assert all("500 rpc error making call: No cluster leader" in reason for reason in reasons["500"])
    assert all("is unreachable: ConnectionError" in reason for reason in reasons["stopped"])
    assert all("is unreachable: ReadTimeout" in reason for reason in reasons["slow"])

    fresh = status()
    assert (fresh.consecutive_failures, fresh.stale_reason, retry_after()) == (0, "", None)
    instances = {row.identity: row for row in Instance.objects.all()}
    assert instances["web-2"].deregistered_at is not None  # marked, not deleted
    assert instances["web-1"].health == "critical"
    assert (instances["web-3"].weight_passing, instances["web-3"].weight_warning) == (7, 2)
    assert instances["db-1"].deregistered_at is None and instances["db-1"].health == "passing"
    assert fresh.last_success > timezone.now() - timedelta(seconds=30)
