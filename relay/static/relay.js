// relay.js: the browser client for Relay. A dependency-free ES module.
//
//   import { createTask, watchTask } from "/static/relay.js";
//   const task = await createTask({ prompt: "a lighthouse at dusk" });
//   const handle = watchTask(task.taskId, {
//     token: task.token,
//     onUpdate: (t) => render(t),
//     onDone: (t) => render(t),
//     onError: (err) => showError(err.message),
//   });
//   // later: handle.close()
//
// Watching follows the task over Server-Sent Events. When the stream drops, EventSource
// reconnects by itself with the Last-Event-ID header and the server skips what the page
// already has. When the stream cannot be used (no EventSource, the server or a proxy
// refuses it, repeated quick failures, or no first event within a few seconds because
// something between the server and the browser buffers the stream), it polls
// GET /api/tasks/{id}?token= with backoff, and tries the stream again later, passing
// `?lastEventId=` on the new EventSource. Every version is applied at most once and in
// order: duplicates and older versions are dropped, so the page never goes backwards.

const TERMINAL = new Set(["completed", "failed", "cancelled"]);
// The server's default limit for one multiplexed stream (RELAY_MAX_TASKS_PER_STREAM);
// watchTasks opens one stream per this many tasks (option `maxTasksPerStream`).
export const MAX_TASKS_PER_STREAM = 50;
// Answers that will not get better by asking again: stop watching that task.
const FATAL_STATUSES = new Set([400, 401, 403, 404, 410]);

/** Default timings (milliseconds) of every watcher; each can be overridden per call. */
export const DEFAULTS = Object.freeze({
  firstEventTimeout: 4000, // no first event by then: the stream is buffered, poll instead
  rapidFailureWindow: 1500, // a stream that dies sooner than this after opening failed "rapidly"
  maxStreamFailures: 3, // rapid failures in a row before falling back to polling
  pollInterval: 1000, // first poll delay; grows while nothing changes
  pollMaxInterval: 10000,
  pollBackoff: 1.5,
  streamRetryDelay: 15000, // time in polling mode before trying the stream again
  streamRetryMaxDelay: 120000, // doubles after every failed return to the stream, up to this
});

/**
 * An error from Relay (or from the way to it), with the contract's fields:
 * `status` (HTTP status, 0 when the server could not be reached), `code` (the JSON
 * error body's code, or one of network_error / html_response / invalid_response /
 * http_error) and a readable `message`.
 */
export class RelayError extends Error {
  constructor(message, { status = 0, code = "http_error", body = undefined, taskId = undefined } = {}) {
    super(message);
    this.name = "RelayError";
    this.status = status;
    this.code = code;
    if (body !== undefined) this.body = body;
    if (taskId !== undefined) this.taskId = taskId;
  }

