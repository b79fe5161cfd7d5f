"""``manage.py consul_instance``: the admin's instance actions from a shell or a runbook, with the same rules.

    manage.py consul_instance deregister web web-1 web-2
    manage.py consul_instance maintenance web web-1 --on --reason "kernel upgrade"
    manage.py consul_instance maintenance web web-1 --off
    manage.py consul_instance weights web web-1 --passing 8 --warning 1

Instances are named by service and identity, as the admin lists them. Each one is reported; the command
exits non-zero when Consul refused any.
"""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from collectors import consul_actions
from collectors.consul_client import ConsulWriteError
from topology.models import Instance


class Command(BaseCommand):
    help = "Deregisters instances from Consul, or sets their maintenance mode or weights there."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("action", choices=["deregister", "maintenance", "weights"])
        parser.add_argument("service")
        parser.add_argument("identities", nargs="+", metavar="identity")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--on", dest="maintenance", action="store_true", default=None)
        mode.add_argument("--off", dest="maintenance", action="store_false")
        parser.add_argument("--reason", default="")
        # Consul's rule: Passing at least 1, Warning at least 0.
        parser.add_argument("--passing", type=int, choices=range(1, 65536), metavar="1-65535")
        parser.add_argument("--warning", type=int, choices=range(65536), metavar="0-65535")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "maintenance" and options["maintenance"] is None:
            raise CommandError("maintenance needs --on or --off.")
        if action == "weights" and (options["passing"] is None or options["warning"] is None):
            raise CommandError("weights needs --passing and --warning.")
        instances = list(
            Instance.objects.filter(
                service__name=options["service"], identity__in=options["identities"]
            ).select_related("service")
        )
        missing = sorted(set(options["identities"]) - {i.identity for i in instances})
        if missing:
            raise CommandError(f"No instance {', '.join(missing)} of {options['service']}.")
        try:
            location = consul_actions.agent_location()
        except ConsulWriteError as error:
            raise CommandError(f"Nothing was changed: {error}") from error
        failed = 0
        for instance in instances:
            try:
                if action == "deregister":
                    consul_actions.deregister(instance, location)
                elif action == "maintenance":
                    consul_actions.set_maintenance(instance, options["maintenance"], location, options["reason"])
                else:
                    consul_actions.set_weights(instance, options["passing"], options["warning"], location)
            except ConsulWriteError as error:
                failed += 1
                self.stderr.write(f"{instance}: {error}")
            else:
                self.stdout.write(f"{instance}: done.")
        if failed:
            raise CommandError(f"Consul refused {failed} of {len(instances)}.")
