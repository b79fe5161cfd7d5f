"""The topology page on a mesh large enough to start grouped (400 services in 8 groups): a live rollup
redraws only its edge; a focus draws a k-hop neighbourhood and an expanded group its services, never the
whole graph; search reaches a service that is not drawn. A denser mesh (1,880 edges) is drawn at a level of
detail: its busiest edges while zoomed out, every edge of the services in view once zoomed in."""

import time

import pytest
from django.db import transaction
from django.utils import timezone

from topology.changes import TRAFFIC_VIEWS, announce_on_commit
from topology.latency import LatencyHistogram
from topology.models import EdgeRollup, Instance, InstanceRollup, Service
from topology.rollup_batch import RollupBatch

pytestmark = [pytest.mark.browser]

SERVICES = 400
TEAMS = 8
GROUPED = "() => window.meshscope && window.meshscope.view === 'grouped' && window.meshscope.cy.nodes().length > 0"
LIVE = "() => document.querySelector('#live-status').dataset.state === 'live'"
DRAWN_IDS = "() => window.meshscope.cy.nodes().map((n) => n.id()).sort()"


def name(i):
    return f"team{i % TEAMS}-svc-{i:03d}"


def calls():
    """Each service calls the next of its team (i -> i + 8); every tenth service also calls a service of
    the next team (i -> i + 1), so teams 0, 2, 4 and 6 call teams 1, 3, 5 and 7."""
    pairs = [(i, i + TEAMS) for i in range(SERVICES - TEAMS)]
    pairs += [(i, i + 1) for i in range(0, SERVICES, 10)]
    return pairs


def seed_services_and_calls(counted_calls):
    """The SERVICES services, and ``counted_calls`` ((source, target, calls) by service index) in this
    minute, each call taking 5 ms. Returns (the minute, the services)."""
    minute = timezone.now().replace(second=0, microsecond=0)
    services = Service.objects.bulk_create(
        [Service(name=name(i), in_traces=True, tags=[f"team{i % TEAMS}"]) for i in range(SERVICES)]
    )
    histogram = LatencyHistogram()
    histogram.add(5.0)
    EdgeRollup.objects.bulk_create(
        [
            EdgeRollup(
                minute=minute,
                source=services[source],
                target=services[target],
                protocol="http",
                count=count,
                latency_sum_ms=5.0 * count,
                latency_buckets=histogram.to_json(),
            )
            for source, target, count in counted_calls
        ]
    )
    return minute, services


def seed_mesh():
    """One call a minute on every edge and one served request per service, in this minute: rates that
    read the same (0.003/s) whatever second of the 5-minute window's first minute the view is computed
    at, so that nothing but the rollup a test adds changes what the page shows."""
    minute, services = seed_services_and_calls([(source, target, 1) for source, target in calls()])
    instances = Instance.objects.bulk_create(
        [Instance(service=service, identity=f"{service.name}-1", in_traces=True) for service in services]
    )
    InstanceRollup.objects.bulk_create(
        [InstanceRollup(minute=minute, instance=instance, count=1, latency_sum_ms=5.0) for instance in instances]
    )
    return services


def within(focus, hops):
    """The services at most ``hops`` calls from ``focus``, calls followed both ways."""
    near, frontier = {focus}, {focus}
    for _ in range(hops):
        frontier = {b for a, b in calls() if a in frontier} | {a for a, b in calls() if b in frontier}
        frontier -= near
        near |= frontier
    return sorted(name(i) for i in near)


def element_data(page):
    return page.evaluate("() => Object.fromEntries(window.meshscope.cy.elements().map((el) => [el.id(), el.data()]))")


