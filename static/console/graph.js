// The DAG drawn in SVG with a simple layered layout (top to bottom):
// a node's layer is its longest path from a source; within a layer, nodes are ordered by the
// mean position of their neighbours (a few sweeps down and up), which keeps edges short.

import { h, svg } from "./dom.js";

const NODE_W = 168;
const NODE_H = 54;
const GAP_X = 28;
const GAP_Y = 58;
const PAD = 16;
const DUMMY_W = 12;

export const STATES = ["pending", "running", "retrying", "succeeded", "failed", "skipped", "cancelled"];

// A legend of every state a node can take, in `list` (a <ul class="legend">).
export function fillLegend(list) {
  list.replaceChildren(...STATES.map((state) => h("li", { class: `state-${state}` }, state)));
}

export function graphParts(graph) {
  const nodes = Array.isArray(graph?.nodes) ? graph.nodes.filter((n) => n && typeof n.id === "string") : [];
  const ids = new Set(nodes.map((n) => n.id));
  const edges = Array.isArray(graph?.edges)
    ? graph.edges.filter((e) => e && ids.has(e.source) && ids.has(e.target) && e.source !== e.target)
    : [];
  return { nodes, edges };
}

export function layout(graph) {
  const { nodes, edges } = graphParts(graph);
  const out = new Map(nodes.map((n) => [n.id, []]));
  const inc = new Map(nodes.map((n) => [n.id, []]));
  for (const e of edges) {
    out.get(e.source).push(e.target);
    inc.get(e.target).push(e.source);
  }
  // Longest-path layering over a topological order (Kahn); nodes on a cycle go last.
  const layer = new Map();
  const indegree = new Map(nodes.map((n) => [n.id, inc.get(n.id).length]));
  const queue = nodes.filter((n) => indegree.get(n.id) === 0).map((n) => n.id);
  for (const id of queue) layer.set(id, 0);
  while (queue.length) {
    const id = queue.shift();
    for (const next of out.get(id)) {
      layer.set(next, Math.max(layer.get(next) ?? 0, layer.get(id) + 1));
      indegree.set(next, indegree.get(next) - 1);
      if (indegree.get(next) === 0) queue.push(next);
    }
  }
  let deepest = Math.max(0, ...layer.values());
  for (const n of nodes) if (!layer.has(n.id)) layer.set(n.id, ++deepest);

  // An edge longer than one layer goes through a narrow virtual node on each layer it crosses,
  // so that ordering keeps it clear of the nodes of those layers.
  const width = new Map(nodes.map((n) => [n.id, NODE_W]));
  const up = new Map(nodes.map((n) => [n.id, []]));
  const down = new Map(nodes.map((n) => [n.id, []]));
  const routes = edges.map((e, index) => {
    const from = layer.get(e.source);
    const to = layer.get(e.target);
    const chain = [e.source];
    for (let l = from + 1; l < to; l++) {
      const id = `\u0000${index}:${l}`;
      layer.set(id, l);
      width.set(id, DUMMY_W);
      up.set(id, []);
      down.set(id, []);
      chain.push(id);
    }
    chain.push(e.target);
    for (let i = 0; i + 1 < chain.length; i++) {
      down.get(chain[i]).push(chain[i + 1]);
      up.get(chain[i + 1]).push(chain[i]);
    }
    return { edge: e, chain };
  });

  const layers = [];
  for (const [id, l] of layer) (layers[l] ||= []).push(id);
  const rows = layers.filter(Boolean);
  const position = new Map();
  const reindex = () => rows.forEach((row) => row.forEach((id, i) => position.set(id, i)));
  reindex();
  const mean = (ids, fallback) => (ids.length ? ids.reduce((s, id) => s + position.get(id), 0) / ids.length : fallback);
  for (let sweep = 0; sweep < 6; sweep++) {
    const order = sweep % 2 === 0 ? rows.slice(1) : rows.slice(0, -1).reverse();
    for (const row of order) {
      const keyed = row.map((id, i) => [id, mean(sweep % 2 === 0 ? up.get(id) : down.get(id), i), i]);
      keyed.sort((a, b) => a[1] - b[1] || a[2] - b[2]);
      row.splice(0, row.length, ...keyed.map((k) => k[0]));
      reindex();
    }
  }
  const rowWidth = (row) => row.reduce((sum, id) => sum + width.get(id), 0) + (row.length - 1) * GAP_X;
  const total = Math.max(NODE_W, ...rows.map(rowWidth)) + PAD * 2;
  const height = Math.max(1, rows.length) * NODE_H + Math.max(0, rows.length - 1) * GAP_Y + PAD * 2;
  const boxes = new Map();
  rows.forEach((row, r) => {
    let x = (total - rowWidth(row)) / 2;
    for (const id of row) {
      boxes.set(id, { x, y: PAD + r * (NODE_H + GAP_Y), w: width.get(id) });
      x += width.get(id) + GAP_X;
    }
  });
  const order = rows.flat().filter((id) => out.has(id));
  return { nodes, edges, routes, boxes, order, width: total, height };
}

