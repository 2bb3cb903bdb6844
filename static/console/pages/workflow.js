// A workflow: the canvas editor of its draft (static/console/editor/, built from frontend/editor/)
// with live validation, runs that light up in place and "try this node"; the same draft as JSON;
// the saved graph with a run form made from the start node's inputs; its runs (live), its
// versions and publishing.

import { api, ApiError, errorText, missingProviders, openSocket } from "../api.js";
import { $, between, formatDuration, formatTime, h, pretty, showError } from "../dom.js";
import { dslShapeIssues, loadDslSchema } from "../dsl.js";
import { drawGraph, fillLegend } from "../graph.js";
import { initFailurePolicy, initTriggers } from "./workflow-triggers.js";

let workflowId = null;
let workflow = null;
let canvas = null; // the canvas editor's handle, once mounted
let dirty = false; // the draft on screen differs from the saved one

function inputField(spec, prefix = "input-") {
  const type = spec.type || "string";
  const name = spec.name;
  const id = `${prefix}${name}`;
  const label = [name, spec.required ? " *" : "", spec.description ? ` — ${spec.description}` : ""].join("");
  const common = { id, name, "data-type": type, required: spec.required && type !== "boolean" ? true : null };
  let control;
  if (type === "boolean") {
    control = h("input", { ...common, type: "checkbox", checked: spec.default === true ? true : null });
    return h("label", { for: id, class: "check" }, control, ` ${label}`);
  }
  if (type === "object" || type === "array") {
    control = h("textarea", { ...common, rows: 3, placeholder: type === "object" ? "{}" : "[]", spellcheck: "false" });
    if (spec.default !== undefined && spec.default !== null) control.value = JSON.stringify(spec.default);
  } else {
    const numeric = type === "number" || type === "integer";
    control = h("input", { ...common, type: numeric ? "number" : "text", step: type === "number" ? "any" : null });
    // No default (or a null one) leaves the field empty, not "null".
    if (spec.default !== undefined && spec.default !== null) control.value = String(spec.default);
  }
  return h("label", { for: id }, label, control);
}

function readInputs(form, specs) {
  const inputs = {};
  for (const spec of specs) {
    const control = form.elements.namedItem(spec.name);
    const type = spec.type || "string";
    if (type === "boolean") {
      inputs[spec.name] = control.checked;
      continue;
    }
    const raw = control.value;
    if (raw === "") continue;
    if (type === "number" || type === "integer") inputs[spec.name] = Number(raw);
    else if (type === "object" || type === "array") {
      try {
        inputs[spec.name] = JSON.parse(raw);
      } catch {
        throw new Error(`${spec.name}: not valid JSON.`);
      }
    } else inputs[spec.name] = raw;
  }
  return inputs;
}

function renderRunForm(graph) {
  const form = $("#run-form");
  const start = (graph.nodes || []).find((n) => n.type === "start");
  const specs = start?.config?.inputs || [];
  // replaceChildren() would show a null as the text "null": only elements go in.
  form.replaceChildren(
    ...specs.map((spec) => inputField(spec)),
    ...(specs.length ? [] : [h("p", { class: "muted" }, "This workflow takes no inputs.")]),
    h("p", { class: "error", "data-role": "run-error", hidden: true }),
    h("button", { type: "submit", class: "primary", "data-testid": "start-run" }, "Run"),
  );
  form.onsubmit = async (event) => {
    event.preventDefault();
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      const inputs = readInputs(form, specs);
      const run = await api(`workflows/${workflowId}/runs/`, { method: "POST", body: { inputs } });
      window.location.assign(`/runs/${run.id}/`);
    } catch (error) {
      showError(error instanceof ApiError ? errorText(error.body) || error.message : error.message, '[data-role="run-error"]');
      button.disabled = false;
    }
  };
}

async function loadRuns() {
  const page = await api(`runs/?workflow=${workflowId}&ordering=-created_at&page_size=20`);
  const rows = page.results.map((run) =>
    h(
      "tr",
      { "data-run-id": run.id },
      h("td", {}, h("a", { href: `/runs/${run.id}/` }, formatTime(run.created_at))),
      h("td", {}, h("span", { class: `badge status-${run.status}`, "data-status": run.status }, run.status)),
      h("td", { class: "hide-narrow" }, run.trigger),
      h("td", {}, formatDuration(between(run.started_at, run.finished_at))),
    ),
  );
  $("#run-table tbody").replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No runs yet."))]));
}

