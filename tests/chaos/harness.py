"""What the chaos scenarios share: the size of their streams and outages, meshscope's processes as
subprocesses, a paced producer, and waiting on conditions.

Sizes are small by default so that the whole chaos suite fits the CI budget on a busy 2-core machine;
``CHAOS_SPANS`` and ``CHAOS_OUTAGE_SECONDS`` make a manual run larger (the issue asks for 30-second
outages: ``CHAOS_OUTAGE_SECONDS=30``). ``CHAOS_SEED`` replays a run's random choices.
"""

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests
from django.db import connection
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.producer.future import RecordMetadata

from demo.embedded import free_port, port_is_open

ROOT = Path(__file__).resolve().parents[2]

SPANS = int(os.environ.get("CHAOS_SPANS", "3000"))
OUTAGE_SECONDS = float(os.environ.get("CHAOS_OUTAGE_SECONDS", "12"))
SEED = int(os.environ.get("CHAOS_SEED", str(random.randrange(1_000_000))))
# Group timeouts as the other Kafka tests use them: kafka-python waits out the rebalance timeout when
# it joins a group on Tansu, and with the production default of 60 s each restart would wait a minute.
FAST_GROUP_ENV = {"KAFKA_MAX_POLL_INTERVAL_MS": "3000", "KAFKA_SESSION_TIMEOUT_MS": "3000"}


def rng(name: str) -> random.Random:
    """A scenario's own random choices, replayable with CHAOS_SEED (printed by every scenario)."""
    print(f"[{name}] CHAOS_SEED={SEED}")
    return random.Random(f"{SEED}-{name}")


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> float:
    """Polls ``condition`` until it holds; returns how long that took. Fails naming ``what`` otherwise."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise AssertionError(f"Not within {timeout:.0f} s: {what}")
        time.sleep(interval)


def database_url(host: str | None = None, port: int | None = None, application_name: str = "") -> str:
    """The URL of the database pytest-django created, optionally through another host and port
    (a proxy), and naming its connections in pg_stat_activity."""
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    url = (
        f"postgres://{db['USER'] or 'postgres'}{password}@{host or db['HOST'] or '127.0.0.1'}"
        f":{port or db['PORT'] or 5432}/{db['NAME']}"
    )
    return f"{url}?application_name={application_name}" if application_name else url


class Process:
    """A meshscope process (a management command, daphne) run as it is in production, logging to a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.args = args
        self.env = {**os.environ, "SECRET_KEY": os.environ.get("SECRET_KEY", "chaos"), "DEBUG": "0", **env}
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> "Process":
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            log.write(f"--- start {self.starts + 1} ---\n".encode())
            log.flush()
            # A session of its own, so that a kill takes its children too: the Celery worker's embedded
            # beat is a child process, which would outlive a kill of the worker alone and go on scheduling.
            self.process = subprocess.Popen(
                [sys.executable, *self.args],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """kill -9: no cleanup of any kind, as when the machine or the OOM killer takes the process."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # what it started and left behind

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def span_consumer(
    bootstrap: str, topics: dict[str, str], group: str, db_url: str, redis_url: str, log_dir: Path
) -> Process:
    """``manage.py consume_spans``: one member of ``group``, the way a deployment runs it. Its marks of
    changed views go to ``redis_url`` under a prefix of the group's name, which no one else reads."""
    env = {
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "CHANNELS_PREFIX": group,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "TRACE_TOPICS": ",".join(f"{topic}:{fmt}" for topic, fmt in topics.items()),
        "KAFKA_CONSUMER_GROUP": group,
        "LOG_LEVEL": "WARNING",
        **FAST_GROUP_ENV,
    }
    return Process("consume_spans", ["manage.py", "consume_spans"], env, log_dir)


def celery_worker(bootstrap: str, db_url: str, redis_url: str, prefix: str, log_dir: Path) -> Process:
    """The Procfile's ``worker``: a Celery worker on the default queue with beat inside it, running the
    periodic tasks (resolve_unpaired_spans, sample_consumer_lag, prune, sync_consul). The solo pool
    keeps its CPU low; beat's schedule file goes to ``log_dir``, not the checkout."""
    env = {
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "CHANNELS_PREFIX": prefix,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CONSUL_HTTP_ADDR": "",
        "LOG_LEVEL": "WARNING",
    }
    args = ["-m", "celery", "-A", "dashboard", "worker", "--beat", "-Q", "celery", "-P", "solo"]
    args += ["-s", str(log_dir / "celerybeat-schedule"), "--loglevel", "WARNING"]
    return Process("celery_worker", args, env, log_dir)


def create_topics(bootstrap: str, names: list[str], partitions: int = 3) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        admin.close()


class PacedProducer(threading.Thread):
    """Produces a stream's messages over about ``seconds``, as live traffic arrives, on a thread.

    The producer is the application's: it buffers and retries through an outage of the broker
    (idempotently, kafka-python's default), and the test fails if any message is not acknowledged.
    It sends no message at or beyond ``limit`` (all of them by default) until the test raises it, so
    that a scenario can be sure part of the stream is still to come when it strikes.
    """

    def __init__(self, bootstrap: str, messages: list[tuple[str, bytes]], seconds: float) -> None:
        super().__init__(name="chaos-producer", daemon=True)
        self.bootstrap = bootstrap
        self.messages = messages
        self.interval = seconds / max(1, len(messages))
        self.sent = 0
        self.limit = len(messages)
        # Where the broker put each message sent, as it acknowledges them: the partitions' end
        # offsets come from these (Tansu's ListOffsets answers short of the end when a batch holds
        # several records; see collectors/lag.py).
        self.placed: list[tuple[TopicPartition, int] | None] = [None] * len(messages)
        self.error: BaseException | None = None
        self.stopping = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        producer = KafkaProducer(
            bootstrap_servers=self.bootstrap,
            linger_ms=5,
            # Outlives the longest outage a scenario makes, so that no message is given up.
            delivery_timeout_ms=int((OUTAGE_SECONDS + 120) * 1000),
            request_timeout_ms=int((OUTAGE_SECONDS + 60) * 1000),
            max_block_ms=int((OUTAGE_SECONDS + 120) * 1000),
        )
        try:
            futures = []
            for number, (topic, payload) in enumerate(self.messages):
                if self.stopping.wait(self.interval):  # pacing, not synchronisation
                    return
                while number >= self.limit:  # held back until the test raises the limit
                    if self.stopping.wait(0.05):
                        return
                future = producer.send(topic, payload)
                future.add_callback(self._placed, number)
                futures.append(future)
                self.sent += 1
            producer.flush()
            for future in futures:
                future.get(timeout=0)  # raises if the broker did not take a message
        except BaseException as error:
            self.error = error
        finally:
            producer.close(timeout=5)
            self.done.set()

    def _placed(self, number: int, metadata: RecordMetadata) -> None:
        self.placed[number] = (TopicPartition(metadata.topic, metadata.partition), metadata.offset)

    def ends(self, first: int | None = None) -> dict[TopicPartition, int] | None:
        """The end offset of each partition once the first ``first`` messages (all, by default) are in
        it; None while one of them is not acknowledged yet."""
        placed = self.placed[: len(self.messages) if first is None else first]
        if None in placed:
            return None
        ends: dict[TopicPartition, int] = {}
        for tp, offset in filter(None, placed):
            ends[tp] = max(ends.get(tp, 0), offset + 1)
        return ends

    def finish(self, timeout: float) -> None:
        """Waits for every message to be acknowledged; fails if one was not."""
        assert self.done.wait(timeout), f"the producer did not finish within {timeout:.0f} s"
        assert self.error is None, f"the producer failed: {self.error!r}"
        assert self.sent == len(self.messages)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)


