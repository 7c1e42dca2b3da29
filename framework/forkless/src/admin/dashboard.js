// The forkless dashboard: polls GET /status once a second and draws it.
// Served from the admin endpoint with a policy that allows this origin only.
"use strict";

const POLL_MS = 1000;
const HISTORY = 60; // points per chart: a minute at one a second
const TIMELINE_MIN_MS = 60 * 1000;
const TIMELINE_MAX_MS = 10 * 60 * 1000;
const KINDS = ["start", "ready", "crash", "restart", "reload", "stop", "exit", "upgrade", "shutdown"];
const METRICS = [
  { key: "requests_per_second", unit: "/s", digits: 1 },
  { key: "p99_ms", unit: " ms", digits: 2 },
  { key: "connections_open", unit: "", digits: 0 },
  { key: "bus_queue_depth", unit: "", digits: 0 },
  { key: "restarts", unit: "", digits: 0 },
  { key: "stalls", unit: "", digits: 0 },
];

const $ = (selector) => document.querySelector(selector);
const history = new Map(); // shard -> { key -> [numbers or null] }
let rowsFor = -1; // shard count the table was built for
let events = []; // the timeline, oldest first, deduplicated by seq
let colors = {};
let lastTime = 0; // the server's clock at the last answer
let polling = false;

function text(element, value) {
  if (element.textContent !== value) element.textContent = value;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

function format(value, metric) {
  if (value === null || value === undefined) return "-";
  return value.toFixed(metric.digits) + metric.unit;
}

function buildLegend() {
  const legend = $("#legend");
  for (const kind of KINDS) {
    const span = document.createElement("span");
    span.className = "kind-" + kind;
    span.textContent = kind;
    legend.appendChild(span);
    colors[kind] = getComputedStyle(span).color;
  }
}

function buildRows(count) {
  const body = $("#shards tbody");
  body.replaceChildren();
  history.clear();
  for (let shard = 0; shard < count; shard++) {
    const row = document.createElement("tr");
    row.id = "shard-" + shard;
    row.className = "shard";
    row.dataset.shard = String(shard);
    const id = document.createElement("td");
    id.className = "id";
    id.textContent = String(shard);
    const state = document.createElement("td");
    state.className = "state";
    row.append(id, state);
    const series = {};
    for (const metric of METRICS) {
      const cell = document.createElement("td");
      cell.className = "metric m-" + metric.key;
      const value = document.createElement("span");
      value.className = "value";
      const canvas = document.createElement("canvas");
      canvas.className = "spark";
      canvas.width = 100;
      canvas.height = 28;
      cell.append(value, canvas);
      row.appendChild(cell);
      series[metric.key] = [];
    }
    history.set(shard, series);
    body.appendChild(row);
  }
  rowsFor = count;
}

// A line chart of `points` (null is a gap) scaled to its own maximum.
function spark(canvas, points) {
  const ratio = window.devicePixelRatio || 1;
  const w = 100, h = 28;
  if (canvas.width !== w * ratio) {
    canvas.width = w * ratio;
    canvas.height = h * ratio;
    canvas.style.width = w + "px";
    canvas.style.height = h + "px";
  }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, h);
  const max = Math.max(1e-9, ...points.filter((p) => p !== null));
  const step = w / (HISTORY - 1);
  const x0 = w - (points.length - 1) * step;
  g.beginPath();
  let open = false;
  points.forEach((p, i) => {
    if (p === null) { open = false; return; }
    const x = x0 + i * step, y = h - 2 - (p / max) * (h - 4);
    if (open) g.lineTo(x, y); else g.moveTo(x, y);
    open = true;
  });
  g.strokeStyle = "#2563eb";
  g.lineWidth = 1.5;
  g.stroke();
  g.fillStyle = "#6b6b70";
  g.font = "9px system-ui, sans-serif";
  if (points.some((p) => p)) g.fillText("max " + +max.toFixed(2), 2, 9);
}

function update(status) {
  document.body.classList.remove("stale");
  const link = $("#link");
  link.className = "badge live";
  lastTime = status.time_unix_ms || Date.now();
  text(link, "live " + clock(lastTime));
  const readiness = status.stopping ? "stopping" : status.ready ? "ready" : "not ready";
  text($("#process"), "pid " + status.pid + " \u00b7 " + status.shards + " shards \u00b7 " +
    readiness + " \u00b7 up " + Math.round(status.uptime_seconds) + " s");
  const totals = $("#totals");
  totals.replaceChildren();
  const figures = [
    ["requests/s", format(status.requests_per_second, METRICS[0])],
    ["p99", format(status.p99_ms, METRICS[1])],
    ["open connections", String(status.connections_open)],
    ["restarts", String(status.restarts)],
    ["reloads", String(status.reloads ?? 0)],
  ];
  for (const [name, value] of figures) {
    const span = document.createElement("span");
    const b = document.createElement("b");
    b.textContent = value;
    span.append(name + " ", b);
    totals.appendChild(span);
  }
  if (status.table.length !== rowsFor) buildRows(status.table.length);
  for (const shard of status.table) {
    const row = document.getElementById("shard-" + shard.shard);
    if (!row) continue;
    const state = row.querySelector(".state");
    text(state, shard.state + " #" + shard.incarnation);
    state.className = "state state-" + shard.state;
    const series = history.get(shard.shard);
    for (const metric of METRICS) {
      const value = shard[metric.key] ?? null;
      const points = series[metric.key];
      points.push(value);
      if (points.length > HISTORY) points.shift();
      const cell = row.querySelector(".m-" + metric.key);
      text(cell.querySelector(".value"), format(value, metric));
      spark(cell.querySelector("canvas"), points);
    }
  }
  merge(status.events || []);
  drawTimeline(status.table.length);
}

