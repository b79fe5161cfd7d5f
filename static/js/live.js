// The live-update client: snapshot, then seq-numbered deltas; resync on a gap; reconnect with backoff.
// Protocol: see dashboard/live/__init__.py. applyChanges mirrors dashboard.live.protocol.apply.

import { qs, setStatus } from "./util.js";

export function recordKey(record) {
  if (record && typeof record === "object") {
    if ("id" in record) return String(record.id);
    if ("name" in record) return String(record.name);
  }
  return null;
}

export function applyChanges(state, changes) {
  const next = { ...(state || {}) };
  for (const [key, change] of Object.entries(changes || {})) {
    if ("set" in change) {
      if (change.set === null) delete next[key];
      else next[key] = change.set;
      continue;
    }
    const records = new Map((next[key] || []).map((item) => [recordKey(item), item]));
    for (const id of change.remove || []) records.delete(String(id));
    for (const item of change.upsert || []) records.set(recordKey(item), item);
    next[key] = Array.from(records.values());
  }
  return next;
}

export class LiveSocket {
  // onData(state, message): the view changed (snapshot or delta); onInvalidate(): refetch (REST views).
  constructor({ view, window = 300, onData = () => {}, onInvalidate = () => {} }) {
    this.view = view;
    this.window = window;
    this.onData = onData;
    this.onInvalidate = onInvalidate;
    this.state = null;
    this.seq = null;
    this.paused = false;
    this.stopped = false;
    this.attempt = 0;
    this.ws = null;
    this.stats = { snapshots: 0, deltas: 0, resyncs: 0, reconnects: 0, lastDelayMs: null };
    this.pendingRender = false;
    this.bindToggle();
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${location.host}/ws/live/${encodeURIComponent(this.view)}/?window=${this.window}`;
  }

  connect() {
    this.stopped = false;
    setStatus(this.attempt ? "reconnecting" : "connecting");
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.attempt = 0;
      setStatus(this.paused ? "paused" : "live");
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this.send({ type: "ping" }), 30000);
    });
    ws.addEventListener("message", (event) => this.receive(event.data));
    ws.addEventListener("close", (event) => {
      clearInterval(this.pinger);
      if (this.ws !== ws || this.stopped) return;
      this.scheduleReconnect(event.code);
    });
  }

  async scheduleReconnect(code) {
    this.attempt += 1;
    this.stats.reconnects += 1;
    const delay = Math.min(30000, 500 * 2 ** Math.min(this.attempt - 1, 6)) * (0.8 + Math.random() * 0.4);
    setStatus("reconnecting", `Connection lost (code ${code}); retrying in ${Math.round(delay / 1000)} s`);
    // A refused handshake (the session ended) looks like any lost connection: ask the server.
    if (this.attempt >= 2) {
      try {
        const response = await fetch(location.href, { credentials: "same-origin", redirect: "manual" });
        if (response.type === "opaqueredirect" || response.status === 302) {
          window.location.reload();
          return;
        }
      } catch (error) {
        /* the server is down: keep retrying */
      }
    }
    this.timer = setTimeout(() => this.connect(), delay);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.retry);
    clearInterval(this.pinger);
    if (this.ws) this.ws.close();
    this.ws = null;
  }

  setWindow(window) {
    this.window = window;
    this.state = null;
    this.seq = null;
    this.stop();
    this.attempt = 0;
    this.connect();
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  resync() {
    this.stats.resyncs += 1;
    this.send({ type: "resync" });
  }

  receive(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch (error) {
      return;
    }
    if (message.type === "chunk") {
      // A large message in parts (daphne sends at most 1 MiB a frame): join them, then handle it.
      if (!this.chunks || this.chunks.id !== message.id) this.chunks = { id: message.id, parts: [] };
      this.chunks.parts[message.i] = message.text;
      if (message.i !== message.n - 1) return;
      const whole = this.chunks.parts.join("");
      const complete = this.chunks.parts.length === message.n && !this.chunks.parts.includes(undefined);
      this.chunks = null;
      if (complete) this.receive(whole);
      else this.resync();
      return;
    }
    if (message.sent_at) this.stats.lastDelayMs = Date.now() - message.sent_at * 1000;
    if (message.type === "snapshot") {
      this.state = message.data;
      this.seq = message.seq;
      this.stats.snapshots += 1;
      this.render(message);
    } else if (message.type === "delta") {
      if (this.state === null) return; // the snapshot is on its way
      if (message.seq <= this.seq) return; // already in the snapshot
      if (message.prev !== this.seq) {
        this.resync(); // a gap: start again from a snapshot
        return;
      }
      this.state = applyChanges(this.state, message.changes);
      if (message.generated_at) this.state.generated_at = message.generated_at;
      this.seq = message.seq;
      this.stats.deltas += 1;
      this.render(message);
    } else if (message.type === "error") {
      // The server could not compute the snapshot: say so, and ask again shortly.
      setStatus("reconnecting", message.message || "The view could not be loaded");
      clearTimeout(this.retry);
      this.retry = setTimeout(() => {
        setStatus(this.paused ? "paused" : "live");
        this.resync();
      }, 5000);
    } else if (message.type === "invalidate") {
      const first = this.seq === null;
      if (!first && message.seq <= this.seq) return;
      this.seq = message.seq;
      if (!first) {
        if (this.paused) this.pendingRender = true;
        else this.onInvalidate(message);
      }
    }
  }

  render(message) {
    if (this.paused) {
      this.pendingRender = true;
      return;
    }
    this.onData(this.state, message);
  }

  setPaused(paused) {
    this.paused = paused;
    const button = qs("#live-toggle");
    if (button) button.textContent = paused ? "Resume" : "Pause";
    if (this.ws && this.ws.readyState === WebSocket.OPEN) setStatus(paused ? "paused" : "live");
    if (!paused && this.pendingRender) {
      this.pendingRender = false;
      if (this.state !== null) this.onData(this.state, { type: "resume" });
      else this.onInvalidate({ type: "resume" });
    }
  }

  bindToggle() {
    const button = qs("#live-toggle");
    if (!button || button.dataset.bound) return;
    button.dataset.bound = "1";
    button.hidden = false;
    button.addEventListener("click", () => this.setPaused(!this.paused));
  }
}
