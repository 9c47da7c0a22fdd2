// The demo page: create a task, follow it live, browse the history. Built on relay.js only.
//
// For tests and debugging, watcher counters are mirrored into data-* attributes:
//   #task    data-task-id, data-status, data-versions ("1,2,3": every version applied, in
//            order), data-streams-opened, data-reconnects, data-polls, data-mode, ...
//   #gallery data-loaded, data-count, data-watching, data-completed, and the same counters
//            for the one multiplexed stream that follows every unfinished history item.
// `?sse=0` forces polling (no EventSource) for debugging.

import {
  cancelTask,
  createTask,
  downloadUrl,
  isTerminal,
  listModels,
  listTasks,
  newIdempotencyKey,
  shareTask,
  upload,
  watchTask,
  watchTasks,
} from "./relay.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(window.location.search);
const SSE = params.get("sse") !== "0";
const PAGE_SIZE = 24;
const DEFAULT_MODEL = { "text-to-image": "google/nano-banana", "image-to-image": "google/nano-banana-edit" };
// The mode a model forces (it needs reference images, or takes none); filled from
// GET /api/models, with the page's built-in choices until that answers.
const MODEL_MODE = { "google/nano-banana": "text-to-image", "google/nano-banana-edit": "image-to-image" };
const KIND_LABEL = { image: "Images", video: "Video", audio: "Music" };
const STATUS_LABEL = {
  pending: "Pending",
  processing: "Processing",
  completed: "Completed",
  failed: "Failed",
  cancelled: "Cancelled",
};
const MODE_TEXT = {
  idle: "Ready",
  connecting: "Connecting…",
  stream: "Live",
  poll: "Polling",
  done: "Up to date",
  closed: "Idle",
};

// --------------------------------------------------------------------------- helpers

function errorText(err) {
  if (!err) return "something went wrong";
  const detail = [];
  if (err.code && !["http_error", "html_response", "network_error", "invalid_input"].includes(err.code)) {
    detail.push(err.code);
  }
  if (err.status && !String(err.message).includes(`status ${err.status}`)) detail.push(`HTTP ${err.status}`);
  return `${err.message || String(err)}${detail.length ? ` (${detail.join(", ")})` : ""}`;
}

function showError(el, text) {
  el.textContent = text;
  el.hidden = !text;
}

function writeStats(el, stats) {
  el.dataset.streamsOpened = String(stats.streamsOpened || 0);
  el.dataset.reconnects = String(stats.reconnects || 0);
  el.dataset.polls = String(stats.polls || 0);
  el.dataset.mode = stats.mode || "idle";
  el.dataset.fallbacks = String(stats.fallbacks || 0);
  el.dataset.events = String(stats.events || 0);
  el.dataset.duplicates = String(stats.duplicates || 0);
}

