"""Consul collector benchmark: first sync of 2,000 services x 5 instances, then the steady state.

Runs the collector, through py-consul over HTTP, against the Consul API test server (tests/consul_server.py)
and counts requests at the server. The server runs in a process of its own, as Consul would: in the
collector's process it would share the collector's interpreter lock and time its own work as the collector's.
Prints the first sync's time, the requests per minute while nothing changes (and how many of them are per
service), and what one check change costs. Printed, never asserted.

The first sync is timed until every instance is stored, watched from another thread: the task itself
keeps watching Consul for changes until the blocking wait is over (30 s by default), which says nothing
about how fast the catalog lands in the database.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/consulbench .venv/bin/python -m benchmarks.consul_sync
"""

import argparse
import multiprocessing
import os
import threading
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
os.environ.setdefault("SECRET_KEY", "benchmark-only-key")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, connections  # noqa: E402

from collectors.consul import sync_consul  # noqa: E402
from tests.consul_server import ConsulTestServer  # noqa: E402
from topology.models import Instance  # noqa: E402

PER_SERVICE = "/v1/health/service/"
# How often the watcher counts stored instances: small against the seconds it measures.
POLL_SECONDS = 0.05


def populate(consul, services, instances):
    for s in range(services):
        for i in range(instances):
            consul.register(
                f"service-{s:04d}",
                f"service-{s:04d}-{i}",
                address=f"10.{s // 250}.{s % 250}.{i + 1}",
                port=8080,
                tags=["v1", f"zone-{i % 3}"],
                meta={"version": "1.0"},
                weights={"Passing": 10, "Warning": 1},
                node=f"node-{i}",
                checks=[("http", "passing", "HTTP GET: 200 OK")],
            )


def serve(services, instances, commands):
    """The server process: answers the benchmark's commands until told to stop."""
    with ConsulTestServer() as consul:
        populate(consul, services, instances)
        commands.send(consul.url)
        while (command := commands.recv()) != "stop":
            if command == "paths":
                commands.send([path for _, path in consul.requests])
            elif command == "flip-one-check":
                consul.set_check("service-0042-3", "critical", "HTTP GET: 503", node="node-3")
                commands.send("done")


class Server:
    """The benchmark's handle on the server process."""

    def __init__(self, services, instances):
        self.pipe, child = multiprocessing.Pipe()
        self.process = multiprocessing.Process(target=serve, args=(services, instances, child), daemon=True)
        self.process.start()
        self.url = self.pipe.recv()

    def ask(self, command):
        self.pipe.send(command)
        return self.pipe.recv()

    def stop(self):
        self.pipe.send("stop")
        self.process.join()


def time_until_stored(expected, started, done):
    """Seconds from ``started`` until ``expected`` live Consul instances are stored (None if never, before ``done``)."""
    try:
        while not done.is_set():
            if Instance.objects.filter(in_consul=True, deregistered_at__isnull=True).count() >= expected:
                return time.monotonic() - started
            time.sleep(POLL_SECONDS)
        return None
    finally:
        connections.close_all()  # only this thread's: an open session would keep the test database from being dropped


def first_sync(expected):
    """Runs the first sync; returns (seconds until every instance is stored, seconds until the task returned)."""
    result, done = {}, threading.Event()
    started = time.monotonic()
    watcher = threading.Thread(target=lambda: result.update(stored=time_until_stored(expected, started, done)))
    watcher.start()
    try:
        sync_consul()
    finally:
        returned = time.monotonic() - started
        done.set()
        watcher.join()
    return result.get("stored"), returned


def steady(server, seconds):
    """Runs the task back to back, as beat and a free worker would, and counts what reaches Consul."""
    before, started = len(server.ask("paths")), time.monotonic()
    while time.monotonic() - started < seconds:
        sync_consul()
    elapsed = time.monotonic() - started
    paths = server.ask("paths")[before:]
    return len(paths) * 60 / elapsed, sum(path.startswith(PER_SERVICE) for path in paths)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--instances", type=int, default=5)
    parser.add_argument("--steady-seconds", type=float, default=60)
    args = parser.parse_args()

    server = Server(args.services, args.instances)
    test_db = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        settings.CONSUL_HTTP_ADDR = server.url
        settings.CONSUL_DATACENTERS = ["dc1"]

        expected = args.services * args.instances
        all_stored, task_returned = first_sync(expected)
        first_requests = len(server.ask("paths"))
        stored = Instance.objects.filter(in_consul=True).count()

        per_minute, per_service = steady(server, args.steady_seconds)

        before = len(server.ask("paths"))
        server.ask("flip-one-check")
        sync_consul()
        change_reads = sum(path.startswith(PER_SERVICE) for path in server.ask("paths")[before:])
        flipped = Instance.objects.get(identity="service-0042-3").health
    finally:
        connection.creation.destroy_test_db(test_db, verbosity=0)
        server.stop()

    print(f"database             {connection.vendor}")
    print(f"catalog              {args.services} services x {args.instances} instances ({stored} stored)")
    stored_in = f"{all_stored:.2f} s" if all_stored is not None else "never"
    print(
        f"first sync           {stored_in} until all {expected} instances were stored; the task returned after "
        f"{task_returned:.2f} s, at the end of its blocking wait, having sent {first_requests} HTTP requests"
    )
    print(
        f"steady state         {per_minute:.1f} requests/min over {args.steady_seconds:.0f} s "
        f"(blocking wait {settings.CONSUL_BLOCKING_WAIT_SECONDS} s), {per_service} per-service requests"
    )
    print(f"one check change     {change_reads} per-service request(s); the instance is now {flipped}")


if __name__ == "__main__":
    main()
