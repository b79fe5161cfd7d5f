"""Checks, before anything starts, that every port the demo will listen on is free."""

import errno
import socket


def is_free(port):
    # Bind as the servers will (SO_REUSEADDR), so a port in TIME_WAIT from a previous run counts as free.
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def taken(wanted):
    """``wanted`` maps port to what it is for; returns the (port, purpose) pairs already in use."""
    return [(port, purpose) for port, purpose in sorted(wanted.items()) if not is_free(port)]
