import os

from celery import Celery
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

app = Celery("dashboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["collectors"])

# The span consumer has a queue of its own, so that it can be served by solo-pool workers (one Kafka
# group member each, README "Scaling out"); beat offers a run every second and a run that waited two
# seconds expires unclaimed. A worker started without -Q serves both queues, so that
# `celery -A dashboard worker --beat` alone runs every collector on a small installation.
app.conf.task_queues = tuple(Queue(name, Exchange(name), routing_key=name) for name in ("celery", "spans"))
app.conf.task_routes = {"collectors.consume_spans": {"queue": "spans"}}
app.conf.beat_schedule = {
    "consume-spans": {"task": "collectors.consume_spans", "schedule": 1.0, "options": {"expires": 2}},
    "resolve-unpaired-spans": {
        "task": "collectors.resolve_unpaired_spans",
        "schedule": 15.0,
        "options": {"expires": 15},
    },
    "settle-route-hops": {"task": "collectors.settle_route_hops", "schedule": 15.0, "options": {"expires": 15}},
    "prune": {"task": "collectors.prune", "schedule": 60.0, "options": {"expires": 60}},
    # Burrow's window is 10 samples: at 5 s, a consumer silent for about 45 s is STOP.
    "sample-consumer-lag": {"task": "collectors.sample_consumer_lag", "schedule": 5.0, "options": {"expires": 5}},
    # One run is one round of Consul blocking queries (up to CONSUL_BLOCKING_WAIT_SECONDS); a lease per
    # datacenter turns away the runs offered meanwhile, so a slow Consul never piles them up.
    "sync-consul": {"task": "collectors.sync_consul", "schedule": 2.0, "options": {"expires": 2}},
}
