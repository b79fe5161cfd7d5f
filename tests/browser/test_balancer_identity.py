"""The balancer page names traffic from an instance that no registration has."""

import pytest

from tests import seed
from topology.models import Instance

pytestmark = [pytest.mark.browser]


def test_the_balancer_page_names_traffic_from_an_unregistered_instance(page, live):
    seed.seed_mesh(traces=6)
    Instance.objects.filter(service__name="orders").update(in_consul=True, health="passing")
    phantom = seed.Trace()
    root = phantom.span("gateway", "gateway-1", "GET /api/orders", "server", 0, 50)
    call = phantom.span("gateway", "gateway-1", "GET", "client", 2, 40, parent=root, peer="orders")
    phantom.span("orders", "10.9.9.9:8080", "GET /orders", "server", 3, 30, parent=call)
    seed.store(phantom)

    page.goto("/balancers/?service=orders")
    flag = page.wait_for_selector(".balancer[data-service='orders'] .flag[data-reason='unregistered']")

    assert flag.text_content() == "10.9.9.9:8080 traffic from an unregistered instance"
    page.wait_for_selector(".balancer[data-service='orders'] tr[data-instance='10.9.9.9:8080']")
    row = page.locator(".balancer[data-service='orders'] tr[data-instance='10.9.9.9:8080']")
    assert "unregistered" in row.inner_text()
