"""The Consul collector against the Consul API test server, through the real py-consul client over HTTP."""

import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from collectors import consul_client
from collectors.consul import sync_consul
from demo.embedded import free_port
from tests.consul_server import AGENT_NODE, ConsulTestServer
from topology.models import Instance, Service, SourceStatus
from topology.models.services import ConsulDatacenter

pytestmark = pytest.mark.django_db

WAIT = 0.2


@pytest.fixture
def consul(settings, monkeypatch):
    monkeypatch.setattr(consul_client, "REQUEST_TIMEOUT_SECONDS", 0.5)
    with ConsulTestServer(datacenters=("dc1", "dc2")) as server:
        settings.CONSUL_HTTP_ADDR = server.url
        settings.CONSUL_HTTP_TOKEN = ""
        settings.CONSUL_DATACENTERS = ["dc1"]
        settings.CONSUL_BLOCKING_WAIT_SECONDS = WAIT
        yield server


def web(consul, service_id="web-1", port=8080, **kwargs):
    defaults = {"address": "10.1.0.1", "tags": ["v1"], "checks": [("http", "passing", "HTTP GET: 200 OK")]}
    consul.register("web", service_id, port=port, **{**defaults, **kwargs})


def status(dc="dc1"):
    return SourceStatus.objects.get(name=f"consul:{dc}")


def allow_retry(dc="dc1"):
    """Lets the backoff pass without waiting for it."""
    ConsulDatacenter.objects.filter(name=dc).update(retry_after=timezone.now() - timedelta(seconds=1))


def test_first_sync_stores_every_instance_with_weights_checks_and_health(consul):
    web(consul, "web-1", weights={"Passing": 10, "Warning": 2}, meta={"version": "1.2"})
    web(consul, "web-2", port=8081, checks=[("http", "critical", "HTTP GET: 503")])
    consul.register("db", "db-1", port=5432, node="db-node", node_address="10.2.0.9")

    sync_consul()

    web_service = Service.objects.get(name="web")
    assert (web_service.in_consul, web_service.datacenter, web_service.tags) == (True, "dc1", ["v1"])
    first = Instance.objects.get(identity="web-1")
    assert (first.consul_id, first.node, first.address, first.port) == ("web-1", AGENT_NODE, "10.1.0.1", 8080)
    assert (first.weight_passing, first.weight_warning, first.meta) == (10, 2, {"version": "1.2"})
    assert first.health == "passing" and first.in_consul and first.datacenter == "dc1"
    assert {
        "id": "service:web-1",
        "scope": "service",
        "name": "http",
        "status": "passing",
        "output": "HTTP GET: 200 OK",
    } in first.checks
    assert Instance.objects.get(identity="web-2").health == "critical"  # critical instances are kept
    db = Instance.objects.get(identity="db-1")
    assert db.address == "10.2.0.9"  # no service address: the node's, as Consul says
    assert status().last_success is not None and not status().is_stale


def test_steady_state_sends_only_the_two_blocking_queries_and_no_per_service_request(consul):
    for number in range(20):
        consul.register(f"svc-{number}", port=9000 + number)
    sync_consul()
    assert status().stale_reason == ""
    stored = ConsulDatacenter.objects.get(name="dc1")
    before = len(consul.queries)

    sync_consul()
    sync_consul()

    asked = consul.queries[before:]
    assert sorted({path for _, path, _ in asked}) == ["/v1/catalog/services", "/v1/health/state/any"]
    assert len(asked) == 4
    # Each is a blocking query on the index of the last answer, which Consul holds until a change.
    last_index = {"/v1/catalog/services": stored.catalog_index, "/v1/health/state/any": stored.checks_index}
    assert all(query.get("index") == str(last_index[path]) and query.get("wait") for _, path, query in asked), asked


