// The API from the browser: session cookie + CSRF token, JSON in and out.

export class ApiError extends Error {
  constructor(status, body) {
    super(errorText(body) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  const response = await fetch(`/api/v1/${path}`, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { detail: text.slice(0, 200) };
    }
  }
  if (response.status === 401) {
    // The session ended: sign in again, then come back here.
    window.location.assign(`/login/?next=${encodeURIComponent(window.location.pathname)}`);
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// "detail", or every field error as "field: message".
export function errorText(body) {
  if (!body || typeof body !== "object") return "";
  if (typeof body.detail === "string") return body.detail;
  const parts = [];
  const walk = (value, prefix) => {
    if (Array.isArray(value)) {
      value.forEach((item, i) => (typeof item === "string" ? parts.push(prefix ? `${prefix}: ${item}` : item) : walk(item, `${prefix}[${i}]`)));
    } else if (value && typeof value === "object") {
      for (const [key, inner] of Object.entries(value)) walk(inner, prefix ? `${prefix}.${key}` : key);
    } else if (value !== undefined && value !== null) {
      parts.push(prefix ? `${prefix}: ${value}` : String(value));
    }
  };
  walk(body, "");
  return parts.join("; ");
}

export function wsUrl(path) {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${window.location.host}${path}`;
}

// A websocket to `path` (which may hold a query), opened with a fresh single-use ticket: the
// server takes the ticket, not the session cookie or a token in the URL, as proof of who we are.
export async function openSocket(path) {
  const { ticket } = await api("auth/ws-ticket/", { method: "POST" });
  const separator = path.includes("?") ? "&" : "?";
  return new WebSocket(wsUrl(`${path}${separator}ticket=${encodeURIComponent(ticket)}`));
}

// Every item of a paginated list (at most `maxPages` pages of 200).
export async function listAll(path, { maxPages = 10 } = {}) {
  const separator = path.includes("?") ? "&" : "?";
  let next = `${path}${separator}page_size=200`;
  const items = [];
  for (let page = 0; next && page < maxPages; page += 1) {
    const body = await api(next);
    items.push(...(body.results || []));
    next = body.next ? new URL(body.next, window.location.origin).href.split("/api/v1/")[1] : null;
  }
  return items;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// The LLM providers a graph names outright: its llm nodes' `config.provider` (a template such as
// "{{ start.provider }}" is only known when the node runs), and its agent nodes' agents' providers.
export function providerRefs(graph, agents = []) {
  const agentProvider = new Map(agents.map((a) => [a.id, a.provider]));
  const refs = [];
  for (const n of graph?.nodes || []) {
    const config = n.config || {};
    if (n.type === "llm" && typeof config.provider === "string" && !config.provider.includes("{{")) {
      refs.push({ node: n.id, name: n.name || n.id, provider: config.provider.trim().toLowerCase(), via: "llm" });
    } else if (n.type === "agent" && agentProvider.get(config.agent)) {
      refs.push({ node: n.id, name: n.name || n.id, provider: agentProvider.get(config.agent), via: "agent" });
    }
  }
  return refs;
}

// The llm nodes of `graph` whose provider is not one of the signed-in user's (who must own the
// workflow for its runs to use them): [{node, name, provider}].
export async function missingProviders(graph) {
  const refs = providerRefs(graph).filter((ref) => ref.via === "llm");
  if (!refs.length) return [];
  const providers = await listAll("providers/");
  const known = new Set(providers.map((p) => p.id.toLowerCase()));
  return refs.filter((ref) => !UUID.test(ref.provider) || !known.has(ref.provider));
}

// What to tell the user about a failed call: the API's own words, else the error's.
export function errorMessage(error) {
  return errorText(error.body) || error.message;
}
