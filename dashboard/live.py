"""Live updates: collectors announce that a view's data changed; websocket consumers push it.

CONTRACT (used by collectors; owned and implemented by the live-dashboard work):
``announce_change(view)`` where view is one of "topology", "routes", "balancers", "lag", "services".
It is cheap, never raises, never blocks the caller for long, and may be called after every batch:
coalescing to about one broadcast per second per view happens behind it.
"""


def announce_change(view):
    return None