function followRuns() {
  // Run start and end events of this workflow: refresh the list (reconnect if the socket drops).
  let delay = 1000;
  const retryLater = () => {
    setTimeout(connect, delay);
    delay = Math.min(delay * 2, 15000);
  };
  const connect = async () => {
    let socket;
    try {
      socket = await openSocket(`/ws/workflows/${workflowId}/runs/`);
    } catch {
      retryLater();
      return;
    }
    let refresh = null;
    socket.onopen = () => (delay = 1000);
    socket.onmessage = () => {
      clearTimeout(refresh);
      refresh = setTimeout(() => loadRuns().catch(() => {}), 150);
    };
    socket.onclose = (event) => {
      if (event.code >= 4400 && event.code < 4500) return;
      retryLater();
    };
  };
  connect();
}

// release_status is a set of bits, one per channel a version is released on.
const CHANNELS = [
  [1, "web"],
  [2, "api"],
  [4, "marketplace"],
];

export function channelsOf(bits) {
  const names = CHANNELS.filter(([bit]) => (Number(bits) & bit) === bit).map(([, name]) => name);
  return names.length ? names.join(" + ") : "not released";
}

async function loadVersions() {
  const page = await api(`workflows/${workflowId}/versions/`);
  const latest = page.results[0];
  const badge = $("#workflow-version");
  badge.textContent = latest ? `latest v${latest.version}` : "not published";
  const items = page.results.map((v) =>
    h(
      "li",
      { "data-version": v.version },
      h("strong", {}, `v${v.version}`),
      " ",
      h("span", { class: "badge", "data-channels": v.release_status, title: "Released on" }, channelsOf(v.release_status)),
      " ",
      h("span", { class: "muted small" }, formatTime(v.created), v.description ? ` — ${v.description}` : ""),
    ),
  );
  $("#version-list").replaceChildren(...(items.length ? items : [h("li", { class: "muted" }, "Not published yet.")]));
}

function setupPublish() {
  const form = $("#publish-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError("", '[data-role="publish-error"]');
    try {
      await api(`workflows/${workflowId}/publish/`, {
        method: "POST",
        body: { version: form.version.value.trim(), description: form.description.value.trim() },
      });
      form.reset();
      await Promise.all([loadVersions(), loadWorkflow()]);
    } catch (error) {
      showError(errorText(error.body) || error.message, '[data-role="publish-error"]');
    }
  });
}

// --- The draft: the canvas and the JSON view --------------------------------------------------
let editorGraph = null;
let redrawTimer = null;
let validateTimer = null;
let validation = 0; // the latest validation started; an older answer is dropped

function parseEditor() {
  try {
    const graph = JSON.parse($("#graph-editor").value);
    if (!graph || typeof graph !== "object" || Array.isArray(graph)) throw new Error("The graph must be an object.");
    return { graph };
  } catch (error) {
    return { error: `Not valid JSON: ${error.message}` };
  }
}

function showIssues(issues) {
  const byNode = new Map();
  const list = $("#graph-issues");
  list.replaceChildren(
    ...issues.map((issue) => {
      if (issue.node) byNode.set(issue.node, [...(byNode.get(issue.node) || []), `${issue.field}: ${issue.message}`]);
      return h(
        "li",
        { "data-node": issue.node || "" },
        issue.node ? h("code", {}, issue.node) : h("em", {}, "graph"),
        issue.field ? ` · ${issue.field}` : "",
        `: ${issue.message}`,
      );
    }),
  );
  if (editorGraph) editorGraph.setIssues(byNode);
  if (canvas) canvas.setIssues(issues);
}

function setStatus(text, result) {
  const status = $("#editor-status");
  status.textContent = text;
  if (result) status.dataset.result = result;
  else delete status.dataset.result;
}

function setDirty(value) {
  dirty = value;
  $("#editor-dirty").hidden = !value;
}

function drawEditorGraph() {
  clearTimeout(redrawTimer);
  const parsed = parseEditor();
  if (parsed.graph) editorGraph = drawGraph($("#editor-graph"), parsed.graph);
  return parsed;
}

function issuesFrom(error) {
  if (error.body && Array.isArray(error.body.errors)) return error.body.errors;
  return [{ node: null, field: "", message: errorText(error.body) || error.message }];
}

async function shapeProblems(graph) {
  try {
    return dslShapeIssues(await loadDslSchema(document.body.dataset.dslSchema), graph);
  } catch {
    return []; // without the schema, the server's answer names the same problems
  }
}

// The editor's graph if it is JSON of the DSL's shape; otherwise null, with the problems shown.
async function editorGraphOfRightShape() {
  const parsed = drawEditorGraph();
  const problems = parsed.error ? [{ node: null, field: "", message: parsed.error }] : await shapeProblems(parsed.graph);
  if (problems.length === 0) return parsed.graph;
  showIssues(problems);
  setStatus("Not valid.", "invalid");
  return null;
}

