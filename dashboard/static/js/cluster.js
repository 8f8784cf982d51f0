// Cluster: every shard and node (through the gateway) or this node and its peers; polled.
import { $, api, h, fmt } from "./core.js";

const POLL_MS = 2000;
let timer = null;
const knownIds = new Map(); // url -> node id, so that a node that went down keeps its name

/** [{name, leader, nodes: [{url, up, ...status}]}] from a gateway's or a node's overview. */
function normalise(overview) {
  return overview.shards.map((s) => ({
    name: s.shard,
    leader: s.leader,
    nodes: s.nodes.map((n) => {
      if (n.node_id) knownIds.set(n.url, n.node_id);
      return { ...n, node_id: n.node_id || knownIds.get(n.url), up: Boolean(n.reachable) };
    }),
  }));
}

function health(n) {
  if (!n.up) return h("span", { class: "badge down" }, "down");
  if (n.has_quorum === false) return h("span", { class: "badge warn" }, "no quorum");
  return h("span", { class: "badge up" }, "up");
}

function peerLag(n) {
  if (!n.peers || n.role !== "leader") return "–";
  return h("ul", { class: "plain" }, n.peers.map((p) =>
    h("li", {}, `${p.raft_address}: ${p.connected ? "lag " + fmt.num(p.lag) : "disconnected"}`)));
}

function nodeRow(n) {
  const idx = `${fmt.num(n.commit_index)} / ${fmt.num(n.applied_index)} / ${fmt.num(n.indexed_index)}`;
  return h("tr", { dataset: { node: n.url || "", health: n.up ? "up" : "down", role: n.role || "" } },
    h("th", { scope: "row" }, h("div", {}, n.node_id || "?"), h("div", { class: "muted small" }, n.url || "")),
    h("td", {}, health(n)),
    h("td", { class: n.role === "leader" ? "leader" : "" }, n.role || "–"),
    h("td", {}, fmt.num(n.term)),
    h("td", {}, n.leader_url || n.leader || "–"),
    h("td", {}, idx),
    h("td", {}, n.lag === null || n.lag === undefined ? "–" : fmt.num(n.lag)),
    h("td", {}, peerLag(n)),
    h("td", {}, n.role_since ? `${n.role} since ${fmt.ago(n.role_since)}` : "–",
      n.elections !== undefined ? h("div", { class: "muted small" }, `${n.elections} elections started`) : null),
    h("td", {}, n.commit_latency_ms && n.commit_latency_ms.p50 !== undefined
      ? `${n.commit_latency_ms.p50} / ${n.commit_latency_ms.p99} ms` : "–"));
}

function shardCard(shard) {
  const down = shard.nodes.filter((n) => !n.up).length;
  return h("article", { class: "card", dataset: { shard: shard.name } },
    h("div", { class: "bar" }, h("h3", {}, `Shard ${shard.name}`),
      h("span", { class: "muted" }, `${shard.nodes.length} nodes, ${down} down; leader ${shard.leader || "none"}`)),
    h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, ...["node", "health", "role", "term", "leader", "commit / applied / indexed",
        "lag", "peer lag (leader's view)", "last election", "commit p50 / p99"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, shard.nodes.map(nodeRow)))));
}

async function refresh() {
  try {
    const status = await api("cluster/overview");
    $("cluster-body").replaceChildren(...normalise(status).map(shardCard));
    $("cluster-updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    $("cluster-updated").textContent = "";
    $("cluster-body").replaceChildren(h("p", { class: "error" }, err.message));
  }
}

export function enter() {
  leave();
  refresh();
  timer = setInterval(refresh, POLL_MS);
}

export function leave() {
  clearInterval(timer);
  timer = null;
}
