import { h, qs, clear, getJSON, query, fmtPct, fmtMs, fmtNum, fmtTime, windowSelector, traceLink, clipped } from "./util.js";
import { livePage } from "./page.js";

const head = qs("#route-head");
const service = head.dataset.service;
const operation = head.dataset.operation;

function rowsOf(node, depth, rootCount, rootP95, out) {
  out.push({ node, depth, rootCount, rootP95 });
  for (const child of node.children || []) rowsOf(child, depth + 1, rootCount, rootP95, out);
  return out;
}

function renderTree(tree) {
  const body = clear(qs("#call-tree tbody"));
  if (!tree || !tree.count) {
    qs("#tree-empty").hidden = false;
    return;
  }
  qs("#tree-empty").hidden = true;
  const rows = rowsOf(tree, 0, tree.count, tree.p95_ms || 1, []);
  for (const { node, depth, rootCount, rootP95 } of rows) {
    const width = Math.max(1, Math.min(100, ((node.p95_ms || 0) / rootP95) * 100));
    body.append(h("tr", { class: "hop", dataset: { service: node.service, operation: node.operation, depth: String(depth) } },
      h("td", {},
        h("span", { class: "indent", style: { width: `${depth * 18}px` } }),
        depth ? h("span", { class: "muted", text: "└ " }) : null,
        clipped(node.service, { href: `/?${query({ focus: node.service })}`, class: "svc-name" }),
        clipped(node.operation, { class: "op" }),
      ),
      h("td", { class: "num", text: String(node.count) }),
      h("td", { class: "num", text: fmtNum(node.count / rootCount) }),
      h("td", { class: node.errors ? "num err" : "num", text: node.errors ? `${node.errors} (${fmtPct(node.errors / node.count)})` : "0" }),
      h("td", { class: "num", text: fmtMs(node.p50_ms) }),
      h("td", { class: "num", text: fmtMs(node.p95_ms) }),
      h("td", {}, h("div", { class: node.errors ? "bar err" : "bar", style: { width: `${width}%` } })),
    ));
  }
}

function renderTraces(id, traces) {
  const list = clear(qs(`#${id}`));
  if (!traces || !traces.length) {
    list.append(h("li", { class: "muted", text: "none" }));
    return;
  }
  for (const t of traces) {
    list.append(h("li", { class: "trace-item", dataset: { traceId: t.trace_id } },
      traceLink(t.trace_id),
      h("span", { class: "grow muted", text: `${fmtTime(t.started_at)} · ${t.span_count} spans` }),
      t.error ? h("span", { class: "badge badge-error", text: "error" }) : null,
      h("span", { class: "num", text: fmtMs(t.duration_ms) }),
    ));
  }
}

async function load() {
  const data = await getJSON(`/api/routes/tree/?${query({ service, operation, window: currentWindow() })}`);
  renderTree(data.tree || data);
  qs("#tree-sample").textContent = data.requests ? `over the ${data.requests} requests of the window` : "";
  renderTraces("recent", data.recent);
  renderTraces("slow", data.slow);
  renderTraces("failed", data.failed);
}

const currentWindow = windowSelector((window) => {
  page.socket.setWindow(window);
  page.refresh();
});
const page = livePage({ view: "routes", load, window: currentWindow(), minIntervalMs: 5000 });
