"""Fuzzing of the Consul reconcile: whatever /v1/health/service/:service answers, reconcile stores what fits
the Instance and Service columns, raises nothing, and a well-formed entry beside a malformed one lands.

The answers start from entries as the wire-level Consul test server writes them (tests/consul_server.py,
after Consul's documented API), round-tripped through JSON as py-consul hands them over, then mutated:
fields deleted, given other types, NUL, lone surrogates, extreme numbers, huge lists and maps.
The hostile values, the check that text is storable and the settings (derandomized, no example database,
so every run tries the same inputs) are those of tests/test_fuzz_decoders.py.
"""

import copy
import json
from datetime import UTC, datetime
from functools import cache

import pytest
from django.db import transaction
from hypothesis import example, given, settings
from hypothesis import strategies as st

from collectors.consul_reconcile import (
    CONSUL_FIELDS,
    COPY_AT_LEAST,
    MAX_META_VALUE,
    MAX_OUTPUT,
    MAX_TAG,
    MAX_TAGS,
    MAX_TEXT,
    parse_entry,
    reconcile,
)
from tests.consul_server import AGENT_NODE, ConsulTestServer
from tests.test_fuzz_decoders import FUZZ, assert_storable_text, at, json_paths, numbers, texts, with_value
from topology.models import Instance, Service
from topology.models.services import BalancingPolicy, Health

DATACENTER = "dc1"
NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
MAX_INT = 2**31 - 1  # PositiveIntegerField, in PostgreSQL an integer


@cache
def real_answer():
    """/v1/health/service/payments: two instances on two nodes, weights, meta, checks, one in maintenance."""
    consul = ConsulTestServer()  # never started: its catalog renders the answers
    consul.register(
        "payments",
        "payments-1",
        address="10.0.0.5",
        port=8080,
        tags=["v1", "blue"],
        meta={"meshscope-balancing": "weighted", "version": "1.2"},
        weights={"Passing": 10, "Warning": 1},
        checks=[("HTTP on /health", "passing", "HTTP GET http://10.0.0.5:8080/health: 200 OK")],
    )
    consul.register(
        "payments", "payments-2", port=8081, node="node-two", node_address="10.0.0.6", checks=[("tcp", "warning", "")]
    )
    consul.set_maintenance("payments-1", True, reason="deploy")
    return json.loads(json.dumps(consul.health_service(consul.datacenters[DATACENTER], "payments")))


def well_formed_entry(service_id="payments-good", node="node-good"):
    entry = copy.deepcopy(real_answer()[1])
    entry["Node"].update(Node=node, Address="10.9.9.9")
    entry["Service"].update(ID=service_id, Port=9090)
    return entry


consul_values = st.one_of(
    st.none(),
    st.booleans(),
    numbers,
    texts,
    st.recursive(
        st.none() | st.booleans() | numbers | texts,
        lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
        max_leaves=8,
    ),
    # Huge lists and maps: tags, meta and checks have no size limit on the wire.
    st.sampled_from([MAX_TAGS + 1, 3000]).map(lambda size: [f"tag-{i}" for i in range(size)]),
    st.sampled_from([100, 3000]).map(lambda size: {f"key-{i}": "v" * (i % 600) for i in range(size)}),
    st.sampled_from([100, 1000]).map(lambda size: [{"Name": f"c{i}", "Status": "passing"} for i in range(size)]),
)


@st.composite
def mutated_answers(draw):
    """The real answer with one to four values replaced, deleted or added to, as JSON would deliver it."""
    answer = copy.deepcopy(real_answer())
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(list(json_paths(answer))[1:]))
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]))
        target = at(answer, path)
        if action == "add" and isinstance(target, dict):
            target[draw(texts)] = draw(consul_values)
        elif action == "add" and isinstance(target, list):
            target.append(draw(consul_values))
        elif action == "delete":
            del at(answer, path[:-1])[path[-1]]
        else:
            at(answer, path[:-1])[path[-1]] = draw(consul_values)
    # py-consul hands over what json.loads made of Consul's body.
    return json.loads(json.dumps(answer))


