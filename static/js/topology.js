// The live service graph (cytoscape.js, vendored). Labels are cytoscape data: drawn on canvas as text,
// names cut to LABEL_CHARS with an ellipsis; the whole name is the graph's tooltip on hover and the panel's.
import {
  h, qs, clear, getJSON, query, fmtRate, fmtPct, fmtMs, fmtTime, fmtAgo, setUpdated, setSources, setStatus,
  windowSelector, lineChart, chartBlock, debounce, traceLink, shorten, clipped, LABEL_CHARS,
} from "./util.js";
import { LiveSocket } from "./live.js";
import { THEME_EVENT } from "./page.js";
import { graphSvg } from "./graph_svg.js";
import { linkState, addShortcut } from "./navigation.js";

const COLORS = graphColors(); // the theme's, read again when it changes
const AUTO_GROUP_ABOVE = 300;
const container = qs("#graph");
const params = new URLSearchParams(location.search);

const model = { nodes: new Map(), edges: new Map(), meta: {} };
const ui = {
  text: qs("#filter-text").value.trim().toLowerCase(),
  health: "",
  group: ["prefix", "tag"].includes(params.get("group")) ? params.get("group") : "",
  groupChosen: params.has("group"), // otherwise a large mesh starts grouped
  autoGrouped: false,
  hideIdle: false,
  focus: container.dataset.focus || "",
  replayMinutes: 0,
  replayUntil: "", // the replayed window's end, fixed when chosen (ISO): a link to it shows the same minutes
  selected: null, // {kind: "node"|"edge", id}
};
const meshscope = { model, ui, drawnMs: null, draws: 0, cy: null };
window.meshscope = meshscope;

const cy = cytoscape({
  container,
  elements: [],
  layout: { name: "preset" },
  minZoom: 0.03,
  maxZoom: 3,
  // No custom wheelSensitivity: cytoscape warns that it makes zoom unnatural on mainstream mice, and
  // the default normalises each device's wheel steps itself.
  textureOnViewport: true,
  motionBlur: false,
  pixelRatio: 1,
  style: graphStyle(),
});
meshscope.cy = cy;

// The stylesheet, in the theme's colours (COLORS): built again when the theme changes.
function graphStyle() {
  return [
    {
      selector: "node",
      style: {
        label: "data(label)",
        "background-color": "data(color)",
        width: "data(size)",
        height: "data(size)",
        "border-width": 2,
        "border-color": "data(border)",
        "font-size": 11,
        color: COLORS.label,
        "text-valign": "bottom",
        "text-margin-y": 4,
        "text-wrap": "wrap",
        "text-max-width": 180,
        "text-overflow-wrap": "anywhere",
        "min-zoomed-font-size": 7,
        "text-background-color": COLORS.labelBackground,
        "text-background-opacity": 0.75,
        "text-background-padding": 1,
      },
    },
    { selector: "node.group", style: { shape: "round-rectangle", "border-style": "double", "border-width": 4, "font-weight": "bold" } },
    // Consul's health of some instances is out of date (datacenter no longer read, or long stale): a dashed ring.
    { selector: "node[?stale]", style: { "border-style": "dashed" } },
    { selector: "node.focus", style: { "border-color": COLORS.selected, "border-width": 4 } },
    { selector: "node:selected", style: { "border-color": COLORS.selected, "border-width": 4, "overlay-opacity": 0 } },
    {
      selector: "edge",
      style: {
        width: "data(width)",
        "line-color": "data(color)",
        "target-arrow-color": "data(color)",
        "target-arrow-shape": "triangle",
        "arrow-scale": 0.8,
        "curve-style": "bezier",
        label: "data(label)",
        "font-size": 9,
        color: COLORS.edgeLabel,
        "text-rotation": "autorotate",
        "text-background-color": COLORS.labelBackground,
        "text-background-opacity": 0.85,
        "text-background-padding": 1,
        "min-zoomed-font-size": 8,
        opacity: 0.85,
      },
    },
    { selector: "edge.async", style: { "line-style": "dashed", "line-dash-pattern": [6, 4], "target-arrow-shape": "vee" } },
    { selector: "edge.large", style: { "curve-style": "straight", "arrow-scale": 0.6 } },
    // Thousands of edge labels cost seconds to lay out and are unreadable anyway: on a large graph an
    // edge shows its label when it is selected, hovered or next to a focused or hovered node.
    { selector: "edge.quiet", style: { label: "" } },
    { selector: "edge.quiet.hover, edge.quiet:selected", style: { label: "data(label)" } },
    { selector: "edge:selected", style: { "line-color": COLORS.selected, "target-arrow-color": COLORS.selected, opacity: 1 } },
    { selector: ".faded", style: { opacity: 0.12, "text-opacity": 0 } },
  ];
}

