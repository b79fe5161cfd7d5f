"""Child processes in one tree: started in their own process groups, stopped group by group.

Each child gets its own process group, so the terminal's Ctrl-C reaches only the supervisor, which
then stops the children in order (load first, brokers last) and kills whatever lingers. On Linux a
child also gets SIGTERM should the supervisor die without cleaning up (PR_SET_PDEATHSIG).
"""

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from demo.embedded import port_is_open

PR_SET_PDEATHSIG = 1
LIBC: ctypes.CDLL | None
try:
    LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not Linux: Ctrl-C and SIGTERM still stop everything
    LIBC = None


def die_with_parent():
    if LIBC is not None:
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    command: list
    env: dict
    port: int | None = None
    tier: int = 0  # stopped from the highest tier down
    stop_signal: int = signal.SIGTERM
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    restarts: list = field(default_factory=list, repr=False)


class StartupError(RuntimeError):
    pass


class Supervisor:
    max_restarts_per_minute = 3

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.children = []

    def log_path(self, child):
        return self.log_dir / f"{child.name}.log"

    def start(self, child):
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(child), "ab") as log:
            child.process = subprocess.Popen(
                child.command,
                env=child.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        if child not in self.children:
            self.children.append(child)
        return child

    def run_once(self, name, command, env):
        """Runs a one-off step to the end; its output is the result, its errors go to the log."""
        child = Child(name, command, env)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(child), "ab") as log:
            result = subprocess.run(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
                preexec_fn=die_with_parent,
                check=False,
            )
        if result.returncode:
            raise StartupError(f"{name} failed with exit code {result.returncode}.\n{self.tail(child)}")
        return result.stdout.decode()

    def wait_for_ports(self, children, timeout):
        deadline = time.monotonic() + timeout
        waiting = [child for child in children if child.port]
        while waiting:
            for child in waiting:
                if child.process.poll() is not None:
                    raise StartupError(
                        f"{child.name} exited with code {child.process.returncode} while starting.\n{self.tail(child)}"
                    )
            waiting = [child for child in waiting if not port_is_open("127.0.0.1", child.port)]
            if waiting and time.monotonic() > deadline:
                names = ", ".join(f"{child.name} (port {child.port})" for child in waiting)
                raise StartupError(f"Not listening after {timeout:.0f} s: {names}. See {self.log_dir}.")
            time.sleep(0.1)

    def tail(self, child, lines=15):
        try:
            text = self.log_path(child).read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n".join(f"    {line}" for line in text) + f"\n  (full log: {self.log_path(child)})"

    def check(self):
        """Restarts a child that died; gives up (raises) on one that keeps dying."""
        for child in self.children:
            if child.process.poll() is None:
                continue
            now = time.monotonic()
            child.restarts = [at for at in child.restarts if now - at < 60] + [now]
            if len(child.restarts) > self.max_restarts_per_minute:
                raise StartupError(f"{child.name} keeps exiting (code {child.process.returncode}).\n{self.tail(child)}")
            print(
                f"meshscope demo: {child.name} exited with code {child.process.returncode}; restarting it.",
                file=sys.stderr,
                flush=True,
            )
            self.start(child)

    def stop_all(self, grace=10.0):
        """Asks each child to stop, tier by tier, highest first; SIGKILL for any group still there after
        the grace time. Only the child itself is asked: it stops its own workers in its own way."""
        deadline = time.monotonic() + grace
        for tier in sorted({child.tier for child in self.children}, reverse=True):
            group = [child for child in self.children if child.tier == tier]
            for child in group:
                if child.process.poll() is None:
                    child.process.send_signal(child.stop_signal)
            for child in group:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        # Grandchildren (a worker's pool) live in the child's group: kill the whole group.
        for child in self.children:
            signal_group(child, signal.SIGKILL)
            child.process.wait()


def signal_group(child, signum):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.process.pid, signum)
