"""The demo's tour runs beside the rest of the suite: it needs ten minutes of a running demo, which would
otherwise add ten minutes to every run.

When the tour test is selected, the demo starts as collection finishes, and the session waits only until
it is up (its ports bound, so that no other test's free port lands in its range). A thread then asks the
dashboard for its balancer verdicts every SAMPLE_SECONDS while the other tests run; the tour test is
moved last, after pytest-randomly's shuffle, and waits there until TOUR_SECONDS of samples exist.
MESHSCOPE_DEMO_TOUR_SECONDS shortens the tour while working on it; CI runs the full ten minutes.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import requests

from tests.test_demo import FOREIGN, PASSWORD, START_TIMEOUT, Demo, demo_ports, free_layout, logged_in

TOUR_SECONDS = int(os.environ.get("MESHSCOPE_DEMO_TOUR_SECONDS", "600"))
SAMPLE_SECONDS = 20
# The demo shares two cores with the suite: at half its default load its process tree takes about 0.3 of
# a core, 0.5 at the default, and orders still has enough calls for its verdict after about 6.5 minutes
# of the 15-minute window that the API judges by default (docs/demo.md has the figures).
TOUR_RPS = "10"
TOUR_KEY = pytest.StashKey["Tour"]()
# A port of the demo's range may be taken between the check and the start, by a process of the machine.
START_ATTEMPTS = 3


@dataclass(repr=False)
class Sample:
    seconds: float  # since the demo was up
    overview: dict
    cpu_seconds: float  # of the demo's whole process tree, so far


@dataclass(repr=False)
class Tour:
    """The demo of the tour, and what the sampler saw of it."""

    var_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="meshscope-tour-")))
    samples: list[Sample] = field(default_factory=list)
    failure: str = ""
    stopping: threading.Event = field(default_factory=threading.Event)
    sampled: threading.Condition = field(default_factory=threading.Condition)
    demo: Demo | None = None
    dashboard_port: int = 0
    base_port: int = 0
    up_at: float = 0.0
    cpu_at_start: float = 0.0
    last_cpu_times: dict = field(default_factory=dict)  # by pid: a process's CPU times when last seen

    def start(self):
        """Starts the demo and returns once it is up, or with ``failure`` said."""
        for _ in range(START_ATTEMPTS):
            self.dashboard_port, self.base_port = free_layout()
            env = {key: value for key, value in os.environ.items() if key not in FOREIGN}
            env.update(
                MESHSCOPE_VAR_DIR=str(self.var_dir / "var"),
                MESHSCOPE_PORT=str(self.dashboard_port),
                DEMO_BASE_PORT=str(self.base_port),
                MESHSCOPE_ADMIN_PASSWORD=PASSWORD,
                DEMO_RPS=TOUR_RPS,
                DEMO_OPEN_BROWSER="0",
            )
            self.demo = Demo(env)
            deadline = time.monotonic() + START_TIMEOUT
            while self.demo.process.poll() is None and "Press Ctrl-C to stop." not in self.demo.text:
                if time.monotonic() > deadline:
                    self.failure = f"the demo was not up within {START_TIMEOUT} s:\n{self.demo.text}"
                    return
                time.sleep(0.2)
            if self.demo.process.poll() is None:
                self.up_at = time.monotonic()
                self.cpu_at_start = self.cpu_seconds()
                threading.Thread(target=self._sample, name="demo-tour-sampler", daemon=True).start()
                return
            if self.demo.process.returncode != 2:  # 2: a port was taken; another layout may do
                break
        self.failure = f"the demo did not start:\n{self.demo.text}"

    @property
    def base(self):
        return f"http://127.0.0.1:{self.dashboard_port}"

    def cpu_seconds(self):
        """CPU time of the demo's process tree; a process that has exited counts until it did."""
        self.demo.note_descendants()
        total = 0.0
        for process in [psutil.Process(self.demo.process.pid), *self.demo.seen.values()]:
            try:
                times = process.cpu_times()
            except psutil.Error:
                times = self.last_cpu_times.get(process.pid)
                if times is None:
                    continue
            self.last_cpu_times[process.pid] = times
            total += times.user + times.system
        return total

    def _sample(self):
        try:
            session = self.logged_in()
            while not self.stopping.is_set():
                if self.demo.process.poll() is not None:
                    raise RuntimeError(f"the demo exited with code {self.demo.process.returncode}")
                response = session.get(f"{self.base}/api/balancers/", timeout=30)
                response.raise_for_status()
                sample = Sample(time.monotonic() - self.up_at, response.json(), self.cpu_seconds())
                with self.sampled:
                    self.samples.append(sample)
                    self.sampled.notify_all()
                self.stopping.wait(SAMPLE_SECONDS)
        except (requests.RequestException, RuntimeError) as error:
            with self.sampled:
                self.failure = f"sampling stopped: {error!r}\n{self.demo.text}"
                self.sampled.notify_all()

    def wait_for_samples(self, seconds):
        """The samples, once they cover ``seconds`` of the demo's running; fails the test otherwise."""
        with self.sampled:
            covered = self.sampled.wait_for(
                lambda: self.failure or (self.samples and self.samples[-1].seconds >= seconds),
                timeout=seconds + 2 * START_TIMEOUT,
            )
        if self.failure or not covered:
            pytest.fail(self.failure or f"fewer than {seconds} s of samples:\n{self.demo.text}")
        return list(self.samples)

    def logged_in(self):
        return logged_in(self.base)

    def detail(self, service, window):
        session = self.logged_in()
        response = session.get(f"{self.base}/api/balancers/{service}/", params={"window": window}, timeout=30)
        response.raise_for_status()
        return response.json()

    def stop(self):
        """Stops the demo with SIGINT, as Ctrl-C does; what it left behind, if anything."""
        self.stopping.set()
        if self.demo is None or self.demo.process.poll() is not None:
            return []
        self.demo.note_descendants()
        self.demo.process.send_signal(signal.SIGINT)
        try:
            self.demo.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.demo.process.kill()
            return [f"the demo did not stop within 30 s of SIGINT:\n{self.demo.text}"]
        problems = []
        if self.demo.process.returncode != 0 or "stopped." not in self.demo.text:
            problems.append(f"the demo stopped with code {self.demo.process.returncode}:\n{self.demo.text}")
        _, alive = psutil.wait_procs(list(self.demo.seen.values()), timeout=5)
        if alive:
            problems.append(f"left running: {[process.pid for process in alive]}")
        from demo.embedded import port_is_free

        bound = [port for port in demo_ports(self.dashboard_port, self.base_port) if not port_is_free(port)]
        if bound:
            problems.append(f"ports still bound: {bound}")
        return problems


def is_tour(item):
    return item.get_closest_marker("demo_tour") is not None


def pytest_configure(config):
    config.addinivalue_line("markers", "demo_tour: runs last, on the demo that ran beside the whole session")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """The tour goes last, after pytest-randomly's shuffle (a wrapper that shuffles before this runs)."""
    items.sort(key=is_tour)


def pytest_collection_finish(session):
    if session.config.option.collectonly or not any(is_tour(item) for item in session.items):
        return
    tour = Tour()
    session.config.stash[TOUR_KEY] = tour
    tour.start()


def pytest_sessionfinish(session):
    tour = session.config.stash.get(TOUR_KEY, None)
    if tour is not None:
        tour.stop()
        shutil.rmtree(tour.var_dir, ignore_errors=True)


@pytest.fixture
def tour(request):
    return request.config.stash[TOUR_KEY]
