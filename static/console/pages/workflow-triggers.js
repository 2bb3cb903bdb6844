// The workflow page's "Triggers" panel (its webhooks, their URL shown once, and its schedules) and
// its "When a run fails" panel (the failure policy and the latest notifications sent). Only the
// workflow's owner and editors change them; others see them read-only.

import { api, errorMessage, listAll } from "../api.js";
import { $, confirmButton, formatTime, h, showError } from "../dom.js";

const EDIT_ROLES = new Set(["owner", "editor"]);

// The workflow's role for the signed-in user, asked once for both panels.
const roles = new Map();
function roleOf(workflowId) {
  if (!roles.has(workflowId)) roles.set(workflowId, api(`workflows/${workflowId}/`).then((w) => w.role));
  return roles.get(workflowId);
}

async function canEdit(workflowId) {
  try {
    return EDIT_ROLES.has(await roleOf(workflowId));
  } catch {
    return false;
  }
}

// --- Triggers ---------------------------------------------------------------------------------

// A just created or rotated webhook's URL: shown here, and nowhere once dismissed.
function showUrlOnce(trigger) {
  $("#trigger-once-name").textContent = trigger.name || trigger.token_prefix;
  $("#trigger-once-url").textContent = trigger.url;
  $("#trigger-once-copy").textContent = "Copy";
  const box = $("#trigger-once");
  box.hidden = false;
  box.scrollIntoView({ block: "nearest" });
}

function hideUrlOnce() {
  $("#trigger-once-name").textContent = "";
  $("#trigger-once-url").textContent = "";
  $("#trigger-once").hidden = true;
}

function triggerItem(workflowId, trigger, editable, reload) {
  const base = `workflows/${workflowId}/triggers/${trigger.id}/`;
  const act = async (call) => {
    try {
      await call();
      showError("", '[data-role="trigger-error"]');
    } catch (error) {
      showError(errorMessage(error), '[data-role="trigger-error"]');
    }
    await reload();
  };
  const details = [
    `${trigger.token_prefix}… · runs ${trigger.version}`,
    trigger.wait ? ` · waits ${trigger.wait_timeout_s} s` : "",
    trigger.has_secret ? " · signed" : "",
    ` · ${trigger.rate_limit_per_minute}/min`,
  ].join("");
  const actions = editable
    ? [
        h(
          "button",
          {
            type: "button",
            "data-testid": "trigger-toggle",
            "aria-pressed": String(trigger.enabled),
            onclick: () => act(() => api(base, { method: "PATCH", body: { enabled: !trigger.enabled } })),
          },
          trigger.enabled ? "Switch off" : "Switch on",
        ),
        confirmButton(
          "Rotate URL",
          "Really rotate? The old URL stops working",
          () =>
            act(async () => {
              const rotated = await api(`${base}rotate/`, { method: "POST" });
              showUrlOnce(rotated);
            }),
          { "data-testid": "trigger-rotate" },
        ),
        confirmButton("Delete", "Really delete?", () => act(() => api(base, { method: "DELETE" })), {
          "data-testid": "trigger-delete",
        }),
      ]
    : [];
  return h(
    "li",
    { "data-trigger-id": trigger.id, "data-enabled": String(trigger.enabled), class: "trigger-item" },
    h(
      "div",
      { class: "row" },
      h("strong", {}, trigger.name || "(unnamed)"),
      h("span", { class: `badge ${trigger.enabled ? "status-succeeded" : "status-skipped"}` }, trigger.enabled ? "on" : "off"),
    ),
    h("div", { class: "muted small" }, details, ` · since ${formatTime(trigger.created_at)}`),
    actions.length ? h("div", { class: "actions" }, ...actions) : null,
  );
}

