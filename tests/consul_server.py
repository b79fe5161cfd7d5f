"""A Consul HTTP API test server: the endpoints meshscope uses, on the wire, for tests and benchmarks.

No Consul binary can be installed where the tests run, so the collector and the admin actions talk,
through the real ``py-consul`` client, to this server instead. It follows these pages of the Consul
documentation:

- Blocking queries, https://developer.hashicorp.com/consul/api-docs/features/blocking : every read
  answers with ``X-Consul-Index``; ``?index=N`` holds the request until the endpoint's index goes past N
  or ``?wait=`` elapses (default 5 minutes, at most 10), plus up to wait/16 of random jitter; the index
  of each datacenter is its own Raft index, and can go backwards when a cluster is rebuilt or restored
  from a snapshot (``reset_index``).
- Catalog, https://developer.hashicorp.com/consul/api-docs/catalog : ``GET /v1/catalog/datacenters``
  and ``GET /v1/catalog/services`` (service names with the union of their tags; its index moves when a
  service instance is registered or deregistered, not when a check changes).
- Health, https://developer.hashicorp.com/consul/api-docs/health : ``GET /v1/health/service/:service``
  (every instance, critical ones included, with its node, its service definition and its checks, node
  checks included; the index is the service's own) and ``GET /v1/health/state/:state`` (checks, whose
  index moves when any check changes).
- Agent, https://developer.hashicorp.com/consul/api-docs/agent#read-configuration : ``GET
  /v1/agent/self`` (``Config`` with the agent's ``Datacenter``, ``NodeName``, ``NodeID``, ``Revision``,
  ``Server`` and ``Version``; ``DebugConfig``, ``Coord``, ``Member`` and ``Meta`` beside it).
- Agent services, https://developer.hashicorp.com/consul/api-docs/agent/service :
  ``PUT /v1/agent/service/register`` (case-insensitive JSON keys, "Missing service name", "Invalid
  Weights", "Invalid Service Meta"; weights default to Passing 1 / Warning 1; a check starts critical),
  with its ``Check`` or ``Checks`` as https://developer.hashicorp.com/consul/api-docs/agent/check#register-check
  defines them (HTTP, TCP or TTL; an HTTP or TCP check needs an ``Interval``). The agent keeps each
  check's definition, and the health endpoints show it as Consul's ``HealthCheck`` does: ``Type``,
  ``Interval``, ``Timeout`` and ``Definition`` (``HTTP``, ``Method``, ``Header``, ``TLSSkipVerify``,
  ``TCP``, ``Interval``, ``Timeout``, ``DeregisterCriticalServiceAfter``, ``TTL``, empty ones left out),
  durations written as Go writes them (``10s``, ``1m30s``, ``500ms``);
  ``PUT /v1/agent/service/deregister/:service_id`` and ``PUT /v1/agent/service/maintenance/:service_id``
  (the ``_service_maintenance:<id>`` critical check; 404 "Unknown service ID" for an unknown ID).
- ACLs, https://developer.hashicorp.com/consul/api-docs/api-structure#authentication : the token comes
  in ``X-Consul-Token``, ``Authorization: Bearer`` or ``?token=``; an unknown token gets 403 "ACL not
  found", no token when ACLs are on gets 403 "Permission denied", except from ``/v1/catalog/datacenters``,
  which needs no ACL.

The agent the API talks to is the node ``AGENT_NODE`` of the first datacenter: its writes reach only the
instances registered on that node, whatever other nodes use the same service ID. Tests change the state
directly with ``register``, ``deregister``, ``set_check`` and ``reset_index``, and make the server fail
on demand with ``fail_with`` (an HTTP status), ``hang`` (no answer for a while) and ``stop`` (connection
refused). ``requests`` records every request (method and path), for tests and for the benchmark's count;
``queries`` adds each request's query parameters (the ``index`` and ``wait`` a client sent).

Each answer keeps the shape of the sample answer in Consul's API documentation:
``tests/consul_api_examples/`` records them, with their source, and ``tests/test_consul_api_shapes.py``
compares this server's answers with them. A node is shown as an agent registers it (a UUID ``ID``, its
LAN and WAN ``TaggedAddresses``, ``Meta``); a service registered with an IP address gets the agent's
``lan_ipv4``/``wan_ipv4`` (or ``_ipv6``) tagged addresses, and none otherwise (the field is then left
out, as Consul's ``omitempty`` does). A path Consul does not serve is a 404 "Invalid URL path", another
method on a path it serves a 405, and ``?dc=`` naming an unknown datacenter a 500 "No path to
datacenter".
"""