def test_first_sync_reads_each_service_once_when_the_checks_answer_comes_later(consul, monkeypatch):
    for number in range(5):
        consul.register(f"svc-{number}", port=9000 + number, checks=[("tcp", "passing", "")])
    answer_checks = consul.checks_in_state

    def slowly(datacenter, state):
        time.sleep(0.3)
        return answer_checks(datacenter, state)

    monkeypatch.setattr(consul, "checks_in_state", slowly)

    sync_consul()

    reads = [path for _, path in consul.requests if path.startswith("/v1/health/service/")]
    assert sorted(reads) == [f"/v1/health/service/svc-{number}" for number in range(5)]
    assert Instance.objects.filter(in_consul=True).count() == 5


def test_check_change_is_seen_through_blocking_query_and_rereads_only_that_service(consul):
    web(consul)
    consul.register("db", "db-1", port=5432, checks=[("tcp", "passing", "")])
    sync_consul()
    before = len(consul.requests)

    consul.set_check("web-1", "warning", "slow")
    sync_consul()

    assert Instance.objects.get(identity="web-1").health == "warning"
    service_reads = [path for _, path in consul.requests[before:] if path.startswith("/v1/health/service/")]
    assert service_reads == ["/v1/health/service/web"]


def test_a_blocked_query_returns_as_soon_as_consul_changes(consul):
    web(consul)
    sync_consul()
    consul_changes_later = threading.Timer(0.05, lambda: web(consul, weights={"Passing": 7, "Warning": 1}))
    consul_changes_later.start()

    sync_consul()

    consul_changes_later.join()
    assert Instance.objects.get(identity="web-1").weight_passing == 7


def test_weight_and_policy_changes_are_read_through_the_catalog_index(consul):
    web(consul)
    sync_consul()

    web(consul, weights={"Passing": 3, "Warning": 0}, meta={"meshscope-balancing": "weighted"})
    sync_consul()

    instance = Instance.objects.get(identity="web-1")
    assert (instance.weight_passing, instance.weight_warning) == (3, 0)
    assert Service.objects.get(name="web").balancing_policy == "weighted"


def test_deregistered_instance_is_marked_with_a_timestamp_not_deleted(consul):
    web(consul, "web-1")
    web(consul, "web-2", port=8081)
    sync_consul()

    consul.deregister("web-2")
    sync_consul()

    gone = Instance.objects.get(identity="web-2")
    assert gone.deregistered_at is not None and gone.in_consul
    assert Instance.objects.get(identity="web-1").deregistered_at is None
    assert Service.objects.get(name="web").deregistered_at is None


def test_service_that_leaves_the_catalog_is_marked_and_comes_back_when_it_reappears(consul):
    web(consul)
    consul.register("db", "db-1", port=5432)
    sync_consul()

    consul.deregister("web-1")
    sync_consul()
    service = Service.objects.get(name="web")
    assert service.deregistered_at is not None and service.in_consul
    assert Instance.objects.get(identity="web-1").deregistered_at is not None

    web(consul)
    sync_consul()
    service.refresh_from_db()
    assert service.deregistered_at is None
    instance = Instance.objects.get(identity="web-1")
    assert instance.deregistered_at is None
    assert Instance.objects.filter(service=service).count() == 1


def test_index_going_backwards_forces_a_full_resync(consul):
    web(consul)
    consul.register("db", "db-1", port=5432)
    sync_consul()
    consul.reset_index(1)  # a restored snapshot: every index is lower than the collector's
    consul.deregister("db-1")
    before = len(consul.requests)
    last_read = Instance.objects.get(identity="web-1").last_seen

    sync_consul()

    reads = {path for _, path in consul.requests[before:] if path.startswith("/v1/health/service/")}
    assert "/v1/health/service/web" in reads  # a service whose own index did not move is read again
    assert Instance.objects.get(identity="web-1").last_seen > last_read
    assert Instance.objects.get(identity="db-1").deregistered_at is not None
    assert ConsulDatacenter.objects.get(name="dc1").catalog_index == 2


