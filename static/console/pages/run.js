// A run, live: the graph coloured by node state, a timeline with durations, streamed llm
// text, outputs and errors per node, Cancel, and Retry from failure (a failed or cancelled run).
//
// The socket is always opened with ?after=<last seq seen> (0 at first), so the server replays
// every stored event we have not seen, then streams new ones: node states are driven by events,
// and a dropped socket is reopened from where it stopped without losing or repeating any.
// The snapshot the server sends first gives the run's current state (inputs, outputs, task
// details), reconciled once the replay has caught up with it.

import { api, errorText, missingProviders, openSocket } from "../api.js";
import { $, between, formatDuration, h, pretty, showError } from "../dom.js";
import { drawGraph } from "../graph.js";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const RETRYABLE = new Set(["failed", "cancelled"]);
const CLOSE_NO_RETRY = new Set([4400, 4401, 4404]);

const state = {
  runId: null,
  status: "pending",
  lastSeq: 0,
  snapshot: null,
  startedAt: null,
  nodes: new Map(), // node id -> {state, attempt, output, error, startedAt, finishedAt, durationMs, stream}
  socket: null,
  done: false,
  connects: 0,
  retryDelay: 500,
};
let graph = null;
let drawn = null;

function node(id) {
  if (!state.nodes.has(id)) state.nodes.set(id, { state: "pending", attempt: 0, stream: "" });
  return state.nodes.get(id);
}

function setSocketState(value) {
  const el = $("#socket-state");
  el.dataset.state = value;
  el.textContent = value;
  document.body.dataset.connects = String(state.connects);
}

function setStatus(status) {
  state.status = status;
  const badge = $("#run-status");
  badge.textContent = status;
  badge.dataset.status = status;
  badge.className = `badge status-${status}`;
  const cancel = $("#cancel-run");
  cancel.hidden = FINISHED.has(status);
  $("#retry").hidden = !RETRYABLE.has(status);
}

// --- Rendering -----------------------------------------------------------------------------
// An output kept in object storage that was not inlined (events always carry the reference; an
// answer past its inline budget too): a link that downloads it, or why it cannot be.
function showOutput(element, value, empty) {
  const stored = value && typeof value === "object" && !Array.isArray(value) ? value.$stored : null;
  if (!stored || typeof stored.url !== "string") {
    element.textContent = value === undefined || value === null ? empty : pretty(value);
    return;
  }
  const size = `${Math.ceil((stored.bytes || 0) / 1024)} KiB`;
  element.replaceChildren(
    stored.error
      ? `Stored output (${size}): ${stored.error}`
      : h("a", { href: stored.url, target: "_blank", rel: "noopener" }, `Open the stored output (${size} of JSON)`),
  );
}

function renderNode(id) {
  const info = node(id);
  drawn.setState(id, info.state);
  const card = $(`#node-details [data-node-id="${CSS.escape(id)}"]`);
  if (!card) return;
  const badge = card.querySelector(".badge");
  badge.textContent = info.state;
  badge.className = `badge status-${info.state}`;
  card.dataset.state = info.state;
  const meta = [];
  if (info.attempt > 1) meta.push(`attempt ${info.attempt}`);
  const ms = info.durationMs ?? between(info.startedAt, info.finishedAt);
  if (ms !== null && ms !== undefined) meta.push(formatDuration(ms));
  card.querySelector(".node-meta").textContent = meta.join(" · ");
  const stream = card.querySelector(".node-stream");
  stream.textContent = info.stream;
  stream.hidden = !info.stream;
  const output = card.querySelector(".node-output");
  showOutput(output, info.output, "");
  output.hidden = !output.textContent;
  const error = card.querySelector(".node-error");
  error.textContent = info.error || "";
  error.hidden = !info.error;
}

function renderNodeCards() {
  // In the drawing's order: layer by layer, from the start.
  const byId = new Map((graph.nodes || []).map((n) => [n.id, n]));
  const cards = drawn.nodeIds.map((id) => byId.get(id)).filter(Boolean).map((n) =>
    h(
      "details",
      { class: "node-card", "data-node-id": n.id, "data-state": "pending" },
      h(
        "summary",
        {},
        h("span", { class: "badge status-pending" }, "pending"),
        " ",
        h("strong", {}, n.name || n.id),
        " ",
        h("span", { class: "muted small" }, n.type),
        " ",
        h("span", { class: "muted small node-meta" }),
      ),
      h("pre", { class: "node-stream", hidden: true, "aria-live": "polite" }),
      h("pre", { class: "json node-output", hidden: true }),
      h("p", { class: "error node-error", hidden: true }),
    ),
  );
  $("#node-details").replaceChildren(...cards);
}

function selectNode(id) {
  const card = $(`#node-details [data-node-id="${CSS.escape(id)}"]`);
  if (!card) return;
  card.open = true;
  card.scrollIntoView({ behavior: "smooth", block: "nearest" });
}

