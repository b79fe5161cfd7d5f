"""`python -m demo` as a person runs it: it comes up, the dashboard sees the system, Ctrl-C leaves nothing.

The demo runs in its own var directory on free ports, with embedded Redis and Kafka and SQLite. Once
it registers its services in the Consul test server, so that the balancer statistics know each
service's policy and weights as they would with a real Consul; once without Consul, as `make demo`
runs by default.
"""

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

from demo import system
from demo.embedded import free_port, port_is_free
from demo.supervisor import die_with_parent
from tests.browser.chromium import CHROMIUM, CHROMIUM_ARGS, screenshot
from tests.consul_server import ConsulTestServer

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "demo-test-password"
START_TIMEOUT = 120
# What each policy owes each instance, as weights: an instance in maintenance is then owed nothing.
EXPECTED_WEIGHTS = {
    "users": ("round_robin", {"users-1": 1, "users-2": 1, "users-3": 1}),
    "catalog": ("random", {"catalog-1": 1, "catalog-2": 1, "catalog-3": 1}),
    "orders": ("weighted", {"orders-1": 1, "orders-2": 2, "orders-3": 5}),
}
# Skewed on purpose (docs/demo.md): the registry's weights are 1:1, catalog's balancer gives pricing-2 3.
SKEWED = ("pricing", "pricing-2", {"pricing-1": 1 / 2, "pricing-2": 1 / 2})
# Enough calls that a measured share lands within SHARE_TOLERANCE of its expectation by chance alone:
# at 250, the tolerance is about four standard deviations of a random split's share.
MIN_REQUESTS = 250
SHARE_TOLERANCE = 0.12
# Keep the environment of whoever runs the tests out of the demo: it must bring up its own.
FOREIGN = (
    "DATABASE_URL",
    "REDIS_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "SECRET_KEY",
    "CELERY_TASK_ALWAYS_EAGER",
    "DJANGO_SETTINGS_MODULE",
    "TRACE_TOPICS",
    "CONSUL_HTTP_ADDR",
    "CONSUL_HTTP_TOKEN",
)


def free_layout():
    """A dashboard port and a DEMO_BASE_PORT whose whole range is free, below the ephemeral ports."""
    span = max(instance.port for instance in system.instances(0)) + 1
    base = free_port(span + 1)
    return base + span, base


def demo_ports(dashboard, base):
    return [dashboard, *system.embedded_ports(base).values(), *(i.port for i in system.instances(base))]


class Demo:
    def __init__(self, env):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "demo"],
            cwd=ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Stopped, with all it started, should the test run itself be killed.
            preexec_fn=die_with_parent,
        )
        self.output = []
        threading.Thread(target=self._read, daemon=True).start()
        self.seen = {}  # every descendant ever seen, by pid

    def _read(self):
        for line in self.process.stdout:
            self.output.append(line)

    @property
    def text(self):
        return "".join(self.output)

    def note_descendants(self):
        try:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                self.seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass

    def assert_running(self):
        assert self.process.poll() is None, f"the demo exited early:\n{self.text}"


