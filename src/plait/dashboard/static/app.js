// plait's dashboard: plain JS over the JSON API (/api/...) of the server that serves this page.
// Every figure drawn on the graph's canvas is also written into the tables below it.
"use strict";

const $ = (selector) => document.querySelector(selector);
const HEALTH_COLOURS = { healthy: "#7a8899", degraded: "#e08f00", failing: "#d32f2f", na: "#7a8899" };
const NODE_SHAPES = { app: "round-rectangle", workload: "ellipse", service: "triangle", unknown: "octagon" };
let cy = null;
let timer = null;
let tapReader = null;
let selected = null; // the node or edge whose details are shown: {id, isEdge}
let names = {};
const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");

function fmt(value, digits = 2) {
  return value === null || value === undefined ? "-" : Number(value).toFixed(digits);
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function fillTable(id, rows, render) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren();
  for (const item of rows) {
    const tr = document.createElement("tr");
    render(tr, item);
    body.appendChild(tr);
  }
}

function query(extra = {}) {
  const params = new URLSearchParams({ namespace: $("#namespace").value, window: $("#window").value, ...extra });
  return params.toString();
}

async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `${url}: ${response.status}`);
  return body;
}

function setStatus(text) {
  $("#status").textContent = text;
}

// ------------------------------------------------------------------ graph

function nodeLabel(node) {
  return node.name + (node.isGateway ? " (gateway)" : "");
}

function edgeLabel(edge) {
  const lock = edge.mtls ? "mTLS " : "";
  if (edge.protocol === "tcp") return `${lock}${fmt(edge.tcpBytes, 0)} B/s`;
  const p95 = edge.p95 === null ? "" : ` p95 ${fmt(edge.p95, 0)}ms`;
  return `${lock}${fmt(edge.rps)} rps ${fmt(edge.errorRate, 1)}%${p95}`;
}

