// Insights (L2): label, summary, members and anchors, each linked to the memory and the graph.
import { $, api, h, fmt, state } from "./core.js";
import { focusOn } from "./graph.js";

let hooks = null;
let contents = new Map(); // memory id -> content, from the graph endpoint (bounded)

export function init(h_) {
  hooks = h_;
}

function memoryList(title, ids, cls) {
  return h("div", { class: cls },
    h("h4", {}, `${title} (${ids.length})`),
    h("ul", { class: "plain ids" }, ids.slice(0, 30).map((id) =>
      h("li", {}, h("button", { type: "button", class: "link", title: id, onclick: () => hooks.openMemory(id) },
        fmt.short(contents.get(id) || id, 90))))),
    ids.length > 30 ? h("p", { class: "muted small" }, `and ${ids.length - 30} more`) : null);
}

function card(i) {
  return h("article", { class: "card insight", dataset: { insight: i.id } },
    h("div", { class: "bar" }, h("h3", {}, i.label),
      h("button", { type: "button", class: "small show-in-graph", onclick: () => focusOn(i.member_ids) }, "Show in graph")),
    h("p", { class: "summary" }, i.summary),
    h("p", { class: "muted small" },
      `${i.size} memories · score ${fmt.score(i.score)} · streams ${i.stream_ids.join(", ")} · ` +
      `${fmt.time(i.first_at)} → ${fmt.time(i.last_at)} · synthesis ${(i.synthesis && i.synthesis.method) || "?"}`),
    i.terms.length ? h("ul", { class: "chips" }, i.terms.slice(0, 8).map((t) => h("li", {}, t))) : null,
    h("div", { class: "two" }, memoryList("Anchors", i.anchor_ids, "anchors"), memoryList("Members", i.member_ids, "members")));
}

export async function enter() {
  if (!state.tenant) return;
  $("insights-status").textContent = "loading…";
  try {
    const tenant = encodeURIComponent(state.tenant);
    const [data, graph] = await Promise.all([
      api("insights?tenant_id=" + tenant),
      api(`graph?tenant_id=${tenant}&limit=2000`),
    ]);
    contents = new Map(graph.nodes.map((n) => [n.id, n.content]));
    const list = $("insights-list");
    list.replaceChildren(...data.insights.map(card));
    if (!data.insights.length) list.append(h("p", { class: "muted" }, "No insights yet: they appear once related memories form communities (or run an insight pass from Tenants)."));
    $("insights-status").textContent = `${data.insights.length} insight(s), computed ${fmt.time(data.computed_at)}${data.stale ? " (the graph changed since)" : ""}`;
  } catch (err) {
    $("insights-status").textContent = err.message;
  }
}
