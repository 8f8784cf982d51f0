// Memorose ops dashboard: plain JavaScript, no build step. Talks to the node's public API.
"use strict";
const $ = (id) => document.getElementById(id);
let key = localStorage.getItem("memorose.key") || "";

async function api(path, body) {
  const init = { headers: { Authorization: "Bearer " + key } };
  if (body !== undefined) { init.method = "POST"; init.body = JSON.stringify(body); }
  const response = await fetch(path, init);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error ? data.error.message : response.statusText);
  return data;
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

function fill(table, rows) {
  const body = $(table).tBodies[0];
  body.replaceChildren(...rows.map((cells) => { const tr = document.createElement("tr"); tr.append(...cells); return tr; }));
}

async function refreshCluster() {
  try {
    const s = await api("/api/v1/cluster/status");
    fill("cluster", [
      [cell("node"), cell(s.node_id)],
      [cell("role"), cell(s.role, s.role === "leader" ? "leader" : "")],
      [cell("leader"), cell(s.leader_url || s.leader)],
      [cell("term"), cell(s.term)],
      [cell("commit / applied / indexed"), cell(`${s.commit_index} / ${s.applied_index} / ${s.indexed_index}`)],
      ...(s.peers || []).map((p) => [cell("peer " + p.raft_address), cell(p.connected ? "connected" : "down")]),
    ]);
    const t = await api("/api/v1/admin/tenants");
    fill("tenants", t.tenants.map((x) => [cell(x.tenant_id), cell(x.l0_events), cell(x.l1_memories), cell(x.pending_events)]));
  } catch (err) {
    fill("cluster", [[cell(err.message, "error")]]);
  }
}

async function search(event) {
  event.preventDefault();
  const tenant = $("tenant").value.trim();
  const query = $("query").value.trim();
  try {
    const items = query
      ? (await api("/api/v1/retrieve", { tenant_id: tenant, query, top_k: 20 })).results
      : (await api("/api/v1/memories?tenant_id=" + encodeURIComponent(tenant) + "&limit=100")).memories;
    fill("memories", items.map((m) => [cell(m.layer), cell(m.content), cell(m.source_event_ids.join(", ")), cell(m.score)]));
  } catch (err) {
    fill("memories", [[cell(err.message, "error")]]);
  }
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  key = $("key").value.trim();
  localStorage.setItem("memorose.key", key);
  refreshCluster();
});
$("search").addEventListener("submit", search);
if (key) refreshCluster();
setInterval(() => { if (key) refreshCluster(); }, 3000);