function renderRunData(run) {
  $("#run-inputs").textContent = pretty(run.inputs ?? {});
  showOutput($("#run-outputs"), run.outputs, "—");
  const error = $("#run-error");
  error.textContent = run.error || "";
  error.hidden = !run.error;
}

function timelineEntry(event) {
  let detail = "";
  let ms = null;
  const data = event.data || {};
  const info = event.node ? node(event.node) : null;
  switch (event.type) {
    case "node.started":
      detail = data.attempt > 1 ? `attempt ${data.attempt}` : "";
      break;
    case "node.succeeded":
      ms = data.duration_ms ?? between(info?.startedAt, event.at);
      break;
    case "node.failed":
      ms = between(info?.startedAt, event.at);
      detail = data.error || "";
      break;
    case "node.retrying":
      detail = `${data.error || ""}${data.delay_s !== undefined ? ` (again in ${data.delay_s} s)` : ""}`;
      break;
    case "node.skipped":
      detail = data.reason || "";
      break;
    case "run.succeeded":
    case "run.failed":
    case "run.cancelled":
      ms = between(state.startedAt, event.at);
      detail = data.error || "";
      break;
    default:
  }
  const offset = between(state.startedAt, event.at);
  const kind = event.type.split(".")[1];
  return h(
    "li",
    { "data-seq": event.seq, "data-type": event.type, class: `tl-${kind}` },
    h("span", { class: "tl-at muted small" }, offset !== null && offset >= 0 ? `+${formatDuration(offset)}` : ""),
    h("span", { class: "tl-type" }, event.type),
    event.node ? h("code", { class: "tl-node" }, event.node) : null,
    ms !== null && ms !== undefined ? h("span", { class: "tl-duration" }, formatDuration(ms)) : null,
    detail ? h("span", { class: "tl-detail muted" }, detail) : null,
  );
}

// --- Events --------------------------------------------------------------------------------
function applyEvent(event) {
  if (typeof event.seq !== "number" || event.seq <= state.lastSeq) return; // seen already
  state.lastSeq = event.seq;
  if (event.type === "run.started" && !state.startedAt) state.startedAt = event.at;
  const data = event.data || {};
  // Sub-graph (iteration) events carry a scope; the drawing shows the top level only.
  const topLevel = event.node && !data.scope;
  if (event.type !== "node.delta") $("#timeline").append(timelineEntry(event));
  if (topLevel) {
    const info = node(event.node);
    switch (event.type) {
      case "node.started":
        info.state = "running";
        info.attempt = data.attempt || 1;
        info.startedAt = event.at;
        info.error = "";
        break;
      case "node.retrying":
        info.state = "retrying";
        info.error = data.error || "";
        break;
      case "node.succeeded":
        info.state = "succeeded";
        info.output = data.output;
        info.finishedAt = event.at;
        info.durationMs = data.duration_ms;
        break;
      case "node.failed":
        info.state = "failed";
        info.error = data.error || "";
        info.finishedAt = event.at;
        break;
      case "node.skipped":
        info.state = "skipped";
        break;
      case "node.delta":
        info.stream += typeof data.text === "string" ? data.text : "";
        break;
      default:
    }
    renderNode(event.node);
  }
  if (event.type === "run.started") setStatus("running");
  if (event.type.startsWith("run.") && FINISHED.has(event.type.slice(4))) {
    setStatus(event.type.slice(4));
    finish();
  }
  reconcile();
}

function applySnapshot(message) {
  state.snapshot = message;
  const run = message.data || {};
  renderRunData(run);
  if (!state.startedAt && run.started_at) state.startedAt = run.started_at;
  if (message.seq >= state.lastSeq && run.status) setStatus(run.status);
  reconcile();
}

// Once the events up to the snapshot are applied, fill in what events do not carry (or what a
// purged event log lost): final task states, outputs, errors, times.
function reconcile() {
  const snap = state.snapshot;
  if (!snap || state.lastSeq < snap.seq) return;
  state.snapshot = null;
  for (const task of snap.data?.tasks || []) {
    if (task.scope) continue;
    const info = node(task.node_id);
    if (info.state === "pending" || FINISHED.has(task.status) || task.status === "skipped") info.state = task.status;
    info.attempt = task.attempt || info.attempt;
    if (task.output !== null && task.output !== undefined) info.output = task.output;
    if (task.error) info.error = task.error;
    info.startedAt ||= task.started_at;
    info.finishedAt ||= task.finished_at;
    renderNode(task.node_id);
  }
  if (FINISHED.has(snap.data?.status)) finish();
}

