// The trace waterfall, as Jaeger draws it: spans on a time axis, errors marked, attributes on click,
// the critical path highlighted. The server gives the corrected tree (Zipkin's shared spans placed,
// clock skew corrected, the critical path marked), so this only draws it. Every string from the spans
// goes through textContent.
import { h, qs, qsa, clear, getJSON, fmtMs, fmtDateTime, HttpError, setUpdated } from "./util.js";
import { linkState, addShortcut } from "./navigation.js";

const traceId = qs("#trace-head").dataset.traceId;
const box = qs("#waterfall");
const detail = qs("#span-detail");
let spans = [];
let total = 1;
let critical = new Set();
let selected = null;

const PALETTE = ["#3b7ddd", "#2e9d57", "#c0612b", "#7b4fd0", "#1e9aa6", "#b8436f", "#8a8a2a", "#5864b3", "#c2891b", "#4b8f8c"];
function colorOf(service) {
  let hash = 0;
  for (const ch of String(service)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}

function flatten(list, depth, out) {
  for (const span of [...list].sort((a, b) => a.start_offset_ms - b.start_offset_ms)) {
    out.push({ ...span, depth });
    flatten(span.children || [], depth + 1, out);
  }
  return out;
}

function ticks() {
  const track = h("div", { class: "wf-track" });
  for (let i = 0; i <= 4; i++) {
    track.append(h("span", { class: "wf-tick", style: { left: `${i * 25}%` }, text: i === 4 ? "" : fmtMs((total * i) / 4) }));
  }
  return h("div", { class: "wf-row wf-head" }, h("div", { class: "wf-label", text: `Service · operation (${spans.length} spans)` }), track);
}

// The server shifts a span whose host's clock disagrees with its caller's into its caller's interval
// (as Zipkin and Jaeger do), and says by how much: shown, so that nobody takes the drawing for the clock.
function skewNote(span) {
  const ms = span.clock_skew_ms;
  return `clock skew corrected by ${fmtMs(Math.abs(ms))}: drawn ${ms > 0 ? "later" : "earlier"} than its host's clock says`;
}

function spanRow(span) {
  const left = (span.start_offset_ms / total) * 100;
  const width = Math.max(0.15, (span.duration_ms / total) * 100);
  const onPath = qs("#show-critical").checked && critical.has(span.span_id);
  const bar = h("div", {
    class: `wf-bar${span.error ? " error" : ""}${onPath ? " critical" : ""}`,
    style: { left: `${left}%`, width: `${width}%`, background: colorOf(span.service) },
    title: `${fmtMs(span.duration_ms)} at +${fmtMs(span.start_offset_ms)}${span.clock_skew_ms ? `; ${skewNote(span)}` : ""}`,
  });
  const dur = h("span", { class: "wf-dur", style: left + width > 85 ? { right: `${100 - left + 0.5}%` } : { left: `${left + width}%` }, text: fmtMs(span.duration_ms) });
  const grouped = qs("#collapse-services").checked;
  return h("div", {
    class: `wf-row span-row${span === selected ? " selected" : ""}`, role: "treeitem", tabindex: "0",
    dataset: {
      spanId: span.span_id, service: span.service, error: span.error ? "1" : "0", critical: critical.has(span.span_id) ? "1" : "0",
      skewMs: String(span.clock_skew_ms || 0),
    },
  },
    h("div", { class: "wf-label", title: `${span.service} ${span.name}` },
      h("span", { class: "indent", style: { display: "inline-block", width: `${grouped ? 0 : span.depth * 14}px` } }),
      h("span", { class: "svc-swatch", style: { background: colorOf(span.service) } }),
      span.error ? h("span", { class: "wf-err", title: "error", text: "!" }) : null,
      h("span", { class: "svc", text: span.service }),
      h("span", { class: "name", text: span.name }),
      span.clock_skew_ms ? h("span", { class: "badge badge-skew", title: skewNote(span), text: `skew ${span.clock_skew_ms > 0 ? "+" : "−"}${fmtMs(Math.abs(span.clock_skew_ms))}` }) : null,
    ),
    h("div", { class: "wf-track" }, bar, dur),
  );
}

function render() {
  box.classList.toggle("show-critical", qs("#show-critical").checked);
  clear(box).append(ticks());
  if (qs("#collapse-services").checked) {
    const byService = new Map();
    for (const span of spans) (byService.get(span.service) || byService.set(span.service, []).get(span.service)).push(span);
    for (const [service, list] of byService) {
      const errors = list.filter((s) => s.error).length;
      box.append(h("div", { class: "wf-row wf-group" },
        h("div", { class: "wf-label", title: service }, h("span", { class: "svc-swatch", style: { background: colorOf(service) } }), h("span", { text: service })),
        h("div", { class: "wf-track muted small", text: ` ${list.length} spans${errors ? `, ${errors} with errors` : ""}` })));
      for (const span of list) box.append(spanRow(span));
    }
  } else {
    for (const span of spans) box.append(spanRow(span));
  }
}

function value(v) {
  return typeof v === "object" && v !== null ? JSON.stringify(v) : String(v);
}

function showSpan(span) {
  selected = span;
  render();
  const rows = [
    ["Service", span.service], ["Instance", span.instance || "–"], ["Operation", span.name], ["Kind", span.kind],
    ["Protocol", span.protocol], ["Started", fmtDateTime(span.started_at)], ["Offset", `+${fmtMs(span.start_offset_ms)}`],
    ["Duration", fmtMs(span.duration_ms)], ["Status", span.status_code || "–"], ["Error", span.error ? "yes" : "no"],
    ["Span id", span.span_id], ["Parent id", span.parent_id || "(root)"], ["Critical path", critical.has(span.span_id) ? "yes" : "no"],
  ];
  if (span.shared) rows.push(["Zipkin id", `${span.parent_id}, shared with its client span (its id here is its own)`]);
  if (span.clock_skew_ms) rows.push(["Clock skew", `${skewNote(span)} (Started is its own clock)`]);
  const attrs = Object.entries(span.attributes || {});
  clear(detail).append(
    h("h1", { class: "clip", title: `${span.service} ${span.name}` }, h("span", { class: "svc-name", text: span.service }), " ", h("span", { class: "mono muted", text: span.name })),
    h("dl", { class: "kv" }, rows.map(([k, v]) => [h("dt", { text: k }), h("dd", { class: k === "Error" && span.error ? "err" : "", text: v })])),
    h("h3", { text: `Attributes (${attrs.length})` }),
    attrs.length
      ? h("table", { class: "attrs" }, h("tbody", {}, attrs.sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => h("tr", {}, h("td", { text: k }), h("td", { text: value(v) })))))
      : h("p", { class: "muted", text: "none" }),
  );
  detail.hidden = false;
  linkState({ span: span.span_id });
}