function scheduleItem(schedule, reload) {
  const paused = schedule.status === "paused";
  const act = async (action) => {
    try {
      await api(`schedules/${schedule.id}/${action}/`, { method: "POST", body: {} });
      showError("", '[data-role="schedule-error"]');
    } catch (error) {
      showError(errorMessage(error), '[data-role="schedule-error"]');
    }
    await reload();
  };
  // The next run, once the API shows it (ScheduleSerializer does not yet).
  const nextAt = schedule.next_run_at || schedule.next_fire_at;
  const next = nextAt && !paused ? ` · next run ${formatTime(nextAt)}` : "";
  const last = schedule.last_execution_at
    ? ` · last run ${formatTime(schedule.last_execution_at)} (${schedule.last_execution_status || "?"})`
    : " · not run yet";
  return h(
    "li",
    { "data-schedule-id": schedule.id, class: "schedule-item" },
    h(
      "div",
      { class: "row" },
      h("strong", {}, schedule.name || "(unnamed)"),
      h("code", {}, schedule.cron),
      h("span", { class: "muted small" }, schedule.timezone),
      h("span", { class: `badge ${paused ? "status-skipped" : "status-succeeded"}` }, schedule.status),
    ),
    h(
      "div",
      { class: "muted small" },
      `runs ${schedule.version || "the latest version"}`,
      next,
      last,
      schedule.pause_reason ? ` · paused: ${schedule.pause_reason}` : "",
    ),
    // The API lets the schedule's maker or the workflow's owner pause it: its answer says if not.
    h(
      "div",
      { class: "actions" },
      h(
        "button",
        { type: "button", "data-testid": "schedule-toggle", onclick: () => act(paused ? "resume" : "pause") },
        paused ? "Resume" : "Pause",
      ),
    ),
  );
}

async function loadTriggers(workflowId, editable) {
  const list = $("#trigger-list");
  if (!editable) {
    list.replaceChildren(h("li", { class: "muted" }, "Only the workflow's owner and editors can see its webhooks."));
    return;
  }
  const reload = () => loadTriggers(workflowId, editable);
  try {
    const triggers = await listAll(`workflows/${workflowId}/triggers/`);
    list.replaceChildren(
      ...triggers.map((t) => triggerItem(workflowId, t, editable, reload)),
      ...(triggers.length ? [] : [h("li", { class: "muted" }, "No webhook yet.")]),
    );
  } catch (error) {
    showError(errorMessage(error), '[data-role="trigger-error"]');
  }
}

async function loadSchedules(workflowId) {
  const list = $("#schedule-list");
  const reload = () => loadSchedules(workflowId);
  try {
    const schedules = await listAll(`schedules/?workflow=${encodeURIComponent(workflowId)}`);
    list.replaceChildren(
      ...schedules.map((s) => scheduleItem(s, reload)),
      ...(schedules.length ? [] : [h("li", { class: "muted" }, "No schedule.")]),
    );
  } catch (error) {
    showError(errorMessage(error), '[data-role="schedule-error"]');
  }
}

export async function initTriggers(workflowId) {
  if (!$("#triggers-panel")) return;
  const editable = await canEdit(workflowId);
  const form = $("#trigger-form");
  $("#trigger-once-dismiss").addEventListener("click", hideUrlOnce);
  $("#trigger-once-copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("#trigger-once-url").textContent);
      $("#trigger-once-copy").textContent = "Copied";
    } catch (error) {
      showError(`Copy it by hand: ${error.message}`, '[data-role="trigger-error"]');
    }
  });
  if (editable) {
    form.hidden = false;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = form.querySelector('button[type="submit"]');
      button.disabled = true;
      try {
        const body = { name: form.elements.name.value.trim(), version: form.elements.version.value, wait: form.elements.wait.checked };
        const created = await api(`workflows/${workflowId}/triggers/`, { method: "POST", body });
        showError("", '[data-role="trigger-error"]');
        form.reset();
        showUrlOnce(created);
      } catch (error) {
        showError(errorMessage(error), '[data-role="trigger-error"]');
      } finally {
        button.disabled = false;
      }
      await loadTriggers(workflowId, editable);
    });
  }
  await Promise.all([loadTriggers(workflowId, editable), loadSchedules(workflowId)]);
}

// --- When a run fails -------------------------------------------------------------------------

const POLICY_FIELDS = ["enabled", "error_workflow", "on_failed", "on_succeeded", "on_cancelled", "webhook_url", "webhook_secret", "emails"];

function fieldErrors(form, body) {
  let shown = false;
  for (const el of form.querySelectorAll("[data-field]")) {
    const messages = body && body[el.dataset.field];
    const text = Array.isArray(messages)
      ? messages.map((m) => (typeof m === "string" ? m : JSON.stringify(m))).join(" ")
      : messages && typeof messages === "object"
        ? Object.entries(messages).map(([i, m]) => `${Number(i) + 1}: ${[].concat(m).join(" ")}`).join("; ")
        : messages || "";
    el.textContent = text;
    el.hidden = !text;
    shown ||= Boolean(text);
  }
  return shown;
}

