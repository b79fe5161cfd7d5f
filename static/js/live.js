// The live-update client: snapshot, then seq-numbered deltas; resync on a gap; reconnect with backoff.
// Protocol: see dashboard/live/__init__.py. applyChanges mirrors dashboard.live.protocol.apply, and
// Inbox dashboard.live.protocol.Receiver: a message above 1 KiB comes deflated, as binary frames (an
// 8-byte header: message id, part index, part count), inflated by the browser's DecompressionStream.

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

const HEADER_BYTES = 8;

async function inflate(parts) {
  const stream = new Blob(parts).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Response(stream).text();
}

// A socket's frames in, each whole message's JSON text out to deliver(text), in the order the messages
// came although a deflated one is inflated asynchronously: a delta is never handled before the
// snapshot or the delta that precedes it. A part out of order, or one that does not inflate, calls
// lost() in that message's place (the page resyncs).
export class Inbox {
  constructor(deliver, lost) {
    this.deliver = deliver;
    this.lost = lost;
    this.id = null;
    this.parts = [];
    this.last = Promise.resolve();
  }

  push(data) {
    let text;
    try {
      text = this.join(data);
    } catch (error) {
      text = Promise.reject(error);
    }
    if (text === null) return;
    const arrived = Promise.resolve(text); // inflating starts now, beside the messages before it
    arrived.catch(() => {}); // a failure is handled in its turn, below, not reported as unhandled
    this.last = this.last
      .then(() => arrived)
      .then(
        (whole) => this.deliver(whole),
        () => this.lost(),
      )
      .catch((error) => reportError(error)); // a page's onData failed: said, and the next one handled
  }

  join(data) {
    if (typeof data === "string") return data;
    const header = new DataView(data, 0, HEADER_BYTES);
    const [id, index, count] = [header.getUint32(0), header.getUint16(4), header.getUint16(6)];
    if (index === 0) [this.id, this.parts] = [id, []];
    if (id !== this.id || index !== this.parts.length) {
      [this.id, this.parts] = [null, []];
      throw new Error(`part ${index} of message ${id} came out of order`);
    }
    this.parts.push(new Uint8Array(data, HEADER_BYTES));
    if (index < count - 1) return null;
    const parts = this.parts;
    [this.id, this.parts] = [null, []];
    return inflate(parts);
  }
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
    const view = encodeURIComponent(this.view);
    return `${scheme}://${location.host}/ws/live/${view}/?window=${this.window}&compression=deflate`;
  }

  connect() {
    this.stopped = false;
    setStatus(this.attempt ? "reconnecting" : "connecting");
    const ws = new WebSocket(this.url());
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    // A message of a socket this one replaced is dropped.
    const inbox = new Inbox(
      (text) => this.ws === ws && this.receive(text),
      () => this.ws === ws && this.resync(),
    );
    ws.addEventListener("open", () => {
      this.attempt = 0;
      setStatus(this.paused ? "paused" : "live");
      clearInterval(this.pinger);
      this.pinger = setInterval(() => this.send({ type: "ping" }), 30000);
    });
    ws.addEventListener("message", (event) => inbox.push(event.data));
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
