// Workflows: search, status, last run; create a new one.

import { api, errorText } from "../api.js";
import { $, formatTime, h, showError } from "../dom.js";

function statusBadge(status) {
  return h("span", { class: `badge status-${status}`, "data-status": status }, status);
}

async function lastRuns() {
  // The newest runs of every workflow you can see; the first one per workflow is its last run.
  const page = await api("runs/?ordering=-created_at&page_size=200");
  const last = new Map();
  for (const run of page.results) if (!last.has(run.workflow)) last.set(run.workflow, run);
  return last;
}

async function load(form) {
  const params = new URLSearchParams({ ordering: "-updated_at", page_size: "200" });
  const search = form.search.value.trim();
  if (search) params.set("search", search);
  if (form.status.value) params.set("status", form.status.value);
  try {
    const [page, last] = await Promise.all([api(`workflows/?${params}`), lastRuns()]);
    const rows = page.results.map((wf) => {
      const run = last.get(wf.id);
      return h(
        "tr",
        { "data-workflow-id": wf.id },
        h("td", {}, h("a", { href: `/workflows/${wf.id}/` }, wf.name), wf.description ? h("div", { class: "muted small" }, wf.description) : null),
        h("td", {}, statusBadge(wf.status)),
        h("td", {}, run ? h("a", { href: `/runs/${run.id}/`, class: "nowrap" }, statusBadge(run.status), " ", formatTime(run.created_at)) : h("span", { class: "muted" }, "never")),
        h("td", { class: "hide-narrow" }, formatTime(wf.updated_at)),
      );
    });
    $("#workflow-table tbody").replaceChildren(...rows);
    $("#workflow-empty").hidden = rows.length > 0 || Boolean(search || form.status.value);
    showError("");
  } catch (error) {
    showError(errorText(error.body) || error.message);
  }
}

export function init() {
  const filter = $("#workflow-filter");
  let timer = null;
  filter.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => load(filter), 200);
  });
  filter.addEventListener("submit", (event) => {
    event.preventDefault();
    load(filter);
  });
  const create = $("#create-workflow");
  create.addEventListener("submit", async (event) => {
    event.preventDefault();
    const graph = {
      nodes: [
        { id: "start", type: "start", name: "Start", config: { inputs: [] } },
        { id: "end", type: "end", name: "End", config: { outputs: {} } },
      ],
      edges: [{ source: "start", target: "end" }],
    };
    try {
      const wf = await api("workflows/", { method: "POST", body: { name: create.name.value.trim(), graph } });
      window.location.assign(`/workflows/${wf.id}/`);
    } catch (error) {
      showError(errorText(error.body) || error.message);
    }
  });
  load(filter);
}