def test_index_zero_forces_a_resync_and_is_kept_at_one(consul):
    web(consul)
    sync_consul()
    consul.reset_index(0)
    web(consul, weights={"Passing": 5, "Warning": 1})  # Consul's index is now 1
    consul.reset_index(0)

    sync_consul()

    assert Instance.objects.get(identity="web-1").weight_passing == 5
    state = ConsulDatacenter.objects.get(name="dc1")
    assert state.catalog_index == 1 and state.checks_index == 1


def test_outage_keeps_last_state_marks_stale_backs_off_and_recovers(consul):
    web(consul)
    sync_consul()
    consul.stop()

    sync_consul()  # connection refused

    assert Instance.objects.get(identity="web-1").deregistered_at is None  # last known state stays
    stale = status()
    assert stale.is_stale and "unreachable" in stale.stale_reason and stale.consecutive_failures == 1
    backoff = ConsulDatacenter.objects.get(name="dc1").retry_after
    assert backoff > timezone.now() + timedelta(seconds=3)

    consul.start()
    before = len(consul.requests)
    sync_consul()  # still backing off: Consul is not asked
    assert len(consul.requests) == before and status().is_stale

    allow_retry()
    sync_consul()
    assert not status().is_stale and status().consecutive_failures == 0
    assert ConsulDatacenter.objects.get(name="dc1").retry_after is None


def test_outage_shows_a_stale_consul_source_in_the_api_until_consul_answers(consul, client, django_user_model):
    client.force_login(django_user_model.objects.create_user("sre", password="pw-123456"))
    web(consul)
    sync_consul()
    consul.stop()
    sync_consul()

    def consul_source(url):
        response = client.get(url)
        assert response.status_code == 200
        return next(source for source in response.json()["sources"] if source["name"] == "consul:dc1")

    for url in ("/api/sources/", "/api/topology/"):
        source = consul_source(url)
        assert source["stale"] is True and source["configured"] is True
        assert "unreachable" in source["stale_reason"] and source["stale_since"] is not None
        assert source["last_success"] is not None  # the first sync's, which the stored state dates from

    consul.start()
    allow_retry()
    sync_consul()
    for url in ("/api/sources/", "/api/topology/"):
        source = consul_source(url)
        assert source["stale"] is False and source["stale_since"] is None and source["stale_reason"] == ""


def test_backoff_doubles_with_each_failure_up_to_a_minute(consul):
    consul.fail_with(500)
    delays = []
    for _ in range(6):
        allow_retry()
        before = timezone.now()
        sync_consul()
        delays.append(round((ConsulDatacenter.objects.get(name="dc1").retry_after - before).total_seconds()))
    assert delays == [5, 10, 20, 40, 60, 60]


def test_backing_off_datacenter_is_not_asked(consul):
    sync_consul()
    ConsulDatacenter.objects.filter(name="dc1").update(retry_after=timezone.now() + timedelta(minutes=1))
    before = len(consul.requests)

    sync_consul()

    assert len(consul.requests) == before


def test_server_error_marks_stale_with_consuls_message_and_keeps_state(consul):
    web(consul)
    sync_consul()
    consul.fail_with(500, "rpc error making call: No cluster leader")

    sync_consul()

    assert "500 rpc error making call: No cluster leader" in status().stale_reason
    assert Instance.objects.get(identity="web-1").deregistered_at is None
    consul.recover()
    allow_retry()
    sync_consul()
    assert not status().is_stale


def test_timeout_marks_stale(consul):
    web(consul)
    sync_consul()
    consul.hang(1.5)

    sync_consul()

    assert status().is_stale and "Timeout" in status().stale_reason
    assert Instance.objects.get(identity="web-1").deregistered_at is None


