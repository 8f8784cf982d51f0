// A memory's detail: content, validity, importance, version history and the L0 events it cites.
import { $, api, h, fmt, state, toast } from "./core.js";

function field(label, value) {
  return [h("dt", {}, label), h("dd", {}, value === null || value === undefined || value === "" ? "–" : value)];
}

function link(id) {
  return h("button", { type: "button", class: "link", onclick: () => openMemory(id) }, id);
}

function historyTable(history) {
  const rows = history.versions.map((v) => h("tr", {},
    h("td", {}, fmt.time(v.at)), h("td", {}, v.memory_id === history.id ? "this" : link(v.memory_id)),
    h("td", {}, `v${v.version}`), h("td", {}, h("span", { class: "badge" }, v.action)),
    h("td", {}, v.reason || ""), h("td", {}, fmt.short(v.content, 200))));
  return h("table", { class: "history" },
    h("caption", {}, `Version history (${history.versions.length})`),
    h("thead", {}, h("tr", {}, ...["at", "memory", "version", "action", "why", "content"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows));
}

function eventsTable(found) {
  const rows = found.events.map((e) => h("tr", {},
    h("td", {}, e.event_id), h("td", {}, e.stream_id), h("td", {}, fmt.num(e.seq)),
    h("td", {}, fmt.time(e.timestamp)), h("td", {}, fmt.short(e.content, 240))));
  return h("table", { class: "events" },
    h("caption", {}, `Cited L0 events (${found.events.length}${found.missing.length ? `, ${found.missing.length} missing` : ""})`),
    h("thead", {}, h("tr", {}, ...["event", "stream", "seq", "time", "content"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows));
}

async function cited(ids) {
  if (!ids.length) return { events: [], missing: [] };
  return api(`events/lookup?tenant_id=${encodeURIComponent(state.tenant)}&ids=${ids.slice(0, 100).map(encodeURIComponent).join(",")}`);
}

/** Open the detail dialog of a memory (or of an L0 event, shown as what it is). */
export async function openMemory(id, layer = "L1") {
  const dialog = $("memory-dialog");
  const body = $("memory-body");
  const tenant = encodeURIComponent(state.tenant);
  try {
    if (layer === "L0") {
      const found = await cited([id]);
      $("memory-title").textContent = "L0 event (not consolidated yet)";
      body.replaceChildren(eventsTable(found));
    } else {
      const [m, history] = await Promise.all([
        api(`memories/${encodeURIComponent(id)}?tenant_id=${tenant}`),
        api(`memories/${encodeURIComponent(id)}/history?tenant_id=${tenant}`),
      ]);
      const found = await cited(m.source_event_ids || []);
      $("memory-title").textContent = `Memory ${m.id}`;
      body.replaceChildren(
        h("p", { class: "content", id: "memory-content" }, m.content),
        h("dl", { class: "fields" },
          field("state", m.archived ? "archived" : m.superseded ? "superseded" : "current"),
          field("stream", m.stream_id),
          field("valid", `${fmt.time(m.valid_from)} → ${m.valid_to ? fmt.time(m.valid_to) : "now"}`),
          field("importance", fmt.score(m.importance)),
          field("accessed", `${m.access_count} times, last ${fmt.time(m.last_accessed_at)}`),
          field("version", m.version),
          field("superseded by", m.superseded_by ? link(m.superseded_by) : null),
          field("supersedes", m.supersedes.length ? m.supersedes.map(link) : null),
          field("created", fmt.time(m.created_at)),
          field("embedding", m.embedding_model)),
        historyTable(history),
        eventsTable(found));
    }
    if (!dialog.open) dialog.showModal();
    dialog.querySelector("[data-close]").focus();
  } catch (err) {
    toast(err.status === 404 ? "That memory no longer exists." : err.message, "error");
  }
}