  /** True when asking again later may succeed (network trouble, 429, 5xx). */
  get retryable() {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

// --------------------------------------------------------------------------- HTTP

function joinUrl(baseUrl, path) {
  return `${String(baseUrl || "").replace(/\/+$/, "")}${path}`;
}

function htmlTitle(text) {
  const match = /<title[^>]*>([^<]*)<\/title>/i.exec(text);
  return match ? match[1].replace(/\s+/g, " ").trim().slice(0, 120) : "";
}

/**
 * Turn a fetch Response into parsed JSON, or throw a RelayError that says what happened:
 * the server's own `{"error": {"code", "message"}}`, or "the server answered with HTML,
 * status N" for a proxy's or CDN's error page, never a bare JSON parse error.
 */
export async function readResponse(response) {
  const status = response.status;
  let text;
  try {
    text = await response.text();
  } catch (err) {
    throw new RelayError(`the connection broke while reading the answer (status ${status})`, {
      status: 0,
      code: "network_error",
    });
  }
  if (status === 204 || (response.ok && !text.trim())) return null;
  const type = (response.headers.get("content-type") || "").toLowerCase();
  const looksHtml = type.includes("html") || /^\s*</.test(text);
  if (looksHtml) {
    const title = htmlTitle(text);
    throw new RelayError(
      `the server answered with HTML, status ${status}${title ? ` ("${title}")` : ""}`,
      { status, code: "html_response" },
    );
  }
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    const snippet = text.trim().slice(0, 80);
    throw new RelayError(
      `the server answered with something that is not JSON, status ${status}${snippet ? `: ${snippet}` : ""}`,
      { status, code: "invalid_response" },
    );
  }
  if (response.ok) return body;
  const error = body && typeof body === "object" ? body.error : undefined;
  if (error && typeof error === "object") {
    throw new RelayError(String(error.message || `request failed with status ${status}`), {
      status,
      code: String(error.code || "http_error"),
      body,
    });
  }
  if (typeof error === "string") {
    // The legacy routes' shape: {success: false, error: "<message>", code}.
    throw new RelayError(error, { status, code: String(body.code || "http_error"), body });
  }
  throw new RelayError(`the server answered with status ${status}`, { status, code: "http_error", body });
}

async function request(url, init = {}) {
  let response;
  try {
    response = await fetch(url, { credentials: "same-origin", ...init });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new RelayError(`could not reach the server (${(err && err.message) || "network error"})`, {
      status: 0,
      code: "network_error",
    });
  }
  return readResponse(response);
}

function tokenQuery(token) {
  return token ? `?token=${encodeURIComponent(token)}` : "";
}

/**
 * A link that downloads result `index` of a completed task as a file with a sensible name
 * (`GET /api/download-url`; needs RELAY_LEGACY_ROUTES=on, which `relay demo` sets).
 */
export async function downloadUrl(taskId, options = {}) {
  const { token, index = 0, baseUrl = "", signal } = options;
  const qs = new URLSearchParams({ taskId, index: String(index) });
  if (token) qs.set("token", token);
  const answer = await request(joinUrl(baseUrl, `/api/download-url?${qs}`), {
    headers: { Accept: "application/json" },
    signal,
  });
  return answer.url;
}

/**
 * Make a completed result public: resolves to `{shareId, shareUrl}` (`POST /api/share`; the
 * same share again within 5 s returns the first one; needs RELAY_LEGACY_ROUTES=on).
 */
export async function shareTask(taskId, options = {}) {
  const { token, index = 0, prompt, style, baseUrl = "", signal } = options;
  const body = { taskId, index };
  if (prompt) body.prompt = prompt;
  if (style) body.style = style;
  return request(joinUrl(baseUrl, `/api/share${tokenQuery(token)}`), {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body),
    signal,
  });
}

/**
 * Cancel an unfinished task (`POST /api/tasks/{id}/cancel`): resolves to the task, now
 * `cancelled`; a RelayError with code `already_finished` (409) when it finished first.
 */
export async function cancelTask(taskId, options = {}) {
  const { token, baseUrl = "", signal, headers = {} } = options;
  return request(joinUrl(baseUrl, `/api/tasks/${encodeURIComponent(taskId)}/cancel${tokenQuery(token)}`), {
    method: "POST",
    headers: { Accept: "application/json", ...headers },
    signal,
  });
}

/** A fresh random key for the `Idempotency-Key` header (one per user action). */
export function newIdempotencyKey() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  const bytes = new Uint8Array(16);
  if (c && typeof c.getRandomValues === "function") c.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * POST /api/tasks. Resolves with the created task plus `token`, `statusUrl`, `eventsUrl`.
 * With `idempotencyKey`, asking again with the same key returns the same task.
 */
export async function createTask(input, options = {}) {
  const { prompt = "", imageUrls, model, options: providerOptions, parentTaskId } = input || {};
  const { idempotencyKey, baseUrl = "", signal, headers = {} } = options;
  // Work on an earlier task (extend, 1080p, 4K) may need no prompt; Relay says per model.
  if (typeof prompt !== "string" || (!prompt.trim() && !parentTaskId)) {
    throw new RelayError("write a prompt first", { status: 0, code: "invalid_input" });
  }
  const body = { prompt };
  if (imageUrls && imageUrls.length) body.imageUrls = Array.from(imageUrls);
  if (model) body.model = model;
  if (parentTaskId) body.parentTaskId = parentTaskId;
  if (providerOptions && Object.keys(providerOptions).length) body.options = providerOptions;
  const sendHeaders = { "Content-Type": "application/json", Accept: "application/json", ...headers };
  if (idempotencyKey) sendHeaders["Idempotency-Key"] = idempotencyKey;
  return request(joinUrl(baseUrl, "/api/tasks"), {
    method: "POST",
    headers: sendHeaders,
    body: JSON.stringify(body),
    signal,
  });
}

