"""Hostile names everywhere: service, instance, route, tag, meta, topic, attribute, consumer-group and
datacenter names that are markup, script, ``javascript:`` URLs, template syntax, a right-to-left override,
NUL and 10,000 characters, fed through the real paths (OTLP and Zipkin messages on the broker, read by the
span consumer; the Consul collector reading the Consul test server; the lag collector reading the broker),
then every page, panel, deep link, admin page and export is looked at in a 1280 px window.

What must hold on each of them: no dialog opened and no payload ran (each one would call alert, confirm or
prompt and set ``window.__pwned``, which the Content-Security-Policy would stop too), no element came from
the input (each markup payload carries a ``data-pwn`` attribute that only a parsed payload can put in the
document), no link or source is a ``javascript:`` URL, no text after a name reads backwards, the names are
shown as the text they are stored as, and nothing is wider than the window.
"""

import json
import re
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode
from xml.etree import ElementTree

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.urls import reverse

from collectors import consul_client
from collectors.consul import sync_consul
from collectors.formats.record import CUT_MARK, MAX_ATTRIBUTE_VALUE_CHARS, MAX_NAME_CHARS
from collectors.lag import sample_consumer_lag
from dashboard.api.topology import DOT_MEDIA_TYPE
from tests.browser.chromium import screenshot
from tests.consul_server import ConsulTestServer
from tests.kafka_helpers import create_topic, produce, span_consumer
from tests.trace_payloads import OtelTraces, now_ns, otlp_json, otlp_protobuf, zipkin_json, zipkin_span
from topology.models import ConsumerPartitionLag, DeadLetter, Instance, Service, SourceStatus, Span

pytestmark = [pytest.mark.browser]

WIDTH = 1280
# Each payload, run as script, sets this flag and opens a dialog; parsed as markup, it leaves an element
# with a data-pwn attribute.
IMG = '<img src=x data-pwn=img onerror="window.__pwned=1;alert(1)">'
SCRIPT = "<script data-pwn=script>window.__pwned=1;confirm(2)</script>"
BOLD = "<b data-pwn=b>bold</b>"
BREAKOUT = '"\'><svg data-pwn=svg onload="window.__pwned=1;prompt(3)">'
JS_URL = "javascript:window.__pwned=1;alert(4)//"
JS_LINK = '<a data-pwn=a href="javascript:window.__pwned=1;alert(5)">link</a>'
TEMPLATE = "{{7*7}} ${7*7} {% debug %} #{7*7}"
RTL = "\u202eevil-rtl.exe"
NUL = "nul\x00name"
LONG = "L" * 10_000
HOSTILE = [IMG, SCRIPT, BOLD, BREAKOUT, JS_URL, JS_LINK, TEMPLATE, RTL, NUL, LONG]
# A consumer group is any string to Kafka; topic names are not (letters, digits, ".", "_" and "-").
GROUP = f"{IMG} {TEMPLATE} {RTL}"
DATACENTERS = (f"{BOLD}{RTL}", f"{JS_URL}{TEMPLATE}")
CONSUL_FAILURE = f"{IMG} No cluster leader"
LABEL_CHARS = 30  # static/js/util.js
QUOTED = r'"(?:[^"\\\n]|\\.)*"'
DOT_STATEMENT = re.compile(rf"  {QUOTED}(?: -> {QUOTED})? \[\w+={QUOTED}(?:, \w+={QUOTED})*\];")
GRAPH_READY = "() => window.meshscope && window.meshscope.cy && window.meshscope.cy.nodes().length > 0"

