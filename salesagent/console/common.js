// What both console pages share: where the API is, the API key, and JSON requests whose
// failures come back as one readable sentence.

// The console is served at <prefix>/console/, the API at <prefix>/api/v1/sales.
const prefix = location.pathname.replace(/\/console(\/.*)?$/, "");
export const API = `${prefix}/api/v1/sales`;
export const WS_BASE = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${prefix}`;

const KEY_ITEM = "salesagent-api-key"; // kept for this browser tab only

export function apiKey() {
  return sessionStorage.getItem(KEY_ITEM) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  else sessionStorage.removeItem(KEY_ITEM);
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const EXPLAIN = {
  401: "The API key was refused",
  403: "Refused",
  404: "Not found",
  409: "The call is busy or at its limit",
  429: "Too many requests for this key",
  503: "The service is not ready",
};

export async function request(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (options.body !== undefined) headers["content-type"] = "application/json";
  if (apiKey()) headers["x-api-key"] = apiKey();
  let response;
  try {
    response = await fetch(API + path, {
      method: options.method || "GET",
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    });
  } catch {
    throw new ApiError(0, "The service cannot be reached. Is it running?");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : response.statusText;
    const lead = EXPLAIN[response.status] || `Error ${response.status}`;
    throw new ApiError(response.status, `${lead}: ${detail}`);
  }
  return body;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

export function seconds(value) {
  return value == null ? "–" : `${Number(value).toFixed(2)} s`;
}

export function duration(totalSeconds) {
  const s = Math.round(totalSeconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

export function clockTime(iso) {
  return iso ? new Date(iso).toLocaleTimeString() : "–";
}

// The call state beside the transcript, and on the calls page.
export function renderState(target, session) {
  const state = session.state || {};
  const known = Object.entries(state.qualification || {}).filter(([, v]) => v);
  target.replaceChildren(
    el("dt", {}, "Stage"),
    el("dd", { "data-field": "stage" }, (state.stage || "–").replaceAll("_", " ")),
    el("dt", {}, "Known of the lead"),
    el(
      "dd",
      { "data-field": "qualification" },
      known.length ? known.map(([k, v]) => `${k.replaceAll("_", " ")}: ${v}`).join("; ") : "nothing yet",
    ),
    el("dt", {}, "Objections"),
    el("dd", { "data-field": "objections" }, (state.objections || []).join(", ") || "none"),
    el("dt", {}, "Disposition"),
    el("dd", { "data-field": "disposition" }, state.disposition || (session.is_active ? "in progress" : "–")),
  );
}