# --- what every stored field must be --------------------------------------------------------------


def column_length(model, name):
    return model._meta.get_field(name).max_length


def assert_instance_fields_fit(fields):
    assert_storable_text(fields["consul_id"], column_length(Instance, "consul_id"))
    assert fields["consul_id"], "an entry without a service ID names no instance"
    for name in ("node", "address", "datacenter"):
        assert_storable_text(fields[name], column_length(Instance, name))
    assert fields["port"] is None or (type(fields["port"]) is int and 0 < fields["port"] < 65536), fields["port"]
    for name in ("weight_passing", "weight_warning"):
        assert type(fields[name]) is int and 0 <= fields[name] <= MAX_INT, fields[name]
    assert fields["health"] in Health.values
    assert type(fields["tags"]) is list and len(fields["tags"]) <= MAX_TAGS
    for tag in fields["tags"]:
        assert_storable_text(tag, MAX_TAG)
    assert type(fields["meta"]) is dict
    for key, value in fields["meta"].items():
        assert_storable_text(key, MAX_TEXT)
        assert_storable_text(value, MAX_META_VALUE)
    assert type(fields["checks"]) is list
    for check in fields["checks"]:
        assert set(check) == {"id", "scope", "name", "status", "output"}
        assert_storable_text(check["id"], MAX_TEXT)
        assert check["scope"] in ("node", "service")
        assert_storable_text(check["name"], MAX_TEXT)
        assert check["status"] in Health.values
        assert_storable_text(check["output"], MAX_OUTPUT)
    assert type(fields["in_maintenance"]) is bool
    # What the JSON columns are written as; PostgreSQL's JSON has no NaN.
    json.dumps([fields["tags"], fields["meta"], fields["checks"]], allow_nan=False, ensure_ascii=False).encode()


def assert_stored_rows_fit():
    for instance in Instance.objects.all():
        assert_storable_text(instance.identity, column_length(Instance, "identity"))
        assert_instance_fields_fit({name: getattr(instance, name) for name in CONSUL_FIELDS})
    for service in Service.objects.all():
        assert_storable_text(service.name, column_length(Service, "name"))
        assert_storable_text(service.datacenter, column_length(Service, "datacenter"))
        assert service.balancing_policy in ["", *BalancingPolicy.values]
        assert all(isinstance(tag, str) for tag in service.tags)


def assert_landed(entry, service="payments"):
    """The entry's instance is stored, registered, with the fields parse_entry gives it."""
    expected = parse_entry(entry, DATACENTER)
    instance = Instance.objects.get(
        service__name=service, datacenter=DATACENTER, node=expected["node"], consul_id=expected["consul_id"]
    )
    assert {name: getattr(instance, name) for name in expected} == expected
    assert Service.objects.get(name=service).deregistered_at is None


def rolled_back(function):
    """Runs ``function`` in a savepoint that is then undone: every example starts from the same tables."""
    with transaction.atomic():
        function()
        transaction.set_rollback(True)


# --- the tests ------------------------------------------------------------------------------------


def test_the_real_answer_that_the_fuzzer_mutates_parses_whole():
    first, second = (parse_entry(entry, DATACENTER) for entry in real_answer())

    assert (first["consul_id"], first["node"], first["port"], first["in_maintenance"]) == (
        "payments-1",
        AGENT_NODE,
        8080,
        True,
    )
    assert (first["weight_passing"], first["meta"]["meshscope-balancing"]) == (10, "weighted")
    assert (second["consul_id"], second["address"], second["health"]) == ("payments-2", "10.0.0.6", "warning")


