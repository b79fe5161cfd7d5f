// The live service graph (cytoscape.js, vendored). Labels are cytoscape data: drawn on canvas as text,
// names cut to LABEL_CHARS with an ellipsis; the whole name is the graph's tooltip on hover and the panel's.
//
// What is drawn, so that the page stays usable at 5,000 services and 25,000 edges (issue 11):
// * A mesh of more than AUTO_GROUP_ABOVE services starts grouped: one node per name prefix (or first tag).
// * Tapping a group expands it, one group at a time: its services, the calls among them, and their calls to
//   and from the groups they talk to, those groups staying collapsed. The rest is not drawn.
// * A focus draws one service's k-hop neighbourhood (callers and callees followed both ways, 1 to 3 hops).
// * Search jumps to any service, drawn or not: choosing one focuses it.
// * The whole graph is drawn on request (group by "none"): its layout runs in a module worker
//   (topology_layout_worker.js) and its elements are added a chunk per task, so that no task of ours
//   holds the page for long. Long tasks are recorded (window.meshscope.longTasks) for the benchmark.
// * A view of more than LOD_ABOVE edges draws a level of detail (see "level of detail" below): every
//   node, but only the busiest edges while zoomed out, and every edge of the services in view once few
//   enough are, with a note that says which.
// The page computes these subgraphs itself, from the live model it already holds (the websocket's snapshot
// and its deltas): no request and no wait for the server when a group opens or the focus moves, and the
// subgraph stays live with the same deltas. GET /api/topology/?focus=<service>&hops=<k> answers the same
// neighbourhood to API users.
import {
  h, qs, clear, getJSON, query, fmtRate, fmtPct, fmtMs, fmtTime, fmtAgo, setUpdated, setSources, setStatus,
  windowSelector, lineChart, chartBlock, debounce, traceLink, shorten, clipped, LABEL_CHARS,
} from "./util.js";
import { LiveSocket } from "./live.js";
import { THEME_EVENT } from "./page.js";
import { graphSvg } from "./graph_svg.js";
import { linkState, addShortcut } from "./navigation.js";
import { layeredPositions, neighbourhood, neighbours } from "./topology_layout.js";

const COLORS = graphColors(); // the theme's, read again when it changes
const AUTO_GROUP_ABOVE = 300;
const MAX_HOPS = 3;
// A view of at most this many elements is drawn in one task (a grouped view, a focus, an expanded group:
// a few milliseconds); a larger one in chunks of CHUNK elements, one task each.
const DRAW_AT_ONCE_MAX = 3000;
const CHUNK = 1000;
const SUGGESTIONS = 20;
// Level of detail. Cytoscape paints every edge in view on every frame: 25,000 edges cost 450-1,100 ms a
// frame in this chromium without a GPU, 5,000 nodes alone 60-90 ms. A view with more than LOD_ABOVE edges
// draws the OVERVIEW_EDGES busiest while zoomed out, and all the edges of the services in view once they
// have at most DETAIL_EDGES; the selected or hovered service's edges are always drawn.
const LOD_ABOVE = 1500;
const OVERVIEW_EDGES = 600;
const DETAIL_EDGES = 2500;
const container = qs("#graph");
const params = new URLSearchParams(location.search);

const model = { nodes: new Map(), edges: new Map(), meta: {}, live: false };
const ui = {
  text: qs("#filter-text").value.trim().toLowerCase(),
  health: "",
  group: ["prefix", "tag"].includes(params.get("group")) ? params.get("group") : "",
  groupChosen: params.has("group"), // otherwise a large mesh starts grouped
  autoGrouped: false,
  expanded: params.get("expand") || "", // the one group drawn as its services
  hideIdle: false,
  focus: container.dataset.focus || "",
  hops: hopsFrom(params.get("hops")),
  replayMinutes: 0,
  replayUntil: "", // the replayed window's end, fixed when chosen (ISO): a link to it shows the same minutes
  selected: null, // {kind: "node"|"edge", id}
};
// longTasks: every long task (over 50 ms) of the page as the browser reports it, {start, duration} in ms.
const meshscope = { model, ui, drawnMs: null, draws: 0, cy: null, view: "", longTasks: [], lod: null };
window.meshscope = meshscope;
if (PerformanceObserver.supportedEntryTypes.includes("longtask")) {
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) meshscope.longTasks.push({ start: entry.startTime, duration: entry.duration });
  }).observe({ type: "longtask", buffered: true });
}

