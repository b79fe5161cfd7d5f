"""Puts system.MAINTENANCE into maintenance, as an operator would: in Consul when there is one, else in
the dashboard's records (where the demo recorded the balancing policies too, see ``demo.prepare``).

Run once by the supervisor, ``MAINTENANCE_AFTER`` seconds after the services started, as
``python -m demo.maintenance`` with the dashboard's environment.
"""

import os

from demo import discovery, system

REASON = "the demo's tour: a kernel upgrade (docs/demo.md)"


def record_without_consul(instance_id):
    """Records the maintenance as an operator would, through the dashboard's one write path of
    instances that no Consul lists (the live views are told when it commits)."""
    from topology.instance_identity import record_instance

    spec = system.instance(instance_id)
    record_instance(spec.service.name, spec.id, "127.0.0.1", spec.port, spec.weight, spec.weight, in_maintenance=True)


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
