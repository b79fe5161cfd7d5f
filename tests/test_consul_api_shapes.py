"""The Consul API test server answers as Consul's API documentation shows, so that what meshscope does
against it holds against Consul.

Each endpoint's documented sample answer is recorded in ``tests/consul_api_examples/`` with its source.
The server is brought into a comparable state through py-consul, as meshscope brings Consul, and its
answer must have the sample's shape: the same keys, recursively, and the same JSON types. Where they
differ on purpose, the exception is listed below with its reason. Blocking queries, ``X-Consul-Index``
and the error answers are held to the documented behaviour too.
"""

import json
import threading
import time
import uuid
from pathlib import Path

import consul as py_consul
import pytest
import requests

from tests.consul_server import ConsulTestServer

EXAMPLES = Path(__file__).parent / "consul_api_examples"
BEHAVIOUR = json.loads((EXAMPLES / "api_behaviour.json").read_text())
INDEX = BEHAVIOUR["blocking_queries"]["index_header"]
BLOCKING_READS = ["/v1/catalog/services", "/v1/health/service/redis", "/v1/health/state/any"]

# Fields Consul sends that a sample answer does not show. Path syntax: ``[]`` is any item of a list,
# ``*`` any value of a map whose keys are data.
CHECK_FIELDS_NOT_IN_THE_SAMPLE = {
    "Type": "structs.HealthCheck sends the check's type; agent/service.mdx's sample of a check shows it",
    "Interval": "structs.HealthCheck sends the check's interval (empty for a check that has none)",
    "Timeout": "structs.HealthCheck sends the check's timeout (empty for a check that has none)",
    "ExposedPort": "structs.HealthCheck sends it (0 unless Connect exposes the check)",
    "Definition": "structs.HealthCheck sends the check's definition; agent/service.mdx's sample of a check shows it",
    "CreateIndex": "every catalog entry carries its Raft indexes; agent/service.mdx's sample of a check shows them",
    "ModifyIndex": "every catalog entry carries its Raft indexes; agent/service.mdx's sample of a check shows them",
}
RULES = {
    "catalog_datacenters": {},
    "catalog_services": {"data_keyed": {""}},
    "health_service": {
        "data_keyed": {"[].Node.TaggedAddresses", "[].Node.Meta", "[].Service.TaggedAddresses", "[].Service.Meta"},
        "respelled": {
            "[].Service.TaggedAddresses.*": (
                {"address": "Address", "port": "Port"},
                "health.mdx writes the keys as a registration may spell them; Consul answers with the field names "
                "of structs.ServiceAddress, as agent/service.mdx's sample of the same field shows",
            )
        },
        "undocumented": {
            "[].Service.EnableTagOverride": "structs.NodeService sends it; agent/service.mdx's sample shows it",
            "[].Service.CreateIndex": "every catalog entry carries its Raft indexes; catalog.mdx's samples show them",
            "[].Service.ModifyIndex": "every catalog entry carries its Raft indexes; catalog.mdx's samples show them",
            **{f"[].Checks[].{field}": reason for field, reason in CHECK_FIELDS_NOT_IN_THE_SAMPLE.items()},
        },
    },
    "health_state": {
        "undocumented": {f"[].{field}": reason for field, reason in CHECK_FIELDS_NOT_IN_THE_SAMPLE.items()},
    },
    "agent_self": {
        # DebugConfig is Consul's whole runtime configuration (the page shows a placeholder), the member's
        # tags are Serf's (which vary with the agent's role and version), and Meta is the operator's.
        "data_keyed": {"DebugConfig", "Member.Tags", "Meta"},
        "undocumented": {
            "Config.PrimaryDatacenter": "Consul's agent/self Config sends it beside Datacenter",
            "Coord.Height": "a Vivaldi coordinate has a height (serf/coordinate.Coordinate), which Consul sends",
        },
    },
}


def example(name):
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}[type(value)]


def richest(values):
    """The sample value that shows the most, to compare every value of a list or map with."""
    return max(values, key=lambda value: len(json.dumps(value)))