# What a page must not contain, and whether it fits the window: one pass over the document.
AUDIT = """() => {
    const bad = [];
    if (window.__pwned !== undefined) bad.push('window.__pwned is set');
    for (const node of document.querySelectorAll('[data-pwn]')) bad.push(`parsed: ${node.outerHTML.slice(0, 120)}`);
    for (const node of document.querySelectorAll('script')) {
        if (node.textContent.includes('__pwned')) bad.push(`script: ${node.textContent.slice(0, 120)}`);
    }
    for (const node of document.querySelectorAll('[href], [src], [action], [formaction], [xlink\\\\:href]')) {
        for (const name of ['href', 'src', 'action', 'formaction', 'xlink:href']) {
            const value = (node.getAttribute(name) || '').replace(/[\\s\\u0000-\\u001f]/g, '');
            if (/^javascript:/i.test(value)) bad.push(`${name}: ${node.outerHTML.slice(0, 120)}`);
        }
    }
    for (const node of document.querySelectorAll('*')) {
        for (const attribute of node.attributes) {
            if (/^on/i.test(attribute.name) && attribute.value.includes('__pwned')) bad.push(`handler: ${node.outerHTML.slice(0, 120)}`);
        }
    }
    // A right-to-left override in a name must end with the name: text after it that reads backwards (its
    // first letter right of its last) took the override from a name before it in the same paragraph.
    const range = document.createRange();
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const text = node.data;
        if (/[\u202a-\u202e\u2066-\u2069]/.test(text)) continue;  // the name itself, shown as it says
        const first = text.search(/[A-Za-z]/), last = text.length - 1 - Array.from(text).reverse().join('').search(/[A-Za-z]/);
        if (first < 0 || last <= first) continue;
        range.setStart(node, first); range.setEnd(node, first + 1);
        const a = range.getBoundingClientRect();
        range.setStart(node, last); range.setEnd(node, last + 1);
        const b = range.getBoundingClientRect();
        if (a.width && b.width && Math.abs(a.top - b.top) < 1 && a.left > b.left) {
            bad.push(`reads backwards: "${text.slice(0, 40)}" in ${node.parentElement.outerHTML.slice(0, 80)}`);
        }
    }
    const root = document.documentElement;
    if (root.scrollWidth > window.innerWidth) {
        // Name the innermost elements that stick out, to say what broke the layout.
        const out = Array.from(document.body.querySelectorAll('*')).filter((node) => node.getBoundingClientRect().right > window.innerWidth + 1);
        const innermost = out.filter((node) => !out.some((other) => other !== node && node.contains(other)));
        const named = innermost.slice(0, 3).map((node) => `${node.tagName.toLowerCase()}.${node.className} "${node.textContent.slice(0, 40)}"`);
        bad.push(`page ${root.scrollWidth} px wide: ${named.join(', ')}`);
    }
    const header = document.querySelector('header.topbar, #header');
    if (header && header.scrollWidth > header.clientWidth + 1) bad.push(`header ${header.scrollWidth} > ${header.clientWidth}`);
    return bad;
}"""


def stored_name(value):
    """A name as ingestion stores it: without NUL, trimmed, and cut to its column with a mark."""
    value = value.replace("\x00", "").strip()
    return value if len(value) <= MAX_NAME_CHARS else value[: MAX_NAME_CHARS - len(CUT_MARK)] + CUT_MARK


def nth(values, number):
    return values[number % len(values)]


# --- feeding them in ---------------------------------------------------------------------------------


