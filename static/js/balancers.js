// Balancers: per service, each instance's weight, expected and actual share, deviation and the
// fairness figures (χ², Jain's index), with the shares per minute as a chart.
import { h, qs, clear, getJSON, query, fmtPct, fmtNum, windowSelector, debounce, lineChart, chartBlock, setStatus, throttled, clipped, shorten } from "./util.js";
import { liveView } from "./page.js";
import { linkState } from "./navigation.js";

const box = qs("#balancers");
const params = new URLSearchParams(location.search);
// The URL holds the filter (service) and the open cards (open, repeated): a link shows the same cards.
const open = new Set(params.get("service") ? [params.get("service")] : []);
for (const name of params.getAll("open")) open.add(name);
let services = [];
let filter = (params.get("service") || "").toLowerCase();
const details = new Map();

function verdictBadge(verdict) {
  const status = (verdict && verdict.status) || "unknown";
  const cls = /balanced/i.test(status) ? "passing" : /skew/i.test(status) ? "critical" : "unknown";
  return h("span", { class: `badge badge-${cls}`, title: (verdict && verdict.summary) || "", text: status.replaceAll("_", " ") });
}

// What a flag says next to the instance it names; an unregistered instance is a naming problem (spans
// name an address no registration has), not an unhealthy instance, hence its own colour.
const FLAGS = {
  unregistered: { text: "traffic from an unregistered instance", badge: "warning" },
};

function flagBadge(flag) {
  const known = FLAGS[flag.reason] || { text: flag.reason.replaceAll("_", " "), badge: "critical" };
  return h("span", { class: `badge badge-${known.badge} flag`, dataset: { reason: flag.reason }, title: `${flag.instance}: ${flag.requests} requests`, text: `${shorten(flag.instance)} ${known.text}` });
}

function figure(label, value, title, dim) {
  return h("div", { class: "figure", title: title || "", style: dim ? { opacity: 0.45 } : {} }, h("b", { text: value }), h("span", { text: label }));
}

function instanceTable(report, weights = new Map()) {
  return h("table", { class: "grid" },
    h("thead", {}, h("tr", {}, ["Instance", "Health", "Weight", "Requests", "Expected", "Actual", "Deviation", ""].map((t, i) => h("th", { class: i >= 2 && i <= 6 ? "num" : "", text: t })))),
    h("tbody", {}, (report.instances || []).map((i) => {
      const dev = i.deviation;
      const weight = weights.get(i.instance);
      return h("tr", { dataset: { instance: i.instance } },
        h("td", {}, clipped(i.instance, { class: "mono" })),
        h("td", {}, h("span", { class: `badge badge-${i.health || "unknown"}`, text: i.health || "unknown" }),
          i.ineligible_reason ? h("span", { class: "muted small", text: ` ${i.ineligible_reason.replaceAll("_", " ")}` }) : null),
        h("td", { class: "num", title: weight ? `passing ${weight.weight_passing}, warning ${weight.weight_warning}` : "", text: weight ? String(weight.weight) : "–" }),
        h("td", { class: "num", text: fmtNum(i.requests) }),
        h("td", { class: "num", text: fmtPct(i.expected_share) }),
        h("td", { class: "num", text: fmtPct(i.share) }),
        h("td", { class: `num ${dev > 0 ? "dev-pos" : dev < 0 ? "dev-neg" : ""}`, text: dev === null || dev === undefined ? "–" : `${dev > 0 ? "+" : ""}${(dev * 100).toFixed(1)} pt` }),
        h("td", {}, h("span", { class: "share-bar", style: { width: `${Math.round((i.share || 0) * 120)}px` } })),
      );
    })),
  );
}

function sharesChart(series) {
  if (!series || !series.series) return h("p", { class: "muted", text: "Loading chart…" });
  const lines = series.instances.map((name, index) => ({
    label: name,
    class: `series-${(index % 4) + 1}`,
    points: series.series.map((m) => [new Date(m.minute).getTime(), m.shares[name]]),
  }));
  const legend = h("span", {}, series.instances.map((name, index) => h("span", { class: `legend-item series-${(index % 4) + 1}`, title: name, text: shorten(name) })));
  return chartBlock("Share per minute", legend, lineChart(lines, { format: fmtPct, height: 120, width: 520, min: 1, label: "share per minute" }));
}

