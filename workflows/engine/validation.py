"""Validation of a DSL v1 graph: every problem at once, each naming its node and field.

First the graph's shape, against the DSL's JSON Schema (:mod:`.dsl`); a graph of the wrong shape
is answered with its shape problems alone. Then the rules a schema cannot say: node ids unique
and not a reserved name; known node types and their configs; the engine's retry limit; a result
cache only where the result may be reused, within the operator's ttl; edges
between existing nodes, with a handle their source offers, not twice; exactly one start, without
inbound edges; at least one end; every node reachable from the start; no cycle; templates that
parse and read only ``start``, ``sys`` and the outputs of the node's ancestors. Sub-graphs
(iteration) are validated the same way, with ``item``/``index`` and the iteration node's own
variables readable inside.
"""

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import NamedTuple

from django.core.signals import setting_changed

from config.conf import weft_settings

from .dsl import dsl_shape_issues
from .graph import ERROR_HANDLE, NAMESPACES, SYS_FIELDS, GraphIssue, GraphSpec, template_references
from .nodes import base as node_types
from .nodes import get_node_type, node_type_names
from .plugins import plugin_type_problem
from .templating import parse_error

#: Graphs validated lately, by digest: a run validates the graph it was started with again, and a
#: published graph runs many times (150 nodes take ~40 ms to validate, half of it the shape, their
#: digest ~0.4 ms).
CACHE_SIZE = 256
_cache: OrderedDict[tuple[bytes, int], tuple[GraphIssue, ...]] = OrderedDict()
_cache_lock = threading.Lock()
_cache_counts = {"hits": 0, "misses": 0}


class ValidationCacheInfo(NamedTuple):
    """How the cache of validated graphs has done, as ``functools``' ``cache_info()`` tells it."""

    hits: int
    misses: int
    maxsize: int
    currsize: int


def validation_cache_info() -> ValidationCacheInfo:
    """Hits and misses of :func:`validate_graph`'s cache since the process started."""
    with _cache_lock:
        return ValidationCacheInfo(_cache_counts["hits"], _cache_counts["misses"], CACHE_SIZE, len(_cache))


def validate_graph(graph: dict) -> list[GraphIssue]:
    """Return every problem of ``graph``; an empty list means it may be saved and run."""
    key = _digest(graph)
    if key is not None:
        with _cache_lock:
            found = _cache.get(key)
            if found is not None:
                _cache.move_to_end(key)
                _cache_counts["hits"] += 1
                return list(found)
    issues = _graph_issues(graph, visible={}, locals_=frozenset(), start_fields=None)
    if key is not None:
        with _cache_lock:
            _cache_counts["misses"] += 1
            _cache[key] = tuple(issues)
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    return issues


def _graph_issues(graph, **scope) -> list[GraphIssue]:
    """The shape's problems if it has any; else those of the rules a schema cannot say."""
    return dsl_shape_issues(graph) or _GraphValidator(graph, **scope).issues()


