// The canvas editor: a palette of the registered node types, the draft graph on a React Flow
// canvas (drag, connect handles, delete, undo/redo, pan/zoom, automatic layout), and a side panel
// per node with its form, its problems, its last run and "Try this node".

import { createContext, memo, useCallback, useContext, useEffect, useMemo, useRef, useState } from "react";
import {
  applyEdgeChanges,
  applyNodeChanges,
  Background,
  Controls,
  Handle,
  Position,
  ReactFlow,
  ReactFlowProvider,
  useReactFlow,
  useUpdateNodeInternals,
} from "@xyflow/react";
import { autoLayout, flowEdge, freshId, handleId, hasTarget, initialConfig, NODE_W, referencedInputs, sourceHandles, toFlow, toGraph, variablesFor } from "./model.js";
import { ObjectFields } from "./SchemaForm.jsx";

const IssuesContext = createContext([]);
const RunContext = createContext(new Map());
const HISTORY_LIMIT = 200;

function WeftNodeView({ id, data, selected }) {
  const node = data.node;
  const issues = useContext(IssuesContext).filter((issue) => issue.node === id);
  const run = useContext(RunContext).get(id);
  const state = run?.state || "idle";
  const handles = sourceHandles(node);
  // React Flow measures a node's handles once: measure again when they change (a case renamed,
  // on_failure set to branch), or connections from the new ones are refused.
  const updateNodeInternals = useUpdateNodeInternals();
  const handleKey = handles.join("|");
  useEffect(() => updateNodeInternals(id), [id, handleKey, updateNodeInternals]);
  const messages = issues.map((issue) => `${issue.field}: ${issue.message}`);
  return (
    <div
      className={`weft-node state-${state}${issues.length ? " invalid" : ""}${selected ? " selected" : ""}`}
      data-node-id={id}
      data-type={node.type}
      data-state={state}
      data-issues={messages.length ? messages.join(" | ") : undefined}
      title={messages.length ? messages.join("\n") : `${node.name || id} (${node.type})`}
    >
      {hasTarget(node) && <Handle type="target" position={Position.Top} id="in" className="weft-handle-in" />}
      <div className="weft-node-name">{node.name || id}</div>
      <div className="weft-node-meta">
        <span>{node.type}</span>
        {node.name && node.name !== id ? <code>{id}</code> : null}
      </div>
      {issues.length > 0 && <span className="weft-node-issue" aria-label={`${issues.length} problems`}>⚠ {issues.length}</span>}
      {run?.durationMs !== undefined && run?.durationMs !== null && <span className="weft-node-time">{Math.round(run.durationMs)} ms</span>}
      {handles.map((name, i) => {
        const left = `${((i + 1) / (handles.length + 1)) * 100}%`;
        return (
          <Handle
            key={name || "out"}
            type="source"
            position={Position.Bottom}
            id={handleId(name)}
            className={`weft-handle-out${name === "error" ? " weft-handle-error" : ""}`}
            data-handle={name}
            style={{ left }}
          >
            {name ? <span className="weft-handle-label">{name}</span> : null}
          </Handle>
        );
      })}
    </div>
  );
}

const nodeTypesForFlow = { weft: memo(WeftNodeView) };

function Palette({ types, onAdd }) {
  return (
    <div className="weft-palette" aria-label="Node types">
      <div className="weft-palette-title">Add a node</div>
      {types.map((t) => (
        <button
          key={t.type}
          type="button"
          className="weft-palette-item"
          draggable
          data-node-type={t.type}
          title={t.description}
          onDragStart={(event) => {
            event.dataTransfer.setData("application/weft-node-type", t.type);
            event.dataTransfer.effectAllowed = "move";
          }}
          onClick={() => onAdd(t.type)}
        >
          {t.type}
        </button>
      ))}
    </div>
  );
}

