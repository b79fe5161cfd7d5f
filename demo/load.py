"""Traffic for the sample system: about DEMO_RPS requests per second to the gateway.

The load itself is not instrumented, so the gateway's SERVER spans are the roots of the traces.
"""

import contextlib
import os
import random
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from demo.services.inventory import SKUS
from demo.services.users import USER_COUNT

# The share of requests that place an order, and so publish to Kafka (fulfillment paces itself by it).
ORDER_SHARE = 0.25


def next_request():
    """Roughly: browse products, look at users, list orders, and place an order now and then."""
    roll = random.random()
    if roll < ORDER_SHARE:
        body = {"user_id": random.randint(1, USER_COUNT), "sku": random.choice(SKUS), "quantity": random.randint(1, 3)}
        return "POST", "/api/orders", body
    if roll < 0.55:
        return "GET", f"/api/products/{random.choice(SKUS)}", None
    if roll < 0.85:
        return "GET", f"/api/users/{random.randint(1, USER_COUNT)}", None
    return "GET", "/api/orders", None


def main():
    gateway = f"http://127.0.0.1:{int(sys.argv[1])}"
    rps = float(os.environ.get("DEMO_RPS", "20"))
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    session = requests.Session()

    def send(method, path, body):
        # The gateway may be starting or stopping; the next request will tell.
        with contextlib.suppress(requests.RequestException):
            session.request(method, gateway + path, json=body, timeout=10)

    # A fixed schedule rather than a closed loop, so slow responses do not lower the offered load.
    with ThreadPoolExecutor(max_workers=16) as pool:
        next_at = time.monotonic()
        while not stopping.is_set():
            pool.submit(send, *next_request())
            # After a stall (a suspended laptop), carry on at the rate rather than catch up in a burst.
            next_at = max(next_at + 1 / rps, time.monotonic() - 1)
            stopping.wait(max(0.0, next_at - time.monotonic()))
        pool.shutdown(cancel_futures=True)


if __name__ == "__main__":
    main()