function hopsFrom(value) {
  const hops = Number.parseInt(value, 10);
  return hops >= 1 && hops <= MAX_HOPS ? hops : 1;
}

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
    // Thousands of edges: haystack lines (cytoscape's cheapest: no curve, no arrow to compute), the
    // direction read from the layout, whose calls go left to right.
    { selector: "edge.large", style: { "curve-style": "haystack", "haystack-radius": 0, "target-arrow-shape": "none" } },
    // Thousands of edge labels cost seconds to lay out and are unreadable anyway: on a large graph an
    // edge shows its label when it is selected, hovered or next to a focused or hovered node.
    { selector: "edge.quiet", style: { label: "" } },
    { selector: "edge.quiet.hover, edge.quiet:selected", style: { label: "data(label)" } },
    { selector: "edge:selected", style: { "line-color": COLORS.selected, "target-arrow-color": COLORS.selected, opacity: 1 } },
    { selector: ".faded", style: { opacity: 0.12, "text-opacity": 0 } },
  ];
}

// --- the model: snapshot and deltas -------------------------------------------------------------

// A record's calls per second. /api/topology/ (the replay) gives each node and edge its rps; the live
// view gives its count of calls in the window and, once, the seconds its rollups cover (covered_seconds),
// so that a delta carries the records whose traffic changed and not every rate as the window slides.
// Rounded as the server rounds its rps (topology.window.Window.per_second): both show the same figure.
function rate(record) {
  if (record.rps !== undefined && record.rps !== null) return record.rps;
  const covered = model.meta.covered_seconds;
  return covered && record.count ? Math.round((record.count / covered) * 1000) / 1000 : 0;
}

function metaOf(data) {
  return {
    window: data.window, until: data.until, generated_at: data.generated_at, sources: data.sources,
    covered_seconds: data.covered_seconds,
  };
}

// live: the data is the live view's state (a delta then updates the model in place), not a replay.
function load(data, live = false) {
  model.live = live;
  model.nodes = new Map((data.nodes || []).map((n) => [String(n.id), n]));
  if (!ui.groupChosen && !ui.text && model.nodes.size > AUTO_GROUP_ABOVE) {
    // Hundreds of services are a hairball: start with one node per group (tap a group to expand it). A
    // focus from a link is drawn first; clearing it comes back to the groups, not to every service.
    ui.group = "prefix";
    ui.groupChosen = true;
    ui.autoGrouped = true;
    qs("#group-by").value = "prefix";
  }
  model.edges = new Map((data.edges || []).map((e) => [String(e.id), e]));
  model.meta = metaOf(data);
  suggestNames();
  draw();
  // The header in a task of its own: the first time formatting costs ~100 ms here (ICU's locale data).
  setTimeout(() => {
    setUpdated(data.generated_at || data.until);
    setSources(data.sources);
  });
  openLinkedSelection();
}

// A delta applied to the model in place: what it upserts and removes, not the whole state again. On the
// whole graph only the elements of those records are drawn again (drawChanged).
function applyDelta(state, changes) {
  const touched = { nodes: [], edges: [] };
  let rates = false;
  for (const [key, change] of Object.entries(changes || {})) {
    if (key === "nodes" || key === "edges") {
      if ("set" in change) return load(state, true);
      for (const id of change.remove || []) {
        model[key].delete(String(id));
        touched[key].push(String(id));
      }
      for (const record of change.upsert || []) {
        model[key].set(String(record.id), record);
        touched[key].push(String(record.id));
      }
    } else if (key === "covered_seconds") rates = true;
  }
  model.meta = metaOf(state);
  if (touched.nodes.length) suggestNames();
  if (meshscope.view === "whole" && !rates && !drawing) drawChanged(touched);
  else draw({ fromData: true });
  setUpdated(state.generated_at || state.until);
  setSources(state.sources);
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
  if (ui.hideIdle && !(rate(node) > 0)) return false;
  return true;
}

function groupOf(node) {
  if (ui.group === "prefix") return String(node.name).split(/[-._/:]/)[0] || node.name;
  if (ui.group === "tag") return (node.tags && node.tags.length ? String(node.tags[0]) : "untagged");
  return null;
}

// Edges drawn in the view being built: large views get cheaper edges (edgeElement's classes).
let drawnEdges = 0;