function RenameId({ id, taken, onRename }) {
  const [text, setText] = useState(id);
  useEffect(() => setText(id), [id]);
  const valid = /^[A-Za-z_][A-Za-z0-9_]*$/.test(text) && text.length <= 64;
  const free = text === id || !taken.has(text);
  const apply = () => {
    if (text !== id && valid && free) onRename(text);
    else setText(id);
  };
  return (
    <div className="weft-field" data-field="id">
      <label htmlFor="weft-node-id">
        <span className="weft-label">id</span>
      </label>
      <input
        id="weft-node-id"
        type="text"
        value={text}
        aria-invalid={!valid || !free}
        onChange={(event) => setText(event.target.value)}
        onBlur={apply}
        onKeyDown={(event) => event.key === "Enter" && apply()}
      />
      {!valid && <ul className="weft-field-issues"><li>Letters, digits and _, not starting with a digit.</li></ul>}
      {valid && !free && <ul className="weft-field-issues"><li>Another node has this id.</li></ul>}
    </div>
  );
}

function TryNode({ node, graphOutputs, onTry }) {
  const [text, setText] = useState(() => JSON.stringify(referencedInputs(node, graphOutputs), null, 2));
  const [result, setResult] = useState(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    setText(JSON.stringify(referencedInputs(node, graphOutputs), null, 2));
    setResult(null);
  }, [node.id]);
  const run = async () => {
    let inputs;
    try {
      inputs = text.trim() ? JSON.parse(text) : {};
    } catch (error) {
      setResult({ status: "invalid", error: { message: `Sample inputs: not valid JSON (${error.message}).` } });
      return;
    }
    setBusy(true);
    try {
      setResult(await onTry(node.id, inputs));
    } catch (error) {
      setResult({ status: "failed", error: { message: error.message } });
    } finally {
      setBusy(false);
    }
  };
  return (
    <section className="weft-try" aria-label="Try this node">
      <h4>Try this node</h4>
      <label htmlFor="weft-try-inputs" className="weft-label">
        Sample inputs (JSON: the upstream outputs it reads)
      </label>
      <textarea id="weft-try-inputs" className="weft-code" rows={5} spellCheck={false} value={text} onChange={(event) => setText(event.target.value)} />
      <button type="button" id="weft-try-run" onClick={run} disabled={busy}>
        {busy ? "Trying…" : "Try this node"}
      </button>
      {result && (
        <div className="weft-try-result" data-status={result.status}>
          <span className={`badge status-${result.status === "invalid" ? "failed" : result.status}`}>{result.status}</span>
          {typeof result.duration_ms === "number" && <span className="muted small"> {Math.round(result.duration_ms)} ms</span>}
          {result.output !== undefined && <pre className="weft-try-output">{JSON.stringify(result.output, null, 2)}</pre>}
          {result.error && <pre className="weft-try-error">{typeof result.error === "string" ? result.error : result.error.message || JSON.stringify(result.error, null, 2)}</pre>}
        </div>
      )}
    </section>
  );
}