// --- the model: snapshot and deltas -------------------------------------------------------------

// The live view carries each record's calls in the window and the seconds the window covers; the API
// (replay) gives rates. Either way a record leaves here with its rps.
function withRate(record, covered) {
  return record.rps === undefined ? { ...record, rps: covered ? Math.round((record.count / covered) * 1000) / 1000 : 0 } : record;
}

function load(data) {
  model.nodes = new Map((data.nodes || []).map((n) => [String(n.id), withRate(n, data.covered_seconds)]));
  if (!ui.groupChosen && !ui.focus && !ui.text && model.nodes.size > AUTO_GROUP_ABOVE) {
    // Hundreds of services are a hairball: start with one node per group (click a group to open it).
    ui.group = "prefix";
    ui.groupChosen = true;
    ui.autoGrouped = true;
    qs("#group-by").value = "prefix";
  }
  model.edges = new Map((data.edges || []).map((e) => [String(e.id), withRate(e, data.covered_seconds)]));
  model.meta = { window: data.window, until: data.until, generated_at: data.generated_at, sources: data.sources };
  draw();
  setUpdated(data.generated_at || data.until);
  setSources(data.sources);
  openLinkedSelection();
}

// --- what is visible: filters, focus, grouping ------------------------------------------------

function nodeHealth(node) {
  if (node.health === "critical" || node.error_rate >= 0.05) return "critical";
  if (node.health === "warning" || node.error_rate >= 0.01) return "warning";
  return node.health || "unknown";
}

function matches(node) {
  if (ui.text) {
    const hay = [node.name, ...(node.tags || [])].join("\n").toLowerCase();
    if (!hay.includes(ui.text)) return false;
  }
  if (ui.health === "errors" && !(node.error_rate > 0)) return false;
  if (ui.health && ui.health !== "errors" && (node.health || "unknown") !== ui.health) return false;
  if (ui.hideIdle && !(node.rps > 0)) return false;
  return true;
}

function groupOf(node) {
  if (ui.group === "prefix") return String(node.name).split(/[-._/:]/)[0] || node.name;
  if (ui.group === "tag") return (node.tags && node.tags.length ? String(node.tags[0]) : "untagged");
  return null;
}

function visible() {
  let nodes = Array.from(model.nodes.values());
  let edges = Array.from(model.edges.values());
  if (ui.focus && model.nodes.has(ui.focus)) {
    const near = new Set([ui.focus]);
    for (const e of edges) {
      if (e.source === ui.focus) near.add(e.target);
      if (e.target === ui.focus) near.add(e.source);
    }
    nodes = nodes.filter((n) => near.has(n.id));
  }
  nodes = nodes.filter((n) => matches(n) || n.id === ui.focus);
  const keep = new Set(nodes.map((n) => n.id));
  edges = edges.filter((e) => keep.has(e.source) && keep.has(e.target));
  if (!ui.group || ui.focus) return { nodes: nodes.map(nodeElement), edges: edges.map(edgeElement), grouped: false };

  // Collapse groups into one node each; edges between groups are summed.
  const groups = new Map();
  const member = new Map();
  for (const n of nodes) {
    const key = groupOf(n);
    member.set(n.id, `group:${key}`);
    const g = groups.get(key) || { key, count: 0, rps: 0, errors: 0, worst: "passing", tags: [] };
    g.count += 1;
    g.rps += n.rps || 0;
    g.errors += (n.rps || 0) * (n.error_rate || 0);
    const rank = { critical: 3, warning: 2, unknown: 1, passing: 0 };
    if (rank[nodeHealth(n)] > rank[g.worst]) g.worst = nodeHealth(n);
    groups.set(key, g);
  }
  const gEdges = new Map();
  for (const e of edges) {
    const s = member.get(e.source), t = member.get(e.target);
    const id = `${s}->${t}:${e.sync}`;
    const g = gEdges.get(id) || { id, source: s, target: t, sync: e.sync, rps: 0, errors: 0, p95_ms: 0, count: 0, grouped: true };
    g.rps += e.rps || 0;
    g.errors += (e.rps || 0) * (e.error_rate || 0);
    g.p95_ms = Math.max(g.p95_ms, e.p95_ms || 0);
    g.count += 1;
    gEdges.set(id, g);
  }
  const gNodes = Array.from(groups.values()).map((g) => ({
    data: {
      id: `group:${g.key}`, group: g.key, name: g.key, label: `${shorten(g.key)} (${g.count})`, color: COLORS[g.worst], border: COLORS[g.worst],
      size: 34 + Math.min(30, Math.log10(1 + g.rps) * 10), rps: g.rps,
    },
    classes: "group",
  }));
  const edgeEls = Array.from(gEdges.values()).map((g) =>
    edgeElement({ ...g, error_rate: g.rps ? g.errors / g.rps : 0, protocol: `${g.count} edges` }),
  );
  return { nodes: gNodes, edges: edgeEls, grouped: true };
}