function formatSeconds(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

const relative = typeof Intl !== "undefined" && Intl.RelativeTimeFormat
  ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" })
  : null;

function ago(iso) {
  const then = Date.parse(iso);
  if (!relative || Number.isNaN(then)) return "";
  const seconds = Math.round((then - Date.now()) / 1000);
  if (Math.abs(seconds) < 60) return relative.format(seconds, "second");
  if (Math.abs(seconds) < 3600) return relative.format(Math.round(seconds / 60), "minute");
  if (Math.abs(seconds) < 86400) return relative.format(Math.round(seconds / 3600), "hour");
  return relative.format(Math.round(seconds / 86400), "day");
}

function progressOf(task) {
  if (task.status === "completed") return 100;
  if (typeof task.progress === "number") return Math.round(Math.min(Math.max(task.progress, 0), 1) * 100);
  if (task.status === "processing" && task.providerResultUrls && task.providerResultUrls.length) return 95;
  return null; // indeterminate
}

function messageOf(task, elapsed) {
  switch (task.status) {
    case "pending":
      return "Queued at the provider — waiting for it to start…";
    case "processing":
      return task.providerResultUrls && task.providerResultUrls.length
        ? "Generated — saving the result…"
        : "Generating your image…";
    case "completed":
      return `Done${elapsed ? ` in ${formatSeconds(elapsed)}` : ""}.`;
    case "failed":
      return "The generation failed.";
    case "cancelled":
      return "Cancelled.";
    default:
      return "";
  }
}

// --------------------------------------------------------------------------- connection indicator

const indicator = { current: null, gallery: null };

function updateIndicator() {
  const modes = [indicator.current, indicator.gallery].filter(Boolean);
  let mode = "idle";
  for (const candidate of ["poll", "connecting", "stream"]) {
    if (modes.includes(candidate)) {
      mode = candidate;
      break;
    }
  }
  if (mode === "idle" && modes.some((m) => m === "done")) mode = "done";
  $("conn").dataset.mode = mode;
  $("conn-text").textContent = SSE ? MODE_TEXT[mode] || mode : `${MODE_TEXT[mode] || mode} (streaming off)`;
}

// --------------------------------------------------------------------------- composer

const composer = {
  creating: false,
  uploadPromise: null,
  uploadedUrl: "",
  previewUrl: "",
};

function currentMode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

function applyMode(mode, { fromModel = false } = {}) {
  $("reference").hidden = mode !== "image-to-image";
  if (!fromModel) {
    const model = $("model").value;
    if (MODEL_MODE[model] && MODEL_MODE[model] !== mode) $("model").value = DEFAULT_MODEL[mode];
  }
  $("model-id").textContent = $("model").value;
}

for (const radio of document.querySelectorAll('input[name="mode"]')) {
  radio.addEventListener("change", () => applyMode(currentMode()));
}

// The model list comes from the catalogue: every model a person can run from this form
// (not the ones that extend an earlier task, nor those needing settings the form lacks).
async function loadModels() {
  let models;
  try {
    models = await listModels();
  } catch {
    return; // keep the built-in choices
  }
  const usable = models.filter(
    (m) => !m.parentTask && !Object.values(m.options).some((o) => o.required) && m.prompt.required !== false,
  );
  const select = $("model");
  const chosen = select.value;
  select.replaceChildren();
  for (const kind of ["image", "video", "audio"]) {
    const group = document.createElement("optgroup");
    group.label = KIND_LABEL[kind];
    for (const m of usable.filter((x) => x.kind === kind)) {
      const option = document.createElement("option");
      option.value = m.id;
      option.textContent = m.label;
      option.dataset.kind = m.kind;
      group.append(option);
      const images = m.referenceImages;
      if (!images || images.max === 0) MODEL_MODE[m.id] = "text-to-image";
      else if (images.min > 0) MODEL_MODE[m.id] = "image-to-image";
    }
    if (group.children.length) select.append(group);
  }
  select.value = usable.some((m) => m.id === chosen) ? chosen : DEFAULT_MODEL[currentMode()];
  select.dataset.loaded = String(usable.length);
  $("simulated").hidden = !models.simulated;
  applyMode(currentMode(), { fromModel: true });
}

$("model").addEventListener("change", () => {
  const mode = MODEL_MODE[$("model").value];
  if (mode && mode !== currentMode()) $(mode === "image-to-image" ? "mode-i2i" : "mode-t2i").checked = true;
  applyMode(currentMode(), { fromModel: true });
});

$("file").addEventListener("change", () => {
  const file = $("file").files && $("file").files[0];
  composer.uploadedUrl = "";
  if (composer.previewUrl) URL.revokeObjectURL(composer.previewUrl);
  composer.previewUrl = "";
  $("reference-preview").hidden = true;
  showError($("form-error"), "");
  if (!file) {
    composer.uploadPromise = null;
    $("upload-status").textContent = "No image chosen.";
    return;
  }
  composer.previewUrl = URL.createObjectURL(file);
  $("reference-preview").src = composer.previewUrl;
  $("reference-preview").hidden = false;
  $("upload-status").textContent = `Uploading ${file.name}…`;
  $("reference").dataset.upload = "uploading";
  const attempt = upload(file).then(
    (result) => {
      if (composer.uploadPromise !== attempt) return result;
      composer.uploadedUrl = result.url;
      $("upload-status").textContent = `Uploaded ${file.name} (${Math.max(1, Math.round(result.size / 1024))} KB).`;
      $("reference").dataset.upload = "done";
      return result;
    },
    (err) => {
      if (composer.uploadPromise === attempt) {
        $("upload-status").textContent = `Upload failed: ${errorText(err)}. Choose the file again to retry.`;
        $("reference").dataset.upload = "failed";
        $("file").value = ""; // so choosing the same file again is a change, and retries
      }
      throw err;
    },
  );
  attempt.catch(() => {}); // reported above; submit awaits it again and reports there too
  composer.uploadPromise = attempt;
});

function setCreating(on) {
  composer.creating = on;
  const button = $("generate");
  button.disabled = on;
  button.setAttribute("aria-busy", on ? "true" : "false");
  $("generate-text").textContent = on ? "Creating…" : "Generate";
}

async function referenceUrls() {
  if (currentMode() !== "image-to-image") return [];
  const pasted = $("image-url").value.trim();
  if (composer.uploadPromise) {
    try {
      await composer.uploadPromise;
    } catch (err) {
      if (!pasted) throw new Error(`the reference image could not be uploaded: ${errorText(err)}`);
    }
    if (composer.uploadedUrl) return [composer.uploadedUrl];
  }
  if (pasted) {
    if (!/^https?:\/\//i.test(pasted)) throw new Error("the image URL must start with http:// or https://");
    return [pasted];
  }
  throw new Error("image-to-image needs a reference image: choose a file or paste a URL");
}

$("create").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (composer.creating) return; // a second click while the first is on its way
  showError($("form-error"), "");
  const prompt = $("prompt").value.trim();
  if (!prompt) {
    showError($("form-error"), "Write a prompt first.");
    $("prompt").focus();
    return;
  }
  setCreating(true);
  const idempotencyKey = newIdempotencyKey(); // one per click: a retried request is not paid twice
  try {
    const imageUrls = await referenceUrls();
    const created = await createTask({ prompt, imageUrls, model: $("model").value }, { idempotencyKey });
    follow(created);
    gallery.addCreated(created);
  } catch (err) {
    showError($("form-error"), `Could not create the task: ${errorText(err)}`);
  } finally {
    setCreating(false);
  }
});

