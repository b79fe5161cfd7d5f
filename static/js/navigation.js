// Deep links and keyboard shortcuts, on every page. base.html loads this module for the "Copy link" and
// "?" buttons and the shortcuts every page has; a page imports it to keep its state in the URL
// (linkState) and to add its own shortcuts (addShortcut).
import { h, qs, clear } from "./util.js";

// --- deep links: the view's state in the query string ----------------------------------------------

// Writes `state` into the URL's query (an empty value removes its key, an array repeats it, true is
// "1"), without a history entry: a reload or a shared link reopens the view as it is now. Keys not
// in `state` are kept.
export function linkState(state) {
  const url = new URL(location.href);
  for (const [key, value] of Object.entries(state)) {
    url.searchParams.delete(key);
    for (const one of Array.isArray(value) ? value : [value]) {
      if (one === null || one === undefined || one === "" || one === false) continue;
      url.searchParams.append(key, one === true ? "1" : String(one));
    }
  }
  if (url.href !== location.href) history.replaceState(history.state, "", url);
}

// The Clipboard API needs a secure context (https, or localhost) and the page's focus; a plain-http
// installation gets the older copy command on a hidden, selected text field.
async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (error) {
      /* refused (no permission, no focus): try the old way */
    }
  }
  const field = h("textarea", { readonly: true, "aria-hidden": "true", style: { position: "fixed", top: "0", left: "-9999px" } });
  field.value = text;
  document.body.append(field);
  field.select();
  let copied = false;
  try {
    copied = document.execCommand("copy");
  } catch (error) {
    copied = false;
  }
  field.remove();
  return copied;
}

const CONFIRM_MS = 2500;

// The buttons end the page's toolbar, which wraps, rather than the header, which has no room to spare.
function linkTools() {
  const toolbar = qs("main .toolbar");
  if (!toolbar) return;
  const button = h("button", { type: "button", id: "copy-link", class: "btn btn-small", title: "Copy a link to this view: window, replay time, selection and filters", text: "Copy link" });
  const status = h("span", { id: "copy-link-status", class: "copy-status", role: "status" }); // empty until a copy
  const keys = h("button", { type: "button", id: "shortcuts-help", class: "btn btn-small btn-quiet", title: "Keyboard shortcuts (?)", "aria-keyshortcuts": "?", text: "?" });
  toolbar.append(h("span", { class: "linktools" }, status, button, keys));
  keys.addEventListener("click", showHelp);
  let timer = null;
  button.addEventListener("click", async () => {
    const copied = await copyText(location.href);
    status.textContent = copied ? "Link copied" : "Could not copy: the link is in the address bar";
    status.dataset.state = copied ? "copied" : "failed";
    clearTimeout(timer);
    timer = setTimeout(() => { status.textContent = ""; }, CONFIRM_MS);
  });
}

// --- keyboard shortcuts -----------------------------------------------------------------------------

// [{key, label, run}], in the order the help lists them. `key` is KeyboardEvent.key.
const shortcuts = [];

const KEY_NAMES = { Escape: "Esc", ArrowUp: "↑", ArrowDown: "↓" };
let help = null; // the list of shortcuts, a <dialog> made when first asked for

export function addShortcut(key, label, run) {
  shortcuts.push({ key, label, run });
}

// Keys typed into a field are text, not shortcuts; a checkbox or a button takes none of them.
function typing(target) {
  if (!(target instanceof HTMLElement)) return false;
  if (target.isContentEditable || target.tagName === "TEXTAREA" || target.tagName === "SELECT") return true;
  return target.tagName === "INPUT" && !["checkbox", "radio", "button", "submit", "reset"].includes(target.type);
}

function onKeydown(event) {
  if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing || event.defaultPrevented) return;
  if (help && help.open) return; // the open list takes Esc itself
  const shortcut = shortcuts.find((one) => one.key === event.key);
  if (!shortcut) return;
  if (typing(event.target)) {
    // Esc leaves the field (keeping what was typed, which is part of the view) and clears as anywhere.
    if (event.key !== "Escape") return;
    event.target.blur();
  }
  event.preventDefault();
  shortcut.run(event);
}

function showHelp() {
  if (!help) {
    help = h("dialog", { id: "shortcuts", class: "shortcuts", "aria-label": "Keyboard shortcuts" });
    document.body.append(help);
    help.addEventListener("click", (event) => {
      if (event.target === help || event.target.closest("button.shortcuts-close")) help.close();
    });
  }
  clear(help).append(
    h("h2", { text: "Keyboard shortcuts" }),
    h("table", {}, h("tbody", {}, shortcuts.map((one) => h("tr", { dataset: { key: one.key } },
      h("td", {}, h("kbd", { text: KEY_NAMES[one.key] || one.key })), h("td", { text: one.label }))))),
    h("p", { class: "muted small", text: "Not while typing in a field, except Esc." }),
    h("button", { type: "button", class: "btn btn-small shortcuts-close", text: "Close" }),
  );
  help.showModal();
}

// The filter of a page is its first search field; "/" goes there, as on GitHub or Gmail.
const filter = qs("main input[type=search]");
if (filter) {
  addShortcut("/", "Focus the filter", () => { filter.focus(); filter.select(); });
  filter.setAttribute("aria-keyshortcuts", "/");
  filter.title = filter.title || `${filter.getAttribute("aria-label") || "Filter"} (press /)`;
}
addShortcut("?", "Show these shortcuts", showHelp);
document.addEventListener("keydown", onKeydown);
linkTools();