box.addEventListener("click", (event) => {
  const row = event.target.closest(".span-row");
  if (!row) return;
  const span = spans.find((s) => s.span_id === row.dataset.spanId);
  if (span) showSpan(span);
});
box.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && event.target.classList.contains("span-row")) event.target.click();
});
qs("#show-critical").addEventListener("change", render);
qs("#collapse-services").addEventListener("change", render);

async function load() {
  let data;
  try {
    data = await getJSON(`/api/traces/${encodeURIComponent(traceId)}/`);
  } catch (error) {
    if (error instanceof HttpError && error.status === 404) {
      qs("#trace-empty").hidden = false;
      return;
    }
    throw error;
  }
  const roots = data.spans || [];
  spans = flatten(roots, 0, []);
  total = Math.max(1e-3, ...spans.map((s) => s.start_offset_ms + s.duration_ms));
  // The longest root carries the trace; orphans (missing parents) are drawn but not on the path.
  critical = new Set(spans.filter((s) => s.critical).map((s) => s.span_id));
  const services = new Set(spans.map((s) => s.service));
  const errors = spans.filter((s) => s.error).length;
  qs("#trace-summary").textContent = `${spans.length} spans · ${services.size} services · ${fmtMs(total)}${errors ? ` · ${errors} errors` : ""} · started ${fmtDateTime(spans[0] && spans[0].started_at)}`;
  qs("#trace-empty").hidden = spans.length > 0;
  render();
  openLinkedSpan();
  setUpdated();
  document.body.dataset.loaded = "1";
}

// --- deep link and keys: ?span= selects a span; arrows move through the rows as drawn, Esc closes ---

function openLinkedSpan() {
  const span = spans.find((s) => s.span_id === new URLSearchParams(location.search).get("span"));
  if (span) focusSpan(span);
}

// Selects a span and focuses its row: the details show beside it and the row comes into view.
function focusSpan(span) {
  showSpan(span);
  const row = qsa(".span-row", box).find((r) => r.dataset.spanId === span.span_id);
  if (row) row.focus();
}

// Up and down follow the rows on screen, which "Group by service" orders differently from the tree.
function step(by) {
  const rows = qsa(".span-row", box);
  if (!rows.length) return;
  const at = selected ? rows.findIndex((r) => r.dataset.spanId === selected.span_id) : -1;
  const next = at < 0 ? (by > 0 ? 0 : rows.length - 1) : Math.max(0, Math.min(rows.length - 1, at + by));
  const span = spans.find((s) => s.span_id === rows[next].dataset.spanId);
  if (span) focusSpan(span);
}

function closeSpan() {
  selected = null;
  detail.hidden = true;
  render();
  linkState({ span: "" });
}

addShortcut("ArrowDown", "Next span", () => step(1));
addShortcut("ArrowUp", "Previous span", () => step(-1));
addShortcut("Escape", "Close the span's details", closeSpan);

load();