def test_wrong_token_is_refused_and_marks_stale(settings, consul):
    consul.token = "the-right-token"
    web(consul)
    settings.CONSUL_HTTP_TOKEN = "a-wrong-token"

    sync_consul()

    assert "403" in status().stale_reason and "ACL not found" in status().stale_reason
    assert not Service.objects.exists()

    settings.CONSUL_HTTP_TOKEN = "the-right-token"
    allow_retry()
    sync_consul()
    assert Service.objects.filter(name="web").exists() and not status().is_stale


def test_token_from_settings_wins_over_the_process_environment(settings, consul, monkeypatch):
    consul.token = "the-right-token"
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "stale-environment-token")
    settings.CONSUL_HTTP_TOKEN = "the-right-token"
    web(consul)

    sync_consul()

    assert not status().is_stale


def test_without_consul_address_the_source_is_recorded_as_not_configured(settings):
    settings.CONSUL_HTTP_ADDR = ""

    sync_consul()

    assert SourceStatus.objects.get(name="consul").configured is False
    assert not ConsulDatacenter.objects.exists()


def test_every_datacenter_the_agent_knows_is_read_when_none_is_configured(settings, consul):
    settings.CONSUL_DATACENTERS = []
    web(consul)
    consul.register("web", "web-9", address="10.9.0.1", port=80, node="far-node", dc="dc2")

    sync_consul()

    assert Instance.objects.get(identity="web-9").datacenter == "dc2"
    assert Instance.objects.get(identity="web-1").datacenter == "dc1"
    assert Service.objects.get(name="web").datacenter == "dc1,dc2"
    assert not status("dc1").is_stale and not status("dc2").is_stale


def test_instance_seen_in_traces_is_matched_by_service_id(consul):
    service = Service.objects.create(name="web", in_traces=True)
    traced = Instance.objects.create(service=service, identity="web-1", in_traces=True)
    web(consul, "web-1", weights={"Passing": 4, "Warning": 1})

    sync_consul()

    assert Instance.objects.filter(service=service).count() == 1
    traced.refresh_from_db()
    assert (traced.in_consul, traced.in_traces, traced.weight_passing) == (True, True, 4)
    service.refresh_from_db()
    assert service.source == "both"


def test_instance_seen_in_traces_by_address_and_port_becomes_the_registered_instance(consul):
    service = Service.objects.create(name="web", in_traces=True)
    traced = Instance.objects.create(service=service, identity="10.1.0.1:8080", in_traces=True)
    web(consul, "web-7f9c")

    sync_consul()

    registered = Instance.objects.unmerged().get(service=service)
    assert (registered.identity, registered.health, registered.in_consul) == ("web-7f9c", "passing", True)
    traced.refresh_from_db()
    assert traced.merged_into == registered and traced.deregistered_at is not None


def test_same_service_id_on_two_nodes_makes_two_instances(consul):
    consul.register("web", "web", address="10.0.0.1", port=80, node="node-a")
    consul.register("web", "web", address="10.0.0.2", port=80, node="node-b")

    sync_consul()

    assert sorted(Instance.objects.values_list("identity", flat=True)) == ["web", "web@node-b"]


def test_maintenance_check_marks_the_instance_in_maintenance(consul):
    web(consul)
    consul.set_maintenance("web-1", True, "kernel upgrade")

    sync_consul()

    instance = Instance.objects.get(identity="web-1")
    assert instance.in_maintenance and instance.health == "critical"


def test_hostile_answers_are_stored_as_plain_bounded_data(consul, monkeypatch):
    web(
        consul,
        "web-1",
        tags=["x" * 100_000, 42, "<b>ok</b>"],
        raw_service={"Unexpected": {"nested": [1, 2]}, "Port": "80"},
        omit=["Weights"],
    )
    consul.register("<script>alert(1)</script>", "evil", port=1, meta={"k": "<img src=x onerror=alert(1)>"})
    consul.register("twice", "twice-1", port=1)
    consul.register("n" * 300, "too-long-a-name", port=1)
    original = consul.health_service
    monkeypatch.setattr(consul, "health_service", lambda dc, name: original(dc, name) * (2 if name == "twice" else 1))

    sync_consul()

    instance = Instance.objects.get(identity="web-1")
    assert (instance.weight_passing, instance.weight_warning) == (1, 1)  # Consul's defaults
    assert instance.port is None
    assert [len(tag) for tag in instance.tags] == [512, len("<b>ok</b>")]
    evil = Service.objects.get(name="<script>alert(1)</script>")
    assert evil.instances.get().meta == {"k": "<img src=x onerror=alert(1)>"}
    assert Instance.objects.filter(consul_id="twice-1").count() == 1  # listed twice, stored once
    assert not Instance.objects.filter(consul_id="too-long-a-name").exists()  # no column holds its name
    assert not status().is_stale


