// The demo page: create a task, then follow it over Server-Sent Events.
const $ = (id) => document.getElementById(id);
let source = null;

async function readError(response) {
  try {
    const body = await response.json();
    return body.error ? `${body.error.message} (${body.error.code})` : `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status} with a body that is not JSON`;
  }
}

function show(task) {
  $("status").textContent = task.status;
  $("status").className = `badge ${task.status}`;
  $("task-id").textContent = task.taskId;
  $("version").textContent = `v${task.version}`;
  $("progress").value = task.status === "completed" ? 1 : (task.progress ?? (task.status === "processing" ? 0.5 : 0.05));
  const messages = {
    pending: "Waiting for the provider to start…",
    processing: task.providerResultUrls.length ? "Generated — saving the result…" : "Generating…",
    completed: "Done.",
    failed: task.error ? `Failed: ${task.error.message}` : "Failed.",
  };
  $("message").textContent = messages[task.status] ?? "";
  if (task.status === "completed" && task.resultUrls.length) {
    $("image").src = task.resultUrls[0];
    $("caption").textContent = task.resultUrls[0];
    $("result").hidden = false;
  }
}

function follow(created) {
  if (source) source.close();
  let version = 0;
  source = new EventSource(created.eventsUrl);
  source.addEventListener("task", (event) => {
    const task = JSON.parse(event.data);
    if (task.version <= version) return;
    version = task.version;
    show(task);
    if (task.status === "completed" || task.status === "failed") {
      source.close();
      $("generate").disabled = false;
    }
  });
  source.onerror = () => { $("message").textContent = "Connection interrupted — reconnecting…"; };
}

$("create").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = $("generate");
  if (button.disabled) return;
  button.disabled = true;
  $("error").hidden = true;
  $("result").hidden = true;
  try {
    const response = await fetch("/api/tasks", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prompt: $("prompt").value }),
    });
    if (!response.ok) throw new Error(await readError(response));
    const created = await response.json();
    $("task").hidden = false;
    show(created);
    follow(created);
  } catch (error) {
    $("error").textContent = `Could not create the task: ${error.message}`;
    $("error").hidden = false;
    button.disabled = false;
  }
});