def wait_for(what, check, demo, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        demo.assert_running()
        demo.note_descendants()
        try:
            last = check()
        except requests.RequestException as error:
            last = error
        if last is True:
            return
        time.sleep(2)
    pytest.fail(f"{what} within {timeout} s; last: {last}\n{demo.text}")


# How long a request may take before the test gives up on the demo: not a pass mark for speed. The first
# requests after the start import the admin and compile its templates, which took over 5 s on this
# 2-core machine while other tests ran beside the demo.
REQUEST_TIMEOUT = 30


def logged_in(base):
    session = requests.Session()
    session.get(f"{base}/admin/login/", timeout=REQUEST_TIMEOUT).raise_for_status()
    response = session.post(
        f"{base}/admin/login/",
        data={
            "username": "admin",
            "password": PASSWORD,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "/admin/",
        },
        headers={"Referer": f"{base}/admin/login/"},
        timeout=REQUEST_TIMEOUT,
    )
    assert response.url.endswith("/admin/"), "the admin could not log in with MESHSCOPE_ADMIN_PASSWORD"
    return session


def topology_complete(session, base):
    topology = session.get(f"{base}/api/topology/", timeout=REQUEST_TIMEOUT).json()
    edges = {(e["source"], e["target"], e["protocol"], e["sync"], e["topic"]) for e in topology["edges"]}
    wanted = {
        ("gateway", "users", "http", "sync", ""),
        ("gateway", "catalog", "http", "sync", ""),
        ("gateway", "orders", "http", "sync", ""),
        ("catalog", "inventory", "http", "sync", ""),  # inventory's spans come as Zipkin JSON
        ("catalog", "pricing", "http", "sync", ""),
        ("orders", "payments", "grpc", "sync", ""),
        ("orders", "fulfillment", "messaging", "async", system.ORDERS_TOPIC),
    }
    return True if wanted <= edges else f"edges so far: {sorted(edges)}"


def expected_shares(weights, instances):
    """The layout's weights as shares, leaving out an instance the dashboard says is in maintenance."""
    owed = {
        name: 0 if instances.get(name, {}).get("ineligible_reason") == "in_maintenance" else weight
        for name, weight in weights.items()
    }
    return {name: weight / sum(owed.values()) for name, weight in owed.items()}


def balancers_as_expected(session, base):
    problems = []
    for service, (policy, weights) in EXPECTED_WEIGHTS.items():
        response = session.get(f"{base}/api/balancers/{service}/", timeout=REQUEST_TIMEOUT)
        if response.status_code != 200:
            problems.append(f"{service}: HTTP {response.status_code}")
            continue
        report = response.json()
        if report["policy"] != policy or report["policy_assumed"]:
            problems.append(f"{service}: policy {report['policy']} (assumed: {report['policy_assumed']})")
            continue
        instances = {row["instance"]: row for row in report["instances"]}
        shares = expected_shares(weights, instances)
        unexpected = [
            f"{service}: {instance} expected share {instances.get(instance, {}).get('expected_share')}, not {share}"
            for instance, share in shares.items()
            if abs(instances.get(instance, {}).get("expected_share", -1) - share) > 0.01
        ]
        if unexpected or report["requests"] < MIN_REQUESTS:
            problems += unexpected or [f"{service}: only {report['requests']} requests so far"]
            continue
        for instance, expected in shares.items():
            if expected:  # the share among the instances owed requests
                deviation = instances[instance]["deviation"]
                assert abs(deviation) < SHARE_TOLERANCE, f"{service}: {instance} is {deviation:+.1%} off {expected:.1%}"
    return problems or skewed_as_meant(session, base)


def skewed_as_meant(session, base):
    """The registry's weights are the expectation, and the balancer that ignores them is skewed."""
    service, instance, shares = SKEWED
    report = session.get(f"{base}/api/balancers/{service}/", timeout=REQUEST_TIMEOUT).json()
    expected = {row["instance"]: row["expected_share"] for row in report["instances"]}
    if report["policy"] != "weighted" or expected != pytest.approx(shares, abs=0.01):
        return f"{service}: policy {report['policy']}, expected shares {expected}"
    verdict = report["verdict"]
    if report["requests"] < MIN_REQUESTS:
        return f"{service}: {report['requests']} requests so far"
    assert (verdict["status"], verdict.get("instance")) == ("skewed", instance), verdict
    return True


def registered(consul):
    return {service["ID"] for dc in consul.datacenters.values() for service in dc.instances.values()}


@pytest.fixture
def consul():
    with ConsulTestServer() as server:
        yield server


@contextlib.contextmanager
def running_demo(tmp_path, **settings):
    """Starts the demo, yields it up and logged in, then stops it with SIGINT and checks it left nothing."""
    dashboard_port, base_port = free_layout()
    env = {key: value for key, value in os.environ.items() if key not in FOREIGN}
    env.update(
        MESHSCOPE_VAR_DIR=str(tmp_path / "var"),
        MESHSCOPE_PORT=str(dashboard_port),
        DEMO_BASE_PORT=str(base_port),
        MESHSCOPE_ADMIN_PASSWORD=PASSWORD,
        DEMO_RPS="20",
        DEMO_OPEN_BROWSER="0",  # a browser it opened would outlive the demo, as it should for a person
        **settings,
    )
    base = f"http://127.0.0.1:{dashboard_port}"
    demo = Demo(env)
    demo.base_port = base_port
    try:
        wait_for("the banner", lambda: "Press Ctrl-C to stop." in demo.text or "not yet", demo, START_TIMEOUT)
        # How long the start took is a figure to print, not a pass mark: it moves with the machine's load.
        started = re.search(r"started in ([\d.]+) s", demo.text)
        assert started, demo.text
        print(f"\nthe demo started in {started.group(1)} s")
        assert f"{base}/" in demo.text and f"admin / {PASSWORD}" in demo.text
        yield demo, logged_in(base), base
    finally:
        demo.note_descendants()
        demo.process.send_signal(signal.SIGINT)
        try:
            demo.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            demo.process.kill()
            pytest.fail(f"the demo did not stop within 30 s of SIGINT:\n{demo.text}")

    assert demo.process.returncode == 0, demo.text
    assert "stopped." in demo.text
    _, alive = psutil.wait_procs(list(demo.seen.values()), timeout=5)
    assert not alive, f"left running: {[process.cmdline() for process in alive]}"
    assert len(demo.seen) >= len(system.instances(base_port)) + 5  # the check saw the whole tree
    bound = [port for port in demo_ports(dashboard_port, base_port) if not port_is_free(port)]
    assert not bound, f"ports still bound: {bound}"


def test_with_consul_the_dashboard_sees_the_system_and_each_balancing_policy(tmp_path, consul):
    with running_demo(tmp_path, CONSUL_HTTP_ADDR=consul.address) as (demo, session, base):
        everyone = {instance.id for instance in system.instances(demo.base_port)}
        wait_for(
            "every instance registered in Consul",
            lambda: registered(consul) == everyone or registered(consul),
            demo,
            30,
        )
        wait_for(
            "gateway → each service and the Kafka flow in the topology",
            lambda: topology_complete(session, base),
            demo,
            START_TIMEOUT,
        )
        wait_for(
            "each balancing policy with its expected shares",
            lambda: balancers_as_expected(session, base),
            demo,
            START_TIMEOUT,
        )
    assert not registered(consul), "instances left registered in Consul"


def test_without_consul_the_topology_comes_from_traces_and_the_policies_from_the_demo(tmp_path):
    with running_demo(tmp_path) as (demo, session, base):
        wait_for(
            "gateway → each service and the Kafka flow in the topology",
            lambda: topology_complete(session, base),
            demo,
            START_TIMEOUT,
        )
        wait_for(
            "each balancing policy with its expected shares",
            lambda: balancers_as_expected(session, base),
            demo,
            START_TIMEOUT,
        )
        if Path(CHROMIUM).exists():
            screenshot_the_demo(session, base)


def screenshot_the_demo(session, base):
    """The README's quick start shows what `make demo` shows, taken from the demo itself."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=base)
        context.add_cookies([{"name": "sessionid", "value": session.cookies["sessionid"], "url": base}])
        page = context.new_page()
        page.goto("/")
        page.wait_for_function("() => window.meshscope && window.meshscope.cy.edges().length >= 6")
        page.wait_for_function("() => document.querySelector('#live-status').dataset.state === 'live'")
        screenshot(page, "demo-topology", docs=True)
        page.goto("/balancers/?service=orders")
        page.wait_for_selector(".balancer[data-service='orders'] svg.chart")
        screenshot(page, "demo-balancers", docs=True)
        browser.close()


def test_a_taken_port_is_named_with_the_variable_that_moves_it(tmp_path):
    dashboard_port, base_port = free_layout()
    env = {key: value for key, value in os.environ.items() if key not in FOREIGN}
    env.update(MESHSCOPE_VAR_DIR=str(tmp_path), MESHSCOPE_PORT=str(dashboard_port), DEMO_BASE_PORT=str(base_port))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", dashboard_port))
        squatter.listen()
        result = subprocess.run(
            [sys.executable, "-m", "demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
        )
    assert result.returncode == 2
    assert f"port {dashboard_port}: the dashboard; choose another with MESHSCOPE_PORT" in result.stderr
    assert not (tmp_path / "logs").exists(), "nothing may start when a port is taken"
