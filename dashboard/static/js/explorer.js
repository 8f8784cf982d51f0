// Memory explorer: hybrid search with scores and the features behind them, or a paged listing.
import { $, api, h, fmt, qs, state, table, toast } from "./core.js";

const MAX_TOP_K = 200;
let hooks = null;
let page = 0;
let cursors = [null]; // listing: the cursor that starts each page seen so far
let lastTenant = null;

export function init(h_) {
  hooks = h_;
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); page = 0; cursors = [null]; search(); });
  $("prev").addEventListener("click", () => { page = Math.max(0, page - 1); search(); });
  $("next").addEventListener("click", () => { page += 1; search(); });
}

export function enter() {
  if (lastTenant !== state.tenant) {
    lastTenant = state.tenant;
    page = 0;
    cursors = [null];
    search();
  }
}

function filters() {
  const asof = $("f-asof").value;
  return {
    query: $("q").value.trim(),
    stream: $("f-stream").value.trim(),
    layer: $("f-layer").value,
    asOf: asof ? new Date(asof).toISOString() : null,
    superseded: $("f-superseded").checked,
    size: Number($("f-size").value),
  };
}

function features(f) {
  if (!f) return "";
  const items = Object.entries(f).filter(([, v]) => v).sort((a, b) => b[1] - a[1]).slice(0, 4);
  return h("ul", { class: "chips" }, items.map(([k, v]) => h("li", { title: `${k} = ${v}` }, `${k} ${Number(v).toFixed(2)}`)));
}

function open(r) {
  if (r.layer === "L2") hooks.show("insights");
  else hooks.openMemory(r.id, r.layer);
}

function row(r) {
  const state_ = r.archived ? " (archived)" : r.superseded ? " (superseded)" : "";
  return h("tr", { dataset: { id: r.id, layer: r.layer } },
    h("td", {}, fmt.score(r.score)),
    h("td", {}, h("span", { class: "badge " + r.layer }, r.layer)),
    h("td", {}, h("button", { type: "button", class: "link open", onclick: () => open(r) }, fmt.short(r.label ? `${r.label}: ${r.content}` : r.content)), state_),
    h("td", {}, features(r.features)),
    h("td", {}, r.stream_id || (r.stream_ids || []).join(", ")),
    h("td", {}, fmt.time(r.valid_from || r.first_at)));
}

async function searchResults(f) {
  const body = {
    tenant_id: state.tenant, query: f.query, top_k: Math.min(MAX_TOP_K, (page + 1) * f.size), explain: true,
    enable_arbitration: !f.superseded, include_insights: f.layer === "" || f.layer === "L2",
  };
  if (f.stream) body.stream_id = f.stream;
  if (f.asOf) { body.as_of = f.asOf; body.include_insights = false; }
  const data = await api("retrieve", { method: "POST", body });
  const all = data.results.filter((r) => !f.layer || r.layer === f.layer);
  const rows = all.slice(page * f.size, (page + 1) * f.size);
  const more = data.results.length === body.top_k && body.top_k < MAX_TOP_K;
  return { rows, more, note: `${all.length} result(s) in ${data.took_ms} ms` };
}

async function listing(f) {
  const tenant = state.tenant;
  if (f.layer === "L2") {
    const data = await api("insights?" + qs({ tenant_id: tenant, stream_id: f.stream }));
    const rows = data.insights.slice(page * f.size, (page + 1) * f.size);
    return { rows, more: data.insights.length > (page + 1) * f.size, note: `${data.insights.length} insight(s)` };
  }
  if (f.layer === "L0") {
    const data = await api("events?" + qs({ tenant_id: tenant, stream_id: f.stream, after: cursors[page], limit: f.size }));
    cursors[page + 1] = data.next_after;
    const rows = data.events.map((e) => ({ id: e.event_id, layer: "L0", content: e.content, stream_id: e.stream_id, valid_from: e.timestamp }));
    return { rows, more: data.next_after !== null, note: `L0 events, page ${page + 1}` };
  }
  // Filtered by the server, so every page is full (a page filtered here came back short or empty).
  const data = await api("memories?" + qs({
    tenant_id: tenant, stream_id: f.stream, cursor: cursors[page], limit: f.size,
    include_superseded: f.superseded ? "true" : "false", as_of: f.asOf,
  }));
  cursors[page + 1] = data.next_cursor;
  const which = f.superseded ? "L1 memories, superseded and archived included" : "current L1 memories";
  return { rows: data.memories, more: data.next_cursor !== null, note: `${which}${f.asOf ? ` as of ${fmt.time(f.asOf)}` : ""}, page ${page + 1}` };
}

async function search() {
  const f = filters();
  const body = $("results").tBodies[0];
  if (!state.tenant) { table(body, [], "No tenant selected.", 6); return; }
  $("search-status").textContent = "searching…";
  try {
    const { rows, more, note } = f.query ? await searchResults(f) : await listing(f);
    table(body, rows.map(row), f.query ? "Nothing matches." : "Nothing here yet.", 6);
    $("search-status").textContent = note;
    $("prev").disabled = page === 0;
    $("next").disabled = !more;
    $("page-label").textContent = `page ${page + 1}`;
  } catch (err) {
    $("search-status").textContent = "";
    toast(err.message, "error");
  }
}