// --------------------------------------------------------------------------- the current task

const current = { handle: null, task: null, token: "", versions: [], startedAt: 0, timer: null };

function renderElapsed() {
  const task = current.task;
  if (!task) return;
  const end = isTerminal(task) && task.completedAt ? Date.parse(task.completedAt) : Date.now();
  const elapsed = end - current.startedAt;
  $("elapsed").textContent = Number.isNaN(elapsed) ? "" : formatSeconds(elapsed);
  return elapsed;
}

function renderTask(task) {
  current.task = task;
  const section = $("task");
  section.dataset.taskId = task.taskId;
  section.dataset.status = task.status;
  section.dataset.versions = current.versions.join(",");
  section.dataset.version = String(task.version);
  $("task-empty").hidden = true;
  $("task-body").hidden = false;
  $("status").textContent = STATUS_LABEL[task.status] || task.status;
  $("status").className = `badge ${task.status}`;
  $("task-id").textContent = task.taskId;
  $("task-model").textContent = `${task.model} · ${task.kind && task.kind !== "image" ? task.kind : task.mode}`;
  $("version").textContent = String(task.version);
  const percent = progressOf(task);
  const bar = $("progress");
  if (percent === null) bar.removeAttribute("value");
  else bar.value = percent;
  bar.hidden = task.status === "failed" || task.status === "cancelled";
  const elapsed = renderElapsed();
  $("message").textContent = messageOf(task, elapsed);
  if (task.status === "failed") {
    const err = task.error || {};
    showError($("task-error"), `${err.message || "the provider reported a failure"}${err.code ? ` (${err.code})` : ""}`);
  } else {
    showError($("task-error"), "");
  }
  const url = task.status === "completed" && task.resultUrls && task.resultUrls[0];
  if (url) {
    const kind = task.kind || "image";
    const img = $("image");
    $("image-link").hidden = kind !== "image";
    if (kind === "image" && img.getAttribute("src") !== url) {
      section.dataset.imageLoaded = "false";
      img.alt = `Generated image: ${task.prompt}`;
      img.src = url;
      $("image-link").href = url;
    }
    $("caption").textContent = task.prompt;
    renderMedia(task, kind);
    $("result").hidden = false;
  } else {
    $("result").hidden = true;
  }
  $("cancel").hidden = isTerminal(task);
  if (isTerminal(task)) {
    clearInterval(current.timer);
    current.timer = null;
  }
}