/** POST /api/uploads (multipart field `file`). Resolves with `{url, key, contentType, size}`. */
export async function upload(file, options = {}) {
  const { baseUrl = "", signal, headers = {} } = options;
  if (!file || typeof file !== "object" || typeof file.size !== "number") {
    throw new RelayError("choose a file to upload first", { status: 0, code: "invalid_input" });
  }
  const form = new FormData();
  form.append("file", file, file.name || "upload");
  return request(joinUrl(baseUrl, "/api/uploads"), {
    method: "POST",
    headers: { Accept: "application/json", ...headers },
    body: form,
    signal,
  });
}

/**
 * GET /api/models: every model Relay can create, with its `kind` (image, video, audio),
 * prompt rules, reference images and options. Resolves with the list.
 */
export async function listModels(options = {}) {
  const { baseUrl = "", signal } = options;
  const answer = await request(joinUrl(baseUrl, "/api/models"), { headers: { Accept: "application/json" }, signal });
  // `simulated` (results from Relay's built-in simulator) rides along on the array.
  return Object.assign(answer.models, { simulated: Boolean(answer.simulated) });
}

/** GET /api/tasks/{taskId}: the task object (the fallback status read). */
export async function getTask(taskId, options = {}) {
  const { token, baseUrl = "", signal } = options;
  return request(joinUrl(baseUrl, `/api/tasks/${encodeURIComponent(taskId)}${tokenQuery(token)}`), {
    headers: { Accept: "application/json" },
    signal,
    cache: "no-store",
  });
}

/** GET /api/tasks: history, newest first. Resolves with `{items, nextCursor}`. */
export async function listTasks(filters = {}, options = {}) {
  const { baseUrl = "", signal, headers = {} } = options;
  const query = new URLSearchParams();
  for (const name of ["status", "mode", "limit", "cursor"]) {
    const value = filters[name];
    if (value !== undefined && value !== null && value !== "") query.set(name, String(value));
  }
  const qs = query.toString();
  return request(joinUrl(baseUrl, `/api/tasks${qs ? `?${qs}` : ""}`), {
    headers: { Accept: "application/json", ...headers },
    signal,
    cache: "no-store",
  });
}

/** True for `completed` and `failed`: nothing will change any more. */
export function isTerminal(task) {
  return Boolean(task) && TERMINAL.has(task.status);
}

// --------------------------------------------------------------------------- watching

function noop() {}

class Watcher {
  // entries: [{taskId, token}], at most MAX_TASKS_PER_STREAM. `single` uses the one-task
  // endpoint /api/tasks/{id}/events, otherwise /api/events?taskId=..&token=.. (one connection).
  constructor(entries, options, single) {
    this.opts = { ...DEFAULTS, ...options };
    this.baseUrl = this.opts.baseUrl || "";
    this.single = single;
    this.onUpdate = this.opts.onUpdate || noop;
    this.onDone = this.opts.onDone || noop;
    this.onError = this.opts.onError || noop;
    this.onStats = this.opts.onStats || noop;
    this.onFinish = noop; // set by the composite handle
    this.tasks = new Map();
    for (const { taskId, token } of entries) {
      this.tasks.set(taskId, { taskId, token: token || "", version: 0, task: null, done: false, error: null });
    }
    this.stats = {
      mode: "connecting", // connecting | stream | poll | done | closed
      streamsOpened: 0, // EventSource objects created
      opens: 0, // successful (re)connections, including EventSource's own
      reconnects: 0, // times the stream was resumed after a drop, by the browser or by us
      errors: 0, // stream error events
      fallbacks: 0, // switches from the stream to polling
      polls: 0, // GET /api/tasks/{id} requests
      events: 0, // task events received on the stream
      applied: 0, // versions handed to onUpdate
      duplicates: 0, // events or poll answers dropped as duplicate or older
      lastError: "",
    };
    this.es = null;
    this.gotEvent = false;
    this.openedAt = 0;
    this.rapidFailures = 0;
    this.probation = false;
    this.watchdog = null;
    this.pollTimer = null;
    this.polling = false;
    this.pollGen = 0; // bumps on every start/stop, so an in-flight round of an old loop ends
    this.pollDelay = this.opts.pollInterval;
    this.streamRetryTimer = null;
    this.streamRetryDelay = this.opts.streamRetryDelay;
    this.abort = typeof AbortController === "function" ? new AbortController() : null;
    this.streamAllowed = this.opts.sse !== false && typeof globalThis.EventSource === "function";
    this.stopped = false;
  }

