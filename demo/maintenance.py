"""Puts system.MAINTENANCE into maintenance, as an operator would: in Consul when there is one, else in
the dashboard's records (where the demo recorded the balancing policies too, see ``demo.prepare``).

Run once by the supervisor, ``MAINTENANCE_AFTER`` seconds after the services started, as
``python -m demo.maintenance`` with the dashboard's environment.
"""

import os

from demo import discovery, system

REASON = "the demo's tour: a kernel upgrade (docs/demo.md)"


def record_without_consul(instance_id):
    """Records the maintenance as the Consul collector would have, and tells the live views."""
    from django.db import transaction

    from topology.changes import REGISTRY_VIEWS, announce_on_commit
    from topology.models import Instance

    spec = system.instance(instance_id)
    with transaction.atomic():
        Instance.objects.filter(service__name=spec.service.name, identity=instance_id).update(in_maintenance=True)
        announce_on_commit(*REGISTRY_VIEWS)


def main():
    if discovery.consul_configured():
        discovery.set_maintenance(system.MAINTENANCE, REASON)
        return
    import django

    django.setup()
    record_without_consul(system.MAINTENANCE)


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    main()