function nodeElement(n) {
  const health = nodeHealth(n);
  return {
    data: {
      id: n.id,
      name: n.name,
      label: n.rps > 0 ? `${shorten(n.name)}\n${fmtRate(n.rps)}${n.error_rate > 0 ? " · " + fmtPct(n.error_rate) : ""}` : shorten(n.name),
      // Fill: the worse of Consul's health and the error rate; ring: Consul's own health.
      color: COLORS[health] || COLORS.unknown,
      border: n.health && n.health !== "unknown" ? COLORS[n.health] : n.health_stale ? COLORS.label : COLORS.labelBackground,
      stale: Boolean(n.health_stale),
      size: 22 + Math.min(26, Math.log10(1 + (n.rps || 0)) * 12),
      rps: n.rps || 0,
    },
    classes: n.id === ui.focus ? "focus" : "",
  };
}

function edgeElement(e) {
  const color = e.error_rate >= 0.05 ? COLORS.critical : e.error_rate >= 0.01 ? COLORS.warning : e.sync === "async" ? COLORS.async : COLORS.edge;
  const parts = [fmtRate(e.rps)];
  if (e.error_rate > 0) parts.push(fmtPct(e.error_rate));
  if (e.p95_ms !== null && e.p95_ms !== undefined) parts.push(`p95 ${fmtMs(e.p95_ms)}`);
  if (e.sync === "async" && e.topic) parts.unshift(`⇢ ${shorten(e.topic)}`);
  return {
    data: {
      id: `edge:${e.id}`, edge: e.id, source: e.source, target: e.target, label: parts.join(" · "), color,
      tooltip: `${e.source} → ${e.target}${e.topic ? ` via ${e.topic}` : ""}`,
      width: 1 + Math.min(9, Math.log2(1 + (e.rps || 0)) * 1.5), grouped: Boolean(e.grouped),
    },
    classes: [e.sync === "async" ? "async" : "", model.edges.size > 1500 ? "large" : "", model.edges.size > 400 && !ui.focus ? "quiet" : ""].join(" ").trim(),
  };
}

// --- layout: layered left to right, in O(nodes + edges), stable for the same graph -------------------

function layeredPositions(nodes, edges) {
  const ids = nodes.map((n) => n.data.id);
  const out = new Map(ids.map((id) => [id, []]));
  const callers = new Map(ids.map((id) => [id, []]));
  const indeg = new Map(ids.map((id) => [id, 0]));
  for (const e of edges) {
    if (e.data.source === e.data.target || !out.has(e.data.source) || !indeg.has(e.data.target)) continue;
    out.get(e.data.source).push(e.data.target);
    callers.get(e.data.target).push(e.data.source);
    indeg.set(e.data.target, indeg.get(e.data.target) + 1);
  }
  const rank = new Map();
  const sorted = [...ids].sort();
  const isolated = sorted.filter((id) => indeg.get(id) === 0 && out.get(id).length === 0);
  const isolatedSet = new Set(isolated);
  // Breadth first from the roots (callers nobody calls), then from whatever a cycle kept unreached.
  const bfs = (starts) => {
    const queue = [...starts];
    for (const id of starts) rank.set(id, 0);
    for (let i = 0; i < queue.length; i++) {
      const id = queue[i];
      for (const next of out.get(id)) {
        if (!rank.has(next)) {
          rank.set(next, rank.get(id) + 1);
          queue.push(next);
        }
      }
    }
  };
  bfs(sorted.filter((id) => indeg.get(id) === 0 && !isolatedSet.has(id)));
  for (const id of sorted) if (!rank.has(id) && !isolatedSet.has(id)) bfs([id]);

  const columns = [];
  for (const id of sorted) {
    if (isolatedSet.has(id)) continue;
    const r = rank.get(id);
    (columns[r] = columns[r] || []).push(id);
  }
  const positions = new Map();
  const perColumn = Math.max(10, Math.ceil(Math.sqrt(ids.length) * 1.2));
  const yOf = new Map();
  let x = 0;
  const dx = 230, dy = 78;
  for (const column of columns) {
    if (!column) continue;
    // Order by the mean position of the callers already placed: fewer crossings, cheaply.
    const weight = (id) => {
      let sum = 0, n = 0;
      for (const source of callers.get(id)) if (yOf.has(source)) { sum += yOf.get(source); n += 1; }
      return n ? sum / n : Infinity;
    };
    const keyed = column.map((id) => [weight(id), id]);
    keyed.sort((a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : 1));
    const slices = Math.ceil(keyed.length / perColumn);
    for (let s = 0; s < slices; s++) {
      const slice = keyed.slice(s * perColumn, (s + 1) * perColumn);
      const top = -((slice.length - 1) * dy) / 2;
      slice.forEach(([, id], i) => {
        const y = top + i * dy + (s % 2 ? dy / 2 : 0);
        positions.set(id, { x, y });
        yOf.set(id, y);
      });
      x += dx;
    }
  }
  // Services without edges: a grid under the graph.
  const maxY = Math.max(0, ...Array.from(positions.values()).map((p) => p.y));
  const cols = Math.max(4, Math.ceil(Math.sqrt(isolated.length * 2)));
  isolated.forEach((id, i) => positions.set(id, { x: (i % cols) * 170, y: maxY + 140 + Math.floor(i / cols) * 64 }));
  return positions;
}

