import { h, qs, clear, getJSON, query, fmtMs, fmtDateTime, traceLink, clipped } from "./util.js";
import { livePage } from "./page.js";

const form = qs("#trace-search");

async function load() {
  const params = new URLSearchParams(location.search);
  const data = await getJSON(`/api/traces/?${query({
    service: params.get("service"), operation: params.get("operation"),
    min_duration_ms: params.get("min_duration_ms"), error: params.get("error"), limit: 100,
  })}`);
  const traces = Array.isArray(data) ? data : data.traces || [];
  const body = clear(qs("#traces-table tbody"));
  for (const t of traces) {
    body.append(h("tr", {},
      h("td", { class: "muted", text: fmtDateTime(t.started_at) }),
      h("td", {}, clipped(t.root_service, { class: "svc-name" }), " ", clipped(t.root_operation, { class: "mono muted" })),
      h("td", {}, traceLink(t.trace_id, t.trace_id)),
      h("td", { class: "num", text: String(t.span_count) }),
      h("td", { class: "num", text: fmtMs(t.duration_ms) }),
      h("td", {}, t.error ? h("span", { class: "badge badge-error", text: "error" }) : null),
    ));
  }
  qs("#traces-empty").hidden = traces.length > 0;
}

qs("#trace-id").addEventListener("keydown", (event) => {
  if (event.key !== "Enter") return;
  event.preventDefault();
  const id = event.target.value.trim();
  if (id) location.href = `/traces/${encodeURIComponent(id)}/`;
});
form.addEventListener("submit", () => {
  for (const input of form.querySelectorAll("input")) if (!input.value) input.disabled = true;
});
livePage({ view: null, load, pollMs: 60000 });
