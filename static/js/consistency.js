// Consistency: Kafka consumer groups (lag per partition, status, trend) and asynchronous flows
// (propagation delay percentiles over time).
import { h, qs, clear, fmtMs, fmtNum, fmtAgo, windowSelector, lineChart, chartBlock, clipped } from "./util.js";
import { liveView } from "./page.js";
import { linkState } from "./navigation.js";

// The consumer groups opened to their partitions are in the URL (group, repeated), for a link to them.
const expanded = new Set(new URLSearchParams(location.search).getAll("group"));

function seconds(value) {
  if (value === null || value === undefined) return "–";
  return value < 1 ? `${Math.round(value * 1000)} ms` : value < 120 ? `${value.toFixed(1)} s` : value < 7200 ? `${(value / 60).toFixed(1)} min` : `${(value / 3600).toFixed(1)} h`;
}

function trend(value) {
  if (value === null || value === undefined) return h("span", { class: "muted", text: "–" });
  if (Math.abs(value) < 0.01) return h("span", { class: "muted", text: "→ steady" });
  return h("span", { class: value > 0 ? "trend-up" : "trend-down", text: `${value > 0 ? "↑" : "↓"} ${fmtNum(Math.abs(value))} msg/s` });
}

function renderLag(data) {
  const box = clear(qs("#lag"));
  const groups = data.groups || [];
  qs("#lag-empty").hidden = groups.length > 0;
  if (!groups.length) return;
  const table = h("table", { class: "grid" },
    h("thead", {}, h("tr", {}, ["", "Group", "Status", "Lag (msgs)", "Lag (time)", "Trend", "Catch up", "Sampled", "Lag over time"].map((t, i) => h("th", { class: i >= 3 && i <= 6 ? "num" : "", text: t })))),
  );
  const body = h("tbody");
  for (const g of groups) {
    const points = (g.series || []).map((p) => [new Date(p.at).getTime(), p.lag_messages]);
    body.append(h("tr", { class: "lag-group", dataset: { group: g.group } },
      h("td", {}, h("button", { type: "button", class: "btn btn-small toggle", dataset: { group: g.group }, text: expanded.has(g.group) ? "−" : "+" })),
      h("td", {}, clipped(g.group, { class: "mono" })),
      h("td", {}, h("span", { class: `badge badge-${g.status}`, text: g.status })),
      h("td", { class: "num", text: fmtNum(g.lag_messages) }),
      h("td", { class: "num", text: seconds(g.lag_seconds) }),
      h("td", { class: "num" }, trend(g.trend_messages_per_second)),
      h("td", { class: "num", text: seconds(g.seconds_to_catch_up) }),
      h("td", { class: "muted", text: fmtAgo(g.sampled_at) }),
      h("td", { style: { width: "220px" } }, lineChart([{ points }], { height: 36, width: 220, label: "lag" })),
    ));
    if (expanded.has(g.group)) {
      body.append(h("tr", {}, h("td", {}), h("td", { colspan: 8 }, h("table", { class: "grid" },
        h("thead", {}, h("tr", {}, ["Topic", "Partition", "Committed", "End", "Lag (msgs)", "Lag (time)", "Status", "Trend"].map((t) => h("th", { text: t })))),
        h("tbody", {}, (g.partitions || []).map((p) => h("tr", {},
          h("td", {}, clipped(p.topic, { class: "mono" })), h("td", { class: "num", text: String(p.partition) }),
          h("td", { class: "num", text: String(p.committed_offset ?? "–") }), h("td", { class: "num", text: String(p.end_offset ?? "–") }),
          h("td", { class: "num", text: fmtNum(p.lag_messages) }), h("td", { class: "num", title: p.lag_seconds_method || "", text: seconds(p.lag_seconds) }),
          h("td", {}, h("span", { class: `badge badge-${p.status}`, text: p.status })), h("td", {}, trend(p.trend_messages_per_second)),
        ))),
      ))));
    }
  }
  table.append(body);
  box.append(table);
}

function renderFlows(data) {
  const box = clear(qs("#flows"));
  const flows = data.flows || [];
  qs("#flows-empty").hidden = flows.length > 0;
  for (const f of flows) {
    const t = (m) => new Date(m.minute).getTime();
    box.append(h("div", { class: "card flow", dataset: { topic: f.topic } },
      h("div", { class: "toolbar" },
        clipped(f.producer, { class: "svc-name" }), h("span", { class: "muted", text: "→" }),
        h("span", { class: "tag", title: f.topic, text: `⇢ ${f.topic}` }), h("span", { class: "muted", text: "→" }),
        clipped(f.consumer, { class: "svc-name" }),
        f.clock_skew_suspected ? h("span", { class: "badge badge-warning", title: "Some consumers started before their producer: clocks disagree", text: `${f.negative_delays} negative delays` }) : null),
      h("div", { class: "bal-grid" },
        h("div", { class: "figures" },
          h("div", { class: "figure" }, h("b", { text: fmtNum(f.count) }), h("span", { text: "messages" })),
          h("div", { class: "figure" }, h("b", { text: fmtMs(f.p50_ms) }), h("span", { text: "p50 delay" })),
          h("div", { class: "figure" }, h("b", { text: fmtMs(f.p95_ms) }), h("span", { text: "p95 delay" })),
          h("div", { class: "figure" }, h("b", { text: fmtMs(f.p99_ms) }), h("span", { text: "p99 delay" }))),
        chartBlock("Propagation delay", h("span", {}, h("span", { class: "legend-item series-4", text: "p50" }), h("span", { class: "legend-item series-1", text: "p95" }), h("span", { class: "legend-item series-3", text: "p99" })), lineChart([
          { points: (f.series || []).map((m) => [t(m), m.p50_ms]), class: "series-4", label: "p50" },
          { points: (f.series || []).map((m) => [t(m), m.p95_ms]), class: "series-1", label: "p95" },
          { points: (f.series || []).map((m) => [t(m), m.p99_ms]), class: "series-3", label: "p99" },
        ], { format: fmtMs, height: 90, width: 520, label: "propagation delay" })),
      ),
    ));
  }
}

let lastLag = null;
qs("#lag").addEventListener("click", (event) => {
  const button = event.target.closest("button.toggle");
  if (!button) return;
  const group = button.dataset.group;
  if (expanded.has(group)) expanded.delete(group);
  else expanded.add(group);
  linkState({ group: Array.from(expanded).sort() });
  if (lastLag) renderLag(lastLag);
});
const currentWindow = windowSelector((window) => socket.setWindow(window));
const socket = liveView({
  view: "lag",
  window: currentWindow(),
  show: (state) => {
    // Deltas add new records at the end: keep the server's order (by name).
    const byKey = (key) => (a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0);
    const groups = [...(state.groups || [])].sort(byKey((g) => g.group));
    const flows = [...(state.flows || [])].sort(byKey((f) => `${f.producer}\0${f.topic}\0${f.consumer}`));
    lastLag = { ...state, groups };
    renderLag(lastLag);
    renderFlows({ flows });
  },
});