// --- drawing: add, update and remove elements, keeping the user's viewport ------------------------

let structureKey = "";

function draw() {
  const started = performance.now();
  const phases = {};
  const { nodes, edges } = visible();
  phases.visible = performance.now() - started;
  const key = nodes.map((n) => n.data.id).join("\u0000") + "\u0001" + edges.map((e) => e.data.source + ">" + e.data.target).join("\u0000");
  const relayout = key !== structureKey;
  structureKey = key;
  const wanted = new Set([...nodes, ...edges].map((el) => el.data.id));
  cy.batch(() => {
    cy.elements().forEach((el) => {
      if (!wanted.has(el.id())) el.remove();
    });
    const add = [];
    for (const el of [...nodes, ...edges]) {
      const existing = cy.getElementById(el.data.id);
      if (existing.nonempty()) {
        existing.data(el.data);
        existing.classes(el.classes || "");
      } else {
        add.push({ group: el.data.source ? "edges" : "nodes", ...el });
      }
    }
    if (add.length) cy.add(add);
    phases.add = performance.now() - started;
    if (relayout) {
      const positions = layeredPositions(nodes, edges);
      phases.layout = performance.now() - started;
      cy.nodes().forEach((n) => {
        const p = positions.get(n.id());
        if (p) n.position(p);
      });
    }
  });
  phases.batch = performance.now() - started;
  if (relayout) fit();
  phases.fit = performance.now() - started;
  meshscope.phases = phases;
  if (ui.selected) cy.getElementById(ui.selected.elementId).select();
  qs("#graph-empty").hidden = model.nodes.size > 0;
  qs("#graph-counts").textContent = ui.group
    ? `${cy.nodes().length} groups of ${model.nodes.size} services${ui.autoGrouped ? " (grouped automatically)" : ""} · ${cy.edges().length} edges`
    : `${cy.nodes().length} of ${model.nodes.size} services · ${cy.edges().length} edges`;
  qs("#focus-box").hidden = !ui.focus;
  qs("#focus-name").textContent = ui.focus;
  qs("#focus-name").title = ui.focus;
  meshscope.draws += 1;
  cy.one("render", () => {
    requestAnimationFrame(() => {
      meshscope.drawnMs = performance.now();
      meshscope.lastDrawMs = performance.now() - started;
      if (meshscope.firstDrawnMs === undefined) {
        meshscope.firstDrawnMs = meshscope.drawnMs;
        meshscope.firstDrawMs = meshscope.lastDrawMs;
      }
      document.body.dataset.draws = String(meshscope.draws);
    });
  });
  cy.forceRender ? cy.forceRender() : null;
  linkView();
}

// --- side panel -----------------------------------------------------------------------------------

const panel = qs("#panel");
const panelBody = qs("#panel-body");

function windowParams() {
  const until = ui.replayMinutes ? replayUntil().toISOString() : "";
  return { window: currentWindow(), until };
}

function openPanel(content) {
  clear(panelBody).append(content);
  const opening = panel.hidden;
  panel.hidden = false;
  if (opening) keepInView();
}

function closePanel() {
  panel.hidden = true;
  ui.selected = null;
  linkView();
  cy.elements().unselect();
  keepInView();
}

// The panel takes width from the graph: refit a small graph, or bring the selection into view.
function keepInView() {
  cy.resize();
  if (cy.nodes().length <= 80) fit();
  else if (ui.selected) {
    const el = cy.getElementById(ui.selected.elementId);
    if (el.nonempty()) cy.center(el);
  }
}

// The whole of a name too long for the panel's header, under it.
function fullName(name) {
  return Array.from(String(name)).length > LABEL_CHARS ? h("p", { class: "full-name mono", text: name }) : null;
}

function statsTable(headers, rows) {
  return h("table", { class: "grid" },
    h("thead", {}, h("tr", {}, headers.map(([label, num]) => h("th", { class: num ? "num" : "", text: label })))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length, class: "muted", text: "none in this window" }))),
  );
}