def span_messages():
    """Ten traces, each of one hostile service calling and publishing to the next: the hostile values as
    service, instance, route, topic, and attribute key and value, by turns. Four as OTLP protobuf, three as
    OTLP JSON (one message each, from the SDK's encoder), three as one Zipkin JSON message."""
    traces = OtelTraces()
    otlp, zipkin, trace_ids = [], [], []
    start = now_ns() - 5 * 10**9
    for number, service in enumerate(HOSTILE):
        callee, instance, route, topic = (nth(HOSTILE, number + step) for step in (1, 2, 3, 4))
        attributes = {nth(HOSTILE, number + 5): nth(HOSTILE, number + 6), "note": nth(HOSTILE, number + 7)}
        messaging = {"messaging.system": "kafka", "messaging.destination.name": topic}
        if number < 7:
            root = traces.span(service, instance, route, "server", start, 40, attributes=attributes)
            call = traces.span(service, instance, "GET", "client", start + 10**6, 20, parent=root)
            traces.span(callee, nth(HOSTILE, number + 8), route, "server", start + 2 * 10**6, 15, parent=call)
            sent = traces.span(
                service, instance, "publish", "producer", start + 30 * 10**6, 1, parent=root, attributes=messaging
            )
            traces.span(
                callee,
                nth(HOSTILE, number + 8),
                "consume",
                "consumer",
                start + 35 * 10**6,
                2,
                parent=sent,
                attributes=messaging,
            )
            trace_ids.append(f"{root.context.trace_id:032x}")
            spans = traces.finished()
            otlp.append(otlp_protobuf(spans) if number < 4 else otlp_json(spans))
        else:
            trace_id = uuid.uuid4().hex
            ids = [uuid.uuid4().hex[:16] for _ in range(5)]
            begin = time.time() - 5
            zipkin += [
                zipkin_span(
                    service, route, "server", trace_id, ids[0], start_s=begin, duration_s=0.04, tags=attributes
                ),
                zipkin_span(
                    service, "GET", "client", trace_id, ids[1], parent_id=ids[0], start_s=begin + 0.001, duration_s=0.02
                ),
                zipkin_span(
                    callee,
                    route,
                    "server",
                    trace_id,
                    ids[2],
                    parent_id=ids[1],
                    start_s=begin + 0.002,
                    duration_s=0.015,
                    port=9090,
                ),
                zipkin_span(
                    service,
                    "publish",
                    "producer",
                    trace_id,
                    ids[3],
                    parent_id=ids[0],
                    start_s=begin + 0.03,
                    duration_s=0.001,
                    tags=messaging,
                ),
                zipkin_span(
                    callee,
                    "consume",
                    "consumer",
                    trace_id,
                    ids[4],
                    parent_id=ids[3],
                    start_s=begin + 0.035,
                    duration_s=0.002,
                    port=9090,
                    tags=messaging,
                ),
            ]
            trace_ids.append(trace_id)
    # A span whose ids are payloads: dead-lettered, and its payload kept for the admin to show.
    broken = {"traceId": IMG, "id": SCRIPT, "name": BREAKOUT, "timestamp": int(time.time() * 10**6), "duration": 10}
    broken["localEndpoint"] = {"serviceName": BOLD}
    broken = json.dumps([broken])
    return [*otlp, zipkin_json(zipkin), broken.encode()], trace_ids


def ingest_through_the_broker(bootstrap):
    """The span consumer, in a consumer group with a hostile name, reads the messages from the broker;
    then the lag collector samples that group."""
    topic = f"hostile-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, partitions=1)
    messages, trace_ids = span_messages()
    produce(bootstrap, topic, messages)
    consumer = span_consumer(bootstrap, {topic: "auto"}, group=GROUP)
    try:
        deadline = time.monotonic() + 60
        # The dead letter comes from the last message of the only partition: all before it are stored.
        while not DeadLetter.objects.filter(topic=topic).exists() and time.monotonic() < deadline:
            consumer.poll_once(300)
        assert DeadLetter.objects.filter(topic=topic).exists(), "the span consumer read nothing in 60 s"
    finally:
        consumer.close()
    settings.KAFKA_BOOTSTRAP_SERVERS = [bootstrap]
    settings.LAG_CONSUMER_GROUPS = [GROUP]
    assert sample_consumer_lag() == 1
    return topic, trace_ids


def register_in_consul(consul):
    """The span services in Consul too, two instances each, in two datacenters whose names are hostile: the
    first instance has the ID its spans name it by, the second one more hostile ID; hostile tags, meta values
    and check outputs. The NUL and the 10,000-character names are registered but never stored (below)."""
    for number, value in enumerate(HOSTILE):
        for replica in (1, 2):
            consul.register(
                value,
                nth(HOSTILE, number + 2) if replica == 1 else f"{nth(HOSTILE, number + 3)} 2",
                address="10.0.0.9" if replica == 1 else BOLD,
                port=8000 + replica,
                tags=[nth(HOSTILE, number + 3), nth(HOSTILE, number + 4)],
                meta={"note": nth(HOSTILE, number + 5), "meshscope-balancing": "round_robin"},
                checks=[("http", "passing", nth(HOSTILE, number + 6))],
                dc=nth(DATACENTERS, number),
            )


