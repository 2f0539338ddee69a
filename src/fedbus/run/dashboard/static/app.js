// fedbus dashboard: draws each run's snapshot and keeps it current.
//
// Data arrives as JSON from /api/runs, then from the event stream /api/events (or, with
// ?transport=poll, by asking /api/run/I?since=VERSION every POLL_MS). Every text that comes
// from a run (node ids, message types, names) is inserted with textContent, never as HTML.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const POLL_MS = 200;
  const NODE_ROWS = 50;
  const WAIT_NODES = 100;
  const TRACE_SHOWN = 50;
  const transport = new URLSearchParams(location.search).get("transport") === "poll"
    ? "poll" : "events";

  // window.__fedbusRendered[run][round] = Date.now() when the page first showed that round.
  const rendered = {};
  window.__fedbusRendered = rendered;
  const runs = [];

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function shape(tag, attributes, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function bytes(count) {
    if (count === null || count === undefined) return "–";
    const units = ["B", "kB", "MB", "GB", "TB"];
    let value = count;
    let unit = 0;
    while (value >= 1000 && unit < units.length - 1) {
      value /= 1000;
      unit += 1;
    }
    return (unit === 0 ? String(value) : value.toFixed(value < 10 ? 2 : 1)) + " " + units[unit];
  }

  function number(value, digits) {
    return typeof value === "number" && isFinite(value) ? value.toFixed(digits) : "–";
  }

  function nodeName(id) {
    if (id === 0) return "server";
    if (id === "clients") return "clients";
    return "node " + id;
  }

  // One run's column: its panels, made once and filled on every snapshot.
  function makeColumn(index) {
    const root = element("section", "run");
    root.id = "run-" + index;
    root.dataset.index = String(index);
    const head = element("div", "run-head");
    const parts = {
      root: root,
      name: element("h2", "name"),
      state: element("span", "state"),
      round: element("span", "round"),
      runDir: element("p", "run-dir"),
      error: element("p", "error"),
      accuracy: shape("svg", { class: "chart chart-accuracy", viewBox: "0 0 300 180" }),
      loss: shape("svg", { class: "chart chart-loss", viewBox: "0 0 300 180" }),
      waiting: element("div", "panel waiting"),
      nodes: element("div", "panel nodes"),
      flow: element("div", "panel flow"),
      trace: element("div", "panel trace"),
      version: null,
    };
    parts.error.hidden = true;
    head.append(parts.name, parts.state, parts.round);
    const curves = element("div", "panel curves");
    const charts = element("div", "charts");
    charts.append(parts.accuracy, parts.loss);
    curves.append(element("h3", null, "Curves"), charts);
    root.append(head, parts.runDir, parts.error, curves, parts.waiting, parts.nodes, parts.flow,
      parts.trace);
    return parts;
  }

  function render(index, snapshot) {
    while (runs.length <= index) {
      const column = makeColumn(runs.length);
      runs.push(column);
      document.getElementById("runs").append(column.root);
      document.getElementById("runs").dataset.count = String(runs.length);
    }
    const column = runs[index];
    if (column.version === snapshot.version) return;
    column.version = snapshot.version;
    column.root.dataset.version = String(snapshot.version);
    column.name.textContent = snapshot.name;
    column.state.textContent = snapshot.state;
    column.state.dataset.state = snapshot.state;
    const total = snapshot.num_rounds === null ? "?" : snapshot.num_rounds;
    column.round.textContent = "round " + snapshot.round + " / " + total;
    column.round.dataset.round = String(snapshot.round);
    column.round.dataset.numRounds = String(total);
    column.runDir.textContent = snapshot.run_dir;
    column.error.hidden = !snapshot.error;
    column.error.textContent = snapshot.error || "";
    const metrics = snapshot.metrics || [];
    const lastRound = Math.max(snapshot.num_rounds || 0, snapshot.round || 0, 1);
    drawChart(column.accuracy, series(metrics, "test_accuracy"), lastRound, "test accuracy", 1);
    drawChart(column.loss, series(metrics, "train_loss"), lastRound, "train loss", null);
    drawWaiting(column.waiting, snapshot.waiting);
    drawNodes(column.nodes, snapshot);
    drawFlow(column.flow, snapshot.flow || []);
    drawTrace(column.trace, snapshot.trace || []);
    const seen = rendered[index] || (rendered[index] = {});
    if (!(snapshot.round in seen)) seen[snapshot.round] = Date.now();
  }

  function series(metrics, key) {
    const points = [];
    for (const line of metrics) {
      if (typeof line.round === "number" && typeof line[key] === "number") {
        points.push([line.round, line[key]]);
      }
    }
    return points;
  }

  // A line chart of [round, value] points; yMax null: from the data.
  function drawChart(svg, points, lastRound, title, yMax) {
    clear(svg);
    svg.dataset.points = String(points.length);
    const left = 38, right = 292, top = 22, bottom = 150;
    let high = yMax;
    if (high === null) {
      high = 0;
      for (const point of points) high = Math.max(high, point[1]);
      high = high > 0 ? high * 1.1 : 1;
    }
    const x = (round) => left + (right - left) * (lastRound <= 1 ? round : (round - 1) / (lastRound - 1));
    const y = (value) => bottom - (bottom - top) * Math.min(Math.max(value / high, 0), 1);
    svg.append(shape("text", { class: "title", x: left, y: 14 }, title));
    for (let step = 0; step <= 4; step += 1) {
      const value = (high * step) / 4;
      svg.append(shape("line", { class: "grid", x1: left, x2: right, y1: y(value), y2: y(value) }));
      svg.append(shape("text", { x: left - 4, y: y(value) + 4, "text-anchor": "end" },
        value.toFixed(high < 10 ? 2 : 0)));
    }
    svg.append(shape("line", { class: "axis", x1: left, x2: right, y1: bottom, y2: bottom }));
    svg.append(shape("text", { x: left, y: bottom + 16 }, lastRound <= 1 ? "0" : "1"));
    svg.append(shape("text", { x: right, y: bottom + 16, "text-anchor": "end" }, lastRound));
    svg.append(shape("text", { x: (left + right) / 2, y: bottom + 28, "text-anchor": "middle" },
      "round"));
    if (points.length === 0) return;
    const path = points.map((point) => x(point[0]).toFixed(1) + "," + y(point[1]).toFixed(1));
    svg.append(shape("polyline", { class: "series", points: path.join(" ") }));
    for (const [round, value] of points) {
      const dot = shape("circle", { class: "point", cx: x(round), cy: y(value), r: 2.5 });
      dot.setAttribute("data-round", String(round));
      dot.append(shape("title", {}, "round " + round + ": " + value.toFixed(4)));
      svg.append(dot);
    }
  }

  function drawWaiting(panel, waiting) {
    clear(panel);
    panel.append(element("h3", null, "Current round"));
    panel.dataset.round = waiting ? String(waiting.round) : "";
    if (!waiting) {
      panel.append(element("p", "empty", "not waiting for replies"));
      return;
    }
    let text = "round " + waiting.round + ": " + waiting.replies + " / " + waiting.expected +
      " replies";
    if (typeof waiting.deadline === "number") text += ", deadline t = " + number(waiting.deadline, 2);
    if (typeof waiting.since === "number") text += ", since t = " + number(waiting.since, 2);
    const summary = element("p", "waiting-summary", text);
    summary.dataset.replies = String(waiting.replies);
    summary.dataset.expected = String(waiting.expected);
    const list = element("ul", "waiting-nodes");
    for (const id of waiting.nodes.slice(0, WAIT_NODES)) {
      const item = element("li", null, nodeName(id));
      item.dataset.node = String(id);
      list.append(item);
    }
    panel.append(summary, element("p", "caption", "waiting for " + waiting.nodes.length +
      " node(s)" + (waiting.nodes.length > WAIT_NODES ? ", the first " + WAIT_NODES + " shown" : "")),
    list);
  }

  function drawNodes(panel, snapshot) {
    clear(panel);
    panel.append(element("h3", null, "Nodes"));
    const nodes = snapshot.nodes || [];
    const totals = snapshot.node_totals || { count: nodes.length };
    panel.dataset.count = String(totals.count);
    if (nodes.length === 0) {
      panel.append(element("p", "empty", "no node seen yet"));
      return;
    }
    const table = element("table", "nodes-table");
    const head = element("tr");
    for (const name of ["node", "connected", "heartbeat", "sent", "received", "messages",
      "failures", "staleness"]) head.append(element("th", null, name));
    const thead = element("thead");
    thead.append(head);
    table.append(thead);
    const body = element("tbody");
    for (const node of nodes.slice(0, NODE_ROWS)) {
      const row = element("tr", node.connected === false || node.failures > 0 ? "bad" : null);
      row.dataset.node = String(node.id);
      const age = typeof node.last_heartbeat === "number"
        ? number(Math.max(snapshot.time - node.last_heartbeat, 0), 1) + " s ago" : "–";
      const connected = node.connected === null ? "–" : node.connected ? "yes" : "no";
      for (const value of [nodeName(node.id), connected, age, bytes(node.bytes_up),
        bytes(node.bytes_down), node.messages, node.failures,
        node.staleness === null ? "–" : node.staleness]) row.append(element("td", null, value));
      body.append(row);
    }
    const foot = element("tr", "node-totals");
    foot.dataset.count = String(totals.count);
    for (const value of ["all " + totals.count, (totals.connected || 0) + " connected", "",
      bytes(totals.bytes_up), bytes(totals.bytes_down), totals.messages, totals.failures, ""]) {
      foot.append(element("td", null, value));
    }
    const tfoot = element("tfoot");
    tfoot.append(foot);
    table.append(body, tfoot);
    const box = element("div", "table-box");
    box.append(table);
    panel.append(box);
    if (totals.count > NODE_ROWS) {
      panel.append(element("p", "caption", "the worst " + NODE_ROWS + " of " + totals.count +
        " nodes: disconnected, failing or stale first"));
    }
  }

  // The server on the left, the other ends on the right; one line per pair, labelled beside
  // its right end (where lines are apart) with each direction's types, counts and bytes.
  function drawFlow(panel, flow) {
    clear(panel);
    panel.append(element("h3", null, "Message flow"));
    if (flow.length === 0) {
      panel.append(element("p", "empty", "no messages yet"));
      return;
    }
    const ends = [];
    for (const edge of flow) {
      for (const end of [edge.src, edge.dst]) if (end !== 0 && !ends.includes(end)) ends.push(end);
    }
    const pairs = new Map();
    for (const edge of flow) {
      const withServer = edge.src === 0 || edge.dst === 0;
      const a = withServer ? 0 : edge.src;
      const b = withServer ? (edge.src === 0 ? edge.dst : edge.src) : edge.dst;
      const key = a + ">" + b;
      if (!pairs.has(key)) pairs.set(key, { a: a, b: b, edges: [] });
      pairs.get(key).edges.push(edge);
    }
    let lines = 0;
    for (const pair of pairs.values()) lines = Math.max(lines, pair.edges.length);
    const rowHeight = Math.max(44, 14 * lines + 16);
    const height = Math.max(ends.length * rowHeight + 20, 90);
    const svg = shape("svg", { class: "flow-graph", viewBox: "0 0 460 " + height });
    const spot = { 0: [50, height / 2] };
    ends.forEach((end, position) => { spot[end] = [400, 10 + rowHeight * (position + 0.5)]; });
    for (const pair of pairs.values()) {
      const [x1, y1] = spot[pair.a] || spot[0];
      const [x2, y2] = spot[pair.b] || spot[0];
      svg.append(shape("line", { class: "edge", x1: x1, y1: y1, x2: x2, y2: y2 }));
      pair.edges.forEach((edge, line) => {
        const arrow = edge.src === pair.a ? "→" : "←";
        const text = arrow + " " + edge.type + " ×" + edge.count + ", " + bytes(edge.bytes) +
          (edge.failures ? ", " + edge.failures + " failed" : "");
        const label = shape("text", {
          class: "edge-label" + (edge.failures ? " failed" : ""),
          x: x2 - 22, y: y2 + 4 + 13 * (line - (pair.edges.length - 1) / 2),
          "text-anchor": "end",
        }, text);
        label.setAttribute("data-src", String(edge.src));
        label.setAttribute("data-dst", String(edge.dst));
        label.setAttribute("data-type", String(edge.type));
        label.setAttribute("data-count", String(edge.count));
        label.setAttribute("data-bytes", String(edge.bytes));
        svg.append(label);
      });
    }
    for (const end of [0, ...ends]) {
      const [x, y] = spot[end];
      const group = shape("g", { class: "flow-node" });
      group.setAttribute("data-node", String(end));
      group.append(shape("circle", { class: "node-dot" + (end === 0 ? " server" : ""), cx: x, cy: y, r: 14 }));
      group.append(shape("text", { class: "node-name", x: x, y: y + 28, "text-anchor": "middle" },
        nodeName(end)));
      svg.append(group);
    }
    panel.append(svg);
  }

  function drawTrace(panel, trace) {
    clear(panel);
    panel.append(element("h3", null, "Last messages"));
    panel.dataset.rows = String(trace.length);
    if (trace.length === 0) {
      panel.append(element("p", "empty", "no trace yet"));
      return;
    }
    const table = element("table", "trace-table");
    const head = element("tr");
    for (const name of ["time", "type", "from", "to", "round", "bytes", "outcome", "error"]) {
      head.append(element("th", null, name));
    }
    const thead = element("thead");
    thead.append(head);
    table.append(thead);
    const body = element("tbody");
    for (const row of trace.slice(-TRACE_SHOWN).reverse()) {
      const line = element("tr", row.outcome !== "delivered" || row.error ? "bad" : null);
      line.dataset.outcome = String(row.outcome);
      for (const value of [number(row.settled, 3), row.type, nodeName(row.src), nodeName(row.dst),
        row.group || "–", bytes(row.bytes), row.outcome, row.error || ""]) {
        line.append(element("td", null, value));
      }
      body.append(line);
    }
    table.append(body);
    const box = element("div", "table-box");
    box.append(table);
    panel.append(box);
    panel.append(element("p", "caption", "the last " + Math.min(trace.length, TRACE_SHOWN) +
      " messages, newest first"));
  }

  function connection(state, text) {
    const badge = document.getElementById("connection");
    badge.dataset.state = state;
    badge.textContent = text;
  }

  function listen() {
    const events = new EventSource("/api/events");
    events.onopen = () => connection("live", "live");
    events.onerror = () => connection("error", "reconnecting…");
    events.onmessage = (event) => {
      const message = JSON.parse(event.data);
      render(message.index, message.snapshot);
    };
  }

  function poll(index) {
    const version = runs[index] ? runs[index].version : null;
    fetch("/api/run/" + index + (version === null ? "" : "?since=" + version),
      { credentials: "same-origin", cache: "no-store" })
      .then((response) => {
        if (response.status === 200) return response.json();
        if (response.status !== 204) throw new Error("HTTP " + response.status);
        return null;
      })
      .then((snapshot) => {
        if (snapshot) render(index, snapshot);
        connection("live", "live (polling)");
      })
      .catch(() => connection("error", "reconnecting…"))
      .finally(() => setTimeout(() => poll(index), POLL_MS));
  }

  function start() {
    fetch("/api/runs", { credentials: "same-origin", cache: "no-store" })
      .then((response) => {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then((snapshots) => {
        snapshots.forEach((snapshot, index) => render(index, snapshot));
        if (transport === "poll") snapshots.forEach((_, index) => poll(index));
        else listen();
      })
      .catch((error) => {
        connection("error", "cannot load the runs: " + error.message);
        setTimeout(start, 2000);
      });
  }

  start();
})();
