"""``make demo``: the dashboard and a small microservice system it observes, in one process tree.

Starts Redis and a Kafka-protocol broker (embedded unless REDIS_URL / KAFKA_BOOTSTRAP_SERVERS are
set), prepares the database and the admin user, then runs daphne, the Celery workers (beat and the
collectors' tasks; the span consumer), the sample services and their load. Ctrl-C or SIGTERM stops every child. docs/demo.md has the details.
"""

import json
import os
import signal
import sys
import time
import webbrowser
from pathlib import Path

from kafka.errors import KafkaError

from demo import discovery, ports, system
from demo.embedded import EmbeddedKafka, EmbeddedRedis
from demo.prepare import kept_secret
from demo.supervisor import Child, StartupError, Supervisor
from demo.topics import create_topics

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# Stop order, highest first: the load, then the services, then the dashboard, then the brokers.
BROKERS, DASHBOARD, SERVICES, LOAD = range(4)


class Stop(Exception):
    """Raised from the signal handler, so a start in progress is abandoned at once."""


def on_signal(signum, frame):
    raise Stop(signal.Signals(signum).name)


def port_plan(dashboard_port, embedded):
    """Every port the demo will listen on, with a hint for the person who finds one taken."""
    base = system.base_port()
    moved = f"choose another range with DEMO_BASE_PORT (now {base})"
    wanted = {}
    for name, port in system.embedded_ports().items():
        if name in embedded:
            wanted[port] = f"the embedded {name}; {moved}"
    for instance in system.instances():
        wanted[instance.port] = f"{instance.id}; {moved}"
    if dashboard_port in wanted:
        raise StartupError(f"MESHSCOPE_PORT={dashboard_port} is also {wanted[dashboard_port]}.")
    wanted[dashboard_port] = f"the dashboard; choose another with MESHSCOPE_PORT (now {dashboard_port})"
    return wanted


def start_brokers(supervisor, embedded, log_dir):
    """Redis and Kafka from the environment, or embedded ones; returns their addresses."""
    found = {"redis": os.environ.get("REDIS_URL"), "kafka": os.environ.get("KAFKA_BOOTSTRAP_SERVERS")}
    kinds: dict[str, type[EmbeddedRedis | EmbeddedKafka]] = {"redis": EmbeddedRedis, "kafka": EmbeddedKafka}
    started = []
    for name in embedded:
        broker = kinds[name](port=system.embedded_ports()[name], log_dir=log_dir)
        started.append(supervisor.start(Child(name, broker.command(), dict(os.environ), broker.port, BROKERS)))
        found[name] = broker.url if isinstance(broker, EmbeddedRedis) else broker.bootstrap_servers
    supervisor.wait_for_ports(started, timeout=20)
    return found


def dashboard_env(var_dir, redis_url, kafka):
    env = dict(os.environ)
    env.update(
        MESHSCOPE_VAR_DIR=str(var_dir),
        # Made once and kept, so sessions survive a restart of the demo.
        SECRET_KEY=os.environ.get("SECRET_KEY") or kept_secret(var_dir / "secret-key"),
        REDIS_URL=redis_url,
        KAFKA_BOOTSTRAP_SERVERS=kafka,
        DJANGO_SETTINGS_MODULE="dashboard.settings",
        PYTHONUNBUFFERED="1",
    )
    # Short span consumer runs, so that Ctrl-C does not wait long for the one in progress.
    env.setdefault("SPAN_CONSUMER_RUN_SECONDS", "3")
    return env


def dashboard_children(env, port, var_dir):
    daphne = [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "dashboard.asgi:application"]
    celery = [PYTHON, "-m", "celery", "-A", "dashboard", "worker", "--loglevel", "INFO"]
    # The collectors' periodic tasks, and beat, on the default queue.
    tasks = [
        *celery,
        "-n",
        "tasks@%h",
        "-Q",
        "celery",
        "--concurrency",
        "2",
        "-P",
        "prefork",
        "--beat",
        "--schedule",
        str(var_dir / "celerybeat-schedule"),
    ]
    # The span consumer keeps one Kafka group member per process between runs: a solo worker of its own.
    spans = [*celery, "-n", "spans@%h", "-Q", "spans", "-P", "solo"]
    # The live layer's process: computes the views the collectors changed and pushes their deltas.
    broadcaster = [PYTHON, "-m", "django", "broadcast"]
    # The tasks worker gets Celery's cold shutdown (SIGQUIT): a warm one would wait out a Consul blocking
    # query of up to 30 s, and every task there is periodic and idempotent. The solo span worker cannot
    # cut a task short, so it stops warm, after its current run (SPAN_CONSUMER_RUN_SECONDS, short here).
    return [
        Child("daphne", daphne, env, port, DASHBOARD),
        Child("celery-tasks", tasks, env, None, DASHBOARD, stop_signal=signal.SIGQUIT),
        Child("celery-spans", spans, env, None, DASHBOARD),
        Child("broadcaster", broadcaster, env, None, DASHBOARD),
    ]


def service_children(env, maintenance_at):
    """The services and the load, which all learn when system.MAINTENANCE goes into maintenance."""
    env = {**env, system.MAINTENANCE_AT_VARIABLE: str(maintenance_at)}
    children = [
        Child(instance.id, [PYTHON, "-m", "demo.services", instance.id], env, instance.port, SERVICES)
        for instance in system.instances()
    ]
    gateway = system.instance("gateway-1").port
    return children, Child("load", [PYTHON, "-m", "demo.load", str(gateway)], env, None, LOAD)


