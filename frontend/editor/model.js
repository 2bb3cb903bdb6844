// The draft graph (Weft DSL v1) and React Flow's nodes and edges, one from the other; the
// handles a node offers; the variables a node may read; the automatic layout (dagre).

import dagre from "@dagrejs/dagre";

export const NODE_W = 190;
export const NODE_H = 64;

// A source handle's id on the canvas: "h:" and the edge's source_handle ("" for a plain edge),
// so that no case id can clash with React Flow's own null handle.
export const handleId = (name) => `h:${name || ""}`;
export const handleName = (id) => (id && id.startsWith("h:") ? id.slice(2) : "");

// The source handles of a DSL node: a condition's cases and else; error when its failure branches.
export function sourceHandles(node) {
  if (node.type === "end") return [];
  const handles = [];
  if (node.type === "condition") {
    const cases = Array.isArray(node.config?.cases) ? node.config.cases : [];
    for (const c of cases) if (c && typeof c.id === "string" && c.id) handles.push(c.id);
    handles.push("else");
  } else {
    handles.push("");
  }
  if (node.error_policy?.on_failure === "branch") handles.push("error");
  return handles;
}

export function hasTarget(node) {
  return node.type !== "start";
}

export function edgeId(edge) {
  return `${edge.source}->${edge.target}@${edge.source_handle || ""}`;
}

export function toFlow(graph) {
  const nodes = (Array.isArray(graph?.nodes) ? graph.nodes : []).filter((n) => n && typeof n.id === "string");
  // Nodes without a position (a graph made by the API, or by hand) are laid out by dagre.
  const placed = nodes.some((n) => !positionOf(n)) ? autoLayout(graph) : null;
  const flowNodes = nodes.map((n, i) => ({
    id: n.id,
    type: "weft",
    position: positionOf(n) || placed?.get(n.id) || { x: 40 + (i % 4) * 230, y: 40 + Math.floor(i / 4) * 120 },
    data: { node: n },
  }));
  const ids = new Set(nodes.map((n) => n.id));
  const flowEdges = (Array.isArray(graph?.edges) ? graph.edges : [])
    .filter((e) => e && ids.has(e.source) && ids.has(e.target))
    .map(flowEdge);
  return { nodes: flowNodes, edges: flowEdges };
}

export function flowEdge(edge) {
  const name = edge.source_handle || "";
  return {
    id: edgeId(edge),
    source: edge.source,
    target: edge.target,
    sourceHandle: handleId(name),
    label: name || undefined,
    className: name === "error" ? "weft-edge-error" : undefined,
    data: { handle: name },
  };
}

function positionOf(node) {
  const p = node.position;
  return p && typeof p.x === "number" && typeof p.y === "number" ? { x: p.x, y: p.y } : null;
}

// The DSL graph of the canvas: each node with its position (whole pixels).
export function toGraph(flowNodes, flowEdges) {
  return {
    nodes: flowNodes.map((fn) => ({
      ...fn.data.node,
      position: { x: Math.round(fn.position.x), y: Math.round(fn.position.y) },
    })),
    edges: flowEdges.map((fe) => {
      const edge = { source: fe.source, target: fe.target };
      const name = handleName(fe.sourceHandle);
      if (name) edge.source_handle = name;
      return edge;
    }),
  };
}

// Positions from dagre, top to bottom: Map id -> {x, y} (top-left corners).
export function autoLayout(graph) {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "TB", nodesep: 40, ranksep: 70, marginx: 20, marginy: 20 });
  g.setDefaultEdgeLabel(() => ({}));
  const nodes = (graph.nodes || []).filter((n) => n && typeof n.id === "string");
  for (const n of nodes) g.setNode(n.id, { width: NODE_W, height: NODE_H });
  for (const e of graph.edges || []) if (g.hasNode(e.source) && g.hasNode(e.target)) g.setEdge(e.source, e.target);
  dagre.layout(g);
  const out = new Map();
  for (const n of nodes) {
    const p = g.node(n.id);
    out.set(n.id, { x: Math.round(p.x - NODE_W / 2), y: Math.round(p.y - NODE_H / 2) });
  }
  return out;
}

// The ids of the nodes upstream of `nodeId` (every node a path leads from).
export function ancestors(graph, nodeId) {
  const into = new Map();
  for (const e of graph.edges || []) into.set(e.target, [...(into.get(e.target) || []), e.source]);
  const seen = new Set();
  const stack = [...(into.get(nodeId) || [])];
  while (stack.length) {
    const id = stack.pop();
    if (seen.has(id) || id === nodeId) continue;
    seen.add(id);
    stack.push(...(into.get(id) || []));
  }
  return seen;
}

// The {{ }} variables `nodeId` may read: its ancestors' outputs and the start node's inputs.
export function variablesFor(graph, nodeId, nodeTypes) {
  const upstream = ancestors(graph, nodeId);
  const vars = [];
  for (const n of graph.nodes || []) {
    if (!upstream.has(n.id)) continue;
    if (n.type === "start") {
      for (const input of n.config?.inputs || []) if (input?.name) vars.push(`${n.id}.${input.name}`);
      continue;
    }
    const outputs = nodeTypes.get(n.type)?.outputs;
    if (Array.isArray(outputs) && outputs.length) for (const field of outputs) vars.push(`${n.id}.${field}`);
    else vars.push(n.id);
    if (n.error_policy?.on_failure === "branch") vars.push(`${n.id}.error`);
  }
  return vars;
}

// A fresh id for a node of `type`: the type itself, then type_2, type_3...
export function freshId(type, taken) {
  const base = /^[A-Za-z_][A-Za-z0-9_]*$/.test(type) ? type : "node";
  if (!taken.has(base)) return base;
  for (let i = 2; ; i++) if (!taken.has(`${base}_${i}`)) return `${base}_${i}`;
}

// A starting config for a new node: the required fields of its type's schema, filled simply.
export function initialConfig(type, schema) {
  if (type === "start") return { inputs: [] };
  if (type === "end") return { outputs: {} };
  if (type === "condition") return { cases: [{ id: "case_1", conditions: [{ variable: "", operator: "eq", value: "" }] }] };
  const config = {};
  for (const name of schema?.required || []) config[name] = emptyOf(schema.properties?.[name]);
  return config;
}

export function emptyOf(schema) {
  if (!schema) return "";
  if (schema.enum) return schema.enum[0];
  const type = [].concat(schema.type || "string")[0];
  switch (type) {
    case "object":
      return {};
    case "array":
      return [];
    case "boolean":
      return false;
    case "number":
    case "integer":
      return schema.minimum ?? 0;
    default:
      return "";
  }
}

// The `{{ a.b }}` references in a node's config: {a: {b: ""}} — sample inputs for trying it.
export function referencedInputs(node, runOutputs) {
  const sample = {};
  const walk = (value) => {
    if (typeof value === "string") {
      for (const m of value.matchAll(/\{\{\s*([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?/g)) {
        const [, id, field] = m;
        const known = runOutputs?.get(id);
        sample[id] ||= {};
        if (field) sample[id][field] = known && field in known ? known[field] : "";
      }
    } else if (Array.isArray(value)) value.forEach(walk);
    else if (value && typeof value === "object") Object.values(value).forEach(walk);
  };
  walk(node.config);
  return sample;
}