def test_a_service_name_with_nul_or_too_long_for_its_column_is_left_out_and_the_datacenter_stays_read(consul):
    """Such a name is no service (reconcile leaves it out), and the round keeps no index or check digest under
    it: PostgreSQL's jsonb refuses NUL, and the round that saved it failed, and so did every round after it."""
    for name in ("nul\x00name", "n" * 10_000, "web"):
        consul.register(name, f"{name[:8]}-1", port=1, checks=[("http", "passing", "")])

    sync_consul()
    consul.set_check("web-1", "critical")
    sync_consul()

    assert list(Service.objects.values_list("name", flat=True)) == ["web"]
    assert Instance.objects.get().health == "critical"
    datacenter = ConsulDatacenter.objects.get(name="dc1")
    assert (list(datacenter.service_indexes), list(datacenter.check_digests)) == (["web"], ["", "web"])
    assert not status().is_stale


def test_a_large_first_sync_stores_every_field_as_consul_sent_it(consul):
    tricky = 'tab\tnewline\nback\\slash \\N quote" ü <b>'
    for number in range(250):  # enough new rows in one batch for PostgreSQL's COPY
        consul.register(
            "web",
            f"web-{number}",
            address=f"10.1.{number // 200}.{number % 200}",
            port=8000 + number,
            tags=[tricky, "v1"],
            meta={"note": tricky},
            weights={"Passing": number + 1, "Warning": 0},
            checks=[("http", "warning", tricky)],
        )
    consul.register("web", "web-7", address="10.7.0.7", port=80, node="node-b")  # the same ID on another node

    sync_consul()

    assert Instance.objects.filter(service__name="web", in_consul=True).count() == 251
    instance = Instance.objects.get(identity="web-42")
    assert (instance.address, instance.port, instance.node, instance.datacenter) == (
        "10.1.0.42",
        8042,
        AGENT_NODE,
        "dc1",
    )
    assert instance.tags == [tricky, "v1"] and instance.meta == {"note": tricky}
    assert (instance.weight_passing, instance.weight_warning, instance.health) == (43, 0, "warning")
    assert instance.checks == [
        {"id": "serfHealth", "scope": "node", "name": "Serf Health Status", "status": "passing", "output": ""},
        {
            "id": f"service:{instance.consul_id}",
            "scope": "service",
            "name": "http",
            "status": "warning",
            "output": tricky,
        },
    ]
    assert instance.first_seen == instance.last_seen and instance.deregistered_at is None
    assert not instance.in_traces and not instance.in_maintenance
    assert Instance.objects.get(identity="web-7@node-b").address == "10.7.0.7"


def test_answer_that_is_not_what_consul_documents_marks_stale_without_crashing(consul, monkeypatch):
    web(consul)
    monkeypatch.setattr(consul, "catalog_services", lambda datacenter: ["not", "an", "object"])

    sync_consul()

    assert "not an object" in status().stale_reason


def test_a_datacenter_held_by_another_run_is_left_alone(consul):
    ConsulDatacenter.objects.create(name="dc1", leased_until=timezone.now() + timedelta(minutes=1))

    sync_consul()

    assert consul.requests == []