def sync_from_consul(consul, monkeypatch):
    monkeypatch.setattr(consul_client, "REQUEST_TIMEOUT_SECONDS", 2)
    settings.CONSUL_HTTP_ADDR = consul.url
    settings.CONSUL_HTTP_TOKEN = ""
    settings.CONSUL_DATACENTERS = []  # discovered: their names come from Consul too
    settings.CONSUL_BLOCKING_WAIT_SECONDS = 0.2
    sync_consul()
    assert sorted(SourceStatus.objects.filter(name__startswith="consul:").values_list("name", "stale_since")) == [
        (f"consul:{name}", None) for name in sorted(DATACENTERS)
    ]
    # Then Consul fails with a hostile answer: both datacenters are stale with it as their reason.
    consul.fail_with(500, CONSUL_FAILURE)
    sync_consul()
    for name in DATACENTERS:
        assert CONSUL_FAILURE in SourceStatus.objects.get(name=f"consul:{name}").stale_reason


# --- what was stored ---------------------------------------------------------------------------------


def assert_stored_as_plain_bounded_text(topic):
    names = [stored_name(value) for value in HOSTILE]
    assert set(names) <= set(Service.objects.values_list("name", flat=True))
    assert (stored_name(NUL), stored_name(LONG)) == ("nulname", "L" * 254 + "…")
    root = Span.objects.get(service__name=stored_name(IMG), kind="server", parent_id="")
    assert (root.name, root.attributes) == (BREAKOUT, {JS_LINK: TEMPLATE, "note": RTL})
    root = Span.objects.get(service__name=stored_name(BREAKOUT), kind="server", parent_id="")
    assert root.attributes == {"nulname": "L" * MAX_ATTRIBUTE_VALUE_CHARS + CUT_MARK, "note": IMG}
    assert Instance.objects.filter(service__name=stored_name(BOLD), identity=stored_name(LONG)).exists()
    assert set(Span.objects.filter(kind="producer").values_list("topic", flat=True)) == set(names)
    dead = DeadLetter.objects.get(topic=topic)
    assert (dead.reason, SCRIPT in dead.payload_head, "data-pwn=img" in dead.detail) == ("bad_id", True, True)
    lag = ConsumerPartitionLag.objects.get()
    assert (lag.group, lag.topic) == (GROUP, topic)

    # From Consul: a service name that no column holds whole, or that has NUL, is not stored (a service is its
    # name); an instance ID, a tag or a meta value is stored without NUL and cut to its column.
    in_consul = {stored_name(value) for value in HOSTILE if value not in (NUL, LONG)}
    assert set(Service.objects.filter(in_consul=True).values_list("name", flat=True)) == in_consul
    img = Instance.objects.get(service__name=IMG, identity=BOLD)  # the instance its spans named
    assert (img.in_consul, img.in_traces, img.consul_id, img.datacenter) == (True, True, BOLD, DATACENTERS[0])
    assert (img.tags, img.meta["note"], img.checks[-1]["output"]) == ([BREAKOUT, JS_URL], JS_LINK, TEMPLATE)
    assert Instance.objects.get(service__name=IMG, consul_id=f"{BREAKOUT} 2").address == BOLD
    rtl = Instance.objects.get(service__name=RTL, consul_id="L" * MAX_NAME_CHARS)
    assert (rtl.tags, rtl.meta["note"], rtl.checks[-1]["output"]) == ([IMG, SCRIPT], BOLD, BREAKOUT)
    assert Instance.objects.get(service__name=JS_LINK, consul_id=RTL).tags == ["nulname", "L" * 512]
    assert Instance.objects.get(service__name=TEMPLATE, consul_id="nulname").in_traces


# --- looking at them ---------------------------------------------------------------------------------


class Visit:
    """One browser page at 1280 px, every dialog recorded; ``audit`` says what went wrong on the current page."""

    def __init__(self, page):
        self.page = page
        self.dialogs = []
        page.set_viewport_size({"width": WIDTH, "height": 800})
        page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))

    def open(self, url, shows=None, ready=None):
        self.page.goto(url)
        if ready:
            self.page.wait_for_function(ready)
        if shows is not None:
            self.shows(shows)
        self.audit(url)

    def shows(self, text):
        """Waits until the page's text holds ``text``: it was drawn, and as the text it is."""
        self.page.wait_for_function("text => document.body.innerText.includes(text)", arg=text, timeout=15_000)

    def audit(self, where):
        bad = self.page.evaluate(AUDIT)
        if bad:
            screenshot(self.page, "hostile-names-failure")  # a CI artifact: what the page looked like
        assert bad == [], where
        assert self.dialogs == [], where


