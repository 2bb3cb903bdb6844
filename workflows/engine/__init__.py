"""Weft's workflow engine: validate a graph (DSL v1) and execute it.

The public surface is what this module exports; everything else is private.
"""

from .errors import EngineError, InvalidGraph, NodeTimeout, NonRetryableError, RetryableError, RunCancelled
from .executor import RunExecutor, RunResult
from .graph import GraphIssue
from .journal import Journal, MemoryJournal, TaskChange, TaskRecord
from .nodes import NodeContext, NodeType, get_node_type, node_type_names, register
from .policy import ErrorPolicy, RetryPolicy
from .validation import validate_graph

__all__ = [
    "EngineError",
    "ErrorPolicy",
    "GraphIssue",
    "InvalidGraph",
    "Journal",
    "MemoryJournal",
    "NodeContext",
    "NodeTimeout",
    "NodeType",
    "NonRetryableError",
    "RetryPolicy",
    "RetryableError",
    "RunCancelled",
    "RunExecutor",
    "RunResult",
    "TaskChange",
    "TaskRecord",
    "get_node_type",
    "node_type_names",
    "register",
    "validate_graph",
]