  start() {
    for (const task of this.opts.initial || []) this.apply(task, "initial");
    if (this.checkFinished()) return;
    if (this.streamAllowed) this.openStream(false);
    else {
      this.stats.lastError = this.opts.sse === false ? "streaming turned off" : "EventSource is not available";
      this.setMode("poll");
      this.startPolling(0);
    }
  }

  // ---- bookkeeping

  emitStats() {
    try {
      this.onStats({ ...this.stats });
    } catch (err) {
      setTimeout(() => {
        throw err;
      });
    }
  }

  setMode(mode) {
    if (this.stats.mode === mode) return;
    this.stats.mode = mode;
    this.emitStats();
  }

  unfinished() {
    return [...this.tasks.values()].filter((t) => !t.done);
  }

  safely(fn, ...args) {
    try {
      fn(...args);
    } catch (err) {
      // A bug in the page's callback must not break the watcher; report it asynchronously.
      setTimeout(() => {
        throw err;
      });
    }
  }

  /** Apply a task object if it is newer than what we have. Returns true when applied. */
  apply(task, source) {
    if (!task || typeof task !== "object") return false;
    const entry = this.tasks.get(task.taskId);
    if (!entry) return false;
    if (entry.done || typeof task.version !== "number" || task.version <= entry.version) {
      if (source !== "initial") this.stats.duplicates += 1;
      return false;
    }
    entry.version = task.version;
    entry.task = task;
    this.stats.applied += 1;
    this.safely(this.onUpdate, task, { source });
    if (isTerminal(task)) {
      entry.done = true;
      this.safely(this.onDone, task);
    }
    return true;
  }

  failTask(entry, error) {
    if (entry.done) return;
    entry.done = true;
    entry.error = error;
    error.taskId = entry.taskId;
    this.safely(this.onError, error, entry.taskId);
  }

  checkFinished() {
    if (this.stopped) return true;
    if (this.unfinished().length) return false;
    this.teardown();
    this.stats.mode = "done";
    this.emitStats();
    this.safely(this.onFinish);
    return true;
  }

  // ---- the stream

  // `resume`: we are coming back to the stream after polling. The URL then carries
  // `lastEventId` (the versions we have) so nothing is sent twice, except one deliberate
  // event: the first task's version is given as one less than we have, so the server
  // re-sends that task's newest state at once. That first event proves the stream really
  // flows (a buffering proxy would hold it back) and lets us stop polling straight away.
  resumeVersions(open) {
    const known = open.filter((t) => t.version > 0);
    return known.map((t, i) => [t, i === 0 ? t.version - 1 : t.version]);
  }

  streamUrl(resume) {
    const open = this.unfinished();
    const query = new URLSearchParams();
    let path;
    if (this.single) {
      const t = open[0];
      path = `/api/tasks/${encodeURIComponent(t.taskId)}/events`;
      if (t.token) query.set("token", t.token);
      if (resume && t.version > 0) query.set("lastEventId", String(t.version - 1));
    } else {
      path = "/api/events";
      const withTokens = open.some((t) => t.token);
      for (const t of open) {
        query.append("taskId", t.taskId);
        if (withTokens) query.append("token", t.token);
      }
      if (resume) {
        const seen = this.resumeVersions(open).map(([t, v]) => `${t.taskId}:${v}`);
        if (seen.length) query.set("lastEventId", seen.join(","));
      }
    }
    const qs = query.toString();
    return joinUrl(this.baseUrl, qs ? `${path}?${qs}` : path);
  }