def assert_exports_hold_the_names_as_text(visit, names):
    """JSON and DOT from the API, said to be what they are, and PNG and SVG from the page. The SVG, opened
    as a document of its own, runs nothing either."""
    page = visit.page
    response = page.request.get("/api/topology/")
    assert (response.status, response.headers.get("x-content-type-options")) == (200, "nosniff")
    assert response.headers["content-type"].startswith("application/json")
    exported = json.dumps(response.json())
    assert all(json.dumps(name)[1:-1] in exported for name in names)

    response = page.request.get("/api/topology/export.dot")
    assert (response.status, response.headers["content-type"]) == (200, DOT_MEDIA_TYPE)
    dot = response.text()
    assert all(dot_string(name) in dot for name in names)
    statements = dot.splitlines()[3:-1]
    # Every node and edge statement is one line of quoted strings: no name closed its quote.
    assert len(statements) >= 2 * len(names)
    assert [line for line in statements if not DOT_STATEMENT.fullmatch(line)] == []

    visit.open("/", ready=GRAPH_READY)
    for button, magic in (("#export-png", b"\x89PNG"), ("#export-svg", b"<?xml")):
        with page.expect_download() as download:
            page.click(button)
        path = download.value.path()
        assert Path(path).read_bytes().startswith(magic), button
    svg = ElementTree.parse(path).getroot()
    tags = {element.tag.rpartition("}")[2] for element in svg.iter()}
    assert tags <= {"svg", "defs", "marker", "path", "polygon", "rect", "ellipse", "g", "text", "tspan"}, tags
    texts = " ".join("".join(element.itertext()) for element in svg.iter("{http://www.w3.org/2000/svg}text"))
    assert all(shorten(name) in texts for name in names)
    attributes = [name for element in svg.iter() for name in element.attrib]
    assert [name for name in attributes if name.lower().startswith("on") or "href" in name] == []
    page.goto(Path(path).as_uri())
    assert page.evaluate("() => [window.__pwned, document.querySelectorAll('[data-pwn]').length]") == [None, 0]
    assert visit.dialogs == []


def dot_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def shorten(name):
    """A name as the graph labels it (static/js/util.js)."""
    return name if len(name) <= LABEL_CHARS else name[:LABEL_CHARS] + "…"


