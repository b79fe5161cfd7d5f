"""How a caller picks one instance of a service: round robin, random, or weighted random."""

import itertools
import random
import threading


class RoundRobin:
    def __init__(self):
        self.counter = itertools.count()
        self.lock = threading.Lock()

    def choose(self, endpoints):
        with self.lock:
            turn = next(self.counter)
        return endpoints[turn % len(endpoints)]


class Random:
    def choose(self, endpoints):
        return random.choice(endpoints)


class Weighted:
    """Random in proportion to each endpoint's weight (Consul's Weights.Passing)."""

    def choose(self, endpoints):
        return random.choices(endpoints, weights=[endpoint.weight for endpoint in endpoints])[0]


Chooser = RoundRobin | Random | Weighted
POLICIES: dict[str, type[Chooser]] = {"round_robin": RoundRobin, "random": Random, "weighted": Weighted}


class Balancer:
    """One chooser per service and policy, so round robin keeps its turn across calls."""

    def __init__(self):
        self.choosers: dict[tuple[str, str], Chooser] = {}
        self.lock = threading.Lock()

    def choose(self, service, policy, endpoints):
        with self.lock:
            chooser = self.choosers.get((service, policy))
            if chooser is None:
                chooser = self.choosers[(service, policy)] = POLICIES.get(policy, RoundRobin)()
        return chooser.choose(endpoints)