function NodePanel({ node, graph, typeInfo, dslSchema, nodeTypes, issues, run, graphOutputs, onEdit, onRename, onDelete, onClose, onTry }) {
  const vars = useMemo(() => variablesFor(graph, node.id, nodeTypes), [graph, node.id, nodeTypes]);
  const mine = issues.filter((issue) => issue.node === node.id);
  const ctx = { issues: mine, vars, root: dslSchema, prefix: node.id };
  const taken = new Set(graph.nodes.map((n) => n.id));
  const policySchema = dslSchema?.$defs?.error_policy;
  return (
    <aside className="weft-panel" aria-label={`Node ${node.id}`} data-panel-node={node.id}>
      <div className="weft-panel-head">
        <strong>{node.name || node.id}</strong> <span className="badge">{node.type}</span>
        <button type="button" className="weft-icon weft-close" aria-label="Close the panel" onClick={onClose}>
          ×
        </button>
      </div>
      {typeInfo?.description && <p className="muted small">{typeInfo.description}</p>}
      {mine.length > 0 && (
        <ul className="weft-panel-issues" aria-label="Problems">
          {mine.map((issue, i) => (
            <li key={i} data-field={issue.field}>
              <code>{issue.field}</code>: {issue.message}
            </li>
          ))}
        </ul>
      )}
      <RenameId id={node.id} taken={taken} onRename={onRename} />
      <div className="weft-field" data-field="name">
        <label htmlFor="weft-node-name">
          <span className="weft-label">name</span>
        </label>
        <input id="weft-node-name" type="text" value={node.name || ""} onChange={(event) => onEdit((n) => ({ ...n, name: event.target.value || undefined }))} />
      </div>
      <h4>Config</h4>
      {typeInfo ? (
        <ObjectFields schema={typeInfo.config_schema || {}} value={node.config || {}} path="config" ctx={ctx} onChange={(config) => onEdit((n) => ({ ...n, config }))} />
      ) : (
        <p className="error">Unknown node type “{node.type}”.</p>
      )}
      {vars.length > 0 && (
        <p className="muted small weft-vars">
          Variables: {vars.map((v) => (
            <code key={v}>{`{{ ${v} }}`}</code>
          ))}
        </p>
      )}
      {policySchema && node.type !== "start" && node.type !== "end" && (
        <details className="weft-policy" open={Object.keys(node.error_policy || {}).length > 0}>
          <summary>Error policy (timeout, retry, on failure)</summary>
          <ObjectFields
            schema={policySchema}
            value={node.error_policy || {}}
            path="error_policy"
            ctx={ctx}
            onChange={(policy) => onEdit((n) => {
              const next = { ...n };
              if (Object.keys(policy).length) next.error_policy = policy;
              else delete next.error_policy;
              return next;
            })}
          />
        </details>
      )}
      {run && (
        <section className="weft-last-run" data-state={run.state}>
          <h4>Last run</h4>
          <span className={`badge status-${run.state}`}>{run.state}</span>
          {typeof run.durationMs === "number" && <span className="muted small"> {Math.round(run.durationMs)} ms</span>}
          {run.input !== undefined && <><div className="weft-label">input</div><pre>{JSON.stringify(run.input, null, 2)}</pre></>}
          {run.output !== undefined && run.output !== null && <><div className="weft-label">output</div><pre>{JSON.stringify(run.output, null, 2)}</pre></>}
          {run.error && <pre className="weft-try-error">{String(run.error)}</pre>}
        </section>
      )}
      {onTry && <TryNode node={node} graphOutputs={graphOutputs} onTry={onTry} />}
      <button type="button" className="danger weft-delete-node" onClick={onDelete}>
        Delete node
      </button>
    </aside>
  );
}