function card(summary) {
  const name = summary.service;
  const detail = details.get(name);
  const expanded = open.has(name);
  const node = h("section", { class: "card balancer", dataset: { service: name } },
    h("div", { class: "toolbar" },
      h("button", { type: "button", class: "btn btn-small toggle", dataset: { service: name }, text: expanded ? "−" : "+" }),
      h("h1", { class: "svc-name clip", title: name, text: name }),
      verdictBadge(summary.verdict),
      h("span", { class: "muted", text: `${summary.policy}${summary.policy_assumed ? " (assumed)" : ""}` }),
      (summary.flags || []).map(flagBadge),
    ),
    h("div", { class: "figures" },
      figure("requests", fmtNum(summary.requests)),
      figure("max deviation", summary.max_abs_deviation === null || summary.max_abs_deviation === undefined ? "–" : `${(summary.max_abs_deviation * 100).toFixed(1)} pt`),
      figure("χ² p-value", summary.p_value === null || summary.p_value === undefined ? "–" : summary.p_value.toPrecision(2),
        summary.chi_square_applies ? "Chi-square test against the expected shares" : "χ² assumes random choices: not meaningful for this policy", !summary.chi_square_applies),
      figure("Jain's index", summary.jain_index === null || summary.jain_index === undefined ? "–" : summary.jain_index.toFixed(3), "1 is perfectly fair"),
      h("div", { class: "figure grow muted", text: (summary.verdict && summary.verdict.summary) || "" }),
    ),
  );
  if (expanded) {
    node.append(detail && detail.report
      ? h("div", { class: "bal-grid" }, h("div", {}, instanceTable(detail.report, detail.weights),
          (detail.report.callers || []).length > 1 ? h("details", {}, h("summary", { class: "muted", text: "Per caller" }),
            detail.report.callers.map((c) => h("div", {}, h("h3", { class: "clip", title: c.caller || "", text: c.caller || "(entry or uninstrumented)" }), instanceTable(c, detail.weights)))) : null),
        h("div", {}, sharesChart(detail.shares)))
      : h("p", { class: "muted", text: "Loading…" }));
  }
  return node;
}

function render() {
  clear(box);
  const shown = services.filter((s) => !filter || s.service.toLowerCase().includes(filter));
  for (const summary of shown) box.append(card(summary));
  qs("#balancers-empty").hidden = shown.length > 0;
  linkState({ service: qs("#filter-text").value.trim(), open: Array.from(open).sort() });
}

async function loadDetail(name) {
  const seconds = currentWindow();
  const [report, shares, service] = await Promise.all([
    getJSON(`/api/balancers/${encodeURIComponent(name)}/?${query({ window: seconds })}`),
    getJSON(`/api/services/shares/?${query({ name, window: seconds })}`).catch(() => null),
    getJSON(`/api/services/detail/?${query({ name, window: seconds })}`).catch(() => null),
  ]);
  // The configured weights (Consul's Weights.Passing / Weights.Warning) come with the service detail.
  const weights = new Map(((service && service.instances) || []).map((i) => [i.identity, i]));
  if (seconds === currentWindow()) details.set(name, { report, shares, weights }); // not a window left meanwhile
}

let openedFew = params.has("open"); // a link says which cards are open
function show(state) {
  // Deltas add new records at the end: keep the server's order (by name).
  services = [...(state.services || [])].sort((a, b) => (a.service < b.service ? -1 : a.service > b.service ? 1 : 0));
  if (!openedFew && services.length) {
    // A few services open by themselves, once: a card the user closes stays closed.
    openedFew = true;
    if (services.length <= 4) services.forEach((s) => open.add(s.service));
  }
  render();
  refreshDetails();
}

// The open cards' details come from REST; refetched with the summaries, at most every 5 s.
const refreshDetails = throttled(async () => {
  try {
    await Promise.all(Array.from(open).filter((n) => services.some((s) => s.service === n)).map(loadDetail));
    render();
  } catch (error) {
    setStatus("reconnecting", `Loading failed: ${error.message}`);
  }
}, 5000);

box.addEventListener("click", async (event) => {
  const button = event.target.closest("button.toggle");
  if (!button) return;
  const name = button.dataset.service;
  if (open.has(name)) open.delete(name);
  else open.add(name);
  render();
  if (open.has(name)) {
    await loadDetail(name);
    render();
  }
});
qs("#filter-text").addEventListener("input", debounce((e) => { filter = e.target.value.trim().toLowerCase(); render(); }, 100));
const currentWindow = windowSelector((window) => {
  details.clear();
  refreshDetails.reset();
  socket.setWindow(window);
});
const socket = liveView({ view: "balancers", window: currentWindow(), show });