// A failed llm node whose provider is not one of yours: say what is missing and where to add it.
async function explainMissingProviders(run) {
  const failed = new Set((run.tasks || []).filter((t) => !t.scope && t.status === "failed").map((t) => t.node_id));
  if (!failed.size) return;
  let missing;
  try {
    missing = (await missingProviders(graph)).filter((ref) => failed.has(ref.node));
  } catch {
    return; // the run's own error still says it
  }
  if (!missing.length || $("#provider-notice")) return;
  const href = `/providers/?workflow=${encodeURIComponent(run.workflow)}`;
  const nodes = missing.map((ref) => `“${ref.name}”`).join(", ");
  const notice = h(
    "div",
    { class: "notice", id: "provider-notice", role: "alert", "data-testid": "provider-missing" },
    h("h2", {}, "An LLM provider is missing"),
    h(
      "p",
      {},
      `${missing.length > 1 ? "Nodes" : "Node"} ${nodes} ${missing.length > 1 ? "name" : "names"} the LLM provider `,
      h("code", {}, missing[0].provider),
      ", which is not among the workflow owner's providers.",
    ),
    h("p", {}, h("a", { href, "data-testid": "providers-link" }, "Add a provider on the Providers page"), " and choose it for this workflow there, then run it again."),
  );
  $('[data-role="error"]').after(notice);
}

async function finish() {
  if (state.done) return;
  state.done = true;
  if (state.socket) state.socket.close(1000);
  setSocketState("closed");
  try {
    const run = await api(`runs/${state.runId}/`);
    renderRunData(run);
    for (const task of run.tasks || []) {
      if (task.scope) continue;
      const info = node(task.node_id);
      info.state = task.status;
      if (task.output !== null && task.output !== undefined) info.output = task.output;
      if (task.error) info.error = task.error;
      renderNode(task.node_id);
    }
    setStatus(run.status);
    await explainMissingProviders(run);
  } catch (error) {
    showError(errorText(error.body) || error.message);
  }
  document.body.dataset.finished = "true";
}

// --- The socket ----------------------------------------------------------------------------
function retryLater() {
  setSocketState("disconnected");
  setTimeout(connect, state.retryDelay);
  state.retryDelay = Math.min(state.retryDelay * 2, 10000);
}

async function connect() {
  if (state.done) return;
  state.connects += 1;
  setSocketState(state.connects > 1 ? "reconnecting" : "connecting");
  let socket;
  try {
    socket = await openSocket(`/ws/runs/${state.runId}/?after=${state.lastSeq}`);
  } catch {
    retryLater();
    return;
  }
  if (state.done) {
    socket.close();
    return;
  }
  state.socket = socket;
  socket.onopen = () => {
    state.retryDelay = 500;
    setSocketState("open");
  };
  socket.onmessage = (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    if (event.type === "snapshot") applySnapshot(event);
    else applyEvent(event);
  };
  socket.onclose = (event) => {
    if (state.socket !== socket || state.done) return;
    state.socket = null;
    if (CLOSE_NO_RETRY.has(event.code)) {
      setSocketState("closed");
      showError(event.code === 4401 ? "Sign in again to follow this run." : "This run cannot be followed.");
      return;
    }
    retryLater();
  };
}

function setupCancel() {
  const button = $("#cancel-run");
  button.addEventListener("click", async () => {
    button.disabled = true;
    button.textContent = "Cancelling…";
    try {
      const answer = await api(`runs/${state.runId}/cancel/`, { method: "POST", body: {} });
      if (FINISHED.has(answer.status)) {
        setStatus(answer.status);
        finish();
      }
    } catch (error) {
      showError(errorText(error.body) || error.message);
      button.disabled = false;
      button.textContent = "Cancel";
    }
  });
}

// A new run linked to this one (`retry_of`) that reuses the outputs of the nodes that succeeded
// and executes the rest; followed on its own page. A 409 (a succeeded node changed in the draft,
// or the run is not one to retry) says why, naming the nodes.
function setupRetry() {
  const button = $("#retry-run");
  button.addEventListener("click", async () => {
    button.disabled = true;
    button.textContent = "Retrying…";
    try {
      const graph = $("#retry-current").checked ? "current" : "same";
      const answer = await api(`runs/${state.runId}/retry/`, { method: "POST", body: { graph } });
      window.location.assign(`/runs/${encodeURIComponent(answer.id)}/`);
    } catch (error) {
      showError(errorText(error.body) || error.message);
      button.disabled = false;
      button.textContent = "Retry from failure";
    }
  });
}

export function init(data) {
  state.runId = data.run;
  graph = JSON.parse($("#run-graph").textContent);
  drawn = drawGraph($("#graph"), graph, { onSelect: selectNode });
  renderNodeCards();
  setupCancel();
  setupRetry();
  setStatus("pending");
  $("#cancel-run").hidden = false;
  // A hook for checks and for the curious: drop the socket as a network failure would.
  window.weftRun = {
    state,
    dropSocket() {
      if (state.socket) state.socket.close(4000, "dropped");
    },
  };
  connect();
}
