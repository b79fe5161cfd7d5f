import { h, qs, clear, query, fmtRate, fmtPct, fmtMs, windowSelector, debounce, clipped } from "./util.js";
import { liveView } from "./page.js";
import { linkState } from "./navigation.js";

// The filter and the sort live in the URL (?q=&sort=-rps), as the window does: a link shows this table.
const SORT_KEYS = ["service", "operation", "rps", "error_rate", "p50_ms", "p95_ms", "p99_ms"];
const params = new URLSearchParams(location.search);
const linkedSort = (params.get("sort") || "").replace(/^-/, "");
// A table of thousands of rows is read by filtering it, and redrawn on every update: at most this many.
const SHOWN_AT_MOST = 500;
let rows = [];
let sortKey = SORT_KEYS.includes(linkedSort) ? linkedSort : "rps";
let sortDir = SORT_KEYS.includes(linkedSort) ? (params.get("sort").startsWith("-") ? -1 : 1) : -1;
let filter = (params.get("q") || "").trim().toLowerCase();
qs("#filter-text").value = params.get("q") || "";
const body = qs("#routes-table tbody");

function render() {
  const shown = rows
    .filter((r) => !filter || `${r.service} ${r.operation}`.toLowerCase().includes(filter))
    .sort((a, b) => {
      const x = a[sortKey], y = b[sortKey];
      return (typeof x === "string" ? String(x).localeCompare(String(y)) : (x ?? -1) - (y ?? -1)) * sortDir;
    });
  clear(body);
  for (const r of shown.slice(0, SHOWN_AT_MOST)) {
    const href = `/routes/detail/?${query({ service: r.service, operation: r.operation, window: currentWindow() })}`;
    body.append(h("tr", {},
      h("td", {}, clipped(r.service, { href: `/?${query({ focus: r.service })}`, class: "svc-name" })),
      h("td", {}, clipped(r.operation, { href, class: "mono route-link" })),
      h("td", { class: "num", text: fmtRate(r.rps) }),
      h("td", { class: r.error_rate > 0 ? "num err" : "num", text: fmtPct(r.error_rate) }),
      h("td", { class: "num", text: fmtMs(r.p50_ms) }),
      h("td", { class: "num", text: fmtMs(r.p95_ms) }),
      h("td", { class: "num", text: fmtMs(r.p99_ms) }),
    ));
  }
  qs("#routes-empty").hidden = shown.length > 0;
  qs("#routes-more").hidden = shown.length <= SHOWN_AT_MOST;
  qs("#routes-more").textContent = `The first ${SHOWN_AT_MOST} of ${shown.length} routes in this order: filter to find the others.`;
  const sort = sortKey === "rps" && sortDir < 0 ? "" : `${sortDir < 0 ? "-" : ""}${sortKey}`; // the default says nothing
  linkState({ q: qs("#filter-text").value.trim(), sort });
}

const currentWindow = windowSelector((window) => socket.setWindow(window));
qs("#filter-text").addEventListener("input", debounce((e) => { filter = e.target.value.trim().toLowerCase(); render(); }, 100));
qs("#routes-table thead").addEventListener("click", (e) => {
  const th = e.target.closest("th[data-sort]");
  if (!th) return;
  sortDir = sortKey === th.dataset.sort ? -sortDir : (th.dataset.sort === "service" || th.dataset.sort === "operation" ? 1 : -1);
  sortKey = th.dataset.sort;
  render();
});
const socket = liveView({
  view: "routes",
  window: currentWindow(),
  show: (state) => {
    // The live view carries each route's calls in the window, and the seconds the window covers.
    const covered = state.covered_seconds;
    rows = (state.routes || []).map((r) => ({ ...r, rps: covered ? Math.round((r.count / covered) * 1000) / 1000 : 0 }));
    render();
  },
});
