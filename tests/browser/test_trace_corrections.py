"""The waterfall of a py_zipkin trace with shared spans and a host whose clock is behind: one tree, the
server halves' callees under them, the skewed spans drawn inside their calls and badged."""

import pytest
from django.db import transaction

from collectors.formats import decode
from tests.zipkin_processes import OUTSIDE_TRACE_ID, checkout, messages_of
from topology.ingestion import store_spans

pytestmark = [pytest.mark.browser]


def test_the_waterfall_draws_the_corrected_tree_and_badges_the_clock_skew_it_corrected(page, live):
    processes = checkout(skewed={"orders": -300})
    with transaction.atomic():
        store_spans(
            [
                record
                for message in messages_of(processes.values())
                for record in decode(message, "zipkin_json", 10**7, 86400).spans
            ]
        )

    page.goto(f"/traces/{OUTSIDE_TRACE_ID.rjust(32, '0')}/")
    page.wait_for_selector("body[data-loaded='1']")

    rows = page.eval_on_selector_all(
        ".span-row",
        """rows => rows.map(r => ({service: r.dataset.service, name: r.querySelector('.name').textContent,
            depth: parseFloat(r.querySelector('.indent').style.width), skew: Number(r.dataset.skewMs),
            critical: r.dataset.critical, badge: (r.querySelector('.badge-skew') || {}).title || '',
            left: parseFloat(r.querySelector('.wf-bar').style.left)}))""",
    )
    assert len(rows) == 16
    assert (rows[0]["service"], rows[0]["name"], rows[0]["depth"]) == ("gateway", "get /api/checkout", 0)
    # gateway → its call → orders' half → orders' call → payments' half → payments' call → bank's half,
    # 14 px of indent a level.
    assert [(row["service"], row["depth"]) for row in rows if row["name"] == "post /authorize"] == [
        ("payments", 14 * 5),
        ("bank", 14 * 6),
    ]
    # The orders host's spans are drawn 300 ms later than its clock says, and say so. The gateway's are
    # where its clock puts them. The hosts orders calls are placed against orders' corrected times, which
    # the even split of the network time may leave a little off: they move by a few ms at most.
    for row in rows:
        if row["service"] == "orders":
            assert 290 <= row["skew"] <= 310 and row["badge"].startswith("clock skew corrected by"), row
        elif row["service"] == "gateway":
            assert row["skew"] == 0 and row["badge"] == "", row
        else:
            assert abs(row["skew"]) < 5 and bool(row["badge"]) == bool(row["skew"]), row
    call = next(r for r in rows if r["service"] == "gateway" and r["name"] == "get /orders")
    served = next(r for r in rows if r["service"] == "orders" and r["name"] == "get /orders")
    assert served["left"] >= call["left"]
    assert all(row["critical"] == "1" for row in rows), "one call after another: all on the critical path"

    page.locator(".span-row[data-service='orders'] .badge-skew").first.click()
    detail = page.inner_text("#span-detail")
    assert "Clock skew" in detail and "drawn later than its host's clock says" in detail
    assert "Zipkin id" in detail