function fillPolicy(form, policy) {
  for (const name of ["enabled", "on_failed", "on_succeeded", "on_cancelled"]) form.elements[name].checked = Boolean(policy[name]);
  const select = form.elements.error_workflow;
  const value = policy.error_workflow || "";
  if (value && ![...select.options].some((o) => o.value === value)) select.append(h("option", { value }, value));
  select.value = value;
  form.elements.webhook_url.value = policy.webhook_url || "";
  form.elements.webhook_secret.value = "";
  $("#failure-secret-state").textContent = policy.webhook_secret_set ? "(set; empty keeps it)" : "(none)";
  form.elements.emails.value = (policy.emails || []).join(", ");
}

function readPolicy(form) {
  const body = {
    enabled: form.elements.enabled.checked,
    error_workflow: form.elements.error_workflow.value || null,
    on_failed: form.elements.on_failed.checked,
    on_succeeded: form.elements.on_succeeded.checked,
    on_cancelled: form.elements.on_cancelled.checked,
    webhook_url: form.elements.webhook_url.value.trim(),
    emails: form.elements.emails.value
      .split(",")
      .map((e) => e.trim())
      .filter(Boolean),
  };
  // Left out, the stored secret is kept.
  if (form.elements.webhook_secret.value) body.webhook_secret = form.elements.webhook_secret.value;
  return body;
}

async function loadDeliveries(workflowId) {
  const body = $("#delivery-table tbody");
  try {
    const page = await api(`workflows/${workflowId}/notifications/?page_size=20`);
    const rows = (page.results || []).map((d) =>
      h(
        "tr",
        { "data-delivery-id": d.id },
        h("td", {}, d.event),
        h("td", {}, d.channel),
        h("td", { class: "hide-narrow wrap" }, d.target),
        h("td", {}, h("span", { class: `badge status-${d.status}` }, d.status)),
        h("td", { class: "hide-narrow" }, String(d.attempts)),
        h("td", { class: "wrap" }, d.last_error || ""),
      ),
    );
    body.replaceChildren(...rows, ...(rows.length ? [] : [h("tr", {}, h("td", { colspan: "6", class: "muted" }, "Nothing sent yet."))]));
  } catch (error) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: "6", class: "error" }, errorMessage(error))));
  }
}

export async function initFailurePolicy(workflowId) {
  const form = $("#failure-form");
  if (!form) return;
  const editable = await canEdit(workflowId);
  const select = form.elements.error_workflow;
  try {
    const [policy, workflows] = await Promise.all([
      api(`workflows/${workflowId}/failure-policy/`),
      editable ? listAll("workflows/") : Promise.resolve([]),
    ]);
    select.replaceChildren(
      h("option", { value: "" }, "None"),
      ...workflows.filter((w) => w.id !== workflowId).map((w) => h("option", { value: w.id }, w.name)),
    );
    fillPolicy(form, policy);
    $("#failure-status").textContent = policy.updated_at ? `Last saved ${formatTime(policy.updated_at)}` : "Not set yet";
  } catch (error) {
    showError(errorMessage(error), '[data-role="failure-error"]');
  }
  if (!editable) {
    $("#failure-readonly").hidden = false;
    for (const el of form.elements) el.disabled = true;
    form.querySelector('button[type="submit"]').hidden = true;
  } else {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = form.querySelector('button[type="submit"]');
      button.disabled = true;
      $("#failure-status").textContent = "";
      try {
        const saved = await api(`workflows/${workflowId}/failure-policy/`, { method: "PUT", body: readPolicy(form) });
        fieldErrors(form, null);
        showError("", '[data-role="failure-error"]');
        fillPolicy(form, saved);
        $("#failure-status").textContent = `Saved ${formatTime(saved.updated_at)}`;
      } catch (error) {
        // A field's error next to it; anything else (or an unknown field) above the button.
        const named = fieldErrors(form, error.body);
        const other = Object.keys(error.body || {}).some((key) => !POLICY_FIELDS.includes(key) || !form.querySelector(`[data-field="${key}"]`));
        showError(named && !other ? "" : errorMessage(error), '[data-role="failure-error"]');
      } finally {
        button.disabled = false;
      }
    });
  }
  await loadDeliveries(workflowId);
}