def test_hostile_names_from_spans_and_consul_are_text_on_every_page_panel_admin_page_and_export(
    page, live, kafka_bootstrap, monkeypatch
):
    topic, trace_ids = ingest_through_the_broker(kafka_bootstrap)
    with ConsulTestServer(datacenters=DATACENTERS) as consul:
        register_in_consul(consul)
        sync_from_consul(consul, monkeypatch)
    assert_stored_as_plain_bounded_text(topic)
    visit = Visit(page)
    names = [stored_name(value) for value in HOSTILE]

    # The topology, and the panel of every hostile node.
    visit.open("/", ready=GRAPH_READY)
    drawn = set(page.evaluate("() => window.meshscope.cy.nodes().map(n => n.id())"))
    assert set(names) <= drawn
    for name in names:
        page.evaluate("name => { window.meshscope.cy.getElementById(name).emit('tap'); }", name)
        page.wait_for_function("name => document.querySelector('#panel h1')?.title === name", arg=name)
        visit.audit(f"node panel of {name!r}")
    for name in names:  # the panel of an edge from each, whose title names both ends
        page.evaluate(
            "name => { window.meshscope.cy.edges().filter(e => e.data('source') === name).first().emit('tap'); }",
            name,
        )
        page.wait_for_function("name => document.querySelector('.edge-panel h1')?.title.startsWith(name)", arg=name)
        visit.audit(f"edge panel from {name!r}")
    screenshot(page, "hostile-names-topology")
    # Deep links hold the view in the query string: a hostile filter, focus, node and edge come back as text.
    edge_link = page.url
    assert "edge=" in edge_link
    visit.open(edge_link, ready="() => document.querySelector('.edge-panel h1')")
    for name in (stored_name(RTL), stored_name(BREAKOUT), stored_name(LONG)):
        link = "/?" + urlencode({"focus": name, "node": name, "service": name})
        visit.open(link, ready=f"() => document.querySelector('#panel h1')?.title === {json.dumps(name)}")
        assert (page.input_value("#filter-text"), page.inner_text("#focus-name")) == (name, name)

    visit.open("/services/", shows=stored_name(TEMPLATE))
    for name in names:
        visit.shows(name)
    visit.open("/routes/", shows=stored_name(JS_URL))
    for number in (0, 9):
        service, route = names[number], nth(names, number + 3)
        visit.open(
            "/routes/detail/?" + urlencode({"service": service, "operation": route}),
            ready="() => document.querySelector('#call-tree tbody tr.hop')",
        )
        visit.shows(nth(names, number + 1))
    visit.open("/traces/", shows=stored_name(BREAKOUT))
    visit.open("/traces/?" + urlencode({"service": stored_name(SCRIPT)}), shows=stored_name(SCRIPT))
    # Searched for by a hostile attribute value (logfmt: quoted, a quote escaped), found, and shown.
    for key, value, root in (("L" * MAX_NAME_CHARS, IMG, JS_URL), ("note", BREAKOUT, TEMPLATE)):
        tags = f'{key}="{value.replace(chr(34), chr(92) + chr(34))}"'
        visit.open("/traces/?" + urlencode({"tags": tags}), ready="() => document.body.dataset.loaded === '1'")
        rows = page.locator("#traces-table tbody tr")
        assert (rows.count(), rows.first.locator(".svc-name").inner_text()) == (1, root), tags
        assert page.input_value("input[name=tags]") == tags
    # A search that does not parse is refused, saying why as text.
    for field, typed in (("tags", f'note="{IMG}'), ("min_duration", BOLD)):
        visit.open("/traces/?" + urlencode({field: typed}), ready="() => document.body.dataset.loaded === '1'")
        assert page.locator("#search-error").is_visible(), field
    screenshot(page, "hostile-names-trace-search")

    # Each trace's waterfall, and the details of each of its spans.
    for trace_id in (trace_ids[0], trace_ids[5], trace_ids[8]):
        visit.open(f"/traces/{trace_id}/", ready="() => document.body.dataset.loaded === '1'")
        for number in range(page.locator(".span-row").count()):
            row = page.locator(".span-row").nth(number)
            service = row.get_attribute("data-service")
            row.click()
            page.wait_for_function(
                "service => document.querySelector('#span-detail h1')?.title.startsWith(service)", arg=service
            )
            visit.audit(f"span {number} of {trace_id}")
    screenshot(page, "hostile-names-trace")

    visit.open("/balancers/", shows=stored_name(TEMPLATE))
    visit.open(
        "/balancers/?" + urlencode({"service": IMG}),
        ready="() => document.querySelectorAll('.balancer tr[data-instance]').length >= 2",
    )
    visit.shows(f"{BREAKOUT} 2")
    visit.open("/consistency/", ready="() => document.querySelector('tr.lag-group')")
    visit.shows(GROUP)

    # The header's sources: two hostile datacenters, stale with a hostile reason, in the popover.
    page.click("#sources-toggle")
    visit.shows(DATACENTERS[1])
    visit.shows(CONSUL_FAILURE)
    visit.audit("the sources popover")
    screenshot(page, "hostile-names-sources")

    assert_exports_hold_the_names_as_text(visit, names)

    # The admin: the list, a search for a payload, and the change page of every row of each model.
    get_user_model().objects.filter(username="sre").update(is_staff=True, is_superuser=True)
    for model in (Service, Instance, DeadLetter, SourceStatus):
        changelist = reverse(f"admin:topology_{model._meta.model_name}_changelist")
        visit.open(changelist)
        visit.open(f"{changelist}?{urlencode({'q': IMG})}")
        rows = model.objects.all()
        if model is Service:
            rows = rows.filter(name__in=names)
        elif model is Instance:
            rows = rows.filter(service__name__in=[IMG, RTL, TEMPLATE, stored_name(LONG)])
        for pk in rows.values_list("pk", flat=True):
            visit.open(reverse(f"admin:topology_{model._meta.model_name}_change", args=[pk]))
    visit.open(reverse("admin:topology_service_change", args=[Service.objects.get(name=IMG).pk]), shows=f"{BREAKOUT} 2")
    screenshot(page, "hostile-names-admin")