// What the view shows. kind: "focus" (a service's neighbourhood), "whole" (every service that the filters
// keep), "grouped" (groups, one of them perhaps expanded). nodes and edges are model records when
// `records` (built into elements as they are drawn, a chunk at a time), else cytoscape elements.
function visible() {
  if (ui.focus && model.nodes.has(ui.focus)) {
    const near = neighbourhood(neighbours(model.edges.values()), ui.focus, ui.hops);
    const nodes = [];
    for (const id of near) {
      const n = model.nodes.get(id);
      if (n && (matches(n) || id === ui.focus)) nodes.push(n);
    }
    const keep = new Set(nodes.map((n) => n.id));
    const edges = Array.from(model.edges.values()).filter((e) => keep.has(e.source) && keep.has(e.target));
    drawnEdges = edges.length;
    return { kind: "focus", nodes, edges, records: true };
  }
  const nodes = Array.from(model.nodes.values()).filter(matches);
  const keep = new Set(nodes.map((n) => n.id));
  const edges = Array.from(model.edges.values()).filter((e) => keep.has(e.source) && keep.has(e.target));
  if (!ui.group) {
    drawnEdges = edges.length;
    return { kind: "whole", nodes, edges, records: true };
  }

  // One node per group, but for the expanded group's services; edges between two drawn nodes are summed.
  const groups = new Map();
  const member = new Map();
  const expanded = [];
  for (const n of nodes) {
    const key = groupOf(n);
    if (key === ui.expanded) {
      member.set(n.id, n.id);
      expanded.push(n);
      continue;
    }
    member.set(n.id, `group:${key}`);
    const g = groups.get(key) || { key, count: 0, rps: 0, errors: 0, worst: "passing", tags: [] };
    g.count += 1;
    g.rps += rate(n);
    g.errors += rate(n) * (n.error_rate || 0);
    const rank = { critical: 3, warning: 2, unknown: 1, passing: 0 };
    if (rank[nodeHealth(n)] > rank[g.worst]) g.worst = nodeHealth(n);
    groups.set(key, g);
  }
  const single = [];
  const gEdges = new Map();
  for (const e of edges) {
    const s = member.get(e.source), t = member.get(e.target);
    if (s === e.source && t === e.target) {
      single.push(e); // within the expanded group
      continue;
    }
    // With a group expanded, only the calls to and from its services are drawn.
    if (expanded.length && s !== e.source && t !== e.target) continue;
    const id = `${s}->${t}:${e.sync}`;
    const g = gEdges.get(id) || { id, source: s, target: t, sync: e.sync, rps: 0, errors: 0, p95_ms: 0, count: 0, grouped: true };
    g.rps += rate(e);
    g.errors += rate(e) * (e.error_rate || 0);
    g.p95_ms = Math.max(g.p95_ms, e.p95_ms || 0);
    g.count += 1;
    gEdges.set(id, g);
  }
  // With a group expanded, the other groups drawn are those its services call or are called by.
  let shown = Array.from(groups.values());
  if (expanded.length) {
    const linked = new Set();
    for (const g of gEdges.values()) linked.add(g.source).add(g.target);
    shown = shown.filter((g) => linked.has(`group:${g.key}`));
  }
  drawnEdges = single.length + gEdges.size;
  const gNodes = shown.map((g) => ({
    data: {
      id: `group:${g.key}`, group: g.key, name: g.key, label: `${shorten(g.key)} (${g.count})`, color: COLORS[g.worst], border: COLORS[g.worst],
      size: 34 + Math.min(30, Math.log10(1 + g.rps) * 10), rps: g.rps,
    },
    classes: "group",
  }));
  const edgeEls = Array.from(gEdges.values()).map((g) =>
    edgeElement({ ...g, error_rate: g.rps ? g.errors / g.rps : 0, protocol: `${g.count} edges` }),
  );
  return {
    kind: "grouped",
    nodes: [...gNodes, ...expanded.map(nodeElement)],
    edges: [...edgeEls, ...single.map(edgeElement)],
    records: false,
    groups: shown.length,
    services: expanded.length,
  };
}

function nodeElement(n) {
  const health = nodeHealth(n);
  const rps = rate(n);
  return {
    data: {
      id: n.id,
      name: n.name,
      label: rps > 0 ? `${shorten(n.name)}\n${fmtRate(rps)}${n.error_rate > 0 ? " · " + fmtPct(n.error_rate) : ""}` : shorten(n.name),
      // Fill: the worse of Consul's health and the error rate; ring: Consul's own health.
      color: COLORS[health] || COLORS.unknown,
      border: n.health && n.health !== "unknown" ? COLORS[n.health] : n.health_stale ? COLORS.label : COLORS.labelBackground,
      stale: Boolean(n.health_stale),
      size: 22 + Math.min(26, Math.log10(1 + rps) * 12),
      rps,
    },
    classes: n.id === ui.focus ? "focus" : "",
  };
}

