// Types for relay.js, the browser client for Relay (served at /static/relay.js).

export type TaskStatus = "pending" | "processing" | "completed" | "failed" | "cancelled";
export type TaskMode = "text-to-image" | "image-to-image";
export type ResultKind = "image" | "video" | "audio";

/** One entry of `GET /api/models`. */
export interface ModelInfo {
  id: string;
  provider: string;
  family: string;
  kind: ResultKind;
  label: string;
  prompt: { required: boolean; maxLength: number };
  /** null: the model takes no reference images. */
  referenceImages: { min: number; max: number; field: string } | null;
  /** True for models that work on an earlier task (extend, 1080p, 4K): send parentTaskId. */
  parentTask: boolean;
  options: Record<string, { type: string; values?: unknown[]; min?: number; max?: number; required?: boolean }>;
  defaults: Record<string, unknown>;
  progress: boolean;
  price: number;
  source: string;
}

/** The task object, exactly as Relay sends it (HTTP answers and SSE events alike). */
export interface Task {
  taskId: string;
  provider: string;
  model: string;
  mode: TaskMode;
  /** What the model makes. */
  kind: ResultKind;
  status: TaskStatus;
  prompt: string;
  imageUrls: string[];
  /** What the provider returned; set while `processing`. */
  providerResultUrls: string[];
  /** The final results: Relay's storage URLs once mirrored. */
  resultUrls: string[];
  error: { code: string; message: string } | null;
  /** 0..1 when the provider reports it. */
  progress: number | null;
  mirrorError?: string | null;
  /** Credits reserved for the task (RELAY_CREDITS=on); null otherwise. */
  cost?: number | null;
  createdAt: string;
  updatedAt: string;
  completedAt: string | null;
  /** +1 on every change; never decreases. */
  version: number;
}

/** `POST /api/tasks` answer: the task plus ready-to-use links. `token` is absent when the
 * server runs without per-task tokens (RELAY_AUTH=none). */
export interface CreatedTask extends Task {
  token?: string;
  statusUrl: string;
  eventsUrl: string;
}

export interface HistoryItem extends Task {
  token?: string;
  statusUrl?: string;
  eventsUrl?: string;
}

export interface HistoryPage {
  items: HistoryItem[];
  nextCursor: string | null;
}

export interface Upload {
  url: string;
  key: string;
  contentType: string;
  size: number;
}

export type RelayErrorCode =
  | "network_error"
  | "html_response"
  | "invalid_response"
  | "invalid_input"
  | "http_error"
  | string;

/** An error from Relay or from the way to it. `status` is 0 when the server could not be
 * reached; `code` and `message` come from the JSON error body when there is one. */
export class RelayError extends Error {
  constructor(
    message: string,
    init?: { status?: number; code?: string; body?: unknown; taskId?: string },
  );
  readonly name: "RelayError";
  status: number;
  code: RelayErrorCode;
  body?: unknown;
  /** Set on errors reported by a watcher for one task. */
  taskId?: string;
  /** True when asking again later may succeed (network trouble, 408, 429, 5xx). */
  readonly retryable: boolean;
}

export interface RequestOptions {
  /** Where Relay is; default "" (the page's own origin). */
  baseUrl?: string;
  signal?: AbortSignal;
  headers?: Record<string, string>;
}

export interface CreateTaskInput {
  prompt: string;
  /** Reference images: present means image-to-image. */
  imageUrls?: string[];
  model?: string;
  options?: Record<string, unknown>;
  /** For extend / 1080p / 4K models: the completed task to work on. */
  parentTaskId?: string;
}

export function createTask(
  input: CreateTaskInput,
  options?: RequestOptions & { idempotencyKey?: string },
): Promise<CreatedTask>;

/** The models; `simulated` is true when results come from Relay's built-in simulator. */
export function listModels(
  options?: { baseUrl?: string; signal?: AbortSignal },
): Promise<ModelInfo[] & { simulated: boolean }>;

export function upload(file: Blob & { name?: string }, options?: RequestOptions): Promise<Upload>;

/** A link that downloads result `index` of a completed task as a file (GET /api/download-url). */
export function downloadUrl(
  taskId: string,
  options?: { token?: string; index?: number; baseUrl?: string; signal?: AbortSignal },
): Promise<string>;

export interface Shared {
  success: true;
  shareId: string;
  shareUrl: string;
}

/** Make a completed result public (POST /api/share); a repeat within 5 s returns the same share. */
export function shareTask(
  taskId: string,
  options?: { token?: string; index?: number; prompt?: string; style?: string; baseUrl?: string; signal?: AbortSignal },
): Promise<Shared>;