@settings(FUZZ, max_examples=300)
@given(answer=mutated_answers())
# What the fuzzer found: Checks that are a number, a port of true, NUL in a meta value, a lone surrogate in a tag.
@example(with_value(real_answer(), (0, "Checks"), -(2**63)))
@example(with_value(real_answer(), (0, "Service", "Port"), True))
@example(with_value(real_answer(), (0, "Service", "Meta", "meshscope-balancing"), "\x00"))
@example(with_value(real_answer(), (0, "Service", "Tags", 0), "\ud800"))
def test_parse_entry_never_raises_and_every_field_fits_its_column(answer):
    for entry in answer:
        fields = parse_entry(entry, DATACENTER)
        if fields is not None:
            assert_instance_fields_fit(fields)


@pytest.mark.django_db
@settings(FUZZ, max_examples=60)
@given(first=mutated_answers(), then=mutated_answers())
@example(with_value(real_answer(), (0, "Service", "Meta", "version"), "\x00"), real_answer())
@example(real_answer(), with_value(real_answer(), (1, "Node", "Node"), "node-\ud800"))
@example(with_value(real_answer(), (1, "Checks"), 7), with_value(real_answer(), (1, "Checks", 0, "Output"), "\x00"))
def test_reconcile_never_raises_and_a_well_formed_entry_after_malformed_ones_still_lands(first, then):
    good = well_formed_entry()

    def run():
        # The first answer creates rows, the second updates or deregisters them.
        for answer in (first, then):
            reconcile(DATACENTER, {"payments": [*answer, good], "only-malformed": answer}, NOW)
            assert_landed(good)
        assert_stored_rows_fit()

    rolled_back(run)


@pytest.mark.django_db
@settings(FUZZ, max_examples=12)
@given(answer=mutated_answers())
@example(with_value(real_answer(), (0, "Service", "Port"), True))
@example(with_value(real_answer(), (1, "Service", "Weights", "Passing"), False))
def test_a_first_sync_large_enough_for_copy_stores_malformed_entries_within_bounds(answer):
    """From COPY_AT_LEAST new rows on, rows go to PostgreSQL through COPY, which adapts values its own way."""
    many = [well_formed_entry(f"payments-{i}", f"node-{i}") for i in range(COPY_AT_LEAST)]

    def run():
        reconcile(DATACENTER, {"payments": [*answer, *many]}, NOW)
        assert_landed(many[-1])
        assert_stored_rows_fit()

    rolled_back(run)


@pytest.mark.django_db
@settings(FUZZ, max_examples=30)
@given(names=st.lists(texts, min_size=1, max_size=3))
@example(["\ud800"])
@example(["\x00"])
@example(["x" * 256])
def test_a_service_name_that_cannot_be_stored_is_left_out_and_the_others_land(names):
    good = well_formed_entry()

    def run():
        reconcile(DATACENTER, {**{name: [good] for name in names}, "payments": [good]}, NOW)
        assert_landed(good)
        assert_stored_rows_fit()

    rolled_back(run)


@pytest.mark.django_db
@settings(FUZZ, max_examples=40)
@given(
    id_length=st.sampled_from([1, 200, 254, 255, 256, 400]),
    node_length=st.sampled_from([1, 200, 252, 253, 254, 255, 256, 300]),
    nodes=st.integers(2, 3),
)
@example(id_length=255, node_length=1, nodes=2)
@example(id_length=1, node_length=254, nodes=3)
def test_instances_of_one_id_on_nodes_consul_tells_apart_each_land_when_cut_to_their_columns(
    id_length, node_length, nodes
):
    """Consul IDs are unique per agent: an ID on several nodes gets an identity of "ID@node" or
    "ID@node.datacenter". Cut to 255 characters, these can all be the same."""
    service_id = "i" * id_length
    names = ["n" * (node_length - 1) + str(number) for number in range(nodes)]
    entries = [well_formed_entry(service_id, name) for name in names]

    def run():
        reconcile(DATACENTER, {"payments": entries}, NOW)
        for entry in entries:
            assert_landed(entry)
        assert Instance.objects.count() == len({name[: column_length(Instance, "node")] for name in names})
        assert_stored_rows_fit()

    rolled_back(run)