function edgeElement(e) {
  const rps = rate(e);
  const color = e.error_rate >= 0.05 ? COLORS.critical : e.error_rate >= 0.01 ? COLORS.warning : e.sync === "async" ? COLORS.async : COLORS.edge;
  const parts = [fmtRate(rps)];
  if (e.error_rate > 0) parts.push(fmtPct(e.error_rate));
  if (e.p95_ms !== null && e.p95_ms !== undefined) parts.push(`p95 ${fmtMs(e.p95_ms)}`);
  if (e.sync === "async" && e.topic) parts.unshift(`⇢ ${shorten(e.topic)}`);
  return {
    data: {
      id: `edge:${e.id}`, edge: e.id, source: e.source, target: e.target, label: parts.join(" · "), color,
      tooltip: `${e.source} → ${e.target}${e.topic ? ` via ${e.topic}` : ""}`,
      width: 1 + Math.min(9, Math.log2(1 + rps) * 1.5), grouped: Boolean(e.grouped), rps,
    },
    classes: [e.sync === "async" ? "async" : "", drawnEdges > 1500 ? "large" : "", drawnEdges > 400 && !ui.focus ? "quiet" : ""].join(" ").trim(),
  };
}

// --- layout: topology_layout.js, on the main thread for a small view, in a worker for a large one ------

let worker = null;
let layouts = 0;
const layoutsWaiting = new Map();

// The positions of a large view, computed by the worker: node ids, and the edges as pairs of indexes into
// them (an Int32Array, transferred). Falls back to the main thread when the worker cannot start.
function layoutOffThread(ids, edges) {
  const index = new Map(ids.map((id, i) => [id, i]));
  const pairs = new Int32Array(edges.length * 2);
  edges.forEach((e, i) => {
    pairs[2 * i] = index.get(e.source);
    pairs[2 * i + 1] = index.get(e.target);
  });
  return new Promise((resolve) => {
    const id = ++layouts;
    layoutsWaiting.set(id, { ids, resolve });
    try {
      if (!worker) {
        worker = new Worker(new URL("./topology_layout_worker.js", import.meta.url), { type: "module" });
        worker.addEventListener("message", (event) => {
          const waiting = layoutsWaiting.get(event.data.id);
          layoutsWaiting.delete(event.data.id);
          const xy = event.data.xy;
          waiting.resolve(new Map(waiting.ids.map((node, i) => [node, { x: xy[2 * i], y: xy[2 * i + 1] }])));
        });
      }
      worker.postMessage({ id, ids, pairs }, [pairs.buffer]);
    } catch (error) {
      layoutsWaiting.delete(id);
      resolve(layeredPositions(ids, edges.map((e) => [e.source, e.target])));
    }
  });
}

// --- drawing: add, update and remove elements, keeping the user's viewport ------------------------

let drawToken = 0; // the latest draw: an earlier one still adding chunks stops at its next chunk
let drawing = null; // the chunked draw in progress, if any: {token, dataWaiting}

function element(view, record, isEdge) {
  if (!view.records) return record;
  return isEdge ? edgeElement(record) : nodeElement(record);
}

function elementId(view, item, isEdge) {
  if (!view.records) return item.data.id;
  return isEdge ? `edge:${item.id}` : item.id;
}

// Sets what changed of a drawn element; returns whether anything did.
function update(existing, el) {
  const data = existing.data();
  let changed = false;
  for (const [key, value] of Object.entries(el.data)) {
    if (data[key] !== value) {
      changed = true;
      break;
    }
  }
  if (changed) existing.data(el.data);
  const classes = el.classes || "";
  if (existing.classes().join(" ") !== classes) existing.classes(classes);
  return changed;
}

// The nodes and edges (all of them, not the level of detail's) of the view last drawn in full: a view with
// the same keeps its positions and the user's viewport. Null while a chunked draw runs, so that one
// superseded half-way lays out again.
let drawnStructure = null;

// Ids as the view has them (a record's id, an element's data.id): comparing is all they are for.
function structureOf(view) {
  const id = (item) => (view.records ? item.id : item.data.id);
  return { nodes: new Set(view.nodes.map(id)), edges: new Set((view.allEdges || view.edges).map(id)) };
}

