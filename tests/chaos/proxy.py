"""A TCP proxy that a test can cut: an outage of whatever is behind it, for the processes that connect
through it, while everyone else (other engineers' tests on the shared PostgreSQL) is untouched.

``cut()`` closes the listening socket and every open connection, as a crashed server or a failed
network path does: clients see their connections drop, and new ones refused, until ``restore()``
listens again on the same port.
"""

import contextlib
import socket
import threading

from demo.embedded import free_port


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.listener: socket.socket | None = None
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.accepted = 0

    def start(self) -> "TcpProxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="proxy-accept", daemon=True).start()
        return self

    restore = start

    def cut(self) -> int:
        """Refuses new connections and drops the open ones; returns how many were dropped."""
        with self.lock:
            listener, self.listener = self.listener, None
            open_connections, self.connections = self.connections, set()
        if listener is not None:
            _close(listener)
        for sock in open_connections:
            _close(sock)
        return len(open_connections) // 2

    stop = cut

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self.lock:
                if self.listener is not listener:  # cut while this one was being connected
                    _close(client)
                    _close(upstream)
                    return
                self.connections |= {client, upstream}
                self.accepted += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), name="proxy-pump", daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self.lock:
                self.connections -= {source, sink}
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    # shutdown wakes a thread blocked in accept() or recv() on the socket; close alone may not.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
