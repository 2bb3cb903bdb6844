// A graph's shape, checked in the browser against the server's own JSON Schema of the DSL
// (workflows/engine/dsl_v1.json, served by the console) before the graph is sent: the same
// problems, named by the same fields, without a round trip. It knows the keywords that schema
// uses; the server checks everything again, and the rules a schema cannot say.

const IDENTIFIER_MESSAGE = "Must be an identifier: letters, digits and '_', not starting with a digit.";
const TYPE_NAMES = {
  object: "an object",
  array: "a list",
  string: "a string",
  number: "a number",
  integer: "an integer",
  boolean: "true or false",
  null: "null",
};
// Fields under a node whose problems are named relative to the node, as the server does.
const NODE_RELATIVE = new Set(["error_policy", "cache"]);

let schemaRequest = null;

// The schema, fetched once per page.
export function loadDslSchema(url) {
  schemaRequest ??= fetch(url, { credentials: "same-origin" }).then((response) => {
    if (!response.ok) throw new Error(`The DSL schema could not load (HTTP ${response.status}).`);
    return response.json();
  });
  return schemaRequest;
}

function kindOf(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value;
}

function hasType(value, type) {
  const kind = kindOf(value);
  return kind === type || (type === "number" && kind === "integer");
}

function resolve(root, schema) {
  let resolved = schema;
  while (resolved.$ref) resolved = root.$defs[resolved.$ref.replace("#/$defs/", "")];
  return resolved;
}

// Pushes {path, message} for each problem of `value` against `schema`.
function check(root, schema, value, path, found) {
  const rules = resolve(root, schema);
  if (rules.type !== undefined) {
    const types = [].concat(rules.type);
    if (!types.some((type) => hasType(value, type))) {
      const message = path.length
        ? `Must be ${types.map((type) => TYPE_NAMES[type]).join(" or ")}.`
        : "The graph must be an object with nodes and edges.";
      found.push({ path, message });
      return;
    }
  }
  if (rules.enum && !rules.enum.includes(value)) {
    found.push({ path, message: `Must be one of: ${rules.enum.join(", ")}.` });
  }
  const kind = kindOf(value);
  if (kind === "string") {
    if (rules.maxLength !== undefined && [...value].length > rules.maxLength) {
      found.push({ path, message: `At most ${rules.maxLength} characters.` });
    }
    if (rules.pattern && !new RegExp(rules.pattern, "u").test(value)) found.push({ path, message: IDENTIFIER_MESSAGE });
  } else if (kind === "integer" || kind === "number") {
    if (rules.minimum !== undefined && value < rules.minimum) {
      found.push({ path, message: `Must be at least ${rules.minimum}.` });
    }
    if (rules.exclusiveMinimum !== undefined && value <= rules.exclusiveMinimum) {
      found.push({ path, message: `Must be more than ${rules.exclusiveMinimum}.` });
    }
  } else if (kind === "array") {
    if (rules.maxItems !== undefined && value.length > rules.maxItems) {
      found.push({ path, message: `At most ${rules.maxItems} ${path[path.length - 1]}.` });
    }
    if (rules.items) value.forEach((item, index) => check(root, rules.items, item, [...path, index], found));
  } else if (kind === "object") {
    const properties = rules.properties || {};
    for (const name of rules.required || []) {
      if (!Object.hasOwn(value, name)) found.push({ path: [...path, name], message: "This field is required." });
    }
    for (const [name, inner] of Object.entries(value)) {
      if (Object.hasOwn(properties, name)) check(root, properties[name], inner, [...path, name], found);
      else if (rules.additionalProperties === false) found.push({ path: [...path, name], message: "Unknown field." });
    }
  }
}

function isKey(root, value) {
  const found = [];
  check(root, root.$defs.key, value, ["key"], found);
  return found.length === 0;
}

// The node a problem concerns: the node's own id, or an edge's source for its handle, if valid.
function ownerOf(root, graph, path) {
  if (path.length < 3 || (path[0] !== "nodes" && path[0] !== "edges")) return null;
  const item = graph[path[0]][path[1]];
  const id = path[0] === "nodes" ? item.id : path[2] === "source_handle" ? item.source : null;
  return isKey(root, id) ? id : null;
}

function fieldOf(path) {
  if (path.length === 0) return "graph";
  if (path.length === 1 && path[0] !== "nodes" && path[0] !== "edges") return `graph.${path[0]}`;
  return path.slice(1).reduce((text, part) => (typeof part === "number" ? `${text}[${part}]` : `${text}.${part}`), String(path[0]));
}

// Every place where `graph` does not have the DSL's shape, as the API's {node, field, message}.
export function dslShapeIssues(schema, graph) {
  const found = [];
  check(schema, schema, graph, [], found);
  return found.map(({ path, message }) => {
    const node = ownerOf(schema, graph, path);
    const relative = node !== null && path[0] === "nodes" && path.length > 3 && NODE_RELATIVE.has(path[2]);
    return { node, field: fieldOf(relative ? path.slice(2) : path), message };
  });
}