def test_changes_during_a_round_are_each_applied_and_announced_as_they_come(
    settings, consul, monkeypatch, announcements, django_capture_on_commit_callbacks
):
    from collectors import consul as collector

    monkeypatch.setattr(collector, "REWATCH_AFTER_SECONDS", 0.05)
    settings.CONSUL_BLOCKING_WAIT_SECONDS = 1.5
    web(consul)
    sync_consul()
    first = threading.Timer(0.2, lambda: consul.set_check("web-1", "warning", "slow"))
    second = threading.Timer(0.8, lambda: consul.set_check("web-1", "critical", "down"))
    for timer in (first, second):
        timer.start()

    with django_capture_on_commit_callbacks(execute=True):
        sync_consul()

    assert Instance.objects.get(identity="web-1").health == "critical"
    # one announcement per change: the second change was watched for again within the same round
    assert announcements == [frozenset({"services", "topology", "balancers"})] * 2


def test_steady_state_announces_nothing(consul, announcements, django_capture_on_commit_callbacks):
    web(consul)
    with django_capture_on_commit_callbacks(execute=True):
        sync_consul()
    assert announcements, "the first round stored the service"
    announcements.clear()

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        sync_consul()

    assert announcements == [] and callbacks == []


def _certificate(subject, issuer_key, issuer, key, ca=False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = timezone.now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        import ipaddress

        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256()), name


@pytest.fixture
def tls_files(tmp_path):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    def write(name, key, cert):
        (tmp_path / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        (tmp_path / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return str(tmp_path / f"{name}.pem"), str(tmp_path / f"{name}.key")

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert, ca_name = _certificate("meshscope test CA", ca_key, None, ca_key, ca=True)
    files = {"ca": write("ca", ca_key, ca_cert)[0]}
    for role in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert, _ = _certificate(role, ca_key, ca_name, key)
        files[role] = write(role, key, cert)
    return files


def test_tls_with_a_ca_file_and_a_client_certificate(settings, tls_files):
    server_cert, server_key = tls_files["server"]
    with ConsulTestServer(certfile=server_cert, keyfile=server_key, cafile=tls_files["ca"]) as server:
        server.register("web", "web-1", port=443)
        settings.CONSUL_HTTP_ADDR = server.url
        settings.CONSUL_DATACENTERS = ["dc1"]
        settings.CONSUL_BLOCKING_WAIT_SECONDS = WAIT
        settings.CONSUL_CACERT = tls_files["ca"]
        settings.CONSUL_CLIENT_CERT, settings.CONSUL_CLIENT_KEY = tls_files["client"]

        sync_consul()

        assert server.url.startswith("https://") and Instance.objects.filter(identity="web-1").exists()
        assert not status().is_stale

        settings.CONSUL_CLIENT_CERT = settings.CONSUL_CLIENT_KEY = ""  # the server requires one
        allow_retry()
        sync_consul()
        reason = status().stale_reason
        assert "unreachable" in reason and ("SSLError" in reason or "ConnectionError" in reason)


def test_proxy_variables_of_the_environment_are_honoured(consul, monkeypatch):
    web(consul)
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # nothing listens there

    sync_consul()

    assert status().is_stale and "ProxyError" in status().stale_reason
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    allow_retry()
    sync_consul()
    assert not status().is_stale and Instance.objects.filter(identity="web-1").exists()


def test_tls_ca_bundle_from_the_environment_when_no_ca_file_is_set(settings, tls_files, monkeypatch):
    server_cert, server_key = tls_files["server"]
    with ConsulTestServer(certfile=server_cert, keyfile=server_key) as server:
        server.register("web", "web-1", port=443)
        settings.CONSUL_HTTP_ADDR = server.url
        settings.CONSUL_DATACENTERS = ["dc1"]
        settings.CONSUL_BLOCKING_WAIT_SECONDS = WAIT
        settings.CONSUL_CACERT = ""
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", tls_files["ca"])

        sync_consul()

        assert not status().is_stale and Instance.objects.filter(identity="web-1").exists()