function drawGraph(data) {
  names = Object.fromEntries(data.nodes.map((n) => [n.id, n.name]));
  const elements = [
    ...data.nodes.map((n) => ({
      data: { ...n, label: nodeLabel(n), shape: n.isGateway ? "diamond" : NODE_SHAPES[n.nodeType] || "ellipse",
        colour: HEALTH_COLOURS[n.health] },
    })),
    ...data.edges.map((e) => ({ data: { ...e, label: edgeLabel(e), colour: HEALTH_COLOURS[e.health] } })),
  ];
  if (!cy) {
    cytoscape.use(cytoscapeDagre);
    cy = cytoscape({
      container: $("#cy"),
      wheelSensitivity: 0.3,
      style: [
        { selector: "node", style: { label: "data(label)", shape: "data(shape)", "background-color": "#fff",
          "border-width": 2, "border-color": "data(colour)", "font-size": 11, "text-valign": "bottom",
          "text-margin-y": 4, width: 28, height: 28 } },
        { selector: "node[?isExternal]", style: { "border-style": "dashed" } },
        { selector: "edge", style: { label: "data(label)", "line-color": "data(colour)",
          "target-arrow-color": "data(colour)", "target-arrow-shape": "triangle", "curve-style": "bezier",
          width: 2, "font-size": 9, "text-rotation": "autorotate", "text-background-color": "#fff",
          "text-background-opacity": 0.8 } },
        { selector: "edge[protocol = 'tcp']", style: { "line-style": "dashed" } },
        { selector: ":selected", style: { "overlay-opacity": 0.15 } },
      ],
    });
    cy.on("tap", "node, edge", (event) => select(event.target.data()));
  }
  cy.elements().remove();
  cy.add(elements);
  cy.style().update(); // elements re-added under the same ids take their new data's colours
  cy.layout({ name: "dagre", rankDir: "LR", nodeSep: 50, rankSep: 200 }).run();
  if (cy.zoom() > 1.2) {
    cy.zoom(1.2); // a small graph is not blown up
    cy.center();
  }
  $("#graph-empty").hidden = data.nodes.length > 0;
  const still = selected && [...data.nodes, ...data.edges].find((item) => item.id === selected.id);
  if (still) select(still);
  const focused = document.activeElement && document.activeElement.closest("#graph-nodes, #graph-edges")
    ? document.activeElement.dataset : null; // a keyboard user's row keeps its focus across refreshes
  fillTable("graph-nodes", data.nodes, (tr, n) => {
    selectable(tr, n);
    tr.dataset.nodeId = n.id;
    tr.dataset.name = n.name;
    cell(tr, nodeLabel(n));
    cell(tr, n.isExternal ? "external service" : n.nodeType);
    cell(tr, n.namespace);
    cell(tr, fmt(n.rpsIn), "num");
    cell(tr, fmt(n.rpsOut), "num");
    cell(tr, fmt(n.errorRate, 1), "num");
    cell(tr, n.health, n.health);
  });
  fillTable("graph-edges", data.edges, (tr, e) => {
    selectable(tr, e);
    tr.dataset.edgeId = e.id;
    tr.dataset.source = names[e.source];
    tr.dataset.target = names[e.target];
    tr.dataset.health = e.health;
    tr.dataset.rps = e.rps === null ? "" : String(e.rps);
    cell(tr, names[e.source]);
    cell(tr, names[e.target]);
    cell(tr, e.protocol);
    cell(tr, fmt(e.rps), "num");
    cell(tr, fmt(e.errorRate, 1), "num");
    cell(tr, fmt(e.p95, 0), "num");
    cell(tr, e.mtls ? "yes" : e.mtlsPercent === null ? "-" : `${fmt(e.mtlsPercent, 0)} %`);
    cell(tr, fmt(e.tcpBytes, 0), "num");
    cell(tr, e.health, e.health);
  });
  if (focused) {
    const row = focused.nodeId ? `#graph-nodes tr[data-node-id="${CSS.escape(focused.nodeId)}"]`
      : `#graph-edges tr[data-edge-id="${CSS.escape(focused.edgeId)}"]`;
    const again = document.querySelector(row);
    if (again) again.focus();
  }
}

function selectable(tr, item) {
  // a row of the graph's tables selects its node or edge as a click on the canvas does (Enter from the keyboard)
  tr.tabIndex = 0;
  tr.addEventListener("click", () => select(item));
  tr.addEventListener("keydown", (event) => { if (event.key === "Enter") select(item); });
}

function select(item) {
  selected = { id: item.id, isEdge: Boolean(item.source) };
  showDetails(item);
  loadSeries(item).catch((error) => setStatus(`time series: ${error.message}`));
}

function showDetails(item) {
  const rows = item.source
    ? [["From", names[item.source]], ["To", names[item.target]], ["Protocol", item.protocol],
      ["Requests/s", fmt(item.rps)], ["Error %", fmt(item.errorRate, 2)],
      ["Success %", item.errorRate === null ? "-" : fmt(100 - item.errorRate, 2)], ["p95 ms", fmt(item.p95, 1)],
      ["mTLS", item.mtlsPercent === null ? "-" : `${fmt(item.mtlsPercent, 0)} %`], ["TCP bytes/s", fmt(item.tcpBytes, 0)],
      ["Health", item.health]]
    : [["Node", nodeLabel(item)], ["Type", item.nodeType], ["Namespace", item.namespace],
      ["Inbound rps", fmt(item.rpsIn)], ["Outbound rps", fmt(item.rpsOut)], ["Error %", fmt(item.errorRate, 2)],
      ["Inbound p95 ms", fmt(item.p95, 1)], ["Health", item.health]];
  const table = document.createElement("table");
  table.id = "details-figures";
  for (const [key, value] of rows) {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.textContent = key;
    tr.appendChild(th);
    cell(tr, value);
    table.appendChild(tr);
  }
  // the same element refreshed keeps its time series until the new one arrives (no flicker, no empty table)
  const previous = $("#details-series");
  const over = previous && previous.dataset.item === item.id ? previous : document.createElement("div");
  over.id = "details-series";
  over.dataset.item = item.id;
  $("#details").replaceChildren(table, over);
}