async function validate(graph) {
  const mine = ++validation;
  setStatus("Validating…");
  const problems = await shapeProblems(graph);
  if (mine !== validation) return null;
  if (problems.length) {
    showIssues(problems);
    setStatus("Not valid.", "invalid");
    return false;
  }
  try {
    await api(`workflows/${workflowId}/validate/`, { method: "POST", body: { graph } });
    if (mine !== validation) return null;
    showIssues([]);
    setStatus("Valid.", "valid");
    return true;
  } catch (error) {
    if (mine !== validation) return null;
    showIssues(issuesFrom(error));
    setStatus("Not valid.", "invalid");
    return false;
  }
}

// Saves the draft shown; true once saved.
async function save() {
  const graph = await editorGraphOfRightShape();
  if (!graph) return false;
  validation += 1; // a validation under way describes an older draft
  setStatus("Saving…");
  try {
    workflow = await api(`workflows/${workflowId}/`, { method: "PATCH", body: { graph } });
    showIssues([]);
    setStatus("Saved.", "saved");
    setDirty(false);
    renderWorkflow();
    return true;
  } catch (error) {
    showIssues(issuesFrom(error));
    setStatus("Not saved.", "invalid");
    return false;
  }
}

// A change made on the canvas: the JSON view follows, and the draft is validated shortly after.
function canvasChanged(graph, kind) {
  $("#graph-editor").value = pretty(graph);
  drawEditorGraph();
  setDirty(true);
  renderEditorRunForm(graph);
  // Moving nodes changes no rule: a validation already due goes on, none is added.
  if (kind === "move" || kind === "layout") return;
  clearTimeout(validateTimer);
  validateTimer = setTimeout(() => validate(graph), 500);
}

function setupEditor() {
  $("#graph-editor").addEventListener("input", () => {
    clearTimeout(redrawTimer);
    redrawTimer = setTimeout(() => {
      const parsed = drawEditorGraph();
      setStatus(parsed.error || "");
      setDirty(true);
      if (parsed.graph && canvas) canvas.setGraph(parsed.graph);
      if (parsed.graph) renderEditorRunForm(parsed.graph);
    }, 300);
  });
  $("#validate-graph").addEventListener("click", async () => {
    clearTimeout(validateTimer);
    const graph = await editorGraphOfRightShape();
    if (graph) await validate(graph);
  });
  $("#save-graph").addEventListener("click", () => {
    clearTimeout(validateTimer);
    save();
  });
  const toggle = $("#toggle-json");
  const showJson = (shown) => {
    $("#json-panel").hidden = !shown;
    toggle.setAttribute("aria-expanded", String(shown));
    toggle.textContent = shown ? "Hide JSON" : "Show JSON";
  };
  showJson(localStorage.getItem("weft.editor.json") !== "hidden");
  toggle.addEventListener("click", () => {
    const shown = $("#json-panel").hidden;
    localStorage.setItem("weft.editor.json", shown ? "shown" : "hidden");
    showJson(shown);
  });
  const runToggle = $("#editor-run-toggle");
  runToggle.addEventListener("click", () => {
    const form = $("#editor-run-form");
    form.hidden = !form.hidden;
    runToggle.setAttribute("aria-expanded", String(!form.hidden));
    if (!form.hidden) form.querySelector("input, textarea, button")?.focus();
  });
  fillLegend($("#editor-panel ul.legend"));
}

// --- Runs from the editor: the canvas lights up as the run's events come --------------------
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
let editorRun = null; // {id, nodes: Map, lastSeq, done, socket}

function renderEditorRunForm(graph) {
  const form = $("#editor-run-form");
  const start = (graph.nodes || []).find((n) => n && n.type === "start");
  const specs = (start?.config?.inputs || []).filter((spec) => spec && typeof spec.name === "string" && spec.name);
  // Keep what was typed in fields that are still there.
  const typed = new Map([...form.querySelectorAll("[name]")].map((el) => [el.name, el.type === "checkbox" ? el.checked : el.value]));
  form.replaceChildren(
    ...specs.map((spec) => inputField(spec, "editor-input-")),
    ...(specs.length ? [] : [h("p", { class: "muted" }, "This workflow takes no inputs.")]),
    h("p", { class: "error", "data-role": "editor-run-error", hidden: true }),
    h("div", { class: "row" }, h("button", { type: "submit", class: "primary", "data-testid": "editor-start-run" }, "Run the draft")),
  );
  for (const [name, value] of typed) {
    const el = form.elements.namedItem(name);
    if (!el || el instanceof RadioNodeList) continue;
    if (el.type === "checkbox") el.checked = value;
    else el.value = value;
  }
  form.onsubmit = async (event) => {
    event.preventDefault();
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    showError("", '[data-role="editor-run-error"]');
    try {
      const inputs = readInputs(form, specs);
      if (dirty && !(await save())) throw new Error("Fix the draft's problems first: it must be saved to run.");
      const run = await api(`workflows/${workflowId}/runs/`, { method: "POST", body: { inputs } });
      followEditorRun(run.id);
    } catch (error) {
      showError(error instanceof ApiError ? errorText(error.body) || error.message : error.message, '[data-role="editor-run-error"]');
    } finally {
      button.disabled = false;
    }
  };
}