def _digest(graph: dict) -> tuple[bytes, int] | None:
    """The graph's content and the node types it was checked against, or None if it is not plain JSON."""
    try:
        text = json.dumps(graph, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None
    return hashlib.blake2b(text.encode(), digest_size=16).digest(), node_types.registry_version


def forget_validations(*, setting: str, **kwargs) -> None:
    """Drop the cached results when the engine's limits (``settings.WEFT``) change."""
    if setting == "WEFT":
        with _cache_lock:
            _cache.clear()


setting_changed.connect(forget_validations)


class _GraphValidator:
    """One graph (or sub-graph) of the right shape. ``visible`` maps outer names to their known
    output fields (None: any)."""

    def __init__(
        self,
        graph: dict,
        *,
        visible: dict[str, frozenset[str] | None],
        locals_: frozenset[str],
        start_fields: frozenset[str] | None,
    ):
        self.raw = graph
        self.visible = visible
        self.locals = locals_
        self.start_fields = start_fields
        self.found: list[GraphIssue] = []

    def add(self, node: str | None, field: str, message: str) -> None:
        self.found.append(GraphIssue(node, field, message))

    def issues(self) -> list[GraphIssue]:
        spec = GraphSpec.parse(self.raw)
        self.check_nodes(spec)
        self.check_edges(spec)
        order, cyclic = spec.topological_order()
        self.check_cycles(spec, cyclic)
        start = self.check_start_and_ends(spec)
        if not cyclic:
            self.check_references(spec, order, start)
        return self.found

    def check_nodes(self, spec: GraphSpec) -> None:
        for index, node_id in spec.duplicates:
            self.add(node_id, f"nodes[{index}].id", f"Duplicate node id {node_id!r}.")
        for node in spec.nodes.values():
            node_type = get_node_type(node.type)
            if (node.id in NAMESPACES and not (node.id == "start" and node.type == "start")) or node.id in self.locals:
                self.add(node.id, "id", f"{node.id!r} is a reserved name.")
            elif node.id in self.visible:
                self.add(node.id, "id", f"{node.id!r} is already the name of a node outside this sub-graph.")
            if node_type is None:
                self.add(node.id, "type", plugin_type_problem(node.type) or f"Unknown node type {node.type!r}.")
            else:
                config_issues = node_type.validate_config(node.id, node.config)
                self.found.extend(config_issues)
                if node.cache is not None:
                    self.check_cache(node, node_type, config_valid=not config_issues)
            self.check_error_policy(node)

    def check_cache(self, node, node_type, *, config_valid: bool) -> None:
        """A result cache only on a type (and a config) whose output may be reused, within the operator's ttl."""
        if not node_type.cacheable:
            cacheable = ", ".join(name for name in node_type_names() if get_node_type(name).cacheable)
            self.add(node.id, "cache", f"A {node.type} node's result cannot be reused (cacheable types: {cacheable}).")
            return
        refusal = node_type.cache_refusal(node.config) if config_valid else None
        if refusal:
            self.add(node.id, "cache", refusal)
        if node.cache["ttl_s"] > weft_settings.NODE_CACHE_MAX_TTL_S:
            self.add(node.id, "cache.ttl_s", f"At most {weft_settings.NODE_CACHE_MAX_TTL_S} seconds.")

    def check_error_policy(self, node) -> None:
        """What the schema cannot say: the operator's retry limit, and an error edge for ``branch``."""
        attempts = node.error_policy.get("retry", {}).get("max_attempts")
        if attempts is not None and attempts > weft_settings.RETRY_MAX_ATTEMPTS:
            self.add(node.id, "error_policy.retry.max_attempts", f"At most {weft_settings.RETRY_MAX_ATTEMPTS}.")
        if node.error_policy.get("on_failure") == "branch" and not any(
            edge.handle == ERROR_HANDLE for edge in node.outbound
        ):
            self.add(node.id, "error_policy.on_failure", "`branch` needs an outgoing edge with source_handle `error`.")

    def check_edges(self, spec: GraphSpec) -> None:
        seen: set[tuple[str, str, str]] = set()
        for edge in spec.edges:
            dangling = False
            for end in ("source", "target"):
                name = getattr(edge, end)
                if name not in spec.nodes:
                    dangling = True
                    self.add(name, f"edges[{edge.index}].{end}", f"Edge {end} {name!r} is not a node of this graph.")
            if dangling:
                continue
            key = (edge.source, edge.target, edge.handle)
            if key in seen:
                self.add(edge.source, f"edges[{edge.index}]", "Duplicate edge.")
            seen.add(key)
            source = spec.nodes[edge.source]
            source_type = get_node_type(source.type)
            if source_type is None or source_type.validate_config(source.id, source.config):
                continue
            allowed = set(source_type.handles(source.config))
            if source.error_policy.get("on_failure") == "branch":
                allowed.add(ERROR_HANDLE)
            if edge.handle not in allowed:
                offered = ", ".join(repr(handle) for handle in sorted(allowed - {""})) or "none"
                self.add(
                    edge.source,
                    f"edges[{edge.index}].source_handle",
                    f"{source.id!r} has no branch {edge.handle!r} (it offers: {offered}).",
                )

    def check_cycles(self, spec: GraphSpec, cyclic: set[str]) -> None:
        for component in _cycles(spec, cyclic):
            members = ", ".join(component)
            self.add(component[0], "edges", f"These nodes form a cycle: {members}.")

    def check_start_and_ends(self, spec: GraphSpec) -> str | None:
        starts = [node for node in spec.nodes.values() if node.type == "start"]
        if not starts:
            self.add(None, "nodes", "The graph has no start node.")
        for extra in starts[1:]:
            self.add(extra.id, "type", f"A graph has one start node; {starts[0].id!r} is already one.")
        if not any(node.type == "end" for node in spec.nodes.values()):
            self.add(None, "nodes", "The graph has no end node.")
        if not starts:
            return None
        start = starts[0]
        if start.inbound:
            self.add(start.id, "edges", "The start node cannot have inbound edges.")
        reached = {start.id}
        stack = [start.id]
        while stack:
            for edge in spec.nodes[stack.pop()].outbound:
                if edge.target not in reached:
                    reached.add(edge.target)
                    stack.append(edge.target)
        for node in spec.nodes.values():
            if node.id not in reached and node.type != "start":
                kind = "end node" if node.type == "end" else "node"
                self.add(node.id, "edges", f"This {kind} is not reachable from the start node {start.id!r}.")
        return start.id

    def check_references(self, spec: GraphSpec, order: list[str], start: str | None) -> None:
        """Every template parses and reads only variables this node may see (its ancestors, as bit sets)."""
        bit = {node_id: 1 << position for position, node_id in enumerate(order)}
        ancestors: dict[str, int] = {}
        for node_id in order:
            mask = 0
            for edge in spec.nodes[node_id].inbound:
                mask |= ancestors[edge.source] | bit[edge.source]
            ancestors[node_id] = mask
        start_fields = self.start_fields
        if start_fields is None and start is not None:
            start_node = spec.nodes[start]
            start_type = get_node_type("start")
            if not start_type.validate_config(start, start_node.config):
                start_fields = start_type.declared_outputs(start_node.config)
        for node_id in order:
            node = spec.nodes[node_id]
            node_type = get_node_type(node.type)
            if node_type is None or node_type.validate_config(node.id, node.config):
                continue
            for path, source in node_type.template_strings(node.config):
                error = parse_error(source)
                if error:
                    self.add(node.id, path, f"Template does not parse: {error}")
            for path, name, attribute in template_references(node_type, node.config):
                message = self.reference_problem(spec, node_id, name, attribute, ancestors, bit, start_fields)
                if message:
                    self.add(node.id, path, message)
            self.check_subgraphs(spec, node_id, node_type, ancestors, bit, start_fields)

    def reference_problem(self, spec, node_id, name, attribute, ancestors, bit, start_fields) -> str | None:
        if name in self.locals:
            return None
        if name == "sys":
            if attribute is not None and attribute not in SYS_FIELDS:
                return f"`sys.{attribute}` does not exist (there are: {', '.join(sorted(SYS_FIELDS))})."
            return None
        if name == "start":
            if start_fields is not None and attribute is not None and attribute not in start_fields:
                return f"`start.{attribute}` is not an input of this workflow."
            return None
        if name in spec.nodes:
            if not ancestors[node_id] & bit[name]:
                return f"`{name}` is not upstream of this node; only the outputs of ancestors can be read."
            return self.field_problem(spec.nodes[name], attribute)
        if name in self.visible:
            fields = self.visible[name]
            if fields is not None and attribute is not None and attribute not in fields:
                return f"`{name}` has no output `{attribute}`."
            return None
        return f"`{name}` is not a node of this graph nor a variable."

    def field_problem(self, source, attribute: str | None) -> str | None:
        fields = self.fields_of(source)
        if fields is None or attribute is None or attribute in fields:
            return None
        return f"`{source.id}` has no output `{attribute}` (it has: {', '.join(sorted(fields)) or 'none'})."

    def fields_of(self, node) -> frozenset[str] | None:
        node_type = get_node_type(node.type)
        if node_type is None or node_type.validate_config(node.id, node.config):
            return None
        fields = node_type.declared_outputs(node.config)
        if fields is not None and node.error_policy.get("on_failure") in ("continue", "branch"):
            fields = fields | {"error"} | frozenset(node.error_policy.get("default_output", {}))
        return fields

    def check_subgraphs(self, spec, node_id, node_type, ancestors, bit, start_fields) -> None:
        node = spec.nodes[node_id]
        for path, subgraph, locals_ in node_type.subgraphs(node.config):
            visible = dict(self.visible)
            visible.update(
                (other_id, self.fields_of(other))
                for other_id, other in spec.nodes.items()
                if ancestors[node_id] & bit[other_id]
            )
            inner = _graph_issues(subgraph, visible=visible, locals_=self.locals | locals_, start_fields=start_fields)
            for issue in inner:
                where = f"{issue.node}." if issue.node else ""
                self.add(node_id, f"{path}.{where}{issue.field}", issue.message)


def _cycles(spec: GraphSpec, candidates: set[str]) -> Iterable[list[str]]:
    """The strongly connected components among ``candidates`` that are cycles (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    counter = 0
    for root in sorted(candidates, key=lambda node_id: spec.nodes[node_id].index):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node_id, edge_position = work.pop()
            if edge_position == 0:
                index[node_id] = low[node_id] = counter
                counter += 1
                stack.append(node_id)
                on_stack.add(node_id)
            outbound = [edge.target for edge in spec.nodes[node_id].outbound if edge.target in candidates]
            descended = False
            for position in range(edge_position, len(outbound)):
                target = outbound[position]
                if target not in index:
                    work.append((node_id, position + 1))
                    work.append((target, 0))
                    descended = True
                    break
                if target in on_stack:
                    low[node_id] = min(low[node_id], index[target])
            if descended:
                continue
            if low[node_id] == index[node_id]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node_id:
                        break
                component.reverse()
                self_loop = any(edge.target == node_id for edge in spec.nodes[node_id].outbound)
                if len(component) > 1 or self_loop:
                    yield component
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node_id])
