// Templates: official, community and your own; instantiate one into a new workflow.

import { api, errorText } from "../api.js";
import { $, h, showError } from "../dom.js";

async function load(kind) {
  const params = new URLSearchParams({ ordering: "-usage_count", page_size: "100" });
  if (kind) params.set("kind", kind);
  try {
    const page = await api(`templates/?${params}`);
    const cards = page.results.map((t) => {
      const nodes = t.template_data?.nodes?.length ?? 0;
      const button = h("button", { type: "button", class: "primary", "data-testid": "instantiate" }, "Use this template");
      button.addEventListener("click", async () => {
        button.disabled = true;
        try {
          const workflow = await api(`templates/${t.id}/instantiate/`, { method: "POST", body: {} });
          window.location.assign(`/workflows/${workflow.id}/`);
        } catch (error) {
          showError(errorText(error.body) || error.message);
          button.disabled = false;
        }
      });
      return h(
        "article",
        { class: "card", "data-template-id": t.id },
        h("h2", {}, t.name),
        h("p", { class: "muted small" }, [t.kind, t.category, `${nodes} nodes`, `used ${t.usage_count}×`].filter(Boolean).join(" · ")),
        t.description ? h("p", {}, t.description) : null,
        button,
      );
    });
    $("#template-list").replaceChildren(...cards);
    $("#template-empty").hidden = cards.length > 0;
    showError("");
  } catch (error) {
    showError(errorText(error.body) || error.message);
  }
}

export function init() {
  const tabs = $("#template-tabs");
  tabs.addEventListener("click", (event) => {
    const tab = event.target.closest("[data-kind]");
    if (!tab) return;
    for (const other of tabs.querySelectorAll("[data-kind]")) other.setAttribute("aria-selected", String(other === tab));
    load(tab.dataset.kind);
  });
  load("");
}