function showEditorRun() {
  const run = editorRun;
  const status = $("#editor-run-status");
  status.hidden = false;
  status.dataset.status = run.status;
  status.replaceChildren(
    "Run ",
    h("a", { href: `/runs/${run.id}/` }, run.id.slice(0, 8)),
    ": ",
    h("span", { class: `badge status-${run.status}`, "data-run-status": run.status }, run.status),
    ...(run.error ? [h("span", { class: "error" }, ` ${run.error}`)] : []),
  );
  if (canvas) canvas.setRuns(run.nodes);
}

function runNode(id) {
  if (!editorRun.nodes.has(id)) editorRun.nodes.set(id, { state: "pending" });
  return editorRun.nodes.get(id);
}

function applyRunTasks(tasks) {
  for (const task of tasks || []) {
    if (task.scope) continue;
    const info = runNode(task.node_id);
    info.state = task.status;
    if (task.output !== null && task.output !== undefined) info.output = task.output;
    if (task.error) info.error = task.error;
    const ms = between(task.started_at, task.finished_at);
    if (ms !== null) info.durationMs ??= ms;
  }
}

function applyRunEvent(event) {
  const run = editorRun;
  if (typeof event.seq === "number") {
    if (event.seq <= run.lastSeq) return;
    run.lastSeq = event.seq;
  }
  const data = event.data || {};
  if (event.node && !data.scope) {
    const info = runNode(event.node);
    if (event.type === "node.started") Object.assign(info, { state: "running", error: "", startedAt: event.at });
    else if (event.type === "node.retrying") Object.assign(info, { state: "retrying", error: data.error || "" });
    else if (event.type === "node.succeeded") {
      Object.assign(info, { state: "succeeded", output: data.output, durationMs: data.duration_ms ?? between(info.startedAt, event.at) });
    } else if (event.type === "node.failed") Object.assign(info, { state: "failed", error: data.error || "", durationMs: between(info.startedAt, event.at) });
    else if (event.type === "node.skipped") info.state = "skipped";
  }
  if (event.type === "run.started") run.status = "running";
  if (event.type.startsWith("run.") && FINISHED.has(event.type.slice(4))) finishEditorRun(run, event.type.slice(4), data.error);
}

// The run ended: its final state (every task's) is read once, and shown with its status at once.
async function finishEditorRun(run, status, error) {
  if (run.done) return;
  run.done = true;
  if (run.socket) run.socket.close(1000);
  try {
    const final = await api(`runs/${run.id}/`);
    if (editorRun !== run) return;
    applyRunTasks(final.tasks);
    run.status = final.status;
    run.error = final.error || "";
  } catch (failure) {
    run.status = status || run.status;
    run.error = error || "";
    showError(errorText(failure.body) || failure.message, '[data-role="editor-run-error"]');
  }
  if (editorRun === run) showEditorRun();
}

async function followEditorRun(runId) {
  if (editorRun?.socket) editorRun.socket.close(1000);
  const run = { id: runId, status: "pending", error: "", nodes: new Map(), lastSeq: 0, done: false, socket: null, retries: 0 };
  editorRun = run;
  const graph = canvas ? canvas.getGraph() : parseEditor().graph;
  for (const n of graph?.nodes || []) runNode(n.id);
  showEditorRun();
  const connect = async () => {
    if (run.done || editorRun !== run) return;
    let socket;
    try {
      socket = await openSocket(`/ws/runs/${run.id}/?after=${run.lastSeq}`);
    } catch {
      if (run.retries++ < 5) setTimeout(connect, 1000 * run.retries);
      return;
    }
    run.socket = socket;
    socket.onmessage = (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      if (editorRun !== run) return;
      if (event.type === "snapshot") {
        const status = event.data?.status;
        if (FINISHED.has(status)) finishEditorRun(run, status, event.data?.error);
        else if (status) run.status = status;
      } else applyRunEvent(event);
      showEditorRun();
    };
    socket.onclose = (event) => {
      if (run.done || editorRun !== run || (event.code >= 4400 && event.code < 4500)) return;
      if (run.retries++ < 5) setTimeout(connect, 1000 * run.retries);
    };
  };
  connect();
}