def differences(documented, actual, rules, path=""):
    """Where ``actual`` differs in shape from the documented sample, as sentences (none when it does not)."""
    where = path or "the answer"
    if json_type(documented) != json_type(actual):
        return [f"{where}: {json_type(actual)}, where the documentation shows {json_type(documented)}"]
    found = []
    if isinstance(documented, list) and documented:
        for item in actual:
            found += differences(richest(documented), item, rules, f"{path}[]")
    elif isinstance(documented, dict) and path in rules.get("data_keyed", ()):
        for value in actual.values():
            if documented:
                found += differences(richest(documented.values()), value, rules, f"{path}.*".lstrip("."))
    elif isinstance(documented, dict):
        spelling, _ = rules.get("respelled", {}).get(path, ({}, ""))
        documented = {spelling.get(key, key): value for key, value in documented.items()}
        prefix = f"{path}." if path else ""
        for key in sorted(documented.keys() - actual.keys()):
            found.append(f"{prefix}{key}: missing")
        for key in sorted(actual.keys() - documented.keys()):
            if f"{prefix}{key}" not in rules.get("undocumented", {}):
                found.append(f"{prefix}{key}: not in the documentation")
        for key in sorted(documented.keys() & actual.keys()):
            found += differences(documented[key], actual[key], rules, f"{prefix}{key}")
    return found


def assert_documented_shape(name, answer):
    assert differences(example(name)["response"], answer, RULES[name]) == []


@pytest.fixture
def consul():
    with ConsulTestServer(datacenters=("dc1", "dc2")) as server:
        yield server


@pytest.fixture
def client(consul):
    return py_consul.Consul(host="127.0.0.1", port=consul.port)


def register_redis(client, **changes):
    """The instance of health.mdx's sample answer, registered as meshscope registers one."""
    registration = {
        "service_id": "redis",
        "address": "10.1.10.12",
        "port": 8000,
        "tags": ["primary"],
        "meta": {"redis_version": "4.0"},
        "weights": {"Passing": 10, "Warning": 1},
        "check": py_consul.Check.tcp("10.1.10.12", 8000, "10s", timeout="1s"),
    }
    assert client.agent.service.register("redis", **{**registration, **changes})


def get(consul, path, **params):
    return requests.get(f"{consul.url}{path}", params=params, timeout=30)


def wait_until(condition, seconds=10):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true"
        time.sleep(0.01)


# --- the shape of each answer --------------------------------------------------------------------------


def test_the_shape_checker_reports_a_missing_key_an_unknown_key_and_a_wrong_type():
    documented = [{"Node": {"ID": "x", "Port": 1}, "Tags": ["a"]}]
    actual = [{"Node": {"ID": 7, "Extra": True}, "Tags": [3]}]

    assert differences(documented, actual, {}) == [
        "[].Node.Port: missing",
        "[].Node.Extra: not in the documentation",
        "[].Node.ID: number, where the documentation shows string",
        "[].Tags[]: number, where the documentation shows string",
    ]


def test_catalog_datacenters_answers_as_documented(consul, client):
    answer = client.catalog.datacenters()

    assert_documented_shape("catalog_datacenters", answer)
    assert answer == ["dc1", "dc2"]


def test_catalog_services_answers_as_documented(client):
    register_redis(client)
    client.agent.service.register("postgresql", service_id="pg-1", port=5432, tags=["primary", "secondary"])

    _, answer = client.catalog.services()

    assert_documented_shape("catalog_services", answer)
    # The sample also lists "consul", which each Consul server registers for itself; the test server has
    # no servers of its own to list, so its catalog holds only what is registered in it.
    assert answer == {"redis": ["primary"], "postgresql": ["primary", "secondary"]}


