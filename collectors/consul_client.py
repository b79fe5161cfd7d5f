"""The py-consul client as the settings describe it, and the writes that the admin actions make.

Writes go through the agent API of ``CONSUL_HTTP_ADDR``: Consul owns a service instance on the agent
that registered it, so these act on the instances registered with that agent (every instance, with
``consul agent -dev``). The agent API names an instance by service ID alone, and two nodes may use the
same ID: ``agent_location`` says which node and datacenter the agent is, so that callers act only on
instances registered there. Each write raises ``ConsulWriteError`` with Consul's own words when it fails.
"""

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import consul
import requests
from consul.callback import CB
from consul.std import HTTPClient
from django.conf import settings

from topology.models import Instance

# Seconds to wait for Consul to connect or answer; blocking queries add their wait to it.
REQUEST_TIMEOUT_SECONDS = 10
# What the client raises when Consul is down, slow, refuses the token or answers 4xx/5xx.
CONSUL_ERRORS = (consul.ConsulException, requests.RequestException)


class ConsulWriteError(Exception):
    """A write that Consul refused or could not take; the message is what Consul said."""


def connect() -> consul.Consul:
    address = settings.CONSUL_HTTP_ADDR
    parts = urlsplit(address if "//" in address else f"//{address}")
    uses_tls = parts.scheme == "https" or (not parts.scheme and bool(settings.CONSUL_CACERT))
    cert = None
    if settings.CONSUL_CLIENT_CERT:
        cert = (
            (settings.CONSUL_CLIENT_CERT, settings.CONSUL_CLIENT_KEY)
            if settings.CONSUL_CLIENT_KEY
            else settings.CONSUL_CLIENT_CERT
        )
    client = consul.Consul(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 8500,
        scheme="https" if uses_tls else "http",
        verify=settings.CONSUL_CACERT or True,
        cert=cert,
        connections_timeout=REQUEST_TIMEOUT_SECONDS,
    )
    # py-consul lets the process environment override the token it is given; the settings decide here.
    client.token = settings.CONSUL_HTTP_TOKEN or None
    _read_environment_once(client.http)
    return client


def _read_environment_once(http: HTTPClient) -> None:
    """Applies the proxy variables, ~/.netrc and REQUESTS_CA_BUNDLE once, as requests would on each request.

    A session that trusts the environment reads all of them again for every request, which cost about
    half of the collector's CPU per read, and a first sync of a large catalog makes thousands of reads.
    """
    http.session.proxies.update(requests.utils.get_environ_proxies(http.base_uri))  # NO_PROXY included
    http.session.auth = requests.utils.get_netrc_auth(http.base_uri)
    if http.verify is True:
        http.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    http.session.trust_env = False


def describe(error: Exception) -> str:
    """Consul's own message for a failed call, for the stale reason and the admin's error message."""
    if isinstance(error, requests.RequestException):
        return f"Consul at {settings.CONSUL_HTTP_ADDR} is unreachable: {error.__class__.__name__}: {error}"
    if isinstance(error, consul.ACLPermissionDenied):
        return f"Consul refused the token (403): {error}"
    return f"Consul answered: {error}"


def agent_location() -> tuple[str, str]:
    """(node name, datacenter) of the agent at CONSUL_HTTP_ADDR, from ``GET /v1/agent/self``."""
    client = connect()
    try:
        # py-consul's agent.self() sends no token, and the endpoint needs agent:read under ACLs.
        answer = client.http.get(CB.json(), "/v1/agent/self", headers=client.prepare_headers())
    except CONSUL_ERRORS as error:
        raise ConsulWriteError(describe(error)) from error
    config = answer.get("Config") if isinstance(answer, dict) else None
    node = config.get("NodeName") if isinstance(config, dict) else None
    datacenter = config.get("Datacenter") if isinstance(config, dict) else None
    if not (isinstance(node, str) and node and isinstance(datacenter, str) and datacenter):
        raise ConsulWriteError("Consul's /v1/agent/self named no node and datacenter: nothing was changed.")
    return node, datacenter


def _write(call: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    try:
        accepted = call(*args, **kwargs)
    except CONSUL_ERRORS as error:
        raise ConsulWriteError(describe(error)) from error
    if not accepted:
        # py-consul turns the agent's 404 ("Unknown service ID") into False.
        raise ConsulWriteError("Consul answered 404: this agent has no service with that ID.")


def register(
    name: str,
    service_id: str,
    address: str,
    port: int | None,
    tags: Iterable[str],
    meta: Mapping[str, str],
    weights: Mapping[str, int],
    check: dict[str, Any] | None = None,
) -> None:
    client = connect()
    _write(
        client.agent.service.register,
        name,
        service_id=service_id or None,
        address=address or None,
        port=port or None,
        tags=list(tags),
        meta=dict(meta),
        weights=dict(weights),
        check=check,
    )


def reregister(
    instance: Instance, meta: Mapping[str, str] | None = None, weights: Mapping[str, int] | None = None
) -> None:
    """Registers the instance again as it is known, with new meta or weights; Consul keeps its checks."""
    register(
        instance.service.name,
        instance.consul_id,
        instance.address,
        instance.port,
        instance.tags,
        instance.meta if meta is None else meta,
        weights or {"Passing": instance.weight_passing, "Warning": instance.weight_warning},
    )


def deregister(instance: Instance) -> None:
    _write(connect().agent.service.deregister, instance.consul_id)


def set_maintenance(instance: Instance, enable: bool, reason: str = "") -> None:
    _write(connect().agent.service.maintenance, instance.consul_id, "true" if enable else "false", reason or None)


def http_check(url: str, interval: str = "10s", timeout: str = "5s") -> dict[str, Any]:
    return consul.Check.http(url, interval, timeout=timeout)


def tcp_check(host: str, port: int, interval: str = "10s", timeout: str = "5s") -> dict[str, Any]:
    return consul.Check.tcp(host, port, interval, timeout=timeout)