def banner(port, admin, brokers, embedded, var_dir, seconds):
    password = admin["password"] or "(changed since the first run; set MESHSCOPE_ADMIN_PASSWORD to reset it)"
    where = {
        name: f"{address} ({'embedded' if name in embedded else 'from the environment'})"
        for name, address in brokers.items()
    }
    consul = os.environ.get("CONSUL_HTTP_ADDR") or "not configured: the topology comes from traces alone"
    return "\n".join(
        [
            "",
            f"meshscope demo is running (started in {seconds:.1f} s).",
            f"  Open      http://127.0.0.1:{port}/",
            f"  Log in    {admin['username']} / {password}",
            f"  Gateway   http://127.0.0.1:{system.instance('gateway-1').port}/api/orders"
            f"  (about {os.environ.get('DEMO_RPS', '20')} requests/s; DEMO_RPS changes it)",
            f"  Kafka     {where['kafka']}",
            f"  Redis     {where['redis']}",
            f"  Consul    {consul}",
            f"  Logs      {var_dir / 'logs'}",
            f"  Tour      on purpose: pricing is skewed; {system.MAINTENANCE} goes into maintenance"
            f" {system.MAINTENANCE_AFTER} s in and orders still calls it (docs/demo.md)",
            "Press Ctrl-C to stop.",
            "",
        ]
    )


def open_browser(url):
    """Opens the dashboard when there is a desktop to open it on (never a text browser in the terminal)."""
    if os.environ.get("DEMO_OPEN_BROWSER", "1") == "0":
        return
    if sys.platform == "darwin" or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        webbrowser.open(url)


def run(supervisor, var_dir, port, embedded, started_at):
    brokers = start_brokers(supervisor, embedded, var_dir / "logs")
    env = dashboard_env(var_dir, brokers["redis"], brokers["kafka"])
    try:
        create_topics(brokers["kafka"], (*system.SPAN_TOPICS, system.ORDERS_TOPIC))
    except KafkaError as error:
        raise StartupError(f"Kafka at {brokers['kafka']} did not let the topics be created: {error!r}") from error
    admin = json.loads(supervisor.run_once("prepare", [PYTHON, "-m", "demo.prepare"], env))
    maintenance_at: float | None = time.time() + system.MAINTENANCE_AFTER
    services, load = service_children(env, maintenance_at)
    children = [*dashboard_children(env, port, var_dir), *services]
    for child in children:
        supervisor.start(child)
    supervisor.wait_for_ports(children, timeout=60)
    if discovery.consul_configured():
        # A caller that keeps its first list (orders) must find every instance in it.
        missing = discovery.wait_until_registered(system.instances(), timeout=30)
        if missing:
            raise StartupError(f"Not registered in Consul after 30 s: {', '.join(sorted(missing))}.")
    supervisor.start(load)
    print(banner(port, admin, brokers, embedded, var_dir, time.monotonic() - started_at), flush=True)
    open_browser(f"http://127.0.0.1:{port}/")
    while True:
        time.sleep(1)
        supervisor.check()
        if maintenance_at is not None and time.time() >= maintenance_at:
            maintenance_at = None
            start_maintenance(supervisor, env)


def start_maintenance(supervisor, env):
    """The tour's scheduled maintenance (docs/demo.md); the demo carries on without it if it fails."""
    try:
        supervisor.run_once("maintenance", [PYTHON, "-m", "demo.maintenance"], env)
    except StartupError as error:
        print(f"meshscope demo: could not put {system.MAINTENANCE} into maintenance: {error}", file=sys.stderr)
        return
    print(f"meshscope demo: {system.MAINTENANCE} is in maintenance now; orders still calls it.", flush=True)


def main():
    started_at = time.monotonic()
    port = int(os.environ.get("MESHSCOPE_PORT", "8000"))
    var_dir = Path(os.environ.get("MESHSCOPE_VAR_DIR", ROOT / "var")).resolve()
    # Embedded unless the environment names one: a Redis that merely answers on 6379 is not ours to use.
    embedded = [
        name for name, var in (("kafka", "KAFKA_BOOTSTRAP_SERVERS"), ("redis", "REDIS_URL")) if not os.environ.get(var)
    ]
    try:
        taken = ports.taken(port_plan(port, embedded))
    except StartupError as error:
        print(f"meshscope demo: {error}", file=sys.stderr)
        return 2
    if taken:
        lines = [f"  port {number}: {purpose}" for number, purpose in taken]
        print("meshscope demo: ports already in use by another program:", *lines, sep="\n", file=sys.stderr)
        print("For example: MESHSCOPE_PORT=8001 DEMO_BASE_PORT=28000 make demo", file=sys.stderr)
        return 2
    if discovery.consul_configured():
        print(f"meshscope demo: registering the services in Consul at {os.environ['CONSUL_HTTP_ADDR']}", flush=True)
    supervisor = Supervisor(var_dir / "logs")
    # SIGHUP too: closing the terminal must stop the demo as Ctrl-C does.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        run(supervisor, var_dir, port, embedded, started_at)
    except Stop:
        print("\nmeshscope demo: stopping…", flush=True)
        return 0
    except StartupError as error:
        print(f"meshscope demo: {error}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not cut the cleanup short and leave processes behind.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        supervisor.stop_all()
        print("meshscope demo: stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
