// LLM providers: add one (the key is write-only), test it, remove it, see which of your workflows
// use it, and point the workflows whose llm nodes name a provider you do not have at one you do.

import { api, errorMessage, listAll, providerRefs } from "../api.js";
import { $, confirmButton, h, showError } from "../dom.js";

// What to do about each code of POST providers/<id>/test/.
const HINTS = {
  blocked: "Weft refuses this address (a private or local network): use the provider's public URL.",
  unreachable: "Nothing answered there in time: check the base URL.",
  unauthorized: "The key was refused: remove the provider and add it again with the right key.",
  not_found: "Nothing at {base URL}/models: the base URL usually ends in /v1 (/v1beta for Gemini).",
  invalid_url: "The base URL is not a valid URL.",
  http_error: "The provider answered with an error.",
};

// What the form suggests for each kind of provider (the API's `kind`).
const KINDS = {
  openai: { label: "OpenAI-compatible", name: "OpenAI", baseUrl: "https://api.openai.com/v1", model: "gpt-4o-mini" },
  anthropic: {
    label: "Anthropic",
    name: "Anthropic",
    baseUrl: "https://api.anthropic.com/v1",
    model: "claude-sonnet-4-5",
  },
  gemini: {
    label: "Gemini",
    name: "Gemini",
    baseUrl: "https://generativelanguage.googleapis.com/v1beta",
    model: "gemini-2.5-flash",
  },
};

let providers = [];



async function testProvider(provider, result) {
  result.textContent = "Testing…";
  delete result.dataset.ok;
  try {
    const answer = await api(`providers/${provider.id}/test/`, { method: "POST" });
    result.dataset.ok = String(answer.ok);
    result.dataset.code = answer.code || "";
    result.textContent = answer.ok
      ? `OK: it answered (HTTP ${answer.status}).`
      : `${answer.error} ${HINTS[answer.code] || ""}`.trim();
  } catch (error) {
    result.dataset.ok = "false";
    result.textContent = errorMessage(error);
  }
}

function usesList(uses) {
  if (!uses.length) return h("span", { class: "muted small" }, "no workflow");
  return h(
    "ul",
    { class: "uses" },
    uses.map((use) => h("li", {}, h("a", { href: `/workflows/${use.workflow.id}/` }, use.workflow.name), ` (${use.nodes.join(", ")})`)),
  );
}

function providerRow(provider, uses) {
  const result = h("span", { class: "check-result", role: "status", "data-testid": "test-result" });
  const test = h("button", { type: "button", "data-testid": "test-provider" }, "Test");
  test.addEventListener("click", async () => {
    test.disabled = true;
    await testProvider(provider, result);
    test.disabled = false;
  });
  const remove = confirmButton(
    "Remove",
    "Really remove?",
    async () => {
      try {
        await api(`providers/${provider.id}/`, { method: "DELETE" });
        showError("");
      } catch (error) {
        showError(errorMessage(error));
      }
      await load();
    },
    { "data-testid": "remove-provider" },
  );
  return h(
    "tr",
    { "data-provider-id": provider.id, "data-provider-name": provider.name },
    h(
      "td",
      {},
      h("strong", {}, provider.name),
      h("div", { class: "muted small", "data-testid": "provider-kind-label" }, KINDS[provider.kind]?.label || provider.kind),
      h("div", { class: "muted small" }, provider.base_url),
      h("div", { class: "muted small" }, provider.has_api_key ? "key set (hidden)" : "no key"),
    ),
    h("td", {}, provider.model || h("span", { class: "muted" }, "—")),
    h("td", { class: "hide-narrow" }, usesList(uses)),
    h("td", {}, h("div", { class: "actions" }, test), result),
    h("td", {}, remove),
  );
}

// Point every llm node of `workflowId` that names a provider in `missing` at `providerId`.
async function useProvider(workflowId, missing, providerId) {
  const workflow = await api(`workflows/${workflowId}/`);
  const nodes = new Set(missing.map((ref) => ref.node));
  for (const n of workflow.graph.nodes) {
    if (nodes.has(n.id)) n.config = { ...n.config, provider: providerId };
  }
  await api(`workflows/${workflowId}/`, { method: "PATCH", body: { graph: workflow.graph } });
}

