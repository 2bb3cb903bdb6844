// A workflow: its graph, a run form made from the start node's inputs, its runs (live), its
// versions and publishing, and a JSON editor whose validation problems show at their nodes.

import { api, ApiError, errorText, openSocket } from "../api.js";
import { $, between, formatDuration, formatTime, h, pretty, showError } from "../dom.js";
import { dslShapeIssues, loadDslSchema } from "../dsl.js";
import { drawGraph } from "../graph.js";

let workflowId = null;
let workflow = null;

function inputField(spec) {
  const type = spec.type || "string";
  const name = spec.name;
  const id = `input-${name}`;
  const label = [name, spec.required ? " *" : "", spec.description ? ` — ${spec.description}` : ""].join("");
  const common = { id, name, "data-type": type, required: spec.required && type !== "boolean" ? true : null };
  let control;
  if (type === "boolean") {
    control = h("input", { ...common, type: "checkbox", checked: spec.default === true ? true : null });
    return h("label", { for: id, class: "check" }, control, ` ${label}`);
  }
  if (type === "object" || type === "array") {
    control = h("textarea", { ...common, rows: 3, placeholder: type === "object" ? "{}" : "[]", spellcheck: "false" });
    if (spec.default !== undefined) control.value = JSON.stringify(spec.default);
  } else {
    const numeric = type === "number" || type === "integer";
    control = h("input", { ...common, type: numeric ? "number" : "text", step: type === "number" ? "any" : null });
    if (spec.default !== undefined) control.value = String(spec.default);
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
  form.replaceChildren(
    ...specs.map(inputField),
    specs.length ? null : h("p", { class: "muted" }, "This workflow takes no inputs."),
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

async function loadVersions() {
  const page = await api(`workflows/${workflowId}/versions/`);
  const items = page.results.map((v) =>
    h(
      "li",
      { "data-version": v.version },
      h("strong", {}, v.version),
      " ",
      h("span", { class: "badge" }, v.release_status || ""),
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

// --- The JSON editor ---------------------------------------------------------------------------
let editorGraph = null;
let redrawTimer = null;

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

// The editor's graph if it is JSON of the DSL's shape; otherwise null, with the problems shown.
async function editorGraphOfRightShape() {
  const parsed = drawEditorGraph();
  let problems = parsed.error ? [{ node: null, field: "", message: parsed.error }] : [];
  if (!parsed.error) {
    try {
      problems = dslShapeIssues(await loadDslSchema(document.body.dataset.dslSchema), parsed.graph);
    } catch {
      problems = []; // without the schema, the server's answer names the same problems
    }
  }
  if (problems.length === 0) return parsed.graph;
  showIssues(problems);
  const status = $("#editor-status");
  status.textContent = "Not valid.";
  status.dataset.result = "invalid";
  return null;
}

function setupEditor() {
  const status = $("#editor-status");
  $("#graph-editor").addEventListener("input", () => {
    clearTimeout(redrawTimer);
    redrawTimer = setTimeout(() => {
      const parsed = drawEditorGraph();
      status.textContent = parsed.error || "";
    }, 300);
  });
  $("#validate-graph").addEventListener("click", async () => {
    const graph = await editorGraphOfRightShape();
    if (!graph) return;
    status.textContent = "Validating…";
    try {
      await api(`workflows/${workflowId}/validate/`, { method: "POST", body: { graph } });
      showIssues([]);
      status.textContent = "Valid.";
      status.dataset.result = "valid";
    } catch (error) {
      showIssues(issuesFrom(error));
      status.textContent = "Not valid.";
      status.dataset.result = "invalid";
    }
  });
  $("#save-graph").addEventListener("click", async () => {
    const graph = await editorGraphOfRightShape();
    if (!graph) return;
    status.textContent = "Saving…";
    try {
      workflow = await api(`workflows/${workflowId}/`, { method: "PATCH", body: { graph } });
      showIssues([]);
      status.textContent = "Saved.";
      status.dataset.result = "saved";
      renderWorkflow();
    } catch (error) {
      showIssues(issuesFrom(error));
      status.textContent = "Not saved.";
      status.dataset.result = "invalid";
    }
  });
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
}

async function loadWorkflow() {
  workflow = await api(`workflows/${workflowId}/`);
  renderWorkflow();
}

export async function init(data) {
  workflowId = data.workflow;
  setupPublish();
  setupEditor();
  try {
    await loadWorkflow();
    $("#graph-editor").value = pretty(workflow.graph);
    drawEditorGraph();
    await Promise.all([loadRuns(), loadVersions()]);
    followRuns();
  } catch (error) {
    showError(errorText(error.body) || error.message);
  }
}
