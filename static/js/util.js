// Small helpers shared by the pages. Untrusted strings only ever go through textContent.

const SVG = "http://www.w3.org/2000/svg";

// h("td", {class: "num", title: x}, child, "text", ...): children are nodes or strings (as text).
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  setProps(node, props);
  append(node, children);
  return node;
}

export function s(tag, props = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  setProps(node, props);
  append(node, children);
  return node;
}

function setProps(node, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) throw new Error("no inline handlers");
    if (key === "class") node.setAttribute("class", value);
    else if (key === "text") node.textContent = String(value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style" && typeof value === "object") Object.assign(node.style, value);
    else if (key === "href") node.setAttribute("href", safeHref(value));
    // A tooltip is set as the property, like text: outside text is never markup (SVG has no such property).
    else if (key === "title" && node instanceof HTMLElement) node.title = String(value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function safeHref(value) {
  const url = String(value);
  return /^(\/(?!\/)|\?|#|https?:)/i.test(url) ? url : "#";
}

// --- long names ------------------------------------------------------------------------------
// A name from a span may be 255 characters (longer ones are stored cut, ending in "…"). Wherever one is
// drawn it is cut to fit, with an ellipsis, and its tooltip (the title property) holds all of it.

// The characters of a name on the graph, where a label is canvas text with no CSS to clip it.
export const LABEL_CHARS = 30;

// ``text`` cut to ``max`` characters (whole code points) and "…".
export function shorten(text, max = LABEL_CHARS) {
  const chars = Array.from(String(text ?? ""));
  return chars.length > max ? `${chars.slice(0, max).join("")}…` : chars.join("");
}

// A name as one line that the stylesheet cuts with an ellipsis at its box (.clip), all of it in the tooltip.
export function clipped(text, props = {}) {
  const value = String(text ?? "");
  return h(props.href ? "a" : "span", { ...props, class: `clip ${props.class || ""}`.trim(), title: value, text: value });
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

export function qs(selector, root = document) {
  return root.querySelector(selector);
}

export function qsa(selector, root = document) {
  return Array.from(root.querySelectorAll(selector));
}

export class HttpError extends Error {
  constructor(status, url) {
    super(`HTTP ${status} for ${url}`);
    this.status = status;
  }
}

export async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (response.status === 401 || response.status === 403) {
    // The session ended: the page itself will send the user to the login form.
    if (!getJSON.redirecting) {
      getJSON.redirecting = true;
      window.location.reload();
    }
  }
  if (!response.ok) {
    const error = new HttpError(response.status, url);
    // A 400 names each refused parameter with its message ({param: message}): the page can show them.
    if (response.status === 400) error.fields = await response.json().catch(() => ({}));
    throw error;
  }
  return response.json();
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(key, value);
  }
  return search.toString();
}

// --- formatting -------------------------------------------------------------------------------

export function fmtRate(rps) {
  if (rps === null || rps === undefined) return "–";
  if (rps === 0) return "0/s";
  if (rps >= 100) return `${Math.round(rps)}/s`;
  if (rps >= 1) return `${rps.toFixed(1)}/s`;
  if (rps >= 1 / 60) return `${(rps * 60).toFixed(1)}/min`;
  return `${(rps * 3600).toFixed(1)}/h`;
}

export function fmtPct(rate) {
  if (rate === null || rate === undefined) return "–";
  if (rate === 0) return "0%";
  const pct = rate * 100;
  return pct >= 10 ? `${pct.toFixed(0)}%` : pct >= 0.1 ? `${pct.toFixed(1)}%` : `${pct.toFixed(2)}%`;
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms === 0) return "0";
  if (ms >= 10000) return `${(ms / 1000).toFixed(1)}s`;
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)}s`;
  if (ms >= 100) return `${Math.round(ms)}ms`;
  if (ms >= 1) return `${ms.toFixed(1)}ms`;
  return `${(ms * 1000).toFixed(0)}µs`;
}

export function fmtNum(n) {
  if (n === null || n === undefined) return "–";
  if (Math.abs(n) >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (Math.abs(n) >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return String(Math.round(n * 100) / 100);
}

export function fmtTime(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return date.toLocaleTimeString([], { hour12: false });
}

export function fmtDateTime(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return `${date.toLocaleDateString()} ${date.toLocaleTimeString([], { hour12: false })}`;
}

export function fmtAgo(iso) {
  if (!iso) return "never";
  const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 60) return `${Math.round(seconds)}s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)}min ago`;
  return `${(seconds / 3600).toFixed(1)}h ago`;
}

// --- the header: freshness, sources, live status -----------------------------------------------

export function setUpdated(iso) {
  const node = qs("#updated");
  if (!node) return;
  const date = iso ? new Date(iso) : new Date();
  node.setAttribute("datetime", date.toISOString());
  node.textContent = date.toLocaleTimeString([], { hour12: false });
  node.title = date.toISOString();
}

// The data sources, as the server renders them in base.html: a chip each up to the header's data-chips,
// else one chip that counts them, a button whose popover (wired in page.js) lists them all.
export function setSources(sources) {
  const box = qs("#sources");
  if (!box || !Array.isArray(sources)) return;
  const wasOpen = qs("#sources-toggle", box)?.getAttribute("aria-expanded") === "true";
  const hadFocus = document.activeElement?.id === "sources-toggle";
  const rank = { stale: 0, off: 1, ok: 2 };
  const sorted = [...sources].sort((a, b) => rank[sourceState(a)] - rank[sourceState(b)] || String(a.name).localeCompare(String(b.name)));
  clear(box);
  if (sorted.length <= Number(box.dataset.chips)) {
    for (const source of sorted) box.append(h("span", { class: `source source-${sourceState(source)}`, title: sourceTitle(source), text: sourceText(source) }));
    return;
  }
  const stale = sorted.filter((source) => source.stale).length;
  box.append(
    h("button", {
      type: "button", id: "sources-toggle", class: `source source-summary ${stale ? "source-stale" : "source-ok"}`,
      "aria-expanded": String(wasOpen), "aria-controls": "sources-popover", title: "Data sources: list them",
      text: `${sorted.length} sources${stale ? ` · ${stale} stale` : ""}`,
    }),
    h("div", { id: "sources-popover", class: "sources-popover", role: "region", "aria-label": "Data sources", hidden: !wasOpen },
      h("ul", { class: "sources-list" }, sorted.map((source) => h("li", { class: `source-item source-item-${sourceState(source)}` },
        h("span", { class: "source-name", text: source.name }),
        h("span", { class: "source-state", text: source.stale ? `stale since ${fmtTime(source.stale_since)}` : source.configured === false ? "not configured" : "ok" }),
        source.stale ? h("span", { class: "source-detail", text: source.stale_reason || "failing" }) : null,
        source.last_success ? h("span", { class: "source-detail", text: `Last success ${fmtDateTime(source.last_success)}` }) : null,
      )))),
  );
  if (hadFocus) qs("#sources-toggle", box).focus();
}

function sourceState(source) {
  return source.stale ? "stale" : source.configured === false ? "off" : "ok";
}

function sourceText(source) {
  // To the minute, so that two stale chips fit the header at 1280 px; the tooltip and the popover say the second.
  if (source.stale) return `${source.name} stale since ${new Date(source.stale_since).toLocaleTimeString([], { hour12: false, hour: "2-digit", minute: "2-digit" })}`;
  return source.configured === false ? `${source.name} not configured` : source.name;
}

function sourceTitle(source) {
  if (source.stale) return `${source.stale_reason || "failing"}; stale since ${fmtDateTime(source.stale_since)}; last success ${source.last_success ? fmtDateTime(source.last_success) : "never"}`;
  return source.last_success ? `Last success ${fmtDateTime(source.last_success)}` : "Not configured";
}

const STATUS_TEXT = {
  idle: "static", connecting: "connecting…", live: "live", paused: "paused", reconnecting: "reconnecting…", replay: "replay",
};

export function setStatus(state, detail) {
  const pill = qs("#live-status");
  if (!pill) return;
  pill.className = `pill pill-${state}`;
  pill.dataset.state = state;
  pill.textContent = STATUS_TEXT[state] || state;
  pill.title = detail || "Live updates";
}

// --- the window selector (5 min, 15 min, 1 h), kept in the URL --------------------------------

export function windowSelector(onChange) {
  const box = qs("#window-select");
  const params = new URLSearchParams(location.search);
  let current = [300, 900, 3600].includes(Number(params.get("window"))) ? Number(params.get("window")) : 300;
  const mark = () => qsa("button", box).forEach((b) => b.classList.toggle("active", Number(b.dataset.window) === current));
  if (box) {
    mark();
    box.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-window]");
      if (!button) return;
      current = Number(button.dataset.window);
      mark();
      const url = new URL(location.href);
      url.searchParams.set("window", current);
      history.replaceState(null, "", url);
      onChange(current);
    });
  }
  return () => current;
}

// --- charts: small SVG line charts ------------------------------------------------------------

// series: [{points: [[t(ms), value|null], ...], class: "series-2", label}], opts: {height, format}
export function lineChart(series, opts = {}) {
  const width = opts.width || 380;
  const height = opts.height || 90;
  const pad = { l: 40, r: 6, t: 6, b: 16 };
  const all = series.flatMap((one) => one.points.filter((p) => p[1] !== null && p[1] !== undefined));
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, width, height, role: "img" });
  if (opts.label) svg.setAttribute("aria-label", opts.label);
  if (!all.length) {
    svg.append(s("text", { x: width / 2, y: height / 2, "text-anchor": "middle", text: "no data" }));
    return svg;
  }
  const xs = series.flatMap((one) => one.points.map((p) => p[0]));
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const yMax = Math.max(opts.min || 0, ...all.map((p) => p[1])) || 1;
  const X = (t) => pad.l + ((t - x0) / (x1 - x0)) * (width - pad.l - pad.r);
  const Y = (v) => height - pad.b - (v / yMax) * (height - pad.t - pad.b);
  const format = opts.format || fmtNum;
  svg.append(
    s("line", { class: "axis", x1: pad.l, y1: height - pad.b, x2: width - pad.r, y2: height - pad.b }),
    s("line", { class: "axis", x1: pad.l, y1: pad.t, x2: pad.l, y2: height - pad.b }),
    s("text", { x: pad.l - 4, y: pad.t + 8, "text-anchor": "end", text: format(yMax) }),
    s("text", { x: pad.l - 4, y: height - pad.b, "text-anchor": "end", text: format(0) }),
    s("text", { x: pad.l, y: height - 3, text: new Date(x0).toLocaleTimeString([], { hour12: false, hour: "2-digit", minute: "2-digit" }) }),
    s("text", { x: width - pad.r, y: height - 3, "text-anchor": "end", text: new Date(x1).toLocaleTimeString([], { hour12: false, hour: "2-digit", minute: "2-digit" }) }),
  );
  for (const one of series) {
    let d = "";
    let pen = false;
    for (const [t, v] of one.points) {
      if (v === null || v === undefined) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${X(t).toFixed(1)},${Y(v).toFixed(1)}`;
      pen = true;
    }
    const path = s("path", { class: `series ${one.class || ""}`, d });
    if (one.label) path.append(s("title", { text: one.label }));
    svg.append(path);
    // A minute with no neighbours would draw nothing as a line: mark it with a dot.
    one.points.forEach(([t, v], i) => {
      if (v === null || v === undefined) return;
      const before = one.points[i - 1], after = one.points[i + 1];
      const alone = (!before || before[1] === null || before[1] === undefined) && (!after || after[1] === null || after[1] === undefined);
      if (alone) svg.append(s("circle", { class: `dot-point ${one.class || ""}`, cx: X(t).toFixed(1), cy: Y(v).toFixed(1), r: 2.5 }));
    });
  }
  return svg;
}

export function chartBlock(title, legend, svg) {
  const right = legend instanceof Node ? legend : h("span", { text: legend || "" });
  return h("div", {}, h("div", { class: "chart-title" }, h("span", { text: title }), right), svg);
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

// Runs the async `task` at most once every `ms`, never two at a time; a call in between runs it once
// more when it may. `reset()` lets the next call run at once (a new window, say).
export function throttled(task, ms) {
  let running = false, again = false, last = 0, timer = null;
  async function run() {
    if (running) { again = true; return; }
    const wait = last + ms - Date.now();
    if (wait > 0) { clearTimeout(timer); timer = setTimeout(run, wait); return; }
    running = true;
    try {
      await task();
    } finally {
      running = false;
      last = Date.now();
      if (again) { again = false; run(); }
    }
  }
  run.reset = () => { clearTimeout(timer); last = 0; };
  return run;
}

export function traceLink(traceId, text) {
  return h("a", { href: `/traces/${encodeURIComponent(traceId)}/`, class: "mono", text: text || String(traceId).slice(0, 16) });
}