  openStream(resume) {
    if (this.stopped) return;
    this.closeStream();
    let es;
    try {
      es = new EventSource(this.streamUrl(resume));
    } catch (err) {
      this.streamAllowed = false;
      this.fallback(`EventSource failed: ${(err && err.message) || err}`);
      return;
    }
    this.es = es;
    this.gotEvent = false;
    this.openedAt = 0;
    this.stats.streamsOpened += 1;
    if (resume) this.stats.reconnects += 1;
    // Coming back from polling: keep polling until the stream proves itself.
    this.probation = resume && this.polling;
    if (!this.probation) this.setMode("connecting");
    this.emitStats();

    es.addEventListener("task", (event) => this.onStreamEvent(es, event));
    es.addEventListener("open", () => {
      if (this.es !== es) return;
      this.stats.opens += 1;
      this.openedAt = Date.now();
      this.emitStats();
    });
    es.addEventListener("error", () => this.onStreamError(es));
    // A new stream always starts with an event (the snapshot, or the one re-sent on
    // resume): without one in time, something buffers the stream.
    this.watchdog = setTimeout(() => {
      this.watchdog = null;
      if (this.es === es && !this.gotEvent) {
        this.fallback(
          `no event within ${this.opts.firstEventTimeout} ms: something between the server and the browser is buffering the stream`,
          true,
        );
      }
    }, this.opts.firstEventTimeout);
  }

  onStreamEvent(es, event) {
    if (this.es !== es || this.stopped) return;
    this.gotEvent = true;
    this.rapidFailures = 0;
    this.stats.events += 1;
    if (this.watchdog) {
      clearTimeout(this.watchdog);
      this.watchdog = null;
    }
    if (this.probation) {
      // The stream works again: stop polling, and be quick to come back next time.
      this.probation = false;
      this.stopPolling();
      this.streamRetryDelay = this.opts.streamRetryDelay;
    }
    this.setMode("stream");
    if (event.lastEventId) this.stats.lastEventId = event.lastEventId;
    let task;
    try {
      task = JSON.parse(event.data);
    } catch {
      this.stats.lastError = "an event's data is not JSON";
      this.emitStats();
      return;
    }
    this.apply(task, "stream");
    this.emitStats();
    this.checkFinished();
  }

  onStreamError(es) {
    if (this.es !== es || this.stopped) return;
    if (this.checkFinished()) return;
    this.stats.errors += 1;
    const closed = es.readyState === 2; // EventSource.CLOSED
    if (closed) {
      // The server refused the stream (an HTTP error, a non-SSE answer, or 204 when it thinks
      // we have everything). Ask the status endpoint: it says which, readably.
      this.stats.lastError = "the stream was refused";
      this.fallback("the stream was refused", true);
      return;
    }
    // CONNECTING: the browser retries by itself, sending Last-Event-ID.
    const rapid = !this.openedAt || Date.now() - this.openedAt < this.opts.rapidFailureWindow;
    this.rapidFailures = rapid ? this.rapidFailures + 1 : 0;
    this.openedAt = 0;
    this.stats.reconnects += 1;
    this.stats.lastError = "the stream dropped";
    if (this.rapidFailures >= this.opts.maxStreamFailures) {
      this.fallback(`the stream failed ${this.rapidFailures} times in a row`, true);
      return;
    }
    if (!this.probation) this.setMode("connecting");
    this.emitStats();
  }

  closeStream() {
    if (this.watchdog) {
      clearTimeout(this.watchdog);
      this.watchdog = null;
    }
    this.probation = false;
    if (this.es) {
      this.es.close();
      this.es = null;
    }
  }

  /** Give up on the stream for now: poll, and try the stream again later. */
  fallback(reason, streamFailed) {
    if (this.stopped) return;
    const wasProbing = this.probation;
    this.closeStream();
    this.rapidFailures = 0;
    this.stats.fallbacks += 1;
    this.stats.lastError = reason;
    this.setMode("poll");
    this.emitStats();
    if (streamFailed && wasProbing) {
      this.streamRetryDelay = Math.min(this.streamRetryDelay * 2, this.opts.streamRetryMaxDelay);
    }
    if (!this.polling) this.startPolling(0);
    this.scheduleStreamRetry();
  }

  scheduleStreamRetry() {
    if (!this.streamAllowed || this.stopped || this.streamRetryTimer) return;
    this.streamRetryTimer = setTimeout(() => {
      this.streamRetryTimer = null;
      if (!this.stopped && !this.checkFinished()) this.openStream(true);
    }, this.streamRetryDelay);
  }