function neighbourRows(list) {
  return list.map((n) =>
    h("tr", {},
      h("td", {}, clipped(n.service, { href: `?focus=${encodeURIComponent(n.service)}`, class: "svc-link", dataset: { service: n.service } }),
        n.topic ? h("span", { class: "tag", title: `async via Kafka topic ${n.topic}`, text: `⇢ ${n.topic}` }) : h("span", { class: "muted small", text: ` ${n.protocol}` })),
      h("td", { class: "num", text: fmtRate(n.rps) }),
      h("td", { class: n.error_rate > 0 ? "num err" : "num", text: fmtPct(n.error_rate) }),
      h("td", { class: "num", text: fmtMs(n.p95_ms) }),
    ),
  );
}

async function showNode(name) {
  ui.selected = { kind: "node", id: name, elementId: name };
  linkView();
  openPanel(h("p", { class: "muted", text: "Loading…" }));
  let d;
  try {
    d = await getJSON(`/api/services/detail/?${query({ name, ...windowParams() })}`);
  } catch (error) {
    openPanel(h("p", { class: "error-text", text: `Could not load ${name}: ${error.message}` }));
    return;
  }
  if (!ui.selected || ui.selected.id !== name) return;
  const node = model.nodes.get(name) || {};
  openPanel(h("div", { class: "node-panel", dataset: { service: d.name } },
    h("h1", { class: "svc-name clip", title: d.name, text: d.name }),
    fullName(d.name),
    h("div", {}, h("span", { class: `badge badge-${node.health || "unknown"}`, text: node.health || "unknown" }), " ",
      (d.tags || []).map((t) => h("span", { class: "tag", title: t, text: t }))),
    h("dl", { class: "kv" },
      h("dt", { text: "Rate" }), h("dd", { text: `${fmtRate(node.rps)} · errors ${fmtPct(node.error_rate)}` }),
      h("dt", { text: "Source" }), h("dd", { text: d.source }),
      d.datacenter ? [h("dt", { text: "Datacenter" }), h("dd", { text: d.datacenter })] : null,
      h("dt", { text: "Balancing" }), h("dd", { text: d.balancing_policy || "not set (round robin assumed)" }),
      h("dt", { text: "Last seen" }), h("dd", { text: fmtAgo(d.last_seen) }),
    ),
    h("div", {},
      h("a", { href: `?focus=${encodeURIComponent(d.name)}`, class: "focus-link", dataset: { service: d.name }, text: "Focus neighbourhood" }), " · ",
      h("a", { href: `/traces/?${query({ service: d.name })}`, text: "Traces" }), " · ",
      h("a", { href: `/balancers/?${query({ service: d.name })}`, text: "Balancer" }),
      d.admin_url ? [" · ", h("a", { href: d.admin_url, text: "Admin" })] : null,
    ),
    h("h3", { text: `Instances (${d.instances.length})` }),
    statsTable([["Instance"], ["Health"], ["Weight", 1], ["Share", 1]], d.instances.map((i) =>
      h("tr", {},
        h("td", {}, clipped(i.identity, { class: "mono", title: i.address ? `${i.identity} at ${i.address}` : i.identity })),
        h("td", {}, h("span", { class: `badge badge-${i.health}`, text: i.health })),
        h("td", { class: "num", text: String(i.weight) }),
        h("td", { class: "num" }, i.share === null ? "–" : [h("span", { class: "share-bar", style: { width: `${Math.round(i.share * 50)}px` } }), ` ${fmtPct(i.share)}`]),
      ))),
    h("h3", { text: "Top operations" }),
    statsTable([["Operation"], ["Rate", 1], ["Err", 1], ["p95", 1]], d.operations.map((o) =>
      h("tr", {},
        h("td", {}, clipped(o.name, { class: "mono" })),
        h("td", { class: "num", text: fmtRate(o.rps) }),
        h("td", { class: o.error_rate > 0 ? "num err" : "num", text: fmtPct(o.error_rate) }),
        h("td", { class: "num", text: fmtMs(o.p95_ms) }),
      ))),
    h("h3", { text: "Callers" }),
    statsTable([["Service"], ["Rate", 1], ["Err", 1], ["p95", 1]], neighbourRows(d.callers)),
    h("h3", { text: "Callees" }),
    statsTable([["Service"], ["Rate", 1], ["Err", 1], ["p95", 1]], neighbourRows(d.callees)),
  ));
}

