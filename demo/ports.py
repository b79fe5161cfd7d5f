"""Checks, before anything starts, that every port the demo will listen on is free."""

from demo.embedded import port_is_free


def taken(wanted: dict[int, str]) -> list[tuple[int, str]]:
    """``wanted`` maps port to what it is for; returns the (port, purpose) pairs already in use."""
    return [(port, purpose) for port, purpose in sorted(wanted.items()) if not port_is_free(port)]