  // ---- polling

  startPolling(delay) {
    if (this.stopped) return;
    this.polling = true;
    this.pollGen += 1;
    this.pollDelay = this.opts.pollInterval;
    clearTimeout(this.pollTimer);
    const gen = this.pollGen;
    this.pollTimer = setTimeout(() => this.pollRound(gen), delay);
  }

  stopPolling() {
    this.polling = false;
    this.pollGen += 1;
    clearTimeout(this.pollTimer);
    this.pollTimer = null;
  }

  async pollRound(gen) {
    const current = () => this.polling && !this.stopped && gen === this.pollGen;
    if (!current()) return;
    this.pollTimer = null;
    let changed = false;
    let retryAfter = 0;
    for (const entry of this.unfinished()) {
      if (!current()) return;
      this.stats.polls += 1;
      try {
        const task = await getTask(entry.taskId, {
          token: entry.token,
          baseUrl: this.baseUrl,
          signal: this.abort ? this.abort.signal : undefined,
        });
        if (this.stopped) return;
        if (entry.done) continue; // the stream finished it meanwhile
        if (this.apply(task, "poll")) changed = true;
      } catch (err) {
        if (this.stopped || (err && err.name === "AbortError")) return;
        const error = err instanceof RelayError ? err : new RelayError(String((err && err.message) || err));
        if (FATAL_STATUSES.has(error.status)) this.failTask(entry, error);
        else {
          this.stats.lastError = error.message;
          if (error.status === 429) retryAfter = Math.max(retryAfter, 5000);
        }
      }
    }
    this.emitStats();
    if (this.checkFinished() || !current()) return;
    this.pollDelay = changed
      ? this.opts.pollInterval
      : Math.min(this.pollDelay * this.opts.pollBackoff, this.opts.pollMaxInterval);
    this.pollTimer = setTimeout(() => this.pollRound(gen), Math.max(this.pollDelay, retryAfter));
  }

  // ---- the end

  teardown() {
    this.stopped = true;
    this.closeStream();
    this.stopPolling();
    clearTimeout(this.streamRetryTimer);
    this.streamRetryTimer = null;
    if (this.abort) this.abort.abort();
  }

  close() {
    if (this.stopped) return;
    this.teardown();
    this.stats.mode = "closed";
    this.emitStats();
  }
}

function sumStats(parts) {
  const total = { ...parts[0].stats };
  for (const part of parts.slice(1)) {
    for (const [name, value] of Object.entries(part.stats)) {
      if (typeof value === "number") total[name] = (total[name] || 0) + value;
    }
  }
  const modes = new Set(parts.map((p) => p.stats.mode));
  if (modes.size > 1) {
    // The "worst" mode wins: any chunk polling means the page is (partly) polling.
    for (const mode of ["poll", "connecting", "stream", "closed", "done"]) {
      if (modes.has(mode)) {
        total.mode = mode;
        break;
      }
    }
  }
  return total;
}

function normalizeEntries(list) {
  const seen = new Map();
  for (const item of list || []) {
    if (!item) continue;
    const taskId = typeof item === "string" ? item : item.taskId;
    if (!taskId || seen.has(taskId)) continue;
    seen.set(taskId, { taskId: String(taskId), token: typeof item === "object" ? item.token || "" : "" });
  }
  return [...seen.values()];
}

