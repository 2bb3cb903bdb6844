// Small DOM helpers: elements are built with text nodes, never from HTML strings.

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.setAttribute("class", value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

export function svg(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

export function showError(message, selector = '[data-role="error"]') {
  const el = $(selector);
  if (!el) return;
  el.textContent = message || "";
  el.hidden = !message;
}

export function formatTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return date.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

export function formatDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(2)} s`;
  const minutes = Math.floor(ms / 60000);
  return `${minutes} min ${Math.round((ms % 60000) / 1000)} s`;
}

export function between(startIso, endIso) {
  if (!startIso || !endIso) return null;
  return new Date(endIso).getTime() - new Date(startIso).getTime();
}

export function pretty(value) {
  return JSON.stringify(value, null, 2);
}

// A button that asks for a second click before it acts: nothing is removed by one stray click.
export function confirmButton(label, confirmLabel, action, attrs = {}) {
  const button = h("button", { type: "button", class: "danger", ...attrs }, label);
  button.addEventListener("click", async () => {
    if (button.dataset.armed !== "true") {
      button.dataset.armed = "true";
      button.textContent = confirmLabel;
      return;
    }
    button.disabled = true;
    await action();
  });
  button.addEventListener("blur", () => {
    button.dataset.armed = "false";
    button.textContent = label;
  });
  return button;
}