def test_health_service_answers_as_documented(client):
    register_redis(client)
    client.agent.service.maintenance("redis", "true", "For the docs")  # its check is shown too

    _, answer = client.health.service("redis")

    assert_documented_shape("health_service", answer)
    [entry] = answer
    assert {check["CheckID"] for check in entry["Checks"]} == {
        "serfHealth",
        "service:redis",
        "_service_maintenance:redis",
    }
    # What the sample's maps hold, as an agent fills them: a node ID is a UUID, a node has its LAN and WAN
    # addresses, and a service registered with an IPv4 address gets the agent's lan_ipv4 and wan_ipv4.
    assert uuid.UUID(entry["Node"]["ID"]) and {"lan", "wan"} <= set(entry["Node"]["TaggedAddresses"])
    assert entry["Service"]["TaggedAddresses"] == {
        "lan_ipv4": {"Address": "10.1.10.12", "Port": 8000},
        "wan_ipv4": {"Address": "10.1.10.12", "Port": 8000},
    }


def test_a_service_registered_without_an_address_has_no_tagged_addresses_as_consul_leaves_them_out(client):
    client.agent.service.register("redis", service_id="redis", port=8000)

    _, [entry] = client.health.service("redis")

    assert "TaggedAddresses" not in entry["Service"] and entry["Service"]["Address"] == ""


def test_health_state_answers_as_documented(client):
    register_redis(client)

    _, answer = client.health.state("any")

    assert_documented_shape("health_state", answer)
    assert {check["CheckID"] for check in answer} == {"serfHealth", "service:redis"}


def test_agent_self_answers_as_documented(client):
    answer = client.agent.self()

    assert_documented_shape("agent_self", answer)


def test_the_documented_registration_payload_is_accepted_and_shown_back(consul, client):
    payload = example("agent_service_register")["request"]
    # The sample's check runs a script, which an agent refuses unless script checks are enabled; meshscope
    # registers HTTP and TCP checks only.
    del payload["Check"]

    response = requests.put(f"{consul.url}/v1/agent/service/register", json=payload, timeout=30)

    assert (response.status_code, response.text) == (200, "")  # the page documents no response body
    _, [entry] = client.health.service("redis")
    shown = {key: entry["Service"][key] for key in ("ID", "Service", "Tags", "Address", "Port", "Meta", "Weights")}
    assert shown == {
        "ID": "redis1",
        "Service": "redis",
        "Tags": ["primary", "v1"],
        "Address": "127.0.0.1",
        "Port": 8000,
        "Meta": {"redis_version": "4.0"},
        "Weights": {"Passing": 10, "Warning": 1},
    }


@pytest.mark.parametrize("name", ["agent_service_deregister", "agent_service_maintenance"])
def test_agent_writes_answer_200_with_no_body_as_documented(consul, client, name):
    register_redis(client)
    documented = example(name)
    path = documented["path"].replace(":service_id", "redis")

    response = requests.put(f"{consul.url}{path}", params=documented.get("query", {}), timeout=30)

    assert documented["response"] is None and (response.status_code, response.text) == (200, "")


# --- blocking queries and X-Consul-Index ---------------------------------------------------------------


def test_every_blocking_read_answers_with_an_index_that_grows_with_each_change(consul, client):
    register_redis(client)
    before = {path: int(get(consul, path).headers[INDEX]) for path in BLOCKING_READS}

    register_redis(client, port=8001)
    after_registration = {path: int(get(consul, path).headers[INDEX]) for path in BLOCKING_READS}
    client.agent.service.maintenance("redis", "true")
    after_maintenance = {path: int(get(consul, path).headers[INDEX]) for path in BLOCKING_READS}

    assert all(after_registration[path] > before[path] for path in BLOCKING_READS)
    # A check change moves the service's and the checks' indexes; the catalog's service list is unchanged.
    assert after_maintenance["/v1/health/service/redis"] > after_registration["/v1/health/service/redis"]
    assert after_maintenance["/v1/health/state/any"] > after_registration["/v1/health/state/any"]
    assert after_maintenance["/v1/catalog/services"] == after_registration["/v1/catalog/services"]


def test_reads_that_do_not_block_send_no_index(consul):
    for path in ("/v1/catalog/datacenters", "/v1/agent/self"):
        response = get(consul, path)
        assert response.status_code == 200 and INDEX not in response.headers