async function showEdge(edge) {
  ui.selected = { kind: "edge", id: edge.id, elementId: `edge:${edge.id}` };
  linkView();
  openPanel(h("p", { class: "muted", text: "Loading…" }));
  let d;
  try {
    d = await getJSON(`/api/edges/detail/?${query({ source: edge.source, target: edge.target, protocol: edge.protocol, topic: edge.topic, ...windowParams() })}`);
  } catch (error) {
    openPanel(h("p", { class: "error-text", text: `Could not load the edge: ${error.message}` }));
    return;
  }
  if (!ui.selected || ui.selected.id !== edge.id) return;
  const t = (row) => new Date(row.minute).getTime();
  openPanel(h("div", { class: "edge-panel" },
    h("h1", { class: "clip", title: `${d.source} → ${d.target}` }, h("span", { class: "svc-name", text: d.source }), " → ", h("span", { class: "svc-name", text: d.target })),
    fullName(d.source), fullName(d.target),
    h("div", { class: "muted clip-block clip", title: d.topic || d.protocol }, d.sync === "async" ? `asynchronous via Kafka topic ${d.topic} (propagation delay)` : `synchronous ${d.protocol}`),
    h("div", { class: "figures" },
      h("div", { class: "figure" }, h("b", { text: fmtRate(d.totals.rps) }), h("span", { text: "rate" })),
      h("div", { class: "figure" }, h("b", { class: d.totals.error_rate > 0 ? "err" : "", text: fmtPct(d.totals.error_rate) }), h("span", { text: "errors" })),
      h("div", { class: "figure" }, h("b", { text: fmtMs(d.totals.p50_ms) }), h("span", { text: "p50" })),
      h("div", { class: "figure" }, h("b", { text: fmtMs(d.totals.p95_ms) }), h("span", { text: "p95" })),
      h("div", { class: "figure" }, h("b", { text: fmtMs(d.totals.p99_ms) }), h("span", { text: "p99" })),
    ),
    chartBlock("Rate per minute", "", lineChart([{ points: d.series.map((r) => [t(r), r.rps]) }], { format: fmtRate, label: "rate" })),
    chartBlock("Errors", "", lineChart([{ points: d.series.map((r) => [t(r), r.error_rate]), class: "series-2" }], { format: fmtPct, label: "errors" })),
    chartBlock(d.sync === "async" ? "Propagation delay p95" : "Latency p95", "", lineChart([{ points: d.series.map((r) => [t(r), r.p95_ms]), class: "series-3" }], { format: fmtMs, label: "p95" })),
    h("h3", { text: "Sample traces" }),
    d.samples.length
      ? h("ul", { class: "trace-list" }, d.samples.map((sample) => h("li", {},
          traceLink(sample.trace_id),
          h("span", { class: "grow mono", title: sample.operation, text: sample.operation }),
          sample.error ? h("span", { class: "badge badge-error", text: "error" }) : h("span", { class: "muted small", text: sample.why }),
          h("span", { class: "num", text: fmtMs(sample.duration_ms) }),
        )))
      : h("p", { class: "muted", text: "No stored spans for this edge in the window." }),
  ));
}

cy.on("tap", "node", (event) => {
  const data = event.target.data();
  if (data.group !== undefined) {
    // Open a group: show its members.
    ui.group = "";
    ui.groupChosen = true;
    ui.autoGrouped = false;
    qs("#group-by").value = "";
    qs("#filter-text").value = data.group;
    ui.text = String(data.group).toLowerCase();
    draw();
    return;
  }
  showNode(data.id);
});
cy.on("tap", "edge", (event) => {
  const data = event.target.data();
  if (data.grouped) return;
  const edge = model.edges.get(data.edge);
  if (edge) showEdge(edge);
});
cy.on("tap", (event) => {
  if (event.target === cy) closePanel();
});
// The canvas has no element per node: the graph's own tooltip names what the pointer is on, in full.
cy.on("mouseover", "node, edge", (event) => {
  container.title = event.target.data("tooltip") || event.target.data("name") || "";
});
cy.on("mouseout", "node, edge", () => {
  container.title = "";
});
cy.on("mouseover", "node", (event) => {
  const hood = event.target.closedNeighborhood();
  cy.batch(() => {
    cy.elements().not(hood).addClass("faded");
    hood.edges().addClass("hover");
  });
});
cy.on("mouseout", "node", () => cy.batch(() => cy.elements().removeClass("faded hover")));
cy.on("mouseover", "edge", (event) => event.target.addClass("hover"));
cy.on("mouseout", "edge", (event) => event.target.removeClass("hover"));

qs("#panel-close").addEventListener("click", closePanel);
panelBody.addEventListener("click", (event) => {
  const link = event.target.closest("a.svc-link, a.focus-link");
  if (!link) return;
  event.preventDefault();
  setFocus(link.dataset.service);
  if (link.classList.contains("svc-link")) showNode(link.dataset.service);
});

function setFocus(name) {
  ui.focus = name || "";
  const url = new URL(location.href);
  if (ui.focus) url.searchParams.set("focus", ui.focus);
  else url.searchParams.delete("focus");
  history.replaceState(null, "", url);
  draw();
}

