// Shared state and helpers: the API through the session proxy, DOM building, dialogs.
// Plain ES modules, no build step (docs/dashboard.md).

export const $ = (id) => document.getElementById(id);

/** Who is signed in; filled from /dashboard/session. The key itself never reaches the page. */
export const state = { role: null, tenantId: null, csrf: null, tenant: "", onSignedOut: null };

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function call(url, { method = "GET", body } = {}) {
  const init = { method, headers: {}, credentials: "same-origin", cache: "no-store" };
  if (method !== "GET") init.headers["X-CSRF-Token"] = state.csrf || "";
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (!response.ok) {
    const err = (data && data.error) || {};
    // The session expired or was revoked: start over (own routes answer 401 for a wrong key).
    if (response.status === 401 && url.startsWith("/dashboard/api/") && state.onSignedOut) state.onSignedOut();
    throw new ApiError(response.status, err.code || "http_error", err.message || response.statusText);
  }
  return data;
}

/** The node's (or gateway's) /api/v1/<path>, called with the session's key by the server. */
export const api = (path, options) => call("/dashboard/api/" + path, options);
/** The dashboard's own routes (/dashboard/session, /dashboard/metrics). */
export const own = (path, options) => call("/dashboard/" + path, options);

export function qs(params) {
  const out = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") out.set(k, v);
  return out.toString();
}

/** h("td", {class: "x"}, "text", child...) with text always set as text, never as HTML. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const fmt = {
  num: (v, digits = 0) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en", { maximumFractionDigits: digits })),
  score: (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(3)),
  time: (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z") : "–"),
  ago: (epoch) => {
    if (!epoch) return "–";
    const s = Math.max(0, Date.now() / 1000 - epoch);
    if (s < 90) return `${Math.round(s)} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    return `${Math.round(s / 3600)} h ago`;
  },
  short: (text, n = 160) => (text && text.length > n ? text.slice(0, n - 1) + "…" : text || ""),
};

let toastTimer = null;
export function toast(message, kind = "info") {
  const el = $("toast");
  el.textContent = message;
  el.dataset.kind = kind;
  el.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.classList.remove("show"), 5000);
}

/** A modal confirmation; with `typed`, the user must type that word (destructive actions). */
export function confirmAction(text, { typed = null, ok = "Confirm" } = {}) {
  const dialog = $("confirm-dialog");
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = ok;
  const extra = $("confirm-extra");
  extra.replaceChildren();
  let input = null;
  if (typed) {
    input = h("input", { id: "confirm-typed", autocomplete: "off", "aria-label": `type ${typed} to confirm` });
    extra.append(h("label", { for: "confirm-typed" }, `Type ${typed} to confirm`), input);
  }
  dialog.returnValue = "";
  dialog.showModal();
  (input || $("confirm-ok")).focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok" && (!typed || (input && input.value.trim() === typed)));
    }, { once: true });
  });
}

export function table(tbody, rows, emptyText, columns) {
  if (!rows.length) {
    tbody.replaceChildren(h("tr", {}, h("td", { colspan: columns, class: "muted" }, emptyText)));
    return;
  }
  tbody.replaceChildren(...rows);
}

export function isAdmin() {
  return state.role === "admin";
}