function sameSet(a, b) {
  if (a.size !== b.size) return false;
  for (const item of a) if (!b.has(item)) return false;
  return true;
}

function structureChanged(structure) {
  return !drawnStructure || !sameSet(structure.nodes, drawnStructure.nodes) || !sameSet(structure.edges, drawnStructure.edges);
}

// fromData: a live delta asks for it. While a chunked draw runs, that only notes that the model moved on
// (drawn again at its end); a user's request supersedes the running draw.
function draw({ fromData = false } = {}) {
  if (fromData && drawing) {
    drawing.dataWaiting = true;
    return;
  }
  const started = performance.now();
  const token = ++drawToken;
  const view = visible();
  meshscope.view = view.kind;
  const structure = structureOf(view);
  let relayout = structureChanged(structure);
  levelOfDetail(view, relayout);
  if (view.nodes.length + view.edges.length > DRAW_AT_ONCE_MAX || cy.elements().length > DRAW_AT_ONCE_MAX) {
    drawInChunks(view, started, token, relayout, structure);
    return;
  }
  drawing = null;
  const phases = { visible: performance.now() - started };
  const nodes = view.nodes.map((n) => element(view, n, false));
  const edges = view.edges.map((e) => element(view, e, true));
  const wanted = new Set([...nodes, ...edges].map((el) => el.data.id));
  cy.batch(() => {
    cy.elements().filter((el) => !wanted.has(el.id())).remove();
    const add = [];
    for (const el of [...nodes, ...edges]) {
      const existing = cy.getElementById(el.data.id);
      if (existing.nonempty()) update(existing, el);
      else add.push({ group: el.data.source ? "edges" : "nodes", ...el });
    }
    if (add.some((el) => el.group === "nodes")) relayout = true;
    if (add.length) cy.add(add);
    phases.add = performance.now() - started;
    if (relayout) {
      const links = (view.allEdges || view.edges).map((e) => (view.records ? [e.source, e.target] : [e.data.source, e.data.target]));
      const positions = layeredPositions(nodes.map((n) => n.data.id), links);
      phases.layout = performance.now() - started;
      cy.nodes().forEach((n) => {
        const p = positions.get(n.id());
        if (p) n.position(p);
      });
    }
  });
  drawnStructure = structure;
  phases.batch = performance.now() - started;
  if (relayout) fit();
  phases.fit = performance.now() - started;
  meshscope.phases = phases;
  drawn(view, started);
}

const nextTask = () => new Promise((resolve) => setTimeout(resolve, 0));

// A large view, a task at a time: the elements that went removed, the layout computed in the worker
// (when the view's nodes or edges changed), the new elements added with their positions, the others
// updated. Each chunk's own work costs 10-30 ms; cytoscape paints between chunks, a frame of the nodes and
// the level of detail's edges.
async function drawInChunks(view, started, token, structureMoved, structure) {
  const run = { token, dataWaiting: false };
  drawing = run;
  drawnStructure = null;
  const phases = {};
  const current = () => token === drawToken;
  const wanted = new Set();
  for (const n of view.nodes) wanted.add(elementId(view, n, false));
  for (const e of view.edges) wanted.add(elementId(view, e, true));
  const gone = cy.elements().filter((el) => !wanted.has(el.id())).toArray();
  // Edges first: removing a node removes its edges, cytoscape's costliest removal.
  gone.sort((a, b) => Number(b.isEdge()) - Number(a.isEdge()));
  const fresh = [];
  const existing = [];
  const items = [...view.nodes.map((n) => [n, false]), ...view.edges.map((e) => [e, true])];
  for (const [item, isEdge] of items) {
    (cy.getElementById(elementId(view, item, isEdge)).nonempty() ? existing : fresh).push([item, isEdge]);
  }
  phases.visible = performance.now() - started;
  for (let i = 0; i < gone.length; i += CHUNK) {
    await nextTask();
    if (!current()) return;
    cy.batch(() => cy.collection(gone.slice(i, i + CHUNK)).remove());
  }
  // A fresh node needs a position: it was not drawn, or a superseded draw added it half-way.
  const relayout = structureMoved || fresh.some(([, isEdge]) => !isEdge);
  let positions = null;
  if (relayout) {
    const ids = view.nodes.map((n) => elementId(view, n, false));
    const edges = (view.allEdges || view.edges).map((e) => (view.records ? e : e.data));
    positions = await layoutOffThread(ids, edges);
    phases.layout = performance.now() - started;
  }
  for (let i = 0; i < fresh.length; i += CHUNK) {
    await nextTask();
    if (!current()) return;
    let added = null;
    cy.batch(() => {
      added = cy.add(fresh.slice(i, i + CHUNK).map(([item, isEdge]) => {
        const el = element(view, item, isEdge);
        return isEdge ? { group: "edges", ...el } : { group: "nodes", ...el, position: positions.get(el.data.id) };
      }));
    });
    // Their style and label sizes now, in this task, not all in the next frame's.
    added.boundingBox();
  }
  phases.add = performance.now() - started;
  for (let i = 0; i < existing.length; i += CHUNK) {
    await nextTask();
    if (!current()) return;
    cy.batch(() => {
      for (const [item, isEdge] of existing.slice(i, i + CHUNK)) {
        const el = element(view, item, isEdge);
        const drawnEl = cy.getElementById(el.data.id);
        update(drawnEl, el);
        if (positions && !isEdge) drawnEl.position(positions.get(el.data.id));
      }
    });
  }
  await nextTask();
  if (!current()) return;
  drawnStructure = structure;
  phases.batch = performance.now() - started;
  if (relayout) fit();
  meshscope.phases = phases;
  drawing = null;
  drawn(view, started);
  if (run.dataWaiting) draw({ fromData: true });
}