function merge(fresh) {
  const last = events.length ? events[events.length - 1].seq : 0;
  const added = fresh.filter((e) => e.seq > last);
  if (!added.length) return;
  events = events.concat(added).slice(-500);
  const list = $("#events");
  for (const e of added) {
    const item = document.createElement("li");
    item.className = "kind-" + e.kind;
    const who = e.shard === null ? "process" : "shard " + e.shard + " #" + e.incarnation;
    item.textContent = clock(e.at_unix_ms) + "  " + e.kind.padEnd(8) + " " + who + ": " + e.detail;
    list.prepend(item);
  }
  while (list.children.length > 200) list.lastChild.remove();
}

// One lane for the process and one per shard; a mark per event.
function drawTimeline(shards) {
  const canvas = $("#timeline");
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 960, h = canvas.clientHeight || 120;
  if (canvas.width !== Math.round(w * ratio)) {
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
  }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, h);
  const lanes = shards + 1, left = 64, lane = (h - 16) / lanes;
  // From the oldest event kept (one to ten minutes), up to now.
  const end = lastTime || Date.now();
  const oldest = events.length ? events[0].at_unix_ms : end;
  const span = Math.min(TIMELINE_MAX_MS, Math.max(TIMELINE_MIN_MS, (end - oldest) * 1.05));
  const start = end - span;
  g.font = "10px system-ui, sans-serif";
  g.fillStyle = "#6b6b70";
  for (let i = 0; i < lanes; i++) {
    g.fillText(i === 0 ? "process" : "shard " + (i - 1), 4, 4 + lane * i + lane / 2 + 3);
    g.fillRect(left, 4 + lane * (i + 1) - 0.5, w - left, 0.5);
  }
  for (let tick = 0; tick <= 4; tick++) {
    const ago = (span * tick) / 4;
    const x = left + (w - left - 4) * (1 - tick / 4);
    const label = tick === 0 ? "now" : ago >= 120000 ? "-" + Math.round(ago / 60000) + " min"
      : "-" + Math.round(ago / 1000) + " s";
    g.fillText(label, Math.min(x, w - 30), h - 2);
  }
  for (const e of events) {
    if (e.at_unix_ms < start) continue;
    const x = left + ((e.at_unix_ms - start) / span) * (w - left - 4);
    const i = e.shard === null ? 0 : e.shard + 1;
    g.fillStyle = colors[e.kind] || "#1d1d1f";
    g.fillRect(x - 1.5, 6 + lane * i, 3, lane - 4);
  }
}

function gone(error) {
  document.body.classList.add("stale");
  const link = $("#link");
  link.className = "badge gone";
  text(link, "process gone: " + (error && error.message ? error.message : "no answer") +
    " at " + clock(Date.now()));
  text($("#process"), "no answer from the admin endpoint; retrying every second");
}

async function poll() {
  if (polling) return;
  polling = true;
  try {
    const answer = await fetch("/status", { cache: "no-store" });
    if (!answer.ok) throw new Error("/status answered " + answer.status);
    update(await answer.json());
  } catch (error) {
    gone(error);
  } finally {
    polling = false;
  }
}

async function act(path, question) {
  if (!window.confirm(question)) return;
  const out = $("#answer");
  const buttons = [$("#reload"), $("#upgrade")];
  buttons.forEach((b) => { b.disabled = true; });
  try {
    const answer = await fetch(path, { method: "POST", cache: "no-store" });
    const body = (await answer.text()).trim();
    out.className = answer.status === 202 ? "ok" : "refused";
    text(out, "POST " + path + ": " + answer.status + " " + body);
  } catch (error) {
    out.className = "refused";
    text(out, "POST " + path + ": no answer (" + error.message + ")");
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  buildLegend();
  $("#reload").addEventListener("click", () =>
    act("/reload", "Start a rolling reload? Every shard is replaced, one at a time."));
  $("#upgrade").addEventListener("click", () =>
    act("/upgrade", "Start a binary upgrade? The binary on disk takes over the sockets."));
  poll();
  setInterval(poll, POLL_MS);
});
