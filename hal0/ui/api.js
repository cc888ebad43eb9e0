// hal0's HTTP API as the dashboard uses it. The token lives in sessionStorage and travels only
// in the Authorization header: never in a URL, never in a log, never in a cookie.

const KEY = "hal0.token";

export const session = {
  get token() { return sessionStorage.getItem(KEY); },
  set(token) { sessionStorage.setItem(KEY, token); },
  clear() { sessionStorage.removeItem(KEY); },
};

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || `http.${status}`;
    this.details = err.details || {};
  }
}

export function authHeaders(extra = {}) {
  const t = session.token;
  return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
}

/** fetch() with the token; throws ApiError for a non-2xx answer (with hal0's error envelope). */
export async function request(method, path, body, opts = {}) {
  const headers = authHeaders(opts.headers || {});
  let payload = body;
  if (body !== undefined && !(body instanceof FormData) && !(body instanceof Blob)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const resp = await fetch(path, { method, headers, body: payload, signal: opts.signal, cache: "no-store" });
  if (!resp.ok) {
    let data = null;
    try { data = await resp.json(); } catch { /* not JSON */ }
    throw new ApiError(resp.status, data);
  }
  return resp;
}

export async function json(method, path, body, opts) {
  const resp = await request(method, path, body, opts);
  return resp.json();
}

export const get = (path, opts) => json("GET", path, undefined, opts);
export const post = (path, body = {}, opts) => json("POST", path, body, opts);
export const del = (path, opts) => json("DELETE", path, undefined, opts);

/** Read a text/event-stream body: calls onEvent(type, data, id) for each event.
 *  Resolves when the stream ends; rejects when it breaks or ``signal`` aborts. */
export async function readSSE(resp, onEvent, onChunk = () => {}) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onChunk();
    buf += value;
    let cut;
    while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
      let type = "message", id = null;
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (!line || line.startsWith(":")) continue;
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (field === "event") type = val;
        else if (field === "data") data.push(val);
        else if (field === "id") id = val;
      }
      if (data.length) onEvent(type, data.join("\n"), id);
    }
  }
}

/** A server-sent event stream read with fetch (EventSource cannot send a header), reopened
 *  with backoff (0.5 s doubling to 10 s, with jitter) whenever it ends or breaks.
 *  onOpen runs on every (re)connect, so the caller re-reads what it may have missed. */
export class LiveStream {
  constructor(path, { onEvent, onOpen, onStatus, onAuthError }) {
    Object.assign(this, { path, onEvent, onOpen, onStatus, onAuthError });
    this.ctrl = null;
    this.stopped = false;
  }

  start() {
    this.stopped = false;
    this.loop();
    return this;
  }

  stop() {
    this.stopped = true;
    if (this.ctrl) this.ctrl.abort();
  }

  async loop() {
    let delay = 500;
    while (!this.stopped) {
      const ctrl = this.ctrl = new AbortController();
      // hal0 sends a ping every 15 s: a stream silent for 45 s is dead (a laptop that slept,
      // a network that went away without a reset), so drop it and connect again.
      let watchdog = null;
      const alive = () => { clearTimeout(watchdog); watchdog = setTimeout(() => ctrl.abort(), 45000); };
      try {
        alive();
        const resp = await request("GET", this.path, undefined,
          { signal: ctrl.signal, headers: { Accept: "text/event-stream" } });
        delay = 500;
        this.onStatus("live");
        await this.onOpen();
        await readSSE(resp, this.onEvent, alive);
      } catch (e) {
        if (this.stopped) return;
        if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
          this.onAuthError(e);
          return;
        }
      } finally {
        clearTimeout(watchdog);
        ctrl.abort(); // whatever happened, this connection is done with
      }
      if (this.stopped) return;
      this.onStatus("reconnecting");
      await new Promise((r) => setTimeout(r, delay * (0.8 + Math.random() * 0.4)));
      delay = Math.min(delay * 2, 10000);
    }
  }
}
