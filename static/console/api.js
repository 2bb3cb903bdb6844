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
