// The workflow editor's entry point: `mountEditor(element, options)` renders the canvas editor
// into `element` and returns a handle the page drives it with.
//
//   const editor = mountEditor(el, {
//     graph,          // the draft graph (DSL v1); node positions are kept in node.position
//     nodeTypes,      // GET /api/v1/node-types/: [{type, description, config_schema, outputs, effects}]
//     dslSchema,      // the DSL's JSON schema (its $defs.error_policy makes the error policy form)
//     onChange,       // (graph, kind) after each edit ("add", "connect", "move", "edit:<id>", "undo", ...)
//     onTryNode,      // async (nodeId, inputs) => {status, output | error, duration_ms}
//     issues,         // [{node, field, message}] as the validate endpoint reports them
//   });
//   editor.setGraph(graph); editor.setIssues(issues); editor.setRuns(Map id -> {state, output, error, durationMs});
//   editor.setSamples(Map id -> output): a past run's outputs, the sample inputs "try" starts from;
//   editor.getGraph(); editor.undo(); editor.redo(); editor.layout(); editor.unmount();

import "@xyflow/react/dist/style.css";
import "./editor.css";
import { createRoot } from "react-dom/client";
import { App } from "./App.jsx";

export function mountEditor(element, options = {}) {
  const queued = [];
  const bridge = {};
  const call = (name, ...args) => {
    if (bridge[name]) bridge[name](...args);
    else queued.push([name, args]);
  };
  bridge.ready = () => {
    while (queued.length) {
      const [name, args] = queued.shift();
      bridge[name](...args);
    }
  };
  const root = createRoot(element);
  root.render(
    <App
      initialGraph={options.graph || { nodes: [], edges: [] }}
      nodeTypeList={options.nodeTypes || []}
      dslSchema={options.dslSchema || null}
      onChange={options.onChange}
      onTry={options.onTryNode}
      bridge={bridge}
    />,
  );
  if (options.issues) call("setIssues", options.issues);
  return {
    setGraph: (graph) => call("setGraph", graph),
    setIssues: (issues) => call("setIssues", issues),
    setRuns: (runs) => call("setRuns", runs),
    setSamples: (outputs) => call("setSamples", outputs),
    getGraph: () => (bridge.getGraph ? bridge.getGraph() : options.graph),
    undo: () => call("undo"),
    redo: () => call("redo"),
    layout: () => call("layout"),
    unmount: () => root.unmount(),
  };
}