def test_a_rollup_arriving_changes_only_its_edge_in_the_page(page, live):
    services = seed_mesh()
    page.goto("/?group=none")  # every service drawn: the whole graph is what a delta must not redraw
    page.wait_for_function(f"() => window.meshscope && window.meshscope.cy.nodes().length === {SERVICES}")
    page.wait_for_function(LIVE)
    before = element_data(page)
    assert len(before) == SERVICES + len(calls())
    edge = f"edge:{name(80)}->{name(88)}/http/"
    assert edge in before

    # The rollup write path of ingestion (store_spans): a batch saved, the traffic views announced.
    with transaction.atomic():
        batch = RollupBatch()
        batch.add_edge(int(time.time() * 1_000_000), services[80].id, services[88].id, "http", "", 40.0, error=True)
        batch.save()
        announce_on_commit(*TRAFFIC_VIEWS)

    page.wait_for_function(
        "([id, label]) => window.meshscope.cy.getElementById(id).data('label') !== label",
        arg=[edge, before[edge]["label"]],
        timeout=10000,
    )
    after = element_data(page)
    changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    assert changed == {edge}
    assert "%" in after[edge]["label"], "the call failed: its edge shows an error rate"
    assert page.evaluate("() => window.meshscope.socket.stats.snapshots") == 1, "updated by a delta, not a reload"


def test_a_focus_draws_the_k_hop_neighbourhood_and_nothing_else(page, live):
    seed_mesh()
    page.goto(f"/?focus={name(80)}")
    page.wait_for_function(f"() => window.meshscope && window.meshscope.cy.getElementById('{name(80)}').nonempty()")
    assert page.evaluate(DRAWN_IDS) == within(80, 1)
    assert page.is_visible("#focus-box") and page.text_content("#focus-name") == name(80)

    page.select_option("#hops", "2")
    page.wait_for_function(f"() => window.meshscope.cy.nodes().length === {len(within(80, 2))}")
    assert page.evaluate(DRAWN_IDS) == within(80, 2)
    assert "hops=2" in page.url
    edges = page.evaluate("() => window.meshscope.cy.edges().map((e) => [e.data('source'), e.data('target')])")
    drawn = set(within(80, 2))
    assert sorted(map(tuple, edges)) == sorted(
        (name(a), name(b)) for a, b in calls() if name(a) in drawn and name(b) in drawn
    )

    # Clearing the focus comes back to the groups, not to every service.
    page.click("#focus-clear")
    page.wait_for_function(GROUPED)
    assert page.evaluate("() => window.meshscope.cy.nodes().length") == TEAMS


def test_expanding_a_group_draws_its_services_beside_the_groups_it_talks_to(page, live):
    seed_mesh()
    page.goto("/")
    page.wait_for_function(GROUPED)
    assert page.evaluate(DRAWN_IDS) == sorted(f"group:team{k}" for k in range(TEAMS))

    page.evaluate("() => window.meshscope.cy.getElementById('group:team3').emit('tap')")
    page.wait_for_function("() => window.meshscope.cy.getElementById('group:team3').empty()")
    team3 = sorted(name(i) for i in range(SERVICES) if i % TEAMS == 3)
    # Team 3 is called by team 2 only: that group stays collapsed, the other five are not drawn.
    assert page.evaluate(DRAWN_IDS) == sorted([*team3, "group:team2"])
    edges = page.evaluate("() => window.meshscope.cy.edges().map((e) => [e.data('source'), e.data('target')])")
    inside = [(name(a), name(b)) for a, b in calls() if a % TEAMS == 3 and b % TEAMS == 3]
    from_team2 = [("group:team2", name(b)) for a, b in calls() if a % TEAMS == 2 and b % TEAMS == 3]
    assert sorted(map(tuple, edges)) == sorted(inside + from_team2)
    assert page.is_visible("#expand-box") and page.text_content("#expand-name") == "team3"
    assert "expand=team3" in page.url

    # The expansion is a link: reloaded, the page draws the same.
    page.reload()
    page.wait_for_function("() => window.meshscope && window.meshscope.cy.nodes().length > 0")
    assert page.evaluate(DRAWN_IDS) == sorted([*team3, "group:team2"])
    page.click("#expand-clear")
    page.wait_for_function(f"() => window.meshscope.cy.nodes().length === {TEAMS}")


