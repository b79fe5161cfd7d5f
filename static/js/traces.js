// The traces list and its search. The search lives in the query string (the form is a GET form), so a
// search is a link: this page reads it from there, fills the form with it and asks the API.
import { h, qs, clear, getJSON, query, fmtMs, fmtDateTime, traceLink, clipped } from "./util.js";
import { livePage } from "./page.js";

const form = qs("#trace-search");
// The API's parameters that the page passes on as the URL gives them; min_duration_ms is an older link's.
const PARAMS = ["service", "operation", "tags", "min_duration", "max_duration", "min_duration_ms", "error", "window", "until", "limit"];
const DEFAULT_LIMIT = 100;

function searchFromUrl() {
  const params = new URLSearchParams(location.search);
  return Object.fromEntries(PARAMS.map((name) => [name, params.get(name) || ""]));
}

function fillForm(search) {
  for (const field of form.elements) {
    if (!field.name || !(field.name in search)) continue;
    const value = search[field.name];
    if (field.type === "checkbox") {
      field.checked = ["1", "true", "yes"].includes(value.toLowerCase());
    } else if (field.tagName === "SELECT" && value && !Array.from(field.options).some((o) => o.value === value)) {
      // A window the menu does not offer, from a link: shown as it is rather than as "any time".
      field.append(h("option", { value, text: `Last ${value} s` }));
      field.value = value;
    } else {
      field.value = value;
    }
  }
}

// The API's refusal, {param: message}, next to the form; each refused field is marked.
function showErrors(fields) {
  for (const field of form.elements) field.removeAttribute("aria-invalid");
  const box = qs("#search-error");
  const entries = Object.entries(fields || {});
  box.hidden = entries.length === 0;
  box.textContent = entries.map(([name, message]) => `${name}: ${[].concat(message).join(" ")}`).join(" · ");
  for (const [name] of entries) {
    const field = form.elements.namedItem(name);
    if (field && field.setAttribute) field.setAttribute("aria-invalid", "true");
  }
}

async function load() {
  const search = searchFromUrl();
  let traces = [];
  try {
    traces = await getJSON(`/api/traces/?${query({ ...search, limit: search.limit || DEFAULT_LIMIT })}`);
    showErrors(null);
  } catch (error) {
    if (error.status !== 400) throw error;
    showErrors(error.fields);
  }
  const body = clear(qs("#traces-table tbody"));
  for (const t of traces) {
    body.append(h("tr", { dataset: { traceId: t.trace_id } },
      h("td", { class: "muted", text: fmtDateTime(t.started_at) }),
      h("td", {}, clipped(t.root_service, { class: "svc-name" }), " ", clipped(t.root_operation, { class: "mono muted" })),
      h("td", {}, traceLink(t.trace_id, t.trace_id)),
      h("td", { class: "num", text: String(t.span_count) }),
      h("td", { class: "num", text: fmtMs(t.duration_ms) }),
      h("td", {}, t.error ? h("span", { class: "badge badge-error", text: "error" }) : null),
    ));
  }
  qs("#traces-empty").hidden = traces.length > 0 || !qs("#search-error").hidden;
  document.body.dataset.loaded = "1";
}

qs("#trace-id").addEventListener("keydown", (event) => {
  if (event.key !== "Enter") return;
  event.preventDefault();
  const id = event.target.value.trim();
  if (id) location.href = `/traces/${encodeURIComponent(id)}/`;
});
// Empty fields stay out of the URL, so that a shared link says only what was asked.
form.addEventListener("submit", () => {
  for (const field of form.elements) if (field.name && !field.value) field.disabled = true;
});
// Back from the results to the search page (bfcache) shows the form enabled again.
window.addEventListener("pageshow", () => {
  for (const field of form.elements) field.disabled = false;
});
fillForm(searchFromUrl());
livePage({ view: null, load, pollMs: 60000 });