// The whole graph after a delta: only the elements of the records it carried are drawn again. A record
// that appears, goes, or moves in or out of the filters changes the structure: drawn whole again.
function drawChanged(touched) {
  const started = performance.now();
  const elements = [];
  for (const id of touched.nodes) {
    const n = model.nodes.get(id);
    const shown = Boolean(n && matches(n));
    if (shown !== cy.getElementById(id).nonempty()) return draw({ fromData: true });
    if (shown) elements.push(nodeElement(n));
  }
  for (const id of touched.edges) {
    const e = model.edges.get(id);
    const ends = e && [e.source, e.target].every((end) => model.nodes.has(end) && matches(model.nodes.get(end)));
    const inView = lod.view ? lod.byId.has(`edge:${id}`) : cy.getElementById(`edge:${id}`).nonempty();
    if (Boolean(ends) !== inView) return draw({ fromData: true });
    if (ends && cy.getElementById(`edge:${id}`).nonempty()) elements.push(edgeElement(e));
  }
  cy.batch(() => elements.forEach((el) => update(cy.getElementById(el.data.id), el)));
  drawn({ kind: "whole" }, started);
}

// --- level of detail: which of a large view's edges are drawn ---------------------------------------
// view.allEdges holds them all (the layout, the counts and the live updates use those), view.edges the
// ones drawn: while zoomed out the OVERVIEW_EDGES busiest; once the services in view have at most
// DETAIL_EDGES edges, all of theirs; and always those of the selected or hovered service. Moving the
// viewport (pan, zoom, fit) chooses again once it rests (syncLod).

const lod = { view: null, byId: new Map(), byNode: new Map(), busiest: null, mode: "", hover: "" };
meshscope.lod = lod;

function endsOf(view, item) {
  return view.records ? [item.source, item.target] : [item.data.source, item.data.target];
}

// The record as the model has it now (a live delta may have replaced it since the view was computed).
function latest(view, item) {
  return view.records ? model.edges.get(item.id) || item : item;
}

function levelOfDetail(view, relayout) {
  lod.view = null;
  lod.byId = new Map();
  lod.byNode = new Map();
  lod.busiest = null;
  lod.mode = "";
  if (view.edges.length <= LOD_ABOVE) return;
  view.allEdges = view.edges;
  lod.view = view;
  for (const item of view.edges) {
    lod.byId.set(elementId(view, item, true), item);
    for (const end of endsOf(view, item)) {
      const list = lod.byNode.get(end);
      if (list) list.push(item);
      else lod.byNode.set(end, [item]);
    }
  }
  // Laid out again, the graph is fitted: its overview first; the viewport's event chooses again after.
  view.edges = lodEdges(view, relayout);
}

function busiest(view) {
  if (!lod.busiest) {
    const rateOf = (item) => (view.records ? rate(item) : item.data.rps || 0);
    lod.busiest = view.allEdges.map((item) => [rateOf(item), item]).sort((a, b) => b[0] - a[0]).slice(0, OVERVIEW_EDGES).map(([, item]) => item);
  }
  return lod.busiest;
}