qs("#focus-clear").addEventListener("click", () => setFocus(""));
qs("#filter-text").addEventListener("input", debounce((event) => {
  ui.text = event.target.value.trim().toLowerCase();
  draw();
}, 150));
qs("#filter-health").addEventListener("change", (event) => { ui.health = event.target.value; draw(); });
qs("#group-by").value = ui.group;
qs("#group-by").addEventListener("change", (event) => {
  ui.group = event.target.value;
  ui.groupChosen = true;
  ui.autoGrouped = false;
  const url = new URL(location.href);
  url.searchParams.set("group", ui.group || "none");
  history.replaceState(null, "", url);
  draw();
});
qs("#hide-idle").addEventListener("change", (event) => { ui.hideIdle = event.target.checked; draw(); });
qs("#fit").addEventListener("click", fit);

// Fits the graph from the node positions alone: cy.fit() measures every label, which costs
// seconds on a thousand services.
function fit() {
  const nodes = cy.nodes();
  if (!nodes.length) return;
  let x1 = Infinity, y1 = Infinity, x2 = -Infinity, y2 = -Infinity;
  nodes.forEach((n) => {
    const p = n.position();
    x1 = Math.min(x1, p.x); y1 = Math.min(y1, p.y); x2 = Math.max(x2, p.x); y2 = Math.max(y2, p.y);
  });
  const pad = 60, margin = 50; // node size and labels around the outermost positions
  const width = cy.width(), height = cy.height();
  const zoom = Math.max(cy.minZoom(), Math.min(1.6, (width - 2 * pad) / (x2 - x1 + 2 * margin || 1), (height - 2 * pad) / (y2 - y1 + 2 * margin || 1)));
  cy.viewport({ zoom, pan: { x: width / 2 - ((x1 + x2) / 2) * zoom, y: height / 2 - ((y1 + y2) / 2) * zoom } });
}

// --- live updates, window, replay -------------------------------------------------------------------

const currentWindow = windowSelector((window) => {
  if (ui.replayMinutes) replay();
  else socket.setWindow(window);
  refreshPanel();
});

const refreshPanel = debounce(() => {
  if (panel.hidden || !ui.selected) return;
  if (ui.selected.kind === "node") showNode(ui.selected.id);
  else if (model.edges.has(ui.selected.id)) showEdge(model.edges.get(ui.selected.id));
}, 300);

let lastPanelRefresh = 0;
const socket = new LiveSocket({
  view: "topology",
  window: currentWindow(),
  onData: (state, message) => {
    if (ui.replayMinutes) return;
    load(state);
    meshscope.seq = socket.seq;
    if (message.type === "delta" && Date.now() - lastPanelRefresh > 5000) {
      lastPanelRefresh = Date.now();
      refreshPanel();
    }
  },
});
meshscope.socket = socket;

const replayInput = qs("#replay");
const replayLabel = qs("#replay-label");

async function replay() {
  const until = replayUntil();
  try {
    const data = await getJSON(`/api/topology/?${query({ window: currentWindow(), until: until.toISOString() })}`);
    if (!ui.replayMinutes) return;
    load(data);
    setStatus("replay", `Showing the ${currentWindow() / 60} minutes up to ${until.toLocaleTimeString()}`);
  } catch (error) {
    setStatus("replay", `Replay failed: ${error.message}`);
  }
}

replayInput.addEventListener("input", () => {
  ui.replayMinutes = Number(replayInput.value);
  replayLabel.textContent = ui.replayMinutes ? `${-ui.replayMinutes} min ago` : "live";
});
replayInput.addEventListener("change", () => {
  ui.replayMinutes = Number(replayInput.value);
  if (ui.replayMinutes) {
    socket.setPaused(true);
    replay();
  } else {
    socket.setPaused(false);
    if (socket.state) load(socket.state);
    else if (!socket.ws) socket.setWindow(currentWindow()); // opened on a replay link: live for the first time
  }
  refreshPanel();
});

// --- theme: the graph's colours are the page's CSS custom properties ------------------------------

function graphColors() {
  const css = getComputedStyle(document.documentElement);
  const read = (name) => css.getPropertyValue(name).trim();
  return {
    passing: read("--passing"), warning: read("--warning"), critical: read("--critical"), unknown: read("--unknown"),
    async: read("--async"), edge: read("--edge"), edgeLabel: read("--edge-label"), label: read("--ink"),
    labelBackground: read("--panel"), selected: read("--accent"),
  };
}

document.addEventListener(THEME_EVENT, () => {
  Object.assign(COLORS, graphColors());
  cy.style(graphStyle());
  draw(); // the elements' own colours (health, errors) are data
});

// --- export: the graph as drawn (PNG, SVG); the window's topology from the API (JSON, DOT) -----------

// Cytoscape draws a whole large graph into one canvas: at most this many pixels a side.
const EXPORT_MAX_SIDE = 8000;

