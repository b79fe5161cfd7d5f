"""Prepares the dashboard's database: migrations, the admin user (created once) and, without Consul,
the sample system's balancing policies and weights.

Run by the supervisor as ``python -m demo.prepare`` with the dashboard's environment; prints the
admin's name and password as JSON. The password is MESHSCOPE_ADMIN_PASSWORD when set (it then resets
the admin's), else one made on the first run and kept in the var directory, so every run prints the one
that works; null when someone has changed it since.
"""

import json
import os
import secrets
from pathlib import Path


def kept_secret(path):
    """A random secret made once and kept, readable by the owner only."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(18))
    return path.read_text().strip()


def record_balancing_without_consul():
    """Without Consul nothing tells the dashboard how the gateway balances, and it would judge the
    weighted service against an even split, as skewed. Record what the demo's layout says, as an
    operator would set it for services that only traces know; a Consul, when there is one, says it. No
    instance is in maintenance yet: ``demo.maintenance`` puts one in later."""
    from django.db import transaction

    from demo.system import instances
    from topology.instance_identity import record_instance
    from topology.models import Service

    for spec in instances():
        with transaction.atomic():
            service, _ = Service.objects.get_or_create(name=spec.service.name)
            if service.balancing_policy != spec.service.policy:
                service.balancing_policy = spec.service.policy
                service.save(update_fields=["balancing_policy"])
            # Its address and port too, so that inventory's Zipkin spans, which name 127.0.0.1:<port>,
            # count for inventory-1.
            record_instance(spec.service.name, spec.id, "127.0.0.1", spec.port, spec.weight, spec.weight)


def main():
    import django
    from django.core.management import call_command

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model

    call_command("migrate", interactive=False, verbosity=0)
    if not settings.CONSUL_HTTP_ADDR:
        record_balancing_without_consul()
    username = os.environ.get("MESHSCOPE_ADMIN_USER", "admin")
    chosen = os.environ.get("MESHSCOPE_ADMIN_PASSWORD")
    password = chosen or kept_secret(settings.VAR_DIR / "admin-password")
    user, created = get_user_model().objects.get_or_create(
        username=username, defaults={"is_staff": True, "is_superuser": True}
    )
    if created or (chosen and not user.check_password(chosen)):
        user.set_password(password)
        user.save()
    elif not user.check_password(password):
        password = None  # changed in the admin since: not ours to reset unless asked to
    print(json.dumps({"username": username, "password": password, "created": created}))


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    main()
