// Tenants: counts by state, pending events and lag; admin actions behind a confirmation.
import { $, api, h, fmt, toast, confirmAction, isAdmin, state, table } from "./core.js";

const MAX_DETAILED = 100;
let hooks = null;

export function init(h_) {
  hooks = h_;
  $("reindex").addEventListener("click", reindex);
}

async function detail(tenantId) {
  try {
    return await api("status/detail?tenant_id=" + encodeURIComponent(tenantId));
  } catch (err) {
    return { tenant_id: tenantId, error: err.message };
  }
}

function actionButton(label, onclick, cls = "") {
  return h("button", { type: "button", class: "small " + cls, onclick }, label);
}

function actions(t) {
  const id = t.tenant_id;
  const buttons = [
    actionButton("Consolidate", () => run(`Consolidate every pending event of ${id} now?`, "consolidate",
      { tenant_id: id, wait: true }, (r) => `consolidated ${id} up to event ${r.cursor ?? r.target_seq}`)),
    actionButton("Insight pass", () => run(`Recompute the insights of ${id}?`, "insights/refresh",
      { tenant_id: id, wait: true }, (r) => `insight pass on ${id}: ${r.insights ?? r.created ?? "done"}`)),
  ];
  if (isAdmin()) {
    buttons.push(actionButton("Keys…", () => keys(id)));
    buttons.push(actionButton("Delete…", () => removeTenant(id), "danger"));
  }
  return h("div", { class: "actions" }, buttons);
}

function row(t, shard) {
  const m = t.memories || {};
  const approx = m.complete === false ? "≥" : "";
  return h("tr", { dataset: { tenant: t.tenant_id } },
    h("th", { scope: "row" }, t.tenant_id),
    h("td", {}, shard || "–"),
    h("td", {}, t.error ? h("span", { class: "error" }, t.error) : h("span", { class: "badge " + (t.state || "") }, t.state || "–")),
    h("td", {}, fmt.num(t.l0_events)),
    h("td", { dataset: { count: "current" } }, approx + fmt.num(m.current)),
    h("td", {}, approx + fmt.num(m.superseded)),
    h("td", {}, approx + fmt.num(m.archived)),
    h("td", {}, fmt.num(t.pending_events)),
    h("td", {}, t.consolidation_lag_seconds === undefined ? "–" : `${fmt.num(t.consolidation_lag_seconds, 1)} s`),
    h("td", {}, actions(t)));
}

export async function enter() {
  const body = $("tenants-table").tBodies[0];
  $("tenants-status").textContent = "loading…";
  try {
    let list = [{ tenant_id: state.tenantId }];
    if (isAdmin()) list = (await api("admin/tenants")).tenants;
    list.sort((a, b) => a.tenant_id.localeCompare(b.tenant_id));
    const shown = list.slice(0, MAX_DETAILED);
    const details = await Promise.all(shown.map((t) => detail(t.tenant_id)));
    table(body, details.map((d, i) => row(d, shown[i].shard)), "No tenants yet: ingest an event to create one.", 10);
    $("tenants-status").textContent = list.length > MAX_DETAILED
      ? `${list.length} tenants; the first ${MAX_DETAILED} are shown` : `${list.length} tenant(s)`;
  } catch (err) {
    $("tenants-status").textContent = err.message;
  }
}

async function run(question, path, body, describe) {
  if (!(await confirmAction(question))) return;
  try {
    const result = await api(path, { method: "POST", body });
    toast(describe(result), "ok");
  } catch (err) {
    toast(err.message, "error");
  }
  enter();
}

async function removeTenant(id) {
  const ok = await confirmAction(`Delete tenant ${id}: every event, memory, insight and key, from RocksDB and every index. This cannot be undone.`,
    { typed: id, ok: "Delete tenant" });
  if (!ok) return;
  try {
    await api("tenants/" + encodeURIComponent(id), { method: "DELETE" });
    toast(`deleted ${id}`, "ok");
    await hooks.tenantsChanged();
  } catch (err) {
    toast(err.message, "error");
  }
}

async function reindex() {
  if (!(await confirmAction("Rebuild the BM25 and vector indexes from RocksDB on every node this serves? Searches are slower while it runs."))) return;
  try {
    await api("admin/reindex", { method: "POST", body: {} });
    toast("indexes rebuilt", "ok");
  } catch (err) {
    toast(err.message, "error");
  }
}

function keyRow(k, revoke) {
  return h("tr", { dataset: { keyId: k.key_id } },
    h("td", {}, k.key_id),
    h("td", {}, new Date(k.created_at * 1000).toISOString()),
    h("td", {}, actionButton("Revoke", () => revoke(k.key_id), "danger revoke")));
}

async function keys(id) {
  const dialog = $("keys-dialog");
  const bodyEl = $("keys-body");
  const path = `admin/tenants/${encodeURIComponent(id)}/keys`;
  $("keys-title").textContent = `Keys of ${id}`;
  const reopen = () => { if (!dialog.open) dialog.showModal(); };
  const render = async (fresh) => {
    const data = await api(path);
    const rows = data.keys.map((k) => keyRow(k, revoke));
    bodyEl.replaceChildren(
      fresh ? h("p", { class: "secret", role: "alert" }, "New key (shown once, copy it now): ", h("code", { id: "new-key" }, fresh)) : "",
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "key id"), h("th", {}, "issued"), h("th", {}, "action"))),
        h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 3, class: "muted" }, "no keys")))),
      h("button", { type: "button", id: "issue-key", onclick: issue }, "Issue a new key"));
  };
  const issue = async () => {
    if (!(await confirmAction(`Issue a new API key for ${id}?`, { ok: "Issue key" }))) { reopen(); return; }
    try {
      const created = await api(path, { method: "POST", body: {} });
      await render(created.api_key);
    } catch (err) {
      toast(err.message, "error");
    }
    reopen();
  };
  const revoke = async (keyId) => {
    const question = `Revoke key ${keyId} of ${id}? Every client using it gets 401 from now on, on every node.`;
    if (!(await confirmAction(question, { ok: "Revoke key" }))) { reopen(); return; }
    try {
      await api(`${path}/${encodeURIComponent(keyId)}`, { method: "DELETE" });
      toast(`revoked ${keyId}`, "ok");
      await render(null);
    } catch (err) {
      toast(err.message, "error");
    }
    reopen();
  };
  try {
    await render(null);
    dialog.showModal();
  } catch (err) {
    toast(err.message, "error");
  }
}
