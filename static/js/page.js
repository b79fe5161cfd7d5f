// How a page stays live. liveView: the socket carries the view itself (a snapshot, then deltas) and
// the page shows each state. livePage: a page whose data comes from REST endpoints refetches when the
// socket says the view changed (coalesced server side to about once a second; throttled here as well).
import { setUpdated, setStatus, setSources, getJSON, throttled, qs } from "./util.js";
import { LiveSocket } from "./live.js";

export function liveView({ view, window, show }) {
  const socket = new LiveSocket({
    view,
    window,
    onData: (state) => {
      show(state);
      setUpdated(state.generated_at);
    },
  });
  socket.connect();
  followSources(30000);
  // Times shown relative to now ("sampled 20 s ago") move on while the view itself does not change.
  setInterval(() => { if (socket.state && !socket.paused) show(socket.state); }, 30000);
  return socket;
}

export function livePage({ view, load, window = 300, minIntervalMs = 2000, pollMs = 30000 }) {
  const refresh = throttled(async () => {
    try {
      await load();
      setUpdated();
    } catch (error) {
      setStatus("reconnecting", `Loading failed: ${error.message}`);
    }
  }, minIntervalMs);
  // A view the socket carries whole (routes) only says here that it changed.
  const socket = view ? new LiveSocket({ view, window, onInvalidate: refresh, onData: (state, message) => message.type !== "snapshot" && refresh() }) : null;
  if (socket) socket.connect();
  // Rollups slide with time even when nothing is announced.
  setInterval(() => { if (!socket || !socket.paused) refresh(); }, pollMs);
  followSources(pollMs);
  refresh();
  return { refresh, socket };
}

function followSources(everyMs) {
  refreshSources();
  setInterval(refreshSources, everyMs);
}

async function refreshSources() {
  try {
    const data = await getJSON("/api/sources/");
    setSources(data.sources);
  } catch (error) {
    /* the header keeps the server-rendered sources */
  }
}

// The header's summary of many sources (util.setSources, base.html) is a disclosure button: it opens
// and closes the list, Esc or a click elsewhere closes it. Delegated, since setSources redraws the header.
// base.html loads this module on every page, the ones without a script of their own too.
function sourcesPopover() {
  // Once per document, should this module ever be loaded under a second URL (a hashed static name).
  if (document.documentElement.dataset.sourcesPopover) return;
  document.documentElement.dataset.sourcesPopover = "bound";
  const toggle = () => qs("#sources-toggle");
  const show = (open) => {
    const button = toggle();
    if (!button) return;
    button.setAttribute("aria-expanded", String(open));
    qs("#sources-popover").hidden = !open;
  };
  const isOpen = () => toggle()?.getAttribute("aria-expanded") === "true";
  document.addEventListener("click", (event) => {
    if (event.target.closest("#sources-toggle")) show(!isOpen());
    else if (isOpen() && !event.target.closest("#sources-popover")) show(false);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || !isOpen()) return;
    show(false);
    toggle().focus();
  });
}

sourcesPopover();

// --- theme: every page (base.html loads this module in its head, before the first paint) -----------
// Light or dark as the system prefers, unless the user chose the other one with the header's toggle:
// that choice is remembered in localStorage until they toggle back to the system's own. Pages that
// draw with colours of their own (the topology's graph) listen for THEME_EVENT and read the CSS
// custom properties again.
export const THEME_EVENT = "meshscope:theme";
const THEME_KEY = "meshscope.theme";
const systemDark = matchMedia("(prefers-color-scheme: dark)");
let unremembered = null; // the choice, in a browser that refuses storage

function chosenTheme() {
  try {
    const theme = localStorage.getItem(THEME_KEY);
    return theme === "dark" || theme === "light" ? theme : null;
  } catch (error) {
    return unremembered;
  }
}

function remember(theme) {
  try {
    if (theme) localStorage.setItem(THEME_KEY, theme);
    else localStorage.removeItem(THEME_KEY);
  } catch (error) {
    unremembered = theme;
  }
}

function applyTheme() {
  const chosen = chosenTheme();
  const theme = chosen || (systemDark.matches ? "dark" : "light");
  const toggle = document.querySelector("#theme-toggle");
  if (toggle) {
    toggle.setAttribute("aria-pressed", String(theme === "dark"));
    toggle.title = `Dark mode ${theme === "dark" ? "on" : "off"}, ${chosen ? "as you chose (remembered in this browser)" : "as your system prefers"}`;
  }
  if (document.documentElement.dataset.theme === theme) return;
  document.documentElement.dataset.theme = theme;
  document.dispatchEvent(new CustomEvent(THEME_EVENT, { detail: { theme } }));
}

function toggleTheme() {
  const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  // Back to the system's own scheme is back to following the system.
  remember(next === (systemDark.matches ? "dark" : "light") ? null : next);
  applyTheme();
}

applyTheme();
document.querySelector("#theme-toggle")?.addEventListener("click", toggleTheme);
systemDark.addEventListener("change", applyTheme);
window.addEventListener("storage", (event) => {
  if (event.key === THEME_KEY) applyTheme();
});