import contextlib
import ipaddress
import json
import random
import re
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import consul as py_consul

AGENT_NODE = "agent-one"
CONSUL_VERSION = "1.20.0"
MAX_WAIT_SECONDS = 600
DEFAULT_WAIT_SECONDS = 300
META_KEY = re.compile(r"^[a-zA-Z0-9_-]+$")
DURATION = re.compile(r"([\d.]+)(ns|us|µs|ms|s|m|h)")
GO_DURATION = re.compile(r"(?:[\d.]+(?:ns|us|µs|ms|s|m|h))+")
# The paths this server answers; another method on one of them is a 405, another path a 404.
ROUTES = [
    re.compile(pattern)
    for pattern in (
        r"/v1/catalog/datacenters",
        r"/v1/catalog/services",
        r"/v1/health/service/.+",
        r"/v1/health/state/.+",
        r"/v1/agent/self",
        r"/v1/agent/service/register",
        r"/v1/agent/service/(deregister|maintenance)/.+",
    )
]
DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops the connections of concurrent readers; Go's is the kernel's.
    request_queue_size = 1024


class ConsulError(Exception):
    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def seconds(value):
    """A Go duration ("10s", "1m30s", "500ms") or a number of nanoseconds, as Consul's JSON decoder takes it."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value / 1e9
    if not isinstance(value, str) or not GO_DURATION.fullmatch(value):
        raise ConsulError(400, f'Request decode failed: time: invalid duration "{value}"')
    return sum(float(n) * DURATION_UNITS[u] for n, u in DURATION.findall(value))


def go_duration(value):
    """Seconds as Go's time.Duration.String() writes them, which is how Consul's JSON shows durations."""
    if value == 0:
        return "0s"
    if value < 1:
        milliseconds = value * 1000
        return f"{milliseconds:g}ms" if milliseconds >= 1 else f"{value * 1e6:g}µs"
    hours, rest = divmod(value, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:g}s"
    if hours or minutes:
        text = f"{int(minutes)}m{text}"
    if hours:
        text = f"{int(hours)}h{text}"
    return text


def tagged_addresses(address, port):
    """The ``TaggedAddresses`` the agent adds to a service registered with an IP address; Consul leaves the
    field out of its JSON when there is none (``omitempty``)."""
    try:
        version = ipaddress.ip_address(address).version
    except ValueError:
        return {}
    tagged = {"Address": address, "Port": port}
    return {"TaggedAddresses": {f"lan_ipv{version}": tagged, f"wan_ipv{version}": dict(tagged)}}


def parse_wait(value):
    """``?wait=``, a Go duration as Consul parses it (a bare number is refused); none, or 0, is the default."""
    if not value:
        return DEFAULT_WAIT_SECONDS
    if value != "0" and not GO_DURATION.fullmatch(value):
        raise ConsulError(400, "Invalid wait time")
    wait = sum(float(n) * DURATION_UNITS[u] for n, u in DURATION.findall(value))
    return min(MAX_WAIT_SECONDS, wait) if wait > 0 else DEFAULT_WAIT_SECONDS


def parse_index(value):
    if not value:
        return 0
    if not value.isdigit():
        raise ConsulError(400, "Invalid index")
    return int(value)


class Datacenter:
    """One datacenter's catalog: its own Raft index, and the index of each table the endpoints read."""

    def __init__(self, name):
        self.name = name
        self.raft_index = 1
        self.services_index = 1  # the catalog's service table
        self.checks_index = 1
        self.service_indexes = {}  # per service name, as Consul's "service.<name>" index
        self.nodes = {}  # node name -> the node as the health endpoint shows it
        self.instances = {}  # (node, service ID) -> service definition, as the health endpoint shows it
        self.checks = {}  # (node, check ID) -> check
        # Lookups the endpoints need at the scale of the benchmark (thousands of services).
        self.by_name = {}  # service name -> {(node, service ID)}
        self.owned_checks = {}  # (node, service ID, or "" for node checks) -> {(node, check ID)}

    def bump(self):
        self.raft_index += 1
        return self.raft_index

    def ensure_node(self, node, address):
        if node not in self.nodes:
            self.nodes[node] = {
                "ID": str(uuid.uuid5(uuid.NAMESPACE_DNS, node)),  # an agent's node ID is a UUID
                "Node": node,
                "Address": address,
                "Datacenter": self.name,
                # What an agent registers for its node: its LAN and WAN addresses (the same on one network).
                "TaggedAddresses": {"lan": address, "lan_ipv4": address, "wan": address, "wan_ipv4": address},
                "Meta": {"consul-network-segment": "", "consul-version": CONSUL_VERSION},
            }
            index = self.bump()
            self.add_check(self.check_entry(node, "serfHealth", "Serf Health Status", index))
            self.checks_index = index

    def add_check(self, check):
        key = (check["Node"], check["CheckID"])
        self.checks[key] = check
        self.owned_checks.setdefault((check["Node"], check["ServiceID"]), set()).add(key)

    def remove_check(self, key):
        check = self.checks.pop(key)
        self.owned_checks[(check["Node"], check["ServiceID"])].discard(key)

    def checks_of(self, node, service_id):
        return [self.checks[key] for key in sorted(self.owned_checks.get((node, service_id), ()))]

    def put_instance(self, node, service):
        previous = self.instances.get((node, service["ID"]))
        if previous:
            self.by_name[previous["Service"]].discard((node, service["ID"]))
        self.instances[(node, service["ID"])] = service
        self.by_name.setdefault(service["Service"], set()).add((node, service["ID"]))
        return previous

    def pop_instance(self, node, service_id):
        service = self.instances.pop((node, service_id), None)
        if service:
            self.by_name[service["Service"]].discard((node, service_id))
            for key in list(self.owned_checks.get((node, service_id), ())):
                self.remove_check(key)
        return service

    def check_entry(
        self, node, check_id, name, index, status="passing", service=None, output="", notes="", kind="", definition=None
    ):
        definition = definition or {}
        return {
            "Node": node,
            "CheckID": check_id,
            "Name": name,
            "Status": status,
            "Notes": notes,
            "Output": output,
            "ServiceID": service["ID"] if service else "",
            "ServiceName": service["Service"] if service else "",
            "ServiceTags": list(service["Tags"]) if service else [],
            "Type": kind,
            "Interval": definition.get("Interval", ""),
            "Timeout": definition.get("Timeout", ""),
            "ExposedPort": 0,
            "Definition": definition,
            "Namespace": "default",
            "CreateIndex": index,
            "ModifyIndex": index,
        }

    def touch_service(self, name, index, checks=False):
        self.service_indexes[name] = index
        if checks:
            self.checks_index = index

    def service_index(self, name):
        return self.service_indexes.get(name, self.services_index)