// The services whose position is in the viewport, or null when all of them are.
function nodesInView() {
  const box = cy.extent();
  const inside = [];
  const nodes = cy.nodes();
  nodes.forEach((n) => {
    const p = n.position();
    if (p.x >= box.x1 && p.x <= box.x2 && p.y >= box.y1 && p.y <= box.y2) inside.push(n.id());
  });
  return inside.length < nodes.length ? inside : null;
}

function lodEdges(view, overview) {
  const keep = new Map();
  lod.mode = "overview";
  const inside = overview ? null : nodesInView();
  if (inside) {
    const near = new Map();
    search: for (const id of inside) {
      for (const item of lod.byNode.get(id) || []) {
        near.set(elementId(view, item, true), item);
        if (near.size > DETAIL_EDGES) break search;
      }
    }
    if (near.size <= DETAIL_EDGES) {
      lod.mode = "detail";
      for (const [id, item] of near) keep.set(id, item);
    }
  }
  if (lod.mode === "overview") for (const item of busiest(view)) keep.set(elementId(view, item, true), item);
  const selected = ui.selected || {};
  for (const id of [lod.hover, selected.kind === "node" ? selected.id : ""]) {
    for (const item of lod.byNode.get(id) || []) keep.set(elementId(view, item, true), item);
  }
  if (selected.kind === "edge" && lod.byId.has(selected.elementId)) keep.set(selected.elementId, lod.byId.get(selected.elementId));
  return Array.from(keep.values());
}

// Draws the level of detail's edges for the viewport as it is now: removes the others, adds the missing.
function syncLod() {
  const view = lod.view;
  if (!view || drawing) return;
  const wanted = new Map(lodEdges(view, false).map((item) => [elementId(view, item, true), item]));
  cy.batch(() => {
    cy.edges().filter((el) => !wanted.has(el.id())).remove();
    const add = [];
    for (const [id, item] of wanted) {
      if (cy.getElementById(id).empty()) add.push({ group: "edges", ...element(view, latest(view, item), true) });
    }
    if (add.length) cy.add(add);
  });
  if (ui.selected) cy.getElementById(ui.selected.elementId).select();
  showLod();
  lod.syncs = (lod.syncs || 0) + 1;
  painted(() => { lod.syncedMs = performance.now(); });
}

// The note over the graph: which edges a level of detail draws, as text.
function showLod() {
  const note = qs("#graph-lod");
  note.hidden = !lod.view;
  if (!lod.view) return;
  const all = lod.view.allEdges.length.toLocaleString("en");
  note.textContent = lod.mode === "detail"
    ? `Showing all ${cy.edges().length.toLocaleString("en")} edges of the services in view, of ${all}: zoom out for the busiest`
    : `Showing the ${Math.min(OVERVIEW_EDGES, lod.view.allEdges.length).toLocaleString("en")} busiest of ${all} edges: zoom in or focus to see all`;
}

cy.on("viewport", debounce(syncLod, 200));

// Calls `then` once cytoscape painted the frame that follows.
function painted(then) {
  cy.one("render", () => requestAnimationFrame(then));
}