def test_search_finds_a_service_that_is_not_drawn_and_focuses_it(page, live):
    seed_mesh()
    page.goto("/")
    page.wait_for_function(GROUPED)
    target = name(133)
    assert page.evaluate(f"() => window.meshscope.cy.getElementById('{target}').empty()")

    page.locator("#search").press_sequentially("svc-133")
    page.wait_for_function("() => document.querySelectorAll('#search-names option').length > 0")
    assert page.eval_on_selector_all("#search-names option", "options => options.map((o) => o.value)") == [target]
    page.press("#search", "Enter")

    page.wait_for_function(f"() => window.meshscope.cy.getElementById('{target}').nonempty()")
    assert page.evaluate(DRAWN_IDS) == within(133, 1)
    assert page.text_content("#focus-name") == target
    page.wait_for_selector(f".node-panel[data-service='{target}']")


def dense_calls():
    """Each service calls the five next of its team (i -> i + 8k): 1,880 edges, more than the level of
    detail draws at once."""
    return [(i, i + TEAMS * k) for k in range(1, 6) for i in range(SERVICES - TEAMS * k)]


def seed_dense_mesh():
    """The dense mesh, in this minute, its edges' counts all different (the n-th edge 1 + n calls): the
    busiest edges are the last ones of dense_calls()."""
    seed_services_and_calls([(source, target, 1 + n) for n, (source, target) in enumerate(dense_calls())])


DRAWN_PAIRS = "() => window.meshscope.cy.edges().map((e) => [e.data('source'), e.data('target')])"


def test_a_large_graph_draws_its_busiest_edges_until_zoomed_in_on_a_few_services(page, live):
    seed_dense_mesh()
    pairs = [(name(a), name(b)) for a, b in dense_calls()]
    page.goto("/?group=none")
    page.wait_for_function(f"() => window.meshscope && window.meshscope.cy.nodes().length === {SERVICES}")
    page.wait_for_function("() => window.meshscope.lod.syncs > 0 && window.meshscope.lod.mode === 'overview'")
    assert sorted(map(tuple, page.evaluate(DRAWN_PAIRS))) == sorted(pairs[-600:])
    assert page.text_content("#graph-lod") == "Showing the 600 busiest of 1,880 edges: zoom in or focus to see all"
    assert "600 of 1880 edges" in page.text_content("#graph-counts")

    # Zoomed in on one service: every edge of the services in view is drawn, and no other.
    page.evaluate(
        f"""() => {{ const cy = window.meshscope.cy, p = cy.getElementById('{name(200)}').position();
            cy.viewport({{zoom: 1.5, pan: {{x: cy.width() / 2 - p.x * 1.5, y: cy.height() / 2 - p.y * 1.5}}}}); }}"""
    )
    page.wait_for_function("() => window.meshscope.lod.mode === 'detail'")
    in_view = set(
        page.evaluate(
            """() => { const cy = window.meshscope.cy, box = cy.extent();
                return cy.nodes().filter((n) => { const p = n.position();
                    return p.x >= box.x1 && p.x <= box.x2 && p.y >= box.y1 && p.y <= box.y2; }).map((n) => n.id()); }"""
        )
    )
    assert name(200) in in_view and len(in_view) < SERVICES
    assert sorted(map(tuple, page.evaluate(DRAWN_PAIRS))) == sorted(
        (a, b) for a, b in pairs if a in in_view or b in in_view
    )
    assert page.text_content("#graph-lod").startswith("Showing all ")

    # Back to the overview with a service selected: the busiest edges and all of the selected service's.
    page.evaluate(f"() => window.meshscope.cy.getElementById('{name(3)}').emit('tap')")
    page.click("#fit")
    page.wait_for_function("() => window.meshscope.lod.mode === 'overview'")
    selected = {(a, b) for a, b in pairs if name(3) in (a, b)}
    assert selected - set(pairs[-600:]), "the selected service has edges that are not among the busiest"
    page.wait_for_function(f"() => window.meshscope.cy.edges().length === {len(set(pairs[-600:]) | selected)}")
    assert set(map(tuple, page.evaluate(DRAWN_PAIRS))) == set(pairs[-600:]) | selected