// Video and audio get players; every result after the first image (Midjourney's four,
// Suno's two tracks) is shown too, in order.
function renderMedia(task, kind) {
  const box = $("media");
  const urls = kind === "image" ? task.resultUrls.slice(1) : task.resultUrls;
  if (box.dataset.urls === urls.join(" ")) return;
  box.dataset.urls = urls.join(" ");
  box.replaceChildren();
  urls.forEach((src, n) => {
    let el;
    if (kind === "video") {
      el = document.createElement("video");
      el.controls = true;
      el.playsInline = true;
      el.preload = "metadata";
    } else if (kind === "audio") {
      el = document.createElement("audio");
      el.controls = true;
      el.preload = "metadata";
    } else {
      el = document.createElement("img");
      el.alt = `Generated image ${n + 2}: ${task.prompt}`;
      el.loading = "lazy";
    }
    if (kind !== "image") el.setAttribute("aria-label", `${kind === "video" ? "Video" : "Track"} ${n + 1}: ${task.prompt}`);
    el.className = `media-${kind}`;
    el.src = src;
    box.append(el);
  });
}

$("image").addEventListener("load", () => {
  $("task").dataset.imageLoaded = "true";
});
$("image").addEventListener("error", () => {
  $("task").dataset.imageLoaded = "error";
  showError($("task-error"), "The image could not be loaded from its URL.");
});

// Download and Share work on the finished task shown above (the legacy routes, which
// `relay demo` turns on; the task's token is the credential).
$("download").addEventListener("click", async () => {
  const task = current.task;
  if (!task || task.status !== "completed") return;
  try {
    const url = await downloadUrl(task.taskId, { token: current.token });
    $("task").dataset.downloadUrl = url;
    const link = document.createElement("a");
    link.href = url;
    link.download = "";
    document.body.append(link);
    link.click();
    link.remove();
  } catch (err) {
    showError($("task-error"), `Download failed: ${errorText(err)}`);
  }
});

$("cancel").addEventListener("click", async () => {
  const task = current.task;
  if (!task || isTerminal(task)) return;
  try {
    renderTask(await cancelTask(task.taskId, { token: current.token }));
  } catch (err) {
    showError($("task-error"), `Cancel failed: ${errorText(err)}`);
  }
});

$("share").addEventListener("click", async () => {
  const task = current.task;
  if (!task || task.status !== "completed") return;
  try {
    const shared = await shareTask(task.taskId, { token: current.token });
    const link = $("share-link");
    link.href = shared.shareUrl;
    link.textContent = shared.shareUrl;
    link.hidden = false;
    $("task").dataset.shareUrl = shared.shareUrl;
  } catch (err) {
    showError($("task-error"), `Sharing failed: ${errorText(err)}`);
  }
});

