// Metrics: the node's own Prometheus text, sampled every 2 s, rates and percentiles as uPlot charts.
import { $, api, own } from "./core.js";

const POLL_MS = 2000;
const KEEP = 180; // samples: 6 minutes
let timer = null;
let target = null; // null: the shard leader, else the server's pick (the first node that answers)
let urls = {}; // label -> base URL of each target, as the server reports them
let previous = null; // last parsed sample
let series = fresh();
const charts = {};

function fresh() {
  return { t: [], ingest: [], p50: [], p95: [], p99: [], c50: [], c99: [], pending: [], lag: [] };
}

/** Prometheus text exposition -> [{name, labels, value}]. */
export function parse(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

const sum = (samples, name, pred = () => true) =>
  samples.filter((s) => s.name === name && pred(s.labels)).reduce((a, s) => a + s.value, 0);
const max = (samples, name) => samples.filter((s) => s.name === name).reduce((a, s) => Math.max(a, s.value), 0);
const one = (samples, name) => { const s = samples.find((x) => x.name === name); return s ? s.value : null; };

function buckets(samples) {
  const route = (l) => l.route === "/api/v1/retrieve";
  return samples.filter((s) => s.name === "memorose_http_request_duration_seconds_bucket" && route(s.labels))
    .map((s) => ({ le: s.labels.le === "+Inf" ? Infinity : Number(s.labels.le), count: s.value }))
    .sort((a, b) => a.le - b.le);
}

/** A percentile (ms) of the requests between two scrapes, from cumulative histogram buckets. */
function percentile(before, after, q) {
  const delta = after.map((b, i) => ({ le: b.le, count: b.count - ((before[i] && before[i].count) || 0) }));
  const total = delta.length ? delta[delta.length - 1].count : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0;
  let prevCount = 0;
  for (const b of delta) {
    if (b.count >= rank) {
      if (b.le === Infinity) return lower * 1000;
      const within = b.count - prevCount;
      const frac = within > 0 ? (rank - prevCount) / within : 1;
      return (lower + (b.le - lower) * frac) * 1000;
    }
    lower = b.le;
    prevCount = b.count;
  }
  return null;
}

function sample(text) {
  const samples = parse(text);
  const now = Date.now() / 1000;
  const cur = { now, ingested: sum(samples, "memorose_events_ingested_total"), buckets: buckets(samples) };
  if (previous) {
    const dt = Math.max(0.001, now - previous.now);
    push("t", now);
    push("ingest", Math.max(0, (cur.ingested - previous.ingested) / dt));
    push("p50", percentile(previous.buckets, cur.buckets, 0.5));
    push("p95", percentile(previous.buckets, cur.buckets, 0.95));
    push("p99", percentile(previous.buckets, cur.buckets, 0.99));
    push("c50", ms(one(samples, "memorose_raft_recent_commit_p50_seconds")));
    push("c99", ms(one(samples, "memorose_raft_recent_commit_p99_seconds")));
    push("pending", sum(samples, "memorose_consolidation_pending_events"));
    push("lag", max(samples, "memorose_consolidation_lag_seconds"));
  }
  previous = cur;
}

function ms(seconds) {
  return seconds === null || seconds === undefined ? seconds : seconds * 1000;
}

function push(key, value) {
  series[key].push(value);
  if (series[key].length > KEEP) series[key].shift();
}

function chart(id, labels, keys) {
  const el = $(id);
  const width = Math.max(260, el.clientWidth || 400);
  const colours = ["#4e79a7", "#f28e2b", "#e15759"];
  const opts = {
    width, height: 180, legend: { show: true },
    scales: { x: { time: true } },
    series: [{}, ...labels.map((label, i) => ({ label, stroke: colours[i], width: 2, spanGaps: true }))],
  };
  const data = [series.t, ...keys.map((k) => series[k])];
  const last = series[keys[0]][series[keys[0]].length - 1];
  el.dataset.last = last === null || last === undefined ? "" : String(Math.round(last * 1000) / 1000);
  if (!charts[id]) {
    if (!window.uPlot) { el.textContent = "chart library missing: run make"; return; }
    el.replaceChildren();
    charts[id] = new window.uPlot(opts, data, el);
  } else {
    charts[id].setData(data);
  }
  // At least the last two minutes on the x axis, so that a few samples do not span years.
  const end = series.t[series.t.length - 1];
  if (end !== undefined) charts[id].setScale("x", { min: Math.min(series.t[0], end - 120), max: end });
}

function render() {
  chart("c-ingest", ["events/s"], ["ingest"]);
  chart("c-retrieve", ["p50", "p95", "p99"], ["p50", "p95", "p99"]);
  chart("c-commit", ["p50", "p99"], ["c50", "c99"]);
  chart("c-lag", ["pending events", "lag (s)"], ["pending", "lag"]);
}

const sameUrl = (a, b) => Boolean(a && b) && a.replace(/\/+$/, "") === b.replace(/\/+$/, "");

/** The label of the shard leader's metrics, or null if the overview cannot tell. Ingest,
 * retrieve and commits all land on the leader: a follower's charts would read ~0. */
async function leaderTarget(labels) {
  try {
    const overview = await api("cluster/overview");
    const shard = (overview.shards || []).find((s) => s.leader);
    if (!shard) return null;
    const node = (shard.nodes || []).find((n) => n.role === "leader") || {};
    const known = [shard.leader, node.gateway_url]; // advertised URL, or the gateway's own name for it
    const byUrl = labels.find((label) => known.some((u) => sameUrl(urls[label], u)));
    if (byUrl) return byUrl;
    return overview.role === "leader" ? labels[0] : null; // on a node: itself, listed first
  } catch {
    return null;
  }
}

async function poll() {
  try {
    const data = await own("metrics" + (target ? "?target=" + encodeURIComponent(target) : ""));
    urls = data.urls || {};
    if (!target && !chosen) {
      const leader = await leaderTarget(data.targets);
      if (leader && leader !== data.target) { fillTargets(data.targets, leader); return; }
    }
    if (target !== data.target) fillTargets(data.targets, data.target);
    sample(data.text);
    render();
    $("metrics-status").textContent = `${series.t.length} samples of ${data.target}`;
  } catch (err) {
    $("metrics-status").textContent = err.message;
    if (!chosen) target = null; // an automatic choice that died: find the leader again
  }
}

let chosen = false; // true once the operator picked a node themselves

/** Start the series over: samples of two different nodes must not be mixed. */
function reset(next) {
  target = next;
  previous = null;
  series = fresh();
  for (const id of Object.keys(charts)) { charts[id].destroy(); delete charts[id]; }
}

function fillTargets(targets, current) {
  reset(current);
  $("m-target").replaceChildren(...targets.map((t) => new Option(t, t, false, t === current)));
}

export function init() {
  $("m-target").addEventListener("change", (e) => {
    chosen = true;
    reset(e.target.value);
    poll();
  });
}

export function enter() {
  leave();
  poll();
  timer = setInterval(poll, POLL_MS);
}

export function leave() {
  clearInterval(timer);
  timer = null;
}