@pytest.mark.parametrize("path", BLOCKING_READS)
def test_a_blocking_query_returns_once_its_index_moves(consul, client, path):
    register_redis(client)
    index = int(get(consul, path).headers[INDEX])
    answers = []
    waiting = threading.Thread(target=lambda: answers.append(get(consul, path, index=index, wait="5m")))
    waiting.start()
    wait_until(lambda: any(str(index) == query.get("index") for _, _, query in list(consul.queries)))

    register_redis(client, port=8001, check=py_consul.Check.tcp("10.1.10.12", 8001, "10s"))

    waiting.join(timeout=60)  # far less than the 5 minutes it would hold without a change
    assert not waiting.is_alive(), "the blocking query did not return on a change"
    assert answers[0].status_code == 200 and int(answers[0].headers[INDEX]) > index


@pytest.mark.parametrize("path", BLOCKING_READS)
def test_a_blocking_query_with_nothing_changing_returns_after_its_wait_with_the_same_index(consul, client, path):
    register_redis(client)
    first = get(consul, path)

    again = get(consul, path, index=first.headers[INDEX], wait="50ms")

    assert again.status_code == 200
    assert again.headers[INDEX] == first.headers[INDEX] and again.json() == first.json()


# --- errors ----------------------------------------------------------------------------------------------


def test_an_unknown_service_is_an_empty_list_with_an_index(consul, client):
    index, entries = client.health.service("nowhere")

    assert entries == [] and int(index) > 0
    assert get(consul, "/v1/health/service/nowhere").status_code == 200


@pytest.mark.parametrize("name", ["agent_service_deregister", "agent_service_maintenance"])
def test_an_agent_write_to_an_unknown_service_id_is_a_404_with_consuls_words(consul, client, name):
    documented = example(name)
    [error] = documented["errors"]
    path = documented["path"].replace(":service_id", "web-9")

    response = requests.put(f"{consul.url}{path}", params={"enable": "true"}, timeout=30)

    assert response.status_code == error["status"] == 404
    assert response.text == error["body"].format(service_id="web-9")
    # py-consul, as meshscope uses it, turns that 404 into False.
    assert client.agent.service.deregister("web-9") is False
    assert client.agent.service.maintenance("web-9", "true") is False


@pytest.mark.parametrize("path", BLOCKING_READS)
def test_an_unknown_datacenter_is_consuls_500_no_path_to_datacenter(consul, client, path):
    documented = BEHAVIOUR["unknown_datacenter"]

    response = get(consul, path, dc="nowhere")

    assert (response.status_code, response.text) == (documented["status"], documented["body"])
    with pytest.raises(py_consul.ConsulException, match=documented["body"]):
        client.catalog.services(dc="nowhere")


@pytest.mark.parametrize("path", BLOCKING_READS)
def test_a_malformed_index_or_wait_is_consuls_400(consul, path):
    documented = BEHAVIOUR["malformed_blocking_parameters"]

    bad_index = get(consul, path, index="ten")
    bare_number_wait = get(consul, path, index="1", wait="10")

    assert (bad_index.status_code, bad_index.text) == (documented["status"], documented["index_body"])
    assert (bare_number_wait.status_code, bare_number_wait.text) == (documented["status"], documented["wait_body"])


def test_only_the_datacenter_list_answers_without_a_token_when_acls_are_on(consul, client):
    consul.token = "the-token"

    datacenters = client.catalog.datacenters()  # its documented ACL is "none"

    assert datacenters == ["dc1", "dc2"]
    with pytest.raises(py_consul.ACLPermissionDenied, match="Permission denied"):
        client.catalog.services()


def test_a_path_consul_does_not_serve_is_a_404_and_another_method_a_405(consul):
    unknown, method = BEHAVIOUR["unknown_path"], BEHAVIOUR["method_not_allowed"]

    not_served = get(consul, "/v1/catalog/nothing-here")
    wrong_method = get(consul, "/v1/agent/service/register")
    wrong_write = requests.put(f"{consul.url}/v1/catalog/services", timeout=30)

    assert (not_served.status_code, not_served.text) == (unknown["status"], unknown["body"])
    assert (wrong_method.status_code, wrong_method.text) == (method["status"], method["body"].format(method="GET"))
    assert (wrong_write.status_code, wrong_write.text) == (method["status"], method["body"].format(method="PUT"))