// A smooth path from the bottom of the first box, through the virtual ones, to the top of the last.
function routePath(chain, boxes) {
  const points = [];
  chain.forEach((id, i) => {
    const b = boxes.get(id);
    const cx = b.x + b.w / 2;
    if (i > 0) points.push([cx, b.y]);
    if (i < chain.length - 1) points.push([cx, b.y + NODE_H]);
  });
  let d = `M ${points[0][0]} ${points[0][1]}`;
  for (let i = 1; i < points.length; i++) {
    const [x1, y1] = points[i - 1];
    const [x2, y2] = points[i];
    if (i % 2 === 0) d += ` L ${x2} ${y2}`; // straight down through a virtual node
    else {
      const bend = Math.max(20, (y2 - y1) / 2);
      d += ` C ${x1} ${y1 + bend}, ${x2} ${y2 - bend}, ${x2} ${y2}`;
    }
  }
  return { d, start: points[0], next: points[1] };
}

function clip(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/**
 * Draw `graph` into `container`. Returns a handle to colour nodes and mark their problems.
 * Each node is `<g class="node state-<state>" data-node-id data-state data-type>`.
 */
export function drawGraph(container, graph, { onSelect } = {}) {
  const { nodes, routes, boxes, order, width, height } = layout(graph);
  container.replaceChildren();
  // The panel's legend, if it has one, names every state (cancelled too).
  const legend = container.closest(".panel")?.querySelector("ul.legend");
  if (legend) fillLegend(legend);
  if (!nodes.length) {
    container.append(document.createTextNode("No nodes."));
    return { setState() {}, setIssues() {}, nodeIds: [] };
  }
  const markerId = `arrow-${Math.random().toString(36).slice(2, 8)}`;
  const root = svg("svg", {
    class: "dag",
    viewBox: `0 0 ${width} ${height}`,
    role: "group",
    style: `max-width:${width}px`,
  });
  root.append(
    svg(
      "defs",
      {},
      svg(
        "marker",
        { id: markerId, viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
        svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }),
      ),
    ),
  );
  const edgeLayer = svg("g", { class: "edges" });
  for (const { edge: e, chain } of routes) {
    const { d, start, next } = routePath(chain, boxes);
    edgeLayer.append(
      svg("path", {
        class: `edge${e.source_handle === "error" ? " edge-error" : ""}`,
        d,
        "marker-end": `url(#${markerId})`,
        "data-source": e.source,
        "data-target": e.target,
      }),
    );
    if (e.source_handle) {
      const lx = (start[0] + next[0]) / 2;
      const ly = (start[1] + next[1]) / 2 + 4;
      edgeLayer.append(svg("text", { class: "edge-label", x: lx, y: ly, "text-anchor": "middle" }, clip(e.source_handle, 14)));
    }
  }
  root.append(edgeLayer);
  const nodeLayer = svg("g", { class: "nodes" });
  const groups = new Map();
  for (const n of nodes) {
    const { x, y } = boxes.get(n.id);
    const label = n.name || n.id;
    const group = svg(
      "g",
      {
        class: "node state-pending",
        transform: `translate(${x} ${y})`,
        "data-node-id": n.id,
        "data-state": "pending",
        "data-type": n.type || "",
        tabindex: onSelect ? "0" : null,
        role: onSelect ? "button" : null,
        "aria-label": `${label} (${n.type || "?"})`,
      },
      svg("title", {}, `${label}\nid: ${n.id}\ntype: ${n.type || "?"}`),
      svg("rect", { class: "node-box", width: NODE_W, height: NODE_H, rx: 8, ry: 8 }),
      svg("rect", { class: "node-stripe", width: 6, height: NODE_H, rx: 3, ry: 3 }),
      svg("text", { class: "node-name", x: 16, y: 22 }, clip(label, 19)),
      svg("text", { class: "node-type", x: 16, y: 41 }, clip(n.type || "?", 22)),
      svg("text", { class: "node-issue", x: NODE_W - 10, y: 20, "text-anchor": "end" }),
    );
    if (onSelect) {
      group.addEventListener("click", () => onSelect(n.id));
      group.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          onSelect(n.id);
        }
      });
    }
    groups.set(n.id, group);
    nodeLayer.append(group);
  }
  root.append(nodeLayer);
  container.append(root);

  return {
    nodeIds: order,
    setState(nodeId, state) {
      const group = groups.get(nodeId);
      if (!group || group.dataset.state === state) return;
      for (const s of STATES) group.classList.remove(`state-${s}`);
      group.classList.add(`state-${state}`);
      group.dataset.state = state;
    },
    // issues: Map nodeId -> [messages]; the node is outlined and its title lists them.
    setIssues(issues) {
      for (const [id, group] of groups) {
        const messages = issues.get(id) || [];
        group.classList.toggle("invalid", messages.length > 0);
        group.querySelector(".node-issue").textContent = messages.length ? `⚠ ${messages.length}` : "";
        const title = group.querySelector("title");
        const base = title.textContent.split("\n\n")[0];
        title.textContent = messages.length ? `${base}\n\n${messages.join("\n")}` : base;
        if (messages.length) group.setAttribute("data-issues", messages.join(" | "));
        else group.removeAttribute("data-issues");
      }
    },
  };
}