// After a draw: the counts, the focus and expansion boxes, the link; the time until the frame is painted.
function drawn(view, started) {
  if (ui.selected) cy.getElementById(ui.selected.elementId).select();
  qs("#graph-empty").hidden = model.nodes.size > 0;
  const nodes = cy.nodes().length;
  const edges = lod.view ? `${cy.edges().length} of ${lod.view.allEdges.length}` : cy.edges().length;
  const auto = ui.autoGrouped ? " (grouped automatically)" : "";
  qs("#graph-counts").textContent =
    view.kind === "grouped" && view.services
      ? `${view.services} services of ${ui.expanded}, ${view.groups} groups of ${model.nodes.size} services${auto} · ${edges} edges`
      : view.kind === "grouped"
        ? `${nodes} groups of ${model.nodes.size} services${auto} · ${edges} edges`
        : `${nodes} of ${model.nodes.size} services · ${edges} edges`;
  const focused = view.kind === "focus";
  qs("#focus-box").hidden = !focused;
  qs("#focus-name").textContent = focused ? ui.focus : "";
  qs("#focus-name").title = focused ? ui.focus : "";
  qs("#hops").value = String(ui.hops);
  const expanded = view.kind === "grouped" && Boolean(view.services);
  qs("#expand-box").hidden = !expanded;
  qs("#expand-name").textContent = expanded ? ui.expanded : "";
  qs("#expand-name").title = expanded ? ui.expanded : "";
  showLod();
  meshscope.draws += 1;
  painted(() => {
    meshscope.drawnMs = performance.now();
    meshscope.lastDrawMs = performance.now() - started;
    if (meshscope.firstDrawnMs === undefined) {
      meshscope.firstDrawnMs = meshscope.drawnMs;
      meshscope.firstDrawMs = meshscope.lastDrawMs;
    }
    document.body.dataset.draws = String(meshscope.draws);
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
  syncLod();
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
  syncLod(); // a level of detail draws the selected service's edges
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
      h("dt", { text: "Rate" }), h("dd", { text: `${fmtRate(rate(node))} · errors ${fmtPct(node.error_rate)}` }),
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
  syncLod();
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
    expand(data.group);
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
// Fading the rest restyles every element: on a large graph only the neighbourhood's edges are marked.
const FADE_MAX = 3000;
// A level of detail draws the hovered service's edges too (lodEdges); they go once the pointer rests elsewhere.
const dropHover = debounce(() => {
  if (!lod.hover) syncLod();
}, 400);
cy.on("mouseover", "node", (event) => {
  if (lod.view && lod.hover !== event.target.id()) {
    lod.hover = event.target.id();
    syncLod();
  }
  const hood = event.target.closedNeighborhood();
  cy.batch(() => {
    if (cy.elements().length <= FADE_MAX) cy.elements().not(hood).addClass("faded");
    hood.edges().addClass("hover");
  });
});
cy.on("mouseout", "node", (event) => {
  cy.batch(() => {
    if (cy.elements().length <= FADE_MAX) cy.elements().removeClass("faded");
    event.target.closedNeighborhood().edges().removeClass("hover");
  });
  if (lod.hover) {
    lod.hover = "";
    dropHover();
  }
});
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
  draw(); // the URL follows (linkView)
}

// One group drawn as its services (tapping another group expands that one instead); "" collapses it.
function expand(group) {
  ui.expanded = group || "";
  draw();
}

qs("#focus-clear").addEventListener("click", () => setFocus(""));
qs("#expand-clear").addEventListener("click", () => expand(""));
qs("#hops").addEventListener("change", (event) => {
  ui.hops = hopsFrom(event.target.value);
  draw();
});

// --- search: any service, drawn or not --------------------------------------------------------------
// Suggestions are the first SUGGESTIONS names holding what is typed (those starting with it first), as
// the datalist's option values: text, never markup. Choosing one (or Enter) focuses the service.
const searchInput = qs("#search");
const searchList = qs("#search-names");

function suggestions(text) {
  const needle = text.trim().toLowerCase();
  if (!needle) return [];
  const starting = [], holding = [];
  for (const name of model.nodes.keys()) {
    const at = name.toLowerCase().indexOf(needle);
    if (at === 0) starting.push(name);
    else if (at > 0) holding.push(name);
  }
  starting.sort();
  holding.sort();
  return [...starting, ...holding].slice(0, SUGGESTIONS);
}

function suggestNames() {
  const names = suggestions(searchInput.value);
  clear(searchList).append(...names.map((name) => h("option", { value: name })));
  return names;
}

function jumpTo(name) {
  searchInput.removeAttribute("aria-invalid");
  ui.expanded = "";
  setFocus(name);
  showNode(name);
}

function searchChosen(exactOnly) {
  const text = searchInput.value.trim();
  if (!text) return;
  if (model.nodes.has(text)) return jumpTo(text);
  if (exactOnly) return;
  const [best] = suggestions(text);
  if (best) {
    searchInput.value = best;
    jumpTo(best);
  } else searchInput.setAttribute("aria-invalid", "true");
}

searchInput.addEventListener("input", (event) => {
  searchInput.removeAttribute("aria-invalid");
  // A suggestion picked from the list arrives as one replacement of the whole text.
  if (event.inputType === "insertReplacementText" || event.inputType === undefined) searchChosen(true);
  else suggestNames();
});
searchInput.addEventListener("keydown", (event) => {
  if (event.key === "Enter") {
    event.preventDefault();
    searchChosen(false);
  }
});
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
  ui.expanded = "";
  draw(); // the URL follows (linkView): group=none asks for the whole graph
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
    if (message.type === "delta" && model.live) applyDelta(state, message.changes);
    else load(state, true);
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
    if (socket.state) load(socket.state, true);
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
    hops: ui.focus && ui.hops !== 1 ? ui.hops : "",
    expand: ui.group ? ui.expanded : "",
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