function follow(created) {
  if (current.handle) current.handle.close();
  $("share-link").hidden = true;
  clearInterval(current.timer);
  current.versions = [];
  current.task = null;
  current.token = created.token || "";
  current.startedAt = Date.parse(created.createdAt) || Date.now();
  const section = $("task");
  section.dataset.imageLoaded = "false";
  $("image").removeAttribute("src");
  $("result").hidden = true;
  current.timer = setInterval(renderElapsed, 1000);
  current.handle = watchTask(created.taskId, {
    token: created.token,
    initial: created,
    sse: SSE,
    onUpdate(task) {
      current.versions.push(task.version);
      renderTask(task);
      gallery.update(task);
    },
    onError(err) {
      section.dataset.status = "error";
      showError($("task-error"), `Lost track of the task: ${errorText(err)}`);
      clearInterval(current.timer);
    },
    onStats(stats) {
      writeStats(section, stats);
      indicator.current = stats.mode;
      updateIndicator();
      $("transport").textContent =
        stats.mode === "stream" ? "live" : stats.mode === "poll" ? "polling" : stats.mode === "connecting" ? "connecting…" : "";
    },
  });
  writeStats(section, current.handle.stats);
}

// --------------------------------------------------------------------------- history gallery

const gallery = {
  tiles: new Map(), // taskId -> {el, task}
  handle: null,
  cursor: null,
  loading: false,
  enabled: true,
  generation: 0,

  filters() {
    return { mode: $("filter-mode").value, status: $("filter-status").value };
  },

  matches(task) {
    const { mode, status } = this.filters();
    return (!mode || task.mode === mode) && (!status || task.status === status);
  },

  section() {
    return $("gallery");
  },

  counts() {
    const section = this.section();
    section.dataset.count = String(this.tiles.size);
    let completed = 0;
    for (const { task } of this.tiles.values()) if (task.status === "completed") completed += 1;
    section.dataset.completed = String(completed);
  },

  renderTile(el, task) {
    el.dataset.taskId = task.taskId;
    el.dataset.status = task.status;
    el.querySelector(".tile-prompt").textContent = task.prompt;
    el.querySelector(".tile-prompt").title = task.prompt;
    const badge = el.querySelector(".tile-status");
    badge.textContent = STATUS_LABEL[task.status] || task.status;
    badge.className = `badge tile-status ${task.status}`;
    el.querySelector(".tile-model").textContent = `${task.model} · ${ago(task.createdAt)}`;
    const media = el.querySelector(".tile-media");
    const img = el.querySelector(".tile-img");
    const url = task.status === "completed" && task.resultUrls && task.resultUrls[0];
    const kind = task.kind || "image";
    if (url) {
      if (kind === "image" && img.getAttribute("src") !== url) {
        img.alt = task.prompt;
        img.src = url;
      }
      img.hidden = kind !== "image";
      media.href = url;
      media.setAttribute("aria-label", `Open the ${kind === "audio" ? "track" : kind} for: ${task.prompt}`);
      const placeholder = el.querySelector(".tile-placeholder");
      placeholder.hidden = kind === "image";
      placeholder.textContent = kind === "video" ? "▶ Video" : kind === "audio" ? "♪ Music" : "";
    } else {
      img.hidden = true;
      media.removeAttribute("href");
      media.removeAttribute("aria-label");
      el.querySelector(".tile-placeholder").hidden = false;
      el.querySelector(".tile-placeholder").textContent = "";
    }
    const error = el.querySelector(".tile-error");
    showError(error, task.status === "failed" && task.error ? task.error.message : "");
  },

  makeTile(task) {
    const el = $("card-template").content.firstElementChild.cloneNode(true);
    const img = el.querySelector(".tile-img");
    img.addEventListener("load", () => {
      el.dataset.imageLoaded = "true";
    });
    this.renderTile(el, task);
    return el;
  },

  /** A newer version of a task the page knows (from any watcher). */
  update(task) {
    const tile = this.tiles.get(task.taskId);
    if (!tile || task.version < tile.task.version) return;
    tile.task = task;
    this.renderTile(tile.el, task);
    this.counts();
  },

  addCreated(created) {
    if (!this.enabled || this.tiles.has(created.taskId) || !this.matches(created)) return;
    const el = this.makeTile(created);
    this.tiles.set(created.taskId, { el, task: created });
    $("gallery-grid").prepend(el);
    $("gallery-status").textContent = "";
    this.counts();
  },

  watchUnfinished() {
    if (this.handle) this.handle.close();
    this.handle = null;
    const section = this.section();
    const open = [...this.tiles.values()].map((t) => t.task).filter((t) => !isTerminal(t));
    section.dataset.watching = String(open.length);
    if (!open.length) {
      indicator.gallery = null;
      updateIndicator();
      return;
    }
    // One multiplexed stream for every unfinished item: one connection, however many tasks.
    this.handle = watchTasks(open, {
      sse: SSE,
      onUpdate: (task) => this.update(task),
      onError: (err, taskId) => {
        const tile = this.tiles.get(taskId);
        if (tile) showError(tile.el.querySelector(".tile-error"), errorText(err));
      },
      onStats: (stats) => {
        writeStats(section, stats);
        indicator.gallery = stats.mode;
        updateIndicator();
      },
    });
    writeStats(section, this.handle.stats);
  },

  async load({ more = false } = {}) {
    if (this.loading && more) return;
    const generation = ++this.generation;
    this.loading = true;
    const section = this.section();
    const status = $("gallery-status");
    const grid = $("gallery-grid");
    section.setAttribute("aria-busy", "true");
    if (!more) status.textContent = "Loading…";
    try {
      const page = await listTasks({ ...this.filters(), limit: PAGE_SIZE, cursor: more ? this.cursor : null });
      if (generation !== this.generation) return;
      if (!more) {
        grid.replaceChildren();
        this.tiles.clear();
      }
      for (const task of page.items) {
        if (this.tiles.has(task.taskId)) continue;
        const el = this.makeTile(task);
        this.tiles.set(task.taskId, { el, task });
        grid.append(el);
      }
      this.cursor = page.nextCursor || null;
      $("load-more").hidden = !this.cursor;
      status.textContent = this.tiles.size ? "" : "Nothing here yet — generate something above.";
      this.counts();
      this.watchUnfinished();
    } catch (err) {
      if (generation !== this.generation) return;
      if (err.code === "history_disabled") {
        this.enabled = false;
        status.textContent = `History is turned off on this server: ${err.message}.`;
        $("refresh").hidden = true;
        document.querySelector(".filters").hidden = true;
      } else {
        status.textContent = `Could not load the history: ${errorText(err)}`;
      }
    } finally {
      if (generation === this.generation) {
        this.loading = false;
        section.setAttribute("aria-busy", "false");
        section.dataset.loaded = "true";
      }
    }
  },
};

$("filter-mode").addEventListener("change", () => gallery.load());
$("filter-status").addEventListener("change", () => gallery.load());
$("refresh").addEventListener("click", () => gallery.load());
$("load-more").addEventListener("click", () => gallery.load({ more: true }));

window.addEventListener("pagehide", () => {
  if (current.handle) current.handle.close();
  if (gallery.handle) gallery.handle.close();
});
window.addEventListener("pageshow", (event) => {
  if (!event.persisted) return; // restored from the back/forward cache: pick up again
  if (current.task && !isTerminal(current.task)) follow({ ...current.task, token: current.token });
  if (gallery.enabled) gallery.load();
});

// "12 seconds ago" stays true while the page is open.
setInterval(() => {
  for (const { el, task } of gallery.tiles.values()) {
    el.querySelector(".tile-model").textContent = `${task.model} · ${ago(task.createdAt)}`;
  }
}, 10_000);

applyMode(currentMode());
loadModels();
updateIndicator();
if (!SSE) $("footer-mode").textContent = "Streaming is off (?sse=0): polling only.";
gallery.load();
