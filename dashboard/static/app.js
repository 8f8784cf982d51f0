// Memorose ops dashboard: sign-in, tabs, tenant choice; each view lives in js/<view>.js.
import { $, api, own, state, toast, isAdmin } from "./js/core.js";
import * as cluster from "./js/cluster.js";
import * as tenants from "./js/tenants.js";
import * as explorer from "./js/explorer.js";
import * as graph from "./js/graph.js";
import * as insights from "./js/insights.js";
import * as metrics from "./js/metrics.js";
import { openMemory } from "./js/memory.js";

const VIEWS = { cluster, tenants, explorer, graph, insights, metrics };
let current = null;

function tabs() {
  return [...document.querySelectorAll('[role="tab"]')].filter((t) => !t.hidden);
}

function show(name) {
  if (!VIEWS[name] || $("tab-" + name).hidden) name = tabs()[0].dataset.view;
  if (current && current !== name && VIEWS[current].leave) VIEWS[current].leave();
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    const on = tab.dataset.view === name;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $("view-" + tab.dataset.view).hidden = !on;
  }
  current = name;
  if (location.hash !== "#" + name) history.replaceState(null, "", "#" + name);
  VIEWS[name].enter();
}

function onTabKey(event) {
  const list = tabs();
  const i = list.indexOf(document.activeElement);
  if (i < 0) return;
  const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
  let next = null;
  if (step) next = list[(i + step + list.length) % list.length];
  if (event.key === "Home") next = list[0];
  if (event.key === "End") next = list[list.length - 1];
  if (next) {
    event.preventDefault();
    next.focus();
    show(next.dataset.view);
  }
}

async function loadTenants() {
  const select = $("tenant-select");
  let ids = [state.tenantId];
  if (isAdmin()) {
    const data = await api("admin/tenants");
    ids = data.tenants.map((t) => t.tenant_id).sort();
  }
  const keep = state.tenant && ids.includes(state.tenant) ? state.tenant : ids[0] || "";
  select.replaceChildren(...ids.map((id) => new Option(id, id, false, id === keep)));
  select.disabled = !isAdmin();
  state.tenant = keep;
}

/** Refresh the tenant list (after a delete) and tell the open view. */
export async function tenantsChanged() {
  await loadTenants();
  if (current) VIEWS[current].enter();
}

function signedIn(session) {
  Object.assign(state, { role: session.role, tenantId: session.tenant_id, csrf: session.csrf_token });
  $("sign-in").hidden = true;
  $("nav").hidden = false;
  $("who").hidden = false;
  $("role-badge").textContent = isAdmin() ? "admin" : `tenant ${session.tenant_id}`;
  for (const el of document.querySelectorAll("[data-admin]")) el.hidden = !isAdmin();
  return loadTenants().then(() => show(location.hash.slice(1) || (isAdmin() ? "cluster" : "tenants")));
}

function signedOut() {
  if (current && VIEWS[current].leave) VIEWS[current].leave();
  current = null;
  Object.assign(state, { role: null, tenantId: null, csrf: null, tenant: "" });
  $("nav").hidden = true;
  $("who").hidden = true;
  for (const view of document.querySelectorAll(".view")) view.hidden = true;
  $("sign-in").hidden = false;
  $("key").focus();
}

async function signIn(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  $("sign-in-error").textContent = "";
  try {
    const session = await own("session", { method: "POST", body: { key } });
    $("key").value = "";
    await signedIn(session);
  } catch (err) {
    $("sign-in-error").textContent = err.status === 401 ? "That key is not known here." : err.message;
  }
}

/** Reload rather than hide: nothing the last session displayed stays in the page. */
async function signOut() {
  try { await own("session", { method: "DELETE" }); } catch (err) { toast(err.message, "error"); }
  location.replace("/dashboard/");
}

function wire() {
  state.onSignedOut = () => location.replace("/dashboard/");
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  for (const tab of document.querySelectorAll('[role="tab"]')) tab.addEventListener("click", () => show(tab.dataset.view));
  document.querySelector('[role="tablist"]').addEventListener("keydown", onTabKey);
  $("tenant-select").addEventListener("change", (e) => { state.tenant = e.target.value; if (current) VIEWS[current].enter(); });
  for (const btn of document.querySelectorAll("dialog [data-close]")) btn.addEventListener("click", () => btn.closest("dialog").close());
  window.addEventListener("hashchange", () => { if (state.role) show(location.hash.slice(1)); });
  for (const view of Object.values(VIEWS)) if (view.init) view.init({ openMemory, tenantsChanged, show });
}

async function start() {
  wire();
  const session = await own("session");
  if (session.signed_in) await signedIn(session);
  else signedOut();
}

start().catch((err) => toast(err.message, "error"));
