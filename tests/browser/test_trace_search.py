"""The traces page searches by tag and duration, lists the matching traces only, and its URL is the
search: opened again, it fills the form and lists the same traces."""

from urllib.parse import parse_qs, urlparse

import pytest
from django.db import transaction

from collectors.formats import decode
from tests.browser.chromium import screenshot
from tests.trace_payloads import OtelTraces, now_ns, otlp_protobuf
from topology.ingestion import store_spans

pytestmark = [pytest.mark.browser]

MS = 1_000_000


def seed(*routes):
    """One gateway trace per (route, status, duration ms), recorded by the OpenTelemetry SDK; their ids."""
    traces, ids = OtelTraces(), []
    start = now_ns() - 5000 * MS
    for i, (route, status, duration_ms) in enumerate(routes):
        root = traces.span(
            "gateway",
            "gateway-1",
            f"GET {route}",
            "server",
            start + i * MS,
            duration_ms,
            attributes={"http.route": route, "http.response.status_code": status},
        )
        ids.append(f"{root.get_span_context().trace_id:032x}")
    with transaction.atomic():
        store_spans(decode(otlp_protobuf(traces.finished()), "otlp_proto", 10**7, 86400).spans)
    return ids


def listed(page):
    page.wait_for_selector("body[data-loaded='1']")
    return set(page.eval_on_selector_all("#traces-table tbody tr", "rows => rows.map(r => r.dataset.traceId)"))


def test_a_search_by_tag_and_duration_lists_only_its_traces_and_its_link_repeats_it(page, live):
    failed_slow, failed_fast, ok_slow, _carts = seed(
        ("/api/orders", 500, 300), ("/api/orders", 500, 20), ("/api/orders", 200, 300), ("/api/carts", 500, 300)
    )
    page.goto("/traces/")
    assert len(listed(page)) == 4

    page.fill("input[name=tags]", "http.route=/api/orders http.response.status_code=500")
    page.fill("input[name=min_duration]", "100ms")
    page.select_option("select[name=window]", "3600")
    with page.expect_navigation():
        page.click("#trace-search button[type=submit]")

    assert listed(page) == {failed_slow}
    assert ok_slow not in listed(page) and failed_fast not in listed(page)
    link = page.url
    assert parse_qs(urlparse(link).query) == {
        "tags": ["http.route=/api/orders http.response.status_code=500"],
        "min_duration": ["100ms"],
        "window": ["3600"],
    }, "empty fields stay out of the link"
    screenshot(page, "trace-search")

    again = page.context.new_page()
    again.goto(link)
    assert listed(again) == {failed_slow}
    assert again.input_value("input[name=tags]") == "http.route=/api/orders http.response.status_code=500"
    assert again.input_value("input[name=min_duration]") == "100ms"
    assert again.input_value("select[name=window]") == "3600"
    again.close()


def test_a_refused_search_says_which_field_and_why_as_text(page, live):
    seed(("/api/orders", 500, 20))
    page.goto("/traces/?" + "tags=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E&min_duration=12")

    page.wait_for_selector("body[data-loaded='1']")
    error = page.locator("#search-error")
    assert error.is_visible()
    assert "min_duration: must be a number and a unit" in error.inner_text()
    assert page.get_attribute("input[name=min_duration]", "aria-invalid") == "true"
    assert page.input_value("input[name=tags]") == "<img src=x onerror=alert(1)>"
    assert page.locator("#traces-table tbody tr").count() == 0
    assert page.locator("img").count() == 0