def committed_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    """The group's committed offsets, as the broker keeps them."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if meta.offset is not None and meta.offset >= 0}


def all_committed(bootstrap: str, group: str, producer: PacedProducer, first: int | None = None) -> bool:
    """The group has committed every produced message (or the first ``first``): nothing of them is
    left to deliver, or to deliver again."""
    ends = producer.ends(first)
    if ends is None:
        return False
    committed = committed_offsets(bootstrap, group)
    return all(committed.get(tp, 0) >= end for tp, end in ends.items())


def consumer_in_transaction(application_name: str) -> bool:
    """Whether a connection named ``application_name`` has a database transaction open right now."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND xact_start IS NOT NULL",
            [application_name],
        )
        return cursor.fetchone()[0] > 0


class WebServer(Process):
    """daphne serving meshscope (pages, API, websockets), as ``daphne dashboard.asgi:application`` runs it."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.port = free_port()
        env = {"ALLOWED_HOSTS": "127.0.0.1,localhost", "LOG_LEVEL": "WARNING", **env}
        args = ["-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "dashboard.asgi:application"]
        super().__init__("daphne", args, env, log_dir)
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> "WebServer":
        super().start()
        wait_for(lambda: port_is_open("127.0.0.1", self.port) or not self.alive(), 60, "daphne listening")
        assert self.alive(), self.log()[-3000:]
        return self


def session_cookie(username: str = "sre") -> str:
    """A logged-in session, stored in the test database where every process finds it."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    user, _ = get_user_model().objects.get_or_create(username=username)
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def timed_get(url: str, cookie: str, timeout: float = 60) -> tuple[int, str, float]:
    """GETs ``url`` as the logged-in user: (status, body, seconds it took)."""
    started = time.monotonic()
    response = requests.get(url, cookies={"sessionid": cookie}, timeout=timeout, allow_redirects=False)
    return response.status_code, response.text, time.monotonic() - started
