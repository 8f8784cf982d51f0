// Memory graph: force-directed (force-graph, or 3d-force-graph on demand), coloured by community.
import { $, api, h, fmt, state, toast } from "./core.js";

const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
  "#ff9da7", "#9c755f", "#17becf", "#bcbd22", "#8c6d31"];
const NO_COMMUNITY = "#a0a4b0";
const DIMMED = "#dde0e8";
let hooks = null;
let instance = null;
let mode = null; // "2d" | "3d"
let loadedFor = null;
let data = { nodes: [], links: [] };
let highlight = null; // Set of memory ids to emphasise (from an insight), or null

export function init(h_) {
  hooks = h_;
  $("g-reload").addEventListener("click", () => { highlight = null; load(true); });
  $("g-limit").addEventListener("change", () => load(true));
  $("g-3d").addEventListener("change", () => { draw(); });
  const find = $("g-find");
  find.addEventListener("keydown", (e) => { if (e.key === "Enter" && find.value) { e.preventDefault(); hooks.openMemory(find.value); } });
  find.addEventListener("dblclick", () => { if (find.value) hooks.openMemory(find.value); });
  window.addEventListener("resize", resize);
}

/** Emphasise the members of one insight, then show the graph. */
export function focusOn(memberIds) {
  highlight = new Set(memberIds);
  hooks.show("graph");
}

export function enter() {
  load(false);
}

export function leave() {
  if (instance && instance.pauseAnimation) instance.pauseAnimation();
}

function colour(node) {
  if (highlight && !highlight.has(node.id)) return DIMMED;
  return node.community === null ? NO_COMMUNITY : PALETTE[node.community % PALETTE.length];
}

async function load(force) {
  if (!state.tenant) return;
  if (!force && loadedFor === state.tenant && instance) { restyle(); if (instance.resumeAnimation) instance.resumeAnimation(); return; }
  const limit = Number($("g-limit").value);
  const tenant = encodeURIComponent(state.tenant);
  $("graph-status").textContent = "loading…";
  try {
    const [g, analysis] = await Promise.all([
      api(`graph?tenant_id=${tenant}&limit=${limit}`),
      api(`graph/analysis?tenant_id=${tenant}&limit=1000`),
    ]);
    const community = new Map();
    analysis.communities.forEach((c, i) => c.members.forEach((m) => community.set(m, i)));
    data = {
      nodes: g.nodes.map((n) => ({ ...n, community: community.has(n.id) ? community.get(n.id) : null })),
      links: g.edges.map((e) => ({ source: e.source, target: e.target, weight: e.weight })),
    };
    loadedFor = state.tenant;
    $("graph-status").textContent = `${g.nodes.length} memories, ${g.edges.length} edges, ${analysis.communities.length} communities` +
      (g.truncated ? ` — a sample: the first ${limit} memories by id (ids are random, so it is an unbiased sample) and the edges between them` : "");
    legend(analysis.communities);
    fillFinder();
    draw();
  } catch (err) {
    $("graph-status").textContent = err.message;
  }
}

function legend(communities) {
  $("legend").replaceChildren(h("h3", {}, "Communities"), ...communities.slice(0, PALETTE.length).map((c, i) =>
    h("div", { class: "legend-item" }, h("span", { class: "swatch", style: `background:${PALETTE[i]}` }), `${c.size} memories${c.insight_id ? " (insight)" : ""}`)));
}

function fillFinder() {
  const nodes = [...data.nodes].sort((a, b) => (b.importance || 0) - (a.importance || 0)).slice(0, 500);
  $("g-find").replaceChildren(...nodes.map((n) => new Option(fmt.short(n.content, 80), n.id)));
}

function webgl() {
  try {
    const canvas = document.createElement("canvas");
    return Boolean(canvas.getContext("webgl2") || canvas.getContext("webgl"));
  } catch {
    return false;
  }
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = src;
    s.onload = resolve;
    s.onerror = () => reject(new Error("could not load " + src));
    document.head.append(s);
  });
}

async function factory() {
  if (!$("g-3d").checked) return ["2d", window.ForceGraph];
  if (!webgl()) {
    toast("3D needs WebGL, which this browser does not offer; showing 2D.", "error");
    $("g-3d").checked = false;
    return ["2d", window.ForceGraph];
  }
  if (!window.ForceGraph3D) await loadScript("/dashboard/static/vendor/3d-force-graph.min.js");
  return ["3d", window.ForceGraph3D];
}

async function draw() {
  const [wanted, Factory] = await factory();
  if (!Factory) { $("graph-status").textContent = "graph library missing: run make"; return; }
  const el = $("graph");
  if (instance && mode !== wanted) {
    if (instance._destructor) instance._destructor();
    el.replaceChildren();
    instance = null;
  }
  if (!instance) {
    instance = Factory()(el)
      .nodeId("id")
      .nodeLabel((n) => escapeLabel(n.content))
      .nodeVal((n) => 1 + 4 * (n.importance || 0))
      .linkWidth((l) => 0.5 + 2 * (l.weight || 0))
      .onNodeClick((n) => hooks.openMemory(n.id));
    if (wanted === "2d") instance.linkColor(() => "rgba(120,130,150,0.35)");
    instance.cooldownTicks(200).onEngineStop(() => { el.dataset.settled = "1"; });
    mode = wanted;
    window.__memoroseGraph = instance; // for the browser tests: find a node on the canvas
  }
  restyle();
  delete el.dataset.settled;
  instance.graphData(data);
  resize();
}

function restyle() {
  if (instance) instance.nodeColor(colour);
  $("graph-focus").textContent = highlight ? `Highlighting the ${highlight.size} members of an insight (Reload clears).` : "";
}

function escapeLabel(text) {
  const div = document.createElement("div");
  div.textContent = fmt.short(text, 200);
  return div.innerHTML;
}

function resize() {
  if (!instance) return;
  const el = $("graph");
  instance.width(el.clientWidth).height(Math.max(320, el.clientHeight));
}