function missingItem(workflow, refs, focused) {
  const select = h(
    "select",
    { "aria-label": `Provider for ${workflow.name}`, "data-testid": "missing-provider-select" },
    providers.map((p) => h("option", { value: p.id }, p.name)),
  );
  const button = h("button", { type: "button", class: "primary", "data-testid": "use-provider" }, "Use this provider");
  button.disabled = providers.length === 0;
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await useProvider(workflow.id, refs, select.value);
      showError("");
    } catch (error) {
      showError(errorMessage(error));
    }
    await load();
  });
  const nodes = refs.map((ref) => `“${ref.name}”`).join(", ");
  return h(
    "li",
    { class: "missing-item", "data-workflow-id": workflow.id, "data-focused": focused ? "true" : null },
    h("a", { href: `/workflows/${workflow.id}/` }, workflow.name),
    h("span", { class: "muted small" }, `${refs.length > 1 ? "nodes" : "node"} ${nodes}`),
    providers.length ? [select, button] : h("span", { class: "muted small" }, "Add a provider below first."),
  );
}

async function load() {
  try {
    const [found, workflows, agents] = await Promise.all([
      listAll("providers/?ordering=name"),
      listAll("workflows/?ordering=name"),
      listAll("agents/"),
    ]);
    providers = found;
    const known = new Set(providers.map((p) => p.id));
    const uses = new Map(providers.map((p) => [p.id, []]));
    const missing = [];
    // A run uses its workflow owner's providers: only the workflows you own can use yours.
    for (const workflow of workflows.filter((w) => w.role === "owner")) {
      const refs = providerRefs(workflow.graph, agents);
      const byProvider = new Map();
      for (const ref of refs) {
        if (!byProvider.has(ref.provider)) byProvider.set(ref.provider, []);
        byProvider.get(ref.provider).push(ref.name);
      }
      for (const [provider, nodes] of byProvider) {
        if (uses.has(provider)) uses.get(provider).push({ workflow, nodes });
      }
      const lacking = refs.filter((ref) => ref.via === "llm" && !known.has(ref.provider));
      if (lacking.length) missing.push({ workflow, refs: lacking });
    }
    $("#provider-table tbody").replaceChildren(...providers.map((p) => providerRow(p, uses.get(p.id))));
    $("#provider-empty").hidden = providers.length > 0;
    const focus = new URLSearchParams(window.location.search).get("workflow");
    $("#missing-list").replaceChildren(...missing.map((m) => missingItem(m.workflow, m.refs, m.workflow.id === focus)));
    $("#missing-providers").hidden = missing.length === 0;
  } catch (error) {
    showError(errorMessage(error));
  }
}

function showKindPlaceholders(form) {
  const kind = KINDS[form.kind.value] || KINDS.openai;
  form.name.placeholder = kind.name;
  form.base_url.placeholder = kind.baseUrl;
  form.model.placeholder = kind.model;
}

function setupForm() {
  const form = $("#provider-form");
  form.kind.addEventListener("change", () => showKindPlaceholders(form));
  form.addEventListener("reset", () => setTimeout(() => showKindPlaceholders(form)));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    const body = {
      name: form.name.value.trim(),
      kind: form.kind.value,
      base_url: form.base_url.value.trim(),
      model: form.model.value.trim(),
    };
    if (form.api_key.value) body.api_key = form.api_key.value;
    try {
      await api("providers/", { method: "POST", body });
      form.reset();
      showError("", '[data-role="form-error"]');
      await load();
    } catch (error) {
      showError(errorMessage(error), '[data-role="form-error"]');
    } finally {
      // The key is not kept in the page once sent, whether or not it was accepted.
      form.api_key.value = "";
      button.disabled = false;
    }
  });
}

export function init() {
  setupForm();
  load();
}