/** Cancel an unfinished task (POST /api/tasks/{id}/cancel); 409 already_finished when it finished first. */
export function cancelTask(
  taskId: string,
  options?: { token?: string; baseUrl?: string; signal?: AbortSignal; headers?: Record<string, string> },
): Promise<Task>;

export function getTask(
  taskId: string,
  options?: { token?: string; baseUrl?: string; signal?: AbortSignal },
): Promise<Task>;

export function listTasks(
  filters?: { status?: TaskStatus | ""; mode?: TaskMode | ""; limit?: number; cursor?: string | null },
  options?: RequestOptions,
): Promise<HistoryPage>;

/** Parse a fetch Response the way every helper does (JSON or a readable RelayError). */
export function readResponse(response: Response): Promise<any>;

export function newIdempotencyKey(): string;
export function isTerminal(task: Pick<Task, "status"> | null | undefined): boolean;

export const MAX_TASKS_PER_STREAM: number;

export interface WatchTimings {
  /** No first event on a new stream within this many ms: fall back to polling. Default 4000. */
  firstEventTimeout?: number;
  /** A stream that dies sooner than this after opening failed "rapidly". Default 1500. */
  rapidFailureWindow?: number;
  /** Rapid stream failures in a row before polling. Default 3. */
  maxStreamFailures?: number;
  /** First poll delay (ms); grows by pollBackoff while nothing changes. Default 1000. */
  pollInterval?: number;
  pollMaxInterval?: number;
  pollBackoff?: number;
  /** Time spent polling before trying the stream again (ms). Default 15000; doubles after
   * every failed try, up to streamRetryMaxDelay (default 120000). */
  streamRetryDelay?: number;
  streamRetryMaxDelay?: number;
}

export const DEFAULTS: Readonly<Required<WatchTimings>>;

export type WatchMode = "connecting" | "stream" | "poll" | "done" | "closed";

export interface WatchStats {
  mode: WatchMode;
  /** EventSource objects created. */
  streamsOpened: number;
  /** Successful (re)connections, including EventSource's own. */
  opens: number;
  /** Times the stream was resumed after a drop (by the browser with Last-Event-ID, or by us). */
  reconnects: number;
  /** Stream error events. */
  errors: number;
  /** Switches from the stream to polling. */
  fallbacks: number;
  /** GET /api/tasks/{id} requests. */
  polls: number;
  /** Task events received on the stream. */
  events: number;
  /** Versions handed to onUpdate. */
  applied: number;
  /** Events or poll answers dropped as a duplicate or an older version. */
  duplicates: number;
  lastError: string;
  lastEventId?: string;
}

export interface UpdateInfo {
  source: "stream" | "poll" | "initial";
}

export interface WatchOptions extends WatchTimings {
  baseUrl?: string;
  /** false: never open a stream, poll only (debugging). */
  sse?: boolean;
  /** Every new version, in order; never a duplicate or an older one. */
  onUpdate?: (task: Task, info: UpdateInfo) => void;
  /** Once per task, when it is completed or failed. */
  onDone?: (task: Task) => void;
  /** A task cannot be watched (unknown task, bad or expired token): it is dropped. */
  onError?: (error: RelayError, taskId: string) => void;
  /** Whenever a counter or the mode changes. */
  onStats?: (stats: WatchStats) => void;
}

export interface WatchHandle {
  close(): void;
  readonly stats: WatchStats;
  /** The newest task object of every watched task (null until known). */
  readonly tasks: Record<string, Task | null>;
  /** Every task is finished. */
  readonly done: boolean;
}

export interface SingleWatchHandle extends WatchHandle {
  readonly task: Task | null;
}

export function watchTask(
  taskId: string,
  options?: WatchOptions & {
    token?: string;
    /** A task object already known (e.g. createTask's answer): shown at once. */
    initial?: Task;
  },
): SingleWatchHandle;

export function watchTasks(
  tasks: Array<{ taskId: string; token?: string } | (Task & { token?: string })>,
  options?: WatchOptions & {
    /** Tasks per multiplexed stream (the server's RELAY_MAX_TASKS_PER_STREAM); default 50. */
    maxTasksPerStream?: number;
    /** Fires once every task is finished. */
    onAllDone?: (tasks: Array<Task | null>) => void;
    /** Task objects already known; by default, the entries of `tasks` that are task objects. */
    initial?: Task[];
  },
): WatchHandle;

/** Follow every task of the signed-in user (RELAY_AUTH=jwt): GET /api/events?mine=1. */
export function watchMyTasks(options?: {
  jwt?: string;
  baseUrl?: string;
  onUpdate?: (task: Task) => void;
  onError?: (error: RelayError) => void;
  retryMs?: number;
}): { close(): void };