function exportName(extension) {
  // A replayed graph is named for the time it shows; the live one for now.
  const at = ui.replayMinutes && model.meta.until ? new Date(model.meta.until) : new Date();
  return `meshscope-topology-${at.toISOString().slice(0, 19).replaceAll(":", "-")}Z.${extension}`;
}

function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a"); // not h(): its links refuse blob: URLs, and this one is ours
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  // The download has its own copy of the blob once it started; the URL is only kept for slow browsers.
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

function exportPng() {
  const box = cy.elements().boundingBox();
  const scale = Math.min(2, EXPORT_MAX_SIDE / Math.max(box.w, box.h, 1));
  download(cy.png({ full: true, bg: COLORS.labelBackground, scale, output: "blob" }), exportName("png"));
}

function exportSvg() {
  download(new Blob([graphSvg(cy, COLORS.labelBackground)], { type: "image/svg+xml;charset=utf-8" }), exportName("svg"));
}

// The API's exports cover the window the page shows: the live one up to now, or the replayed one.
function pointExport(link, extension) {
  const until = ui.replayMinutes && model.meta.until ? model.meta.until : "";
  link.href = `${link.pathname}?${query({ window: currentWindow(), until })}`;
  link.download = exportName(extension);
}

qs("#export-png").addEventListener("click", exportPng);
qs("#export-svg").addEventListener("click", exportSvg);
qs("#export-json").addEventListener("click", (event) => pointExport(event.currentTarget, "json"));
qs("#export-dot").addEventListener("click", (event) => pointExport(event.currentTarget, "dot"));

// --- deep links and shortcuts: the view in the URL, keys for the graph ----------------------------
// The URL holds what is on screen: window (windowSelector), replay's end (until), the selected node or
// edge (node, edge: its panel opens again), the filters (service, health, idle), group and focus. It
// is rewritten (history.replaceState) on every draw and selection, so a reload or a copied link shows
// the same view.

let linkedSelection = params.get("edge") ? { kind: "edge", id: params.get("edge") } : params.get("node") ? { kind: "node", id: params.get("node") } : null;

function replayUntil() {
  return ui.replayUntil ? new Date(ui.replayUntil) : new Date(Date.now() + ui.replayMinutes * 60000);
}

function linkView() {
  const selected = ui.selected || linkedSelection || { kind: "" };
  linkState({
    service: qs("#filter-text").value.trim(),
    health: ui.health,
    idle: ui.hideIdle,
    group: ui.groupChosen && !ui.autoGrouped ? ui.group || "none" : "",
    focus: ui.focus,
    until: ui.replayMinutes ? ui.replayUntil : "",
    node: selected.kind === "node" ? selected.id : "",
    edge: selected.kind === "edge" ? selected.id : "",
  });
}

// The filters and the replayed window of a link, before the first draw.
function restoreLink() {
  const health = params.get("health") || "";
  if (Array.from(qs("#filter-health").options).some((option) => option.value === health)) {
    ui.health = health;
    qs("#filter-health").value = health;
  }
  ui.hideIdle = params.get("idle") === "1";
  qs("#hide-idle").checked = ui.hideIdle;
  const until = Date.parse(params.get("until") || "");
  if (Number.isNaN(until)) return;
  ui.replayUntil = params.get("until"); // as the link says it: reloading does not rewrite it
  ui.replayMinutes = Math.min(-1, Math.round((until - Date.now()) / 60000));
  replayInput.value = String(ui.replayMinutes); // the slider stops at its end; the label says how far back
  replayLabel.textContent = `${-ui.replayMinutes} min ago`;
  socket.setPaused(true);
  replay();
}

// A link's selection opens once the graph it belongs to is loaded; one no longer there is dropped.
function openLinkedSelection() {
  const linked = linkedSelection;
  if (!linked) return;
  linkedSelection = null;
  if (linked.kind === "edge" && model.edges.has(linked.id)) showEdge(model.edges.get(linked.id));
  else if (linked.kind === "node" && model.nodes.has(linked.id)) showNode(linked.id);
  else linkView();
  if (ui.selected) cy.getElementById(ui.selected.elementId).select();
}

// Dragging the slider fixes the end of the replayed window (input comes before change, which replays).
replayInput.addEventListener("input", () => {
  ui.replayUntil = ui.replayMinutes ? new Date(Date.now() + ui.replayMinutes * 60000).toISOString() : "";
});
qs("#fit").title = "Fit the graph (f)";
qs("#fit").setAttribute("aria-keyshortcuts", "f");
addShortcut("f", "Fit the graph", fit);
addShortcut("Escape", "Clear the selection (close the panel)", () => { if (ui.selected || !panel.hidden) closePanel(); });

restoreLink();
if (!ui.replayMinutes) socket.connect(); // a replayed link needs no live view until it goes live
