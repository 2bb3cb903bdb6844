"""The parsed shape of a DSL v1 graph, shared by validation and the executor."""

from dataclasses import asdict, dataclass, field
from typing import Any

from .templating import references

#: What ``{{ sys.* }}`` offers.
SYS_FIELDS = frozenset({"run_id", "workflow_id", "user_id", "trigger", "created_at"})
#: Names that are not node ids: the run's inputs and the system variables.
NAMESPACES = frozenset({"start", "sys"})
#: The edge handle of an error branch (``on_failure: branch``).
ERROR_HANDLE = "error"


@dataclass(frozen=True)
class GraphIssue:
    """One problem in a graph: the node it concerns (None for the graph), the field, what is wrong."""

    node: str | None
    field: str
    message: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class NodeSpec:
    id: str
    type: str
    name: str
    config: dict
    error_policy: dict
    index: int
    inbound: list["EdgeSpec"] = field(default_factory=list)
    outbound: list["EdgeSpec"] = field(default_factory=list)
    #: ``{"ttl_s": N}``: the node's result is reused (:mod:`.cache`); None: never.
    cache: dict | None = None


@dataclass(frozen=True)
class EdgeSpec:
    index: int
    source: str
    target: str
    handle: str


@dataclass
class GraphSpec:
    """Nodes by id with their edges, in the order they were given. Built from a graph of the DSL's
    shape (:func:`~workflows.engine.dsl.dsl_shape_issues` found nothing)."""

    nodes: dict[str, NodeSpec]
    edges: list[EdgeSpec]
    duplicates: list[tuple[int, str]]

    @classmethod
    def parse(cls, graph: dict) -> "GraphSpec":
        nodes: dict[str, NodeSpec] = {}
        duplicates: list[tuple[int, str]] = []
        for index, raw in enumerate(graph.get("nodes") or []):
            node_id = raw["id"]
            if node_id in nodes:
                duplicates.append((index, node_id))
                continue
            nodes[node_id] = NodeSpec(
                id=node_id,
                type=raw["type"],
                name=raw.get("name") or node_id,
                config=raw.get("config") or {},
                error_policy=raw.get("error_policy") or {},
                index=index,
                cache=raw.get("cache") or None,
            )
        edges: list[EdgeSpec] = []
        for index, raw in enumerate(graph.get("edges") or []):
            edge = EdgeSpec(index, raw["source"], raw["target"], raw.get("source_handle") or "")
            edges.append(edge)
            if edge.source in nodes and edge.target in nodes:
                nodes[edge.source].outbound.append(edge)
                nodes[edge.target].inbound.append(edge)
        return cls(nodes=nodes, edges=edges, duplicates=duplicates)

    def topological_order(self) -> tuple[list[str], set[str]]:
        """Node ids in a topological order (ties in given order) and the ids left over by cycles."""
        remaining = {node_id: len(node.inbound) for node_id, node in self.nodes.items()}
        ready = [node_id for node_id, count in remaining.items() if count == 0]
        order: list[str] = []
        while ready:
            node_id = ready.pop()
            order.append(node_id)
            for edge in self.nodes[node_id].outbound:
                remaining[edge.target] -= 1
                if remaining[edge.target] == 0:
                    ready.append(edge.target)
        return order, {node_id for node_id, count in remaining.items() if count > 0}


def template_references(node_type: Any, config: dict) -> list[tuple[str, str, str | None]]:
    """``(field, name, attribute)`` for every variable a node's config reads."""
    return [
        (path, name, attribute)
        for path, source in node_type.template_strings(config)
        for name, attribute in references(source)
    ]