function Editor({ initialGraph, nodeTypeList, dslSchema, onChange, onTry, bridge }) {
  const rf = useReactFlow();
  const wrapper = useRef(null);
  const [flow, setFlow] = useState(() => toFlow(initialGraph));
  const [issues, setIssues] = useState([]);
  const [runs, setRuns] = useState(new Map());
  const [samples, setSamples] = useState(new Map()); // node id -> output, from a past run
  const history = useRef({ stack: [JSON.stringify(toGraph(flow.nodes, flow.edges))], index: 0, lastKind: null, lastAt: 0 });
  const pending = useRef(null);
  const [, setHistoryTick] = useState(0);
  const nodeTypes = useMemo(() => new Map(nodeTypeList.map((t) => [t.type, t])), [nodeTypeList]);
  const flowRef = useRef(flow);
  flowRef.current = flow;

  const commit = useCallback((updater, kind = "edit") => {
    pending.current = pending.current || kind;
    setFlow(updater);
  }, []);

  useEffect(() => {
    const kind = pending.current;
    if (!kind) return;
    pending.current = null;
    const graph = toGraph(flow.nodes, flow.edges);
    const text = JSON.stringify(graph);
    const h = history.current;
    if (kind !== "undo" && kind !== "redo" && kind !== "replace") {
      if (text === h.stack[h.index]) return;
      const now = Date.now();
      const coalesce = kind.startsWith("edit:") && h.lastKind === kind && now - h.lastAt < 1500 && h.index === h.stack.length - 1 && h.index > 0;
      if (coalesce) h.stack[h.index] = text;
      else {
        h.stack = h.stack.slice(0, h.index + 1);
        h.stack.push(text);
        if (h.stack.length > HISTORY_LIMIT) h.stack.shift();
        h.index = h.stack.length - 1;
      }
      h.lastKind = kind;
      h.lastAt = now;
      setHistoryTick((t) => t + 1);
    }
    if (kind !== "replace") onChange?.(graph, kind);
  }, [flow, onChange]);

  const restore = useCallback((kind) => {
    const h = history.current;
    const index = kind === "undo" ? h.index - 1 : h.index + 1;
    if (index < 0 || index >= h.stack.length) return;
    h.index = index;
    h.lastKind = null;
    const selected = new Set(flowRef.current.nodes.filter((n) => n.selected).map((n) => n.id));
    const next = toFlow(JSON.parse(h.stack[index]));
    next.nodes = next.nodes.map((n) => (selected.has(n.id) ? { ...n, selected: true } : n));
    commit(() => next, kind);
    setHistoryTick((t) => t + 1);
  }, [commit]);

  // The outside world: the page sets problems, run states, a new graph (from the JSON view).
  useEffect(() => {
    bridge.setIssues = (list) => setIssues(Array.isArray(list) ? list : []);
    bridge.setRuns = (map) => setRuns(new Map(map));
    bridge.setSamples = (map) => setSamples(new Map(map));
    bridge.setGraph = (graph) => {
      const next = toFlow(graph);
      const h = history.current;
      const text = JSON.stringify(toGraph(next.nodes, next.edges));
      if (text === h.stack[h.index]) return;
      h.stack = h.stack.slice(0, h.index + 1);
      h.stack.push(text);
      h.index = h.stack.length - 1;
      h.lastKind = null;
      commit(() => next, "replace");
      setHistoryTick((t) => t + 1);
    };
    bridge.getGraph = () => toGraph(flowRef.current.nodes, flowRef.current.edges);
    bridge.undo = () => restore("undo");
    bridge.redo = () => restore("redo");
    bridge.layout = () => layoutAll();
    bridge.ready?.();
  });

  const graph = useMemo(() => toGraph(flow.nodes, flow.edges), [flow]);
  const selected = flow.nodes.filter((n) => n.selected);
  const current = selected.length === 1 ? selected[0].data.node : null;

  const addNode = useCallback(
    (type, position) => {
      const info = nodeTypes.get(type);
      const taken = new Set(flowRef.current.nodes.map((n) => n.id));
      const id = freshId(type, taken);
      let at = position;
      if (!at) {
        const box = wrapper.current.getBoundingClientRect();
        at = rf.screenToFlowPosition({ x: box.left + box.width / 2, y: box.top + box.height / 3 });
        at = { x: Math.round(at.x - NODE_W / 2), y: Math.round(at.y) };
        // Not on top of another node: lower, until the spot is free.
        const others = flowRef.current.nodes.map((n) => n.position);
        while (others.some((p) => Math.abs(p.x - at.x) < NODE_W && Math.abs(p.y - at.y) < 80)) at = { ...at, y: at.y + 90 };
      }
      const node = { id, type, name: "", config: initialConfig(type, info?.config_schema) };
      delete node.name;
      commit((prev) => ({
        nodes: [...prev.nodes.map((n) => (n.selected ? { ...n, selected: false } : n)), { id, type: "weft", position: at, data: { node }, selected: true }],
        edges: prev.edges,
      }), "add");
    },
    [commit, nodeTypes, rf],
  );

  const onNodesChange = useCallback(
    (changes) => {
      const removing = changes.filter((c) => c.type === "remove").map((c) => c.id);
      if (removing.length) {
        const gone = new Set(removing);
        commit((prev) => ({
          nodes: applyNodeChanges(changes, prev.nodes),
          edges: prev.edges.filter((e) => !gone.has(e.source) && !gone.has(e.target)),
        }), "delete");
        return;
      }
      setFlow((prev) => ({ ...prev, nodes: applyNodeChanges(changes, prev.nodes) }));
    },
    [commit],
  );

  const onEdgesChange = useCallback(
    (changes) => {
      const kind = changes.some((c) => c.type === "remove") ? "delete" : null;
      if (kind) commit((prev) => ({ ...prev, edges: applyEdgeChanges(changes, prev.edges) }), kind);
      else setFlow((prev) => ({ ...prev, edges: applyEdgeChanges(changes, prev.edges) }));
    },
    [commit],
  );

  const onConnect = useCallback(
    (params) => {
      if (!params.source || !params.target || params.source === params.target) return;
      const name = params.sourceHandle && params.sourceHandle.startsWith("h:") ? params.sourceHandle.slice(2) : "";
      const edge = flowEdge({ source: params.source, target: params.target, source_handle: name || undefined });
      commit((prev) => (prev.edges.some((e) => e.id === edge.id) ? prev : { ...prev, edges: [...prev.edges, edge] }), "connect");
    },
    [commit],
  );

  const layoutAll = useCallback(() => {
    const places = autoLayout(toGraph(flowRef.current.nodes, flowRef.current.edges));
    commit((prev) => ({ ...prev, nodes: prev.nodes.map((n) => ({ ...n, position: places.get(n.id) || n.position })) }), "layout");
    requestAnimationFrame(() => rf.fitView({ padding: 0.15, duration: 0 }));
  }, [commit, rf]);

  const editNode = useCallback(
    (id, fn) => {
      commit((prev) => {
        let renamed = null;
        const nodes = prev.nodes.map((n) => {
          if (n.id !== id) return n;
          const before = n.data.node;
          const after = fn(before);
          if (before.type === "condition") {
            const a = before.config?.cases || [];
            const b = after.config?.cases || [];
            if (a.length === b.length) a.forEach((c, i) => c?.id !== b[i]?.id && (renamed = [c?.id, b[i]?.id]));
          }
          return { ...n, data: { node: after } };
        });
        let edges = prev.edges;
        if (renamed && renamed[0] && renamed[1]) {
          edges = edges.map((e) => (e.source === id && e.data?.handle === renamed[0] ? flowEdge({ source: e.source, target: e.target, source_handle: renamed[1] }) : e));
        }
        const node = nodes.find((n) => n.id === id)?.data.node;
        const handles = new Set(node ? sourceHandles(node) : []);
        edges = edges.filter((e) => e.source !== id || handles.has(e.data?.handle || ""));
        return { nodes, edges };
      }, `edit:${id}`);
    },
    [commit],
  );

  const renameNode = useCallback(
    (id, to) => {
      commit((prev) => ({
        nodes: prev.nodes.map((n) => (n.id === id ? { ...n, id: to, data: { node: { ...n.data.node, id: to } } } : n)),
        edges: prev.edges.map((e) => (e.source === id || e.target === id ? flowEdge({ source: e.source === id ? to : e.source, target: e.target === id ? to : e.target, source_handle: e.data?.handle || undefined }) : e)),
      }), "rename");
    },
    [commit],
  );

  const deleteSelected = useCallback(() => {
    const nodes = new Set(flowRef.current.nodes.filter((n) => n.selected).map((n) => n.id));
    const edges = new Set(flowRef.current.edges.filter((e) => e.selected).map((e) => e.id));
    if (!nodes.size && !edges.size) return;
    commit((prev) => ({
      nodes: prev.nodes.filter((n) => !nodes.has(n.id)),
      edges: prev.edges.filter((e) => !edges.has(e.id) && !nodes.has(e.source) && !nodes.has(e.target)),
    }), "delete");
  }, [commit]);

  useEffect(() => {
    const onKey = (event) => {
      const target = event.target;
      if (target.closest?.("input, textarea, select, [contenteditable]")) return;
      if (!wrapper.current?.closest(".weft-editor")?.contains(target) && target !== document.body) return;
      const mod = event.ctrlKey || event.metaKey;
      if (mod && event.key.toLowerCase() === "z") {
        event.preventDefault();
        restore(event.shiftKey ? "redo" : "undo");
      } else if (mod && event.key.toLowerCase() === "y") {
        event.preventDefault();
        restore("redo");
      }
    };
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  }, [restore]);

  const h = history.current;
  // Sample inputs for "try": the outputs of the run made here, else those of a past run.
  const graphOutputs = useMemo(() => {
    const outputs = new Map([...samples].filter(([, output]) => output && typeof output === "object"));
    for (const [id, r] of runs) if (r.output && typeof r.output === "object") outputs.set(id, r.output);
    return outputs;
  }, [runs, samples]);
  const sortedTypes = useMemo(() => [...nodeTypeList].sort((a, b) => a.type.localeCompare(b.type)), [nodeTypeList]);

  return (
    <IssuesContext.Provider value={issues}>
      <RunContext.Provider value={runs}>
        <div className={`weft-editor${current ? " with-panel" : ""}`}>
          <div className="weft-toolbar" role="toolbar" aria-label="Editor">
            <button type="button" data-action="undo" onClick={() => restore("undo")} disabled={h.index <= 0} title="Undo (Ctrl+Z)">
              Undo
            </button>
            <button type="button" data-action="redo" onClick={() => restore("redo")} disabled={h.index >= h.stack.length - 1} title="Redo (Ctrl+Shift+Z)">
              Redo
            </button>
            <button type="button" data-action="layout" onClick={layoutAll}>
              Auto layout
            </button>
            <button type="button" data-action="fit" onClick={() => rf.fitView({ padding: 0.15 })}>
              Fit
            </button>
            <button type="button" data-action="delete" onClick={deleteSelected} title="Delete the selection (Delete key)">
              Delete
            </button>
            <span className="muted small weft-count">
              {flow.nodes.length} nodes · {flow.edges.length} edges
            </span>
          </div>
          <Palette types={sortedTypes} onAdd={(type) => addNode(type)} />
          <div
            className="weft-canvas"
            ref={wrapper}
            onDragOver={(event) => {
              event.preventDefault();
              event.dataTransfer.dropEffect = "move";
            }}
            onDrop={(event) => {
              const type = event.dataTransfer.getData("application/weft-node-type");
              if (!type) return;
              event.preventDefault();
              const at = rf.screenToFlowPosition({ x: event.clientX, y: event.clientY });
              addNode(type, { x: Math.round(at.x - NODE_W / 2), y: Math.round(at.y - 20) });
            }}
          >
            <ReactFlow
              nodes={flow.nodes}
              edges={flow.edges}
              nodeTypes={nodeTypesForFlow}
              onNodesChange={onNodesChange}
              onEdgesChange={onEdgesChange}
              onConnect={onConnect}
              onNodeDragStop={() => commit((prev) => ({ ...prev }), "move")}
              isValidConnection={(c) => c.source !== c.target}
              deleteKeyCode={["Delete", "Backspace"]}
              fitView
              fitViewOptions={{ padding: 0.15, maxZoom: 1.2 }}
              minZoom={0.2}
              maxZoom={2}
              defaultEdgeOptions={{ markerEnd: { type: "arrowclosed" } }}
              proOptions={{ hideAttribution: false }}
            >
              <Background gap={20} />
              <Controls showInteractive={false} />
            </ReactFlow>
          </div>
          {current && (
            <NodePanel
              key={current.id}
              node={current}
              graph={graph}
              typeInfo={nodeTypes.get(current.type)}
              dslSchema={dslSchema}
              nodeTypes={nodeTypes}
              issues={issues}
              run={runs.get(current.id)}
              graphOutputs={graphOutputs}
              onEdit={(fn) => editNode(current.id, fn)}
              onRename={(to) => renameNode(current.id, to)}
              onDelete={() => commit((prev) => ({ nodes: prev.nodes.filter((n) => n.id !== current.id), edges: prev.edges.filter((e) => e.source !== current.id && e.target !== current.id) }), "delete")}
              onClose={() => setFlow((prev) => ({ ...prev, nodes: prev.nodes.map((n) => (n.selected ? { ...n, selected: false } : n)) }))}
              onTry={onTry}
            />
          )}
        </div>
      </RunContext.Provider>
    </IssuesContext.Provider>
  );
}

export function App(props) {
  return (
    <ReactFlowProvider>
      <Editor {...props} />
    </ReactFlowProvider>
  );
}