// ------------------------------------------------------------------ the side panel's time series

const SVG = "http://www.w3.org/2000/svg";

function seriesFigures(item) {
  // [field, title, digits] drawn for a node, an HTTP edge or a TCP edge
  if (!item.source) {
    return [["rpsIn", "Requests/s in", 2], ["rpsOut", "Requests/s out", 2], ["errorRate", "Error %", 1],
      ["p95", "p95 ms in", 0]];
  }
  if (item.protocol === "tcp") return [["tcpBytes", "TCP bytes/s", 0]];
  return [["rps", "Requests/s", 2], ["errorRate", "Error %", 1], ["p95", "p95 ms", 0]];
}

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  return element;
}

function clock(t) {
  return new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function sparkline(points, field, title, digits, window) {
  // one figure over the window as a line (gaps where it has no value), its scale and last value as text,
  // the time axis labelled at both ends
  const width = 250, height = 48, values = points.map((p) => p[field]);
  const known = values.filter((v) => v !== null);
  const top = Math.max(...known, 0) || 1;
  const first = points.length ? points[0].t : 0, span = points.length > 1 ? points[points.length - 1].t - first : 1;
  let path = "", pen = "M";
  points.forEach((p, i) => {
    if (values[i] === null) { pen = "M"; return; }
    const x = (width * (p.t - first)) / span, y = height - 2 - ((height - 4) * values[i]) / top;
    path += `${pen}${x.toFixed(1)},${y.toFixed(1)} `;
    pen = "L";
  });
  const last = known.length ? fmt(known[known.length - 1], digits) : "-";
  const figure = document.createElement("figure");
  figure.className = "spark";
  figure.dataset.field = field;
  const caption = document.createElement("figcaption");
  caption.textContent = known.length ? `${title}: last ${last}, max ${fmt(Math.max(...known), digits)}`
    : `${title}: none in the window`;
  const svg = svgElement("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `${title} over the last ${window}: ${known.length ? `from ${fmt(Math.min(...known), digits)} to `
      + `${fmt(Math.max(...known), digits)}, last ${last}` : "no values"}` });
  svg.appendChild(svgElement("line", { x1: 0, y1: height - 2, x2: width, y2: height - 2, class: "axis" }));
  if (path) svg.appendChild(svgElement("path", { d: path, class: field === "errorRate" ? "line error" : "line" }));
  const axis = document.createElement("div");
  axis.className = "time-axis";
  axis.setAttribute("aria-hidden", "true"); // the table below says the same
  if (points.length) {
    for (const t of [first, points[points.length - 1].t]) {
      const label = document.createElement("span");
      label.textContent = clock(t);
      axis.appendChild(label);
    }
  }
  figure.append(caption, svg, axis);
  return figure;
}

async function loadSeries(item) {
  const which = item.source ? "edge" : "node";
  const data = await getJSON(`api/graph/series?${query({ type: $("#graph-type").value, [which]: item.id })}`);
  const box = $("#details-series");
  if (!box || !selected || selected.id !== item.id) return; // another element was chosen meanwhile
  const figures = seriesFigures(item);
  const heading = document.createElement("h4");
  heading.textContent = `Over the last ${data.window} (every ${data.step} s)`;
  const charts = figures.map(([field, title, digits]) => sparkline(data.points, field, title, digits, data.window));
  const details = document.createElement("details");
  const summary = document.createElement("summary");
  summary.textContent = "The same as a table";
  const table = document.createElement("table");
  table.id = "series-table";
  const head = document.createElement("tr");
  for (const title of ["Time", ...figures.map((f) => f[1])]) {
    const th = document.createElement("th");
    th.textContent = title;
    head.appendChild(th);
  }
  table.appendChild(document.createElement("thead")).appendChild(head);
  const body = table.appendChild(document.createElement("tbody"));
  for (const p of data.points) {
    const tr = body.insertRow();
    tr.dataset.t = String(p.t);
    cell(tr, clock(p.t));
    for (const [field, , digits] of figures) cell(tr, fmt(p[field], digits), "num");
  }
  details.append(summary, table);
  box.replaceChildren(heading, ...charts, details);
}

// ------------------------------------------------------------------ traffic animation (Kiali's moving dots)

let animation = null;

function dots(edge) {
  // how many dots an edge carries (more with more traffic) and how many of them are red (its 5xx share)
  const amount = edge.protocol === "tcp" ? (edge.tcpBytes || 0) / 1000 : edge.rps || 0;
  if (amount <= 0) return { count: 0, red: 0 };
  const count = Math.min(12, Math.max(1, Math.ceil(2 * Math.log2(1 + amount))));
  const red = edge.errorRate ? Math.max(1, Math.round((count * edge.errorRate) / 100)) : 0;
  return { count, red };
}

function animate(now) {
  const canvas = $("#traffic");
  const box = $("#cy");
  const ratio = window.devicePixelRatio || 1;
  if (canvas.width !== box.clientWidth * ratio || canvas.height !== box.clientHeight * ratio) {
    canvas.width = box.clientWidth * ratio;
    canvas.height = box.clientHeight * ratio;
  }
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, canvas.width, canvas.height);
  if (cy) {
    for (const edge of cy.edges()) {
      const { count, red } = dots(edge.data());
      if (!count) continue;
      const s = edge.renderedSourceEndpoint(), t = edge.renderedTargetEndpoint(), m = edge.renderedMidpoint();
      const c = { x: 2 * m.x - (s.x + t.x) / 2, y: 2 * m.y - (s.y + t.y) / 2 }; // the curve passes through m
      const seconds = 3 / (1 + Math.log10(1 + (edge.data("rps") || 1))); // busier edges move faster too
      for (let i = 0; i < count; i++) {
        const u = (now / 1000 / seconds + i / count) % 1;
        const x = (1 - u) * (1 - u) * s.x + 2 * (1 - u) * u * c.x + u * u * t.x;
        const y = (1 - u) * (1 - u) * s.y + 2 * (1 - u) * u * c.y + u * u * t.y;
        context.fillStyle = i < red ? "#d32f2f" : edge.data("protocol") === "tcp" ? "#35608f" : "#2e7d32";
        context.beginPath();
        context.arc(x, y, 2.5 * Math.min(cy.zoom(), 1.5), 0, 2 * Math.PI);
        context.fill();
      }
    }
  }
  animation = requestAnimationFrame(animate);
}

function setAnimation() {
  const on = $("#animate").checked && currentPage() === "graph";
  if (on && animation === null) animation = requestAnimationFrame(animate);
  if (!on && animation !== null) {
    cancelAnimationFrame(animation);
    animation = null;
    const canvas = $("#traffic");
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  }
}

async function loadGraph() {
  drawGraph(await getJSON(`api/graph?${query({ type: $("#graph-type").value })}`));
}

// ------------------------------------------------------------------ lists

async function loadWorkloads() {
  const data = await getJSON(`api/workloads?${query()}`);
  fillTable("workloads", data.workloads, (tr, w) => {
    tr.dataset.workload = w.workload;
    cell(tr, w.name);
    cell(tr, w.workload + (w.gateway ? " (gateway)" : ""));
    cell(tr, w.namespace);
    cell(tr, w.app);
    cell(tr, w.version);
    cell(tr, w.address);
    cell(tr, w.sidecar ? "yes" : "no");
    cell(tr, w.sync);
    cell(tr, fmt(w.rps), "num");
    cell(tr, fmt(w.errorRate, 1), "num");
    cell(tr, w.health, w.health);
  });
  const target = $("#tap-target");
  if (!target.options.length) {
    for (const name of [...new Set(data.workloads.map((w) => w.workload))]) {
      target.add(new Option(name, `deploy/${name}`));
    }
  }
}

async function loadServices() {
  const data = await getJSON(`api/services?${query()}`);
  fillTable("services", data.services, (tr, s) => {
    cell(tr, s.name);
    cell(tr, s.kind);
    cell(tr, s.namespace);
    cell(tr, s.kind === "ServiceEntry" ? s.hosts.join(", ") : s.ports.join(", "));
    cell(tr, fmt(s.rps), "num");
    cell(tr, fmt(s.errorRate, 1), "num");
    cell(tr, s.health, s.health);
  });
}

async function loadConfig() {
  const data = await getJSON(`api/config?${query()}`);
  fillTable("config", data.objects, (tr, o) => {
    cell(tr, o.kind);
    cell(tr, o.namespace);
    cell(tr, o.name);
    cell(tr, o.valid ? "✔" : "✘", o.valid ? "healthy" : "failing");
    const td = cell(tr, "");
    for (const m of o.messages) {
      const line = document.createElement("div");
      line.className = `msg-${m.level}`;
      line.textContent = `${m.level}${m.code ? ` [${m.code}]` : ""}: ${m.message}`;
      td.appendChild(line);
    }
  });
}

// ------------------------------------------------------------------ traces

async function loadTraces() {
  const select = $("#trace-service");
  if (select.options.length <= 1) {
    const data = await getJSON("api/traces/services");
    for (const name of data.services) select.add(new Option(name, name));
  }
  const params = new URLSearchParams({ service: select.value, minDuration: $("#trace-min").value || "0" });
  const data = await getJSON(`api/traces?${params}`);
  fillTable("traces", data.traces, (tr, t) => {
    tr.dataset.traceId = t.traceId;
    tr.tabIndex = 0;
    cell(tr, new Date(t.start / 1000).toLocaleTimeString());
    cell(tr, t.service);
    cell(tr, t.name);
    cell(tr, fmt(t.durationMs, 1), "num");
    cell(tr, String(t.spans), "num");
    cell(tr, String(t.errors), t.errors ? "failing" : "");
    const open = () => showTrace(t.traceId).catch((error) => setStatus(error.message));
    tr.addEventListener("click", open);
    tr.addEventListener("keydown", (event) => { if (event.key === "Enter") open(); });
  });
}

async function showTrace(traceId) {
  const trace = await getJSON(`api/traces/${encodeURIComponent(traceId)}`);
  $("#trace-title").textContent = `Trace ${trace.traceId} (${fmt(trace.durationMs, 1)} ms)`;
  const total = trace.durationMs || 1;
  fillTable("waterfall", trace.spans, (tr, s) => {
    const name = cell(tr, s.service);
    name.style.paddingLeft = `${8 + 14 * s.depth}px`;
    cell(tr, s.name);
    cell(tr, s.kind);
    cell(tr, fmt(s.offsetMs, 1), "num");
    cell(tr, fmt(s.durationMs, 1), "num");
    cell(tr, s.status, s.error ? "failing" : "");
    const bar = document.createElement("div");
    bar.className = s.error ? "bar error" : "bar";
    bar.style.left = `${(100 * s.offsetMs) / total}%`;
    bar.style.width = `${Math.max(0.5, (100 * s.durationMs) / total)}%`;
    cell(tr, "", "bar-cell").appendChild(bar);
  });
}

// ------------------------------------------------------------------ live calls (tap)

async function startTap(event) {
  event.preventDefault();
  stopTap();
  const target = $("#tap-target").value;
  if (!target) return;
  $("#tap-start").disabled = true;
  $("#tap-stop").disabled = false;
  const response = await fetch(`api/tap?${new URLSearchParams({ target, namespace: $("#namespace").value })}`);
  if (!response.ok) {
    setStatus((await response.json()).error);
    stopTap();
    return;
  }
  tapReader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await tapReader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const lines = buffer.split("\n");
      buffer = lines.pop();
      for (const line of lines.filter((l) => l.trim())) addTapRow(JSON.parse(line));
    }
  } catch (error) {
    if (tapReader) setStatus(`live calls: ${error.message}`);
  }
  stopTap();
}

function addTapRow(e) {
  if (!e.proxy) return; // a session notice, not a request
  const tr = document.createElement("tr");
  cell(tr, e.start || new Date().toISOString());
  cell(tr, e.proxy === "in" ? "inbound" : "outbound");
  cell(tr, e.src_workload || e.src);
  cell(tr, e.dst_workload || e.authority || e.dst);
  cell(tr, e.method);
  cell(tr, e.path);
  cell(tr, String(e.status), e.status >= 500 ? "failing" : "");
  cell(tr, e.latency_us === null ? "-" : fmt(e.latency_us / 1000, 1), "num");
  const body = $("#tap tbody");
  body.prepend(tr);
  while (body.rows.length > 200) body.deleteRow(-1);
}

function stopTap() {
  const reader = tapReader;
  tapReader = null;
  if (reader) reader.cancel().catch(() => {});
  $("#tap-start").disabled = false;
  $("#tap-stop").disabled = true;
}

// ------------------------------------------------------------------ pages and refresh

const LOADERS = { graph: loadGraph, workloads: loadWorkloads, services: loadServices, config: loadConfig,
  traces: loadTraces, live: loadWorkloads };

function currentPage() {
  const page = location.hash.replace("#", "");
  return page in LOADERS ? page : "graph";
}

async function refresh() {
  const page = currentPage();
  try {
    await LOADERS[page]();
    setStatus("");
    document.body.dataset.loaded = String(Date.now());
  } catch (error) {
    setStatus(error.message);
  }
}

function schedule() {
  clearInterval(timer);
  const seconds = Number($("#refresh").value);
  const still = ["live", "traces"]; // a tap stream runs by itself; a trace being read should not move
  if (seconds > 0) timer = setInterval(() => { if (!still.includes(currentPage())) refresh(); }, seconds * 1000);
}

function showPage() {
  const page = currentPage();
  for (const section of document.querySelectorAll("main > section")) section.hidden = section.dataset.page !== page;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (page !== "live") stopTap();
  setAnimation();
  refresh();
}

function fromAddress() {
  // ?namespace=&window=&type=&refresh= choose the initial settings (a link can share a view)
  const params = new URLSearchParams(location.search);
  for (const [name, id] of [["window", "#window"], ["type", "#graph-type"], ["refresh", "#refresh"]]) {
    const value = params.get(name);
    if (value && [...$(id).options].some((o) => o.value === value)) $(id).value = value;
  }
}

async function loadNamespaces() {
  try {
    const data = await getJSON("api/namespaces");
    const select = $("#namespace");
    const chosen = new URLSearchParams(location.search).get("namespace") || select.value;
    select.replaceChildren(...data.namespaces.map((n) => new Option(n, n, false, n === chosen)));
  } catch (error) {
    setStatus(error.message);
  }
}

async function main() {
  fromAddress();
  await loadNamespaces();
  for (const id of ["#namespace", "#window", "#graph-type"]) $(id).addEventListener("change", refresh);
  $("#refresh").addEventListener("change", schedule);
  $("#animate").checked = !reducedMotion.matches; // off for those who prefer reduced motion; a toggle turns it on
  $("#animate").addEventListener("change", setAnimation);
  reducedMotion.addEventListener("change", () => { $("#animate").checked = !reducedMotion.matches; setAnimation(); });
  $("#tap-form").addEventListener("submit", startTap);
  $("#tap-stop").addEventListener("click", stopTap);
  $("#trace-form").addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
  window.addEventListener("hashchange", showPage);
  showPage();
  schedule();
}

main();
