// Apps and licenses: create a client app (its secret shown once), license it for your workflows,
// turn licenses on and off, rotate an app's credentials, delete it.

import { api, errorMessage, listAll } from "../api.js";
import { $, confirmButton, h, showError } from "../dom.js";

let workflows = [];



// The credentials an answer of create or rotate carries: shown here, and nowhere once dismissed.
function showSecret(app) {
  $("#secret-app").textContent = `${app.name} (${app.alias_id})`;
  $("#secret-key").textContent = app.api_key;
  $("#secret-value").textContent = app.api_secret;
  $("#secret-copy").textContent = "Copy key:secret";
  const box = $("#secret-once");
  box.hidden = false;
  box.scrollIntoView({ block: "nearest" });
}

function hideSecret() {
  for (const id of ["#secret-app", "#secret-key", "#secret-value"]) $(id).textContent = "";
  $("#secret-once").hidden = true;
}

function option(value, label) {
  return h("option", { value }, label);
}

function fillSelects(apps) {
  const ownWorkflows = workflows.map((w) => option(w.id, w.name));
  $("#app-workflow").replaceChildren(option("", "No workflow yet"), ...ownWorkflows.map((o) => o.cloneNode(true)));
  $("#license-workflow").replaceChildren(...ownWorkflows);
  $("#license-app").replaceChildren(...apps.map((a) => option(String(a.id), a.name)));
  $("#license-form button").disabled = apps.length === 0 || workflows.length === 0;
}

function licenseItem(license) {
  const on = license.status === "enabled";
  const toggle = h("button", { type: "button", "data-testid": "toggle-license" }, on ? "Turn off" : "Turn on");
  toggle.addEventListener("click", async () => {
    toggle.disabled = true;
    try {
      await api(`licenses/${license.id}/`, { method: "PATCH", body: { status: on ? "disabled" : "enabled" } });
    } catch (error) {
      showError(errorMessage(error));
    }
    await load();
  });
  const revoke = confirmButton("Revoke", "Really revoke?", async () => {
    try {
      await api(`licenses/${license.id}/`, { method: "DELETE" });
    } catch (error) {
      showError(errorMessage(error));
    }
    await load();
  });
  return h(
    "li",
    { "data-license-id": license.id, "data-status": license.status },
    h("a", { href: `/workflows/${license.group}/` }, license.group_name),
    h("span", { class: `badge status-${on ? "succeeded" : "skipped"}` }, license.status),
    toggle,
    revoke,
  );
}

function appCard(app, licenses) {
  const rotate = confirmButton(
    "Rotate key",
    "Really rotate? The old pair stops working",
    async () => {
      try {
        showSecret(await api(`apps/${app.id}/rotate/`, { method: "POST", body: {} }));
      } catch (error) {
        showError(errorMessage(error));
      }
      await load();
    },
    { "data-testid": "rotate-app" },
  );
  const remove = confirmButton(
    "Delete",
    "Really delete app and licenses?",
    async () => {
      try {
        await api(`apps/${app.id}/`, { method: "DELETE" });
      } catch (error) {
        showError(errorMessage(error));
      }
      await load();
    },
    { "data-testid": "delete-app" },
  );
  return h(
    "article",
    { class: "card", "data-app-id": app.id, "data-app-name": app.name },
    h("div", { class: "row" }, h("strong", {}, app.name), h("span", { class: `badge status-${app.status === "enabled" ? "succeeded" : "skipped"}` }, app.status)),
    h("p", { class: "muted small" }, "alias ", h("code", {}, app.alias_id), " · key ", h("code", { "data-testid": "app-key" }, app.api_key)),
    app.description ? h("p", {}, app.description) : null,
    licenses.length
      ? h("ul", { class: "licenses" }, licenses.map(licenseItem))
      : h("p", { class: "muted small" }, "No license: this app can call no workflow yet."),
    h("div", { class: "actions" }, rotate, remove),
  );
}

async function load() {
  try {
    const [apps, licenses, found] = await Promise.all([
      listAll("apps/?ordering=name"),
      listAll("licenses/"),
      listAll("workflows/?ordering=name"),
    ]);
    // Only a workflow's owner may license it to an app.
    workflows = found.filter((w) => w.role === "owner");
    const byApp = new Map(apps.map((a) => [a.id, []]));
    for (const license of licenses) byApp.get(license.app)?.push(license);
    $("#app-list").replaceChildren(...apps.map((a) => appCard(a, byApp.get(a.id))));
    $("#app-empty").hidden = apps.length > 0;
    fillSelects(apps);
  } catch (error) {
    showError(errorMessage(error));
  }
}

function setupForms() {
  const form = $("#app-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    const workflowId = form.workflow.value;
    try {
      const app = await api("apps/", {
        method: "POST",
        body: { name: form.name.value.trim(), description: form.description.value.trim() },
      });
      showSecret(app);
      form.reset();
      showError("", '[data-role="form-error"]');
      if (workflowId) await api("licenses/", { method: "POST", body: { app: app.id, group: workflowId } });
    } catch (error) {
      showError(errorMessage(error), '[data-role="form-error"]');
    } finally {
      button.disabled = false;
    }
    await load();
  });
  const license = $("#license-form");
  license.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("licenses/", { method: "POST", body: { app: Number(license.app.value), group: license.group.value } });
      showError("", '[data-role="license-error"]');
    } catch (error) {
      showError(errorMessage(error), '[data-role="license-error"]');
    }
    await load();
  });
  $("#secret-dismiss").addEventListener("click", hideSecret);
  $("#secret-copy").addEventListener("click", async () => {
    const text = `${$("#secret-key").textContent}:${$("#secret-value").textContent}`;
    try {
      await navigator.clipboard.writeText(text);
      $("#secret-copy").textContent = "Copied";
    } catch (error) {
      showError(`Copy it by hand: ${error.message}`);
    }
  });
}

export function init() {
  setupForms();
  load();
}