class ConsulTestServer:
    """Start with ``with ConsulTestServer() as consul:``; ``consul.address`` is the ``host:port``."""

    def __init__(self, datacenters=("dc1",), token="", certfile=None, keyfile=None, cafile=None):
        self.datacenters = {name: Datacenter(name) for name in datacenters}
        self.local_dc = datacenters[0]
        self.token = token
        self.tls = (certfile, keyfile, cafile) if certfile else None
        self.changed = threading.Condition()
        self.requests = []
        self.queries = []  # (method, path, query parameters) of each request, for what a client asked
        self.failure = None  # ("status", code, body) or ("hang", seconds)
        self.port = 0
        self.httpd = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self):
        server = HTTPServer(("127.0.0.1", self.port), self.handler_class())
        if self.tls:
            certfile, keyfile, cafile = self.tls
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile, keyfile)
            if cafile:
                context.load_verify_locations(cafile)
                context.verify_mode = ssl.CERT_REQUIRED
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self.httpd = server
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self):
        """Closes the listening socket: until ``start`` again, connections are refused."""
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
        with self.changed:
            self.changed.notify_all()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://{self.address}"

    def client(self):
        """A py-consul client of this server, with its token: tests read back what Consul holds through it,
        over the HTTP API, as any client of Consul would."""
        client = py_consul.Consul(host="127.0.0.1", port=self.port, scheme="https" if self.tls else "http")
        client.token = self.token or None
        return client

    # --- failures on demand ---------------------------------------------------------------------

    def fail_with(self, status, body="rpc error making call: No cluster leader"):
        self.failure = ("status", status, body)

    def hang(self, seconds):
        self.failure = ("hang", seconds)

    def recover(self):
        self.failure = None

    def count(self, prefix=""):
        return sum(1 for _, path in list(self.requests) if path.startswith(prefix))

    # --- state, as an operator or Consul's anti-entropy would change it --------------------------

    def register(
        self,
        name,
        service_id=None,
        address="",
        port=0,
        tags=(),
        meta=None,
        weights=None,
        node=AGENT_NODE,
        node_address="10.0.0.1",
        dc=None,
        checks=(),
        raw_service=None,
        omit=(),
    ):
        """Registers (or replaces) an instance; ``checks`` are (name, status, output) triples, or the checks
        of an agent registration (``agent_check``). ``raw_service`` replaces fields of the service as the
        health endpoint shows it, and ``omit`` leaves fields out of it, for answers that test a client."""
        with self.changed:
            datacenter = self.datacenters[dc or self.local_dc]
            datacenter.ensure_node(node, node_address)
            service = {
                "ID": service_id or name,
                "Service": name,
                "Tags": list(tags),
                "Address": address,
                **tagged_addresses(address, port),
                "Meta": dict(meta or {}),
                "Port": port,
                "Weights": dict(weights or {"Passing": 1, "Warning": 1}),
                "EnableTagOverride": False,
                "Namespace": "default",
            }
            service.update(raw_service or {})
            for field in omit:
                del service[field]
            self._put_instance(datacenter, node, service, checks)

    def _put_instance(self, datacenter, node, service, checks):
        index = datacenter.bump()
        previous = datacenter.put_instance(node, service)
        if previous and previous["Service"] != service["Service"]:
            datacenter.touch_service(previous["Service"], index)
        service["CreateIndex"] = previous["CreateIndex"] if previous else index
        service["ModifyIndex"] = index
        datacenter.services_index = index
        for number, check in enumerate(checks, start=1):
            if not isinstance(check, dict):
                check = dict(zip(("name", "status", "output"), check))
            check_id = check.get("id") or f"service:{service['ID']}" + (f":{number}" if len(checks) > 1 else "")
            datacenter.add_check(
                datacenter.check_entry(
                    node,
                    check_id,
                    check["name"],
                    index,
                    status=check["status"],
                    service=service,
                    output=check.get("output", ""),
                    notes=check.get("notes", ""),
                    kind=check.get("type", ""),
                    definition=check.get("definition"),
                )
            )
        datacenter.touch_service(service["Service"], index, checks=bool(checks))
        self.changed.notify_all()

    def deregister(self, service_id, node=AGENT_NODE, dc=None):
        with self.changed:
            datacenter = self.datacenters[dc or self.local_dc]
            had_checks = bool(datacenter.owned_checks.get((node, service_id)))
            service = datacenter.pop_instance(node, service_id)
            if service is None:
                raise ConsulError(
                    404,
                    f'Unknown service ID "{service_id}". Ensure that the service ID is passed, not the service name.',
                )
            index = datacenter.bump()
            datacenter.services_index = index
            datacenter.touch_service(service["Service"], index, checks=had_checks)
            self.changed.notify_all()

    def set_check(self, service_id, status, output="", node=AGENT_NODE, dc=None):
        """Sets the status of every check of an instance, as a check run would."""
        with self.changed:
            datacenter = self.datacenters[dc or self.local_dc]
            index = datacenter.bump()
            service = datacenter.instances[(node, service_id)]
            for check in datacenter.checks_of(node, service_id):
                check.update(Status=status, Output=output, ModifyIndex=index)
            datacenter.touch_service(service["Service"], index, checks=True)
            self.changed.notify_all()

    def set_maintenance(self, service_id, enable, reason="", node=AGENT_NODE, dc=None):
        with self.changed:
            datacenter = self.datacenters[dc or self.local_dc]
            service = datacenter.instances.get((node, service_id))
            if service is None:
                raise ConsulError(
                    404,
                    f'Unknown service ID "{service_id}". Ensure that the service ID is passed, not the service name.',
                )
            key = (node, f"_service_maintenance:{service_id}")
            if enable == (key in datacenter.checks):
                return
            index = datacenter.bump()
            if enable:
                notes = (
                    reason
                    or "Maintenance mode is enabled for this service, but no reason was provided. This is a default message."
                )
                datacenter.add_check(
                    datacenter.check_entry(
                        node, key[1], "Service Maintenance Mode", index, status="critical", service=service, notes=notes
                    )
                )
            else:
                datacenter.remove_check(key)
            datacenter.touch_service(service["Service"], index, checks=True)
            self.changed.notify_all()

    def reset_index(self, value=0, dc=None):
        """Every index of the datacenter drops to ``value``, as after a rebuild or a snapshot restore."""
        with self.changed:
            datacenter = self.datacenters[dc or self.local_dc]
            datacenter.raft_index = datacenter.services_index = datacenter.checks_index = value
            datacenter.service_indexes = dict.fromkeys(datacenter.service_indexes, value)
            self.changed.notify_all()

    # --- the HTTP API ------------------------------------------------------------------------------

    def handler_class(self):
        consul = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in two writes; with Nagle's algorithm the body waits for a delayed ACK.
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_GET(self):
                self.dispatch("GET")

            def do_PUT(self):
                self.dispatch("PUT")

            def do_POST(self):
                self.dispatch("POST")

            def do_DELETE(self):
                self.dispatch("DELETE")

            def dispatch(self, method):
                url = urlsplit(self.path)
                query = {key: values[-1] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                consul.requests.append((method, url.path))
                consul.queries.append((method, url.path, query))
                try:
                    consul.simulate_failure()
                    consul.authorize(url.path, self.headers, query)
                    status, payload, index = consul.route(method, unquote(url.path), query, body)
                except ConsulError as error:
                    status, payload, index = error.status, error.reason, None
                # A client that stopped waiting (its timeout is shorter than a hang) has nobody left to answer.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.reply(status, payload, index)

            def reply(self, status, payload, index):
                text = payload if isinstance(payload, str) else json.dumps(payload)
                data = text.encode()
                self.send_response(status)
                self.send_header(
                    "Content-Type", "text/plain; charset=utf-8" if isinstance(payload, str) else "application/json"
                )
                self.send_header("Content-Length", str(len(data)))
                if index is not None:
                    self.send_header("X-Consul-Index", str(index))
                    self.send_header("X-Consul-KnownLeader", "true")
                    self.send_header("X-Consul-LastContact", "0")
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def simulate_failure(self):
        failure = self.failure
        if failure is None:
            return
        if failure[0] == "hang":
            time.sleep(failure[1])
        else:
            raise ConsulError(failure[1], failure[2])

    def authorize(self, path, headers, query):
        # The catalog's datacenter list is the one endpoint here whose documented ACL is "none".
        if not self.token or path == "/v1/catalog/datacenters":
            return
        bearer = headers.get("Authorization", "").removeprefix("Bearer ").strip()
        given = headers.get("X-Consul-Token") or bearer or query.get("token", "")
        if not given:
            raise ConsulError(403, "Permission denied: anonymous token lacks permission")
        if given != self.token:
            raise ConsulError(403, "ACL not found")

    def datacenter(self, query):
        name = query.get("dc") or self.local_dc
        if name not in self.datacenters:
            raise ConsulError(500, "No path to datacenter")
        return self.datacenters[name]

    def route(self, method, path, query, body):
        if method == "GET" and path == "/v1/catalog/datacenters":
            return 200, sorted(self.datacenters), None
        if method == "GET" and path == "/v1/catalog/services":
            datacenter = self.datacenter(query)
            return self.blocking(query, lambda: datacenter.services_index, lambda: self.catalog_services(datacenter))
        if method == "GET" and path.startswith("/v1/health/service/"):
            datacenter, name = self.datacenter(query), path.removeprefix("/v1/health/service/")
            return self.blocking(
                query, lambda: datacenter.service_index(name), lambda: self.health_service(datacenter, name)
            )
        if method == "GET" and path.startswith("/v1/health/state/"):
            datacenter, state = self.datacenter(query), path.removeprefix("/v1/health/state/")
            if state not in {"any", "unknown", "passing", "warning", "critical"}:
                raise ConsulError(400, f"Bad check state: {state}")
            return self.blocking(
                query, lambda: datacenter.checks_index, lambda: self.checks_in_state(datacenter, state)
            )
        if method == "GET" and path == "/v1/agent/self":
            return 200, self.agent_self(), None
        if method == "PUT" and path == "/v1/agent/service/register":
            self.agent_register(body)
            return 200, "", None
        if method == "PUT" and path.startswith("/v1/agent/service/deregister/"):
            self.deregister(path.removeprefix("/v1/agent/service/deregister/"))
            return 200, "", None
        if method == "PUT" and path.startswith("/v1/agent/service/maintenance/"):
            if "enable" not in query:
                raise ConsulError(400, "Missing value for enable")
            enable = query["enable"].lower()
            if enable not in {"true", "false", "1", "0", "t", "f"}:
                raise ConsulError(400, "Invalid value for enable")
            service_id = path.removeprefix("/v1/agent/service/maintenance/")
            self.set_maintenance(service_id, enable in {"true", "1", "t"}, query.get("reason", ""))
            return 200, "", None
        if any(route.fullmatch(path) for route in ROUTES):
            raise ConsulError(405, f"method {method} not allowed")
        raise ConsulError(404, "Invalid URL path: not a recognized HTTP API endpoint\n")

    def blocking(self, query, current_index, render):
        """Answers at once without ``index``, else once the endpoint's index passes it or the wait ends."""
        # Consul reads both before it answers, so a malformed one is refused even without the other.
        wanted, wait = parse_index(query.get("index")), parse_wait(query.get("wait"))
        if wanted > 0:
            deadline = time.monotonic() + wait + random.uniform(0, wait / 16)
            with self.changed:
                while current_index() <= wanted and self.httpd is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self.changed.wait(remaining)
        with self.changed:
            return 200, render(), current_index()

    def catalog_services(self, datacenter):
        services = {}
        for service in datacenter.instances.values():
            tags = services.setdefault(service["Service"], [])
            tags.extend(tag for tag in service["Tags"] if tag not in tags)
        return services

    def health_service(self, datacenter, name):
        entries = []
        for node, service_id in sorted(datacenter.by_name.get(name, ())):
            service = datacenter.instances[(node, service_id)]
            checks = datacenter.checks_of(node, "") + datacenter.checks_of(node, service_id)
            entries.append(
                {
                    "Node": datacenter.nodes[node],
                    "Service": service,
                    "Checks": checks,
                }
            )
        return entries

    def checks_in_state(self, datacenter, state):
        return [check for check in datacenter.checks.values() if state == "any" or check["Status"] == state]

    def agent_self(self):
        """The agent's configuration and member information; ``DebugConfig`` is Consul's whole runtime
        configuration, of which only what this server knows is shown."""
        node_id = "9d754d17-d864-b1d3-e758-f3fe25a9874f"
        return {
            "Config": {
                "Datacenter": self.local_dc,
                "PrimaryDatacenter": self.local_dc,
                "NodeName": AGENT_NODE,
                "NodeID": node_id,
                "Revision": "0000000",
                "Server": True,
                "Version": CONSUL_VERSION,
            },
            "DebugConfig": {"Datacenter": self.local_dc, "NodeName": AGENT_NODE, "NodeID": node_id},
            "Coord": {"Adjustment": 0, "Error": 1.5, "Height": 0.00001, "Vec": [0, 0, 0, 0, 0, 0, 0, 0]},
            "Member": {
                "Name": AGENT_NODE,
                "Addr": "127.0.0.1",
                "Port": 8301,
                "Tags": {
                    "build": f"{CONSUL_VERSION}:0000000",
                    "dc": self.local_dc,
                    "id": node_id,
                    "port": "8300",
                    "role": "consul",
                    "vsn": "2",
                    "vsn_max": "3",
                    "vsn_min": "2",
                },
                "Status": 1,
                "ProtocolMin": 1,
                "ProtocolMax": 5,
                "ProtocolCur": 2,
                "DelegateMin": 2,
                "DelegateMax": 5,
                "DelegateCur": 4,
            },
            "Meta": {"consul-network-segment": ""},
        }

    def agent_register(self, body):
        try:
            definition = {key.lower(): value for key, value in json.loads(body or b"{}").items()}
        except (ValueError, AttributeError):
            raise ConsulError(400, "Request decode failed: invalid JSON") from None
        name = definition.get("name") or ""
        if not name:
            raise ConsulError(400, "Missing service name")
        weights = {key.capitalize(): value for key, value in (definition.get("weights") or {}).items()}
        weights = {"Passing": weights.get("Passing", 1), "Warning": weights.get("Warning", 1)}
        if not isinstance(weights["Passing"], int) or weights["Passing"] < 1:
            raise ConsulError(400, "Invalid Weights: Passing must be greater than 0")
        if not isinstance(weights["Warning"], int) or weights["Warning"] < 0:
            raise ConsulError(400, "Invalid Weights: Warning must be greater or equal than 0")
        meta = definition.get("meta") or {}
        for key, value in meta.items():
            if not META_KEY.match(key) or len(key) > 128:
                raise ConsulError(400, f"Invalid Service Meta: Key contains invalid characters: {key!r}")
            if len(str(value)) > 512:
                raise ConsulError(400, f"Invalid Service Meta: Value is too long (limit: 512 characters): {key!r}")
        # The agent takes ``Check`` and ``Checks`` both, ``Check`` first.
        given = ([definition["check"]] if definition.get("check") else []) + list(definition.get("checks") or [])
        checks = [self.agent_check(check, name) for check in given]
        address, port = definition.get("address") or "", int(definition.get("port") or 0)
        service = {
            "ID": definition.get("id") or name,
            "Service": name,
            "Tags": list(definition.get("tags") or []),
            "Address": address,
            **tagged_addresses(address, port),
            "Meta": meta,
            "Port": port,
            "Weights": weights,
            "EnableTagOverride": bool(definition.get("enabletagoverride")),
            "Namespace": "default",
        }
        with self.changed:
            datacenter = self.datacenters[self.local_dc]
            datacenter.ensure_node(AGENT_NODE, "127.0.0.1")
            existing = datacenter.checks_of(AGENT_NODE, service["ID"])
            # Without replace-existing-checks, a re-registration keeps the checks it does not mention.
            keep = checks == [] and existing
            self._put_instance(datacenter, AGENT_NODE, service, [] if keep else checks)

    def agent_check(self, given, service_name):
        """A check of a service registration, as the agent keeps it; Consul's own validation errors."""
        if not isinstance(given, dict):
            raise ConsulError(400, "Request decode failed: a check is not an object")
        check = {key.lower(): value for key, value in given.items()}
        interval = seconds(check["interval"]) if check.get("interval") else 0
        timeout = seconds(check["timeout"]) if check.get("timeout") else 0
        ttl = seconds(check["ttl"]) if check.get("ttl") else 0
        kind = "http" if check.get("http") else "tcp" if check.get("tcp") else "ttl" if ttl else ""
        if interval and ttl:
            raise ConsulError(400, "Invalid check: Interval and TTL cannot both be specified")
        if kind in ("http", "tcp") and interval <= 0:
            raise ConsulError(
                400, "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"
            )
        if not kind:
            raise ConsulError(400, "Invalid check: TTL must be > 0 for TTL checks")
        fields = {
            "HTTP": check.get("http") or "",
            "Header": check.get("header") or {},
            "Method": check.get("method") or "",
            "TLSSkipVerify": bool(check.get("tlsskipverify")),
            "TCP": check.get("tcp") or "",
            "Interval": go_duration(interval) if interval else "",
            "Timeout": go_duration(timeout) if timeout else "",
            "DeregisterCriticalServiceAfter": go_duration(seconds(check["deregistercriticalserviceafter"]))
            if check.get("deregistercriticalserviceafter")
            else "",
            "TTL": go_duration(ttl) if ttl else "",
        }
        return {
            "id": check.get("checkid") or check.get("id") or "",
            "name": check.get("name") or f"Service '{service_name}' check",
            "status": check.get("status") or "critical",
            "notes": check.get("notes") or "",
            "type": kind,
            # Consul's HealthCheckDefinition leaves its empty fields out of the JSON.
            "definition": {key: value for key, value in fields.items() if value},
        }