// --- Try one node ------------------------------------------------------------------------------
// The outputs of the last run that succeeded: the sample inputs "try this node" starts from.
async function loadSamples() {
  const page = await api(`runs/?workflow=${workflowId}&status=succeeded&ordering=-created_at&page_size=1`);
  if (!page.results.length) return;
  const run = await api(`runs/${page.results[0].id}/`);
  const outputs = new Map();
  for (const task of run.tasks || []) {
    if (!task.scope && task.output && typeof task.output === "object") outputs.set(task.node_id, task.output);
  }
  if (!outputs.has("start") && run.inputs) outputs.set("start", run.inputs);
  canvas.setSamples(outputs);
}

async function tryNode(nodeId, inputs) {
  if (dirty && !(await save())) {
    return { status: "failed", error: { message: "Fix the draft's problems first: the node is tried as saved." } };
  }
  try {
    return await api(`workflows/${workflowId}/nodes/${encodeURIComponent(nodeId)}/try/`, { method: "POST", body: { inputs } });
  } catch (error) {
    return { status: "failed", error: { message: error instanceof ApiError ? errorText(error.body) || error.message : error.message } };
  }
}

async function mountCanvas() {
  const host = $("#canvas-editor");
  let nodeTypes;
  let schema;
  let module;
  try {
    [nodeTypes, module] = await Promise.all([api("node-types/"), import(document.body.dataset.editorModule)]);
    schema = await loadDslSchema(document.body.dataset.dslSchema).catch(() => null);
  } catch (error) {
    host.replaceChildren(h("p", { class: "error" }, `The canvas could not load (${errorText(error.body) || error.message}); the JSON view below still works.`));
    return;
  }
  host.replaceChildren();
  canvas = module.mountEditor(host, {
    graph: workflow.graph,
    nodeTypes: Array.isArray(nodeTypes) ? nodeTypes : nodeTypes.results || [],
    dslSchema: schema,
    onChange: canvasChanged,
    onTryNode: tryNode,
  });
  // A hook for checks and for the curious.
  window.weftEditor = canvas;
  loadSamples().catch(() => {}); // without them, "try" starts from empty inputs
  document.body.dataset.editor = "ready";
}

function renderWorkflow() {
  $("#workflow-name").textContent = workflow.name;
  document.title = `${workflow.name} · Weft`;
  const badge = $("#workflow-status");
  badge.textContent = workflow.status;
  badge.className = `badge status-${workflow.status}`;
  $("#workflow-description").textContent = workflow.description || "";
  drawGraph($("#graph"), workflow.graph);
  renderRunForm(workflow.graph);
  noticeMissingProviders(workflow.graph);
}

// An llm node naming a provider you do not have: say so before a run fails on it.
async function noticeMissingProviders(graph) {
  let missing = [];
  if (workflow.role === "owner") {
    try {
      missing = await missingProviders(graph);
    } catch {
      return; // a run's own error will say it
    }
  }
  $("#provider-notice")?.remove();
  if (!missing.length) return;
  const nodes = missing.map((ref) => `“${ref.name}”`).join(", ");
  const notice = h(
    "div",
    { class: "notice", id: "provider-notice", role: "status", "data-testid": "provider-missing" },
    `${missing.length > 1 ? "Nodes" : "Node"} ${nodes} ${missing.length > 1 ? "need" : "needs"} an LLM provider you do not have. `,
    h("a", { href: `/providers/?workflow=${encodeURIComponent(workflowId)}` }, "Add one on the Providers page"),
    " and choose it for this workflow.",
  );
  $("#run-form").before(notice);
}

async function loadWorkflow() {
  workflow = await api(`workflows/${workflowId}/`);
  renderWorkflow();
}

export async function init(data) {
  workflowId = data.workflow;
  setupPublish();
  setupEditor();
  // The Triggers and "When a run fails" panels load on their own and show their own errors.
  initTriggers(workflowId);
  initFailurePolicy(workflowId);
  try {
    await loadWorkflow();
    $("#graph-editor").value = pretty(workflow.graph);
    drawEditorGraph();
    renderEditorRunForm(workflow.graph);
    await Promise.all([loadRuns(), loadVersions(), mountCanvas()]);
    followRuns();
  } catch (error) {
    showError(errorText(error.body) || error.message);
  }
}