function makeHandle(entries, options, single) {
  const opts = { ...options };
  const userStats = opts.onStats || noop;
  const userAllDone = opts.onAllDone || noop;
  const size = Math.max(1, Math.floor(opts.maxTasksPerStream || MAX_TASKS_PER_STREAM));
  const chunks = [];
  for (let i = 0; i < entries.length; i += size) chunks.push(entries.slice(i, i + size));
  const parts = [];
  const handle = {
    /** Counters for tests and diagnostics: {mode, streamsOpened, reconnects, polls, ...}. */
    get stats() {
      return parts.length ? sumStats(parts) : { mode: "done", streamsOpened: 0, reconnects: 0, polls: 0 };
    },
    /** The newest task object of every watched task (null until known), by taskId. */
    get tasks() {
      const out = {};
      for (const part of parts) for (const [id, entry] of part.tasks) out[id] = entry.task;
      return out;
    },
    /** True once every task is terminal (or failed for good). */
    get done() {
      return parts.every((p) => p.stats.mode === "done");
    },
    close() {
      for (const part of parts) part.close();
    },
  };
  if (single) {
    Object.defineProperty(handle, "task", {
      get: () => (parts[0] ? parts[0].tasks.get(entries[0].taskId).task : null),
    });
  }
  let finished = 0;
  if (!chunks.length) {
    queueMicrotask(() => userAllDone([]));
    return handle;
  }
  for (const chunk of chunks) {
    const initial = (opts.initial || []).filter((t) => t && chunk.some((e) => e.taskId === t.taskId));
    const part = new Watcher(chunk, { ...opts, initial, onStats: () => userStats(handle.stats) }, single);
    part.onFinish = () => {
      finished += 1;
      if (finished === chunks.length) {
        try {
          userAllDone(Object.values(handle.tasks));
        } catch (err) {
          setTimeout(() => {
            throw err;
          });
        }
      }
    };
    parts.push(part);
  }
  // Start after the handle exists, so callbacks that fire at once can use it.
  for (const part of parts) part.start();
  return handle;
}

/**
 * Follow one task. `options`: {token, baseUrl, onUpdate(task), onDone(task),
 * onError(error), onStats(stats), initial (a task object already known), sse (false =
 * poll only), and timings (see DEFAULTS)}. Returns a handle with `close()`, `stats`, `task`.
 */
export function watchTask(taskId, options = {}) {
  if (!taskId) throw new RelayError("watchTask needs a taskId", { code: "invalid_input" });
  const { initial, ...rest } = options;
  const entries = [{ taskId: String(taskId), token: options.token || "" }];
  return makeHandle(entries, { ...rest, initial: initial ? [initial] : [] }, true);
}

/**
 * Follow several tasks over one multiplexed stream (/api/events), so a page with many
 * tasks uses one connection (one per `maxTasksPerStream` tasks, default 50, the server's
 * default limit). `tasks`: [{taskId, token}] or task objects carrying `token`.
 * Callbacks are per task (onUpdate, onDone, onError(error, taskId)); onAllDone(tasks)
 * fires once every task is finished. Returns a handle with `close()`, `stats`, `tasks`.
 */
export function watchTasks(tasks, options = {}) {
  const entries = normalizeEntries(tasks);
  const { initial, ...rest } = options;
  const known = initial || (tasks || []).filter((t) => t && typeof t === "object" && typeof t.version === "number");
  return makeHandle(entries, { ...rest, initial: known }, false);
}

/**
 * Follow every task of the signed-in user (RELAY_AUTH=jwt) on one stream:
 * `GET /api/events?mine=1`, tasks created later included (a gallery, several tabs).
 * `options`: {jwt, baseUrl, onUpdate(task), onError(err)}. The newest version of each
 * task wins (a reconnect resends the recent snapshot). Returns {close()}.
 */
export function watchMyTasks(options = {}) {
  const { jwt, baseUrl = "", onUpdate = noop, onError = noop, retryMs = 5000 } = options;
  const versions = new Map();
  const url = joinUrl(baseUrl, `/api/events?mine=1${jwt ? `&token=${encodeURIComponent(jwt)}` : ""}`);
  let source = null;
  let retry = null;
  let closed = false;
  function open() {
    if (closed) return;
    source = new EventSource(url);
    source.addEventListener("task", (event) => {
      let task;
      try {
        task = JSON.parse(event.data);
      } catch {
        return;
      }
      if ((versions.get(task.taskId) || 0) >= task.version) return;
      versions.set(task.taskId, task.version);
      onUpdate(task);
    });
    source.onerror = () => {
      // EventSource retries a dropped stream itself; a refused one (401, 403) is CLOSED.
      if (source.readyState !== EventSource.CLOSED || closed) return;
      onError(new RelayError("the stream of my tasks was refused or closed; trying again", { status: 0, code: "stream_closed" }));
      retry = setTimeout(open, retryMs);
    };
  }
  open();
  return {
    close() {
      closed = true;
      clearTimeout(retry);
      if (source) source.close();
    },
  };
}
