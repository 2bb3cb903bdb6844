"""Weft's workflow engine: validate a graph (DSL v1) and execute it.

The public surface is what this module exports (and ``workflows.engine.sandbox``, the code
sandbox); every other module is private, which `lint-imports` checks (.importlinter). Besides
the executor and its contracts (node types, journal, ports), the engine lends the platform the
pieces it is built on: the outbound HTTP guard, the LLM client and the template renderer.
"""

from .cache import NodeCache
from .dsl import dsl_schema, dsl_shape_issues
from .errors import EngineError, InvalidGraph, NodeTimeout, NonRetryableError, RetryableError, RunCancelled
from .executor import LeaseLost, RunExecutor, RunResult
from .graph import GraphIssue
from .journal import Journal, MemoryJournal, OutputNotStored, TaskChange, TaskRecord
from .llm import LLM_KINDS, LLMClient, estimate_message_tokens
from .net import (
    guarded_async_client,
    guarded_client,
    outbound_errors,
    outbound_policy,
    parse_retry_after,
    read_limited,
)
from .nodes import NodeContext, NodeType, get_node_type, node_type_names, register
from .outputs import OutputInvalid, cleaned, json_text, storable_json
from .plugins import (
    PluginInfo,
    get_plugin_of,
    plugin_key,
    plugin_threads_abandoned,
    plugins_installed,
    plugins_load,
    plugins_reload,
)
from .policy import ErrorPolicy, RetryPolicy
from .ports import ConversationMemory, NodePorts, PortMissing
from .templating import TemplateRenderError, render_text
from .validation import ValidationCacheInfo, validate_graph, validation_cache_info

__all__ = [
    "ConversationMemory",
    "EngineError",
    "ErrorPolicy",
    "GraphIssue",
    "InvalidGraph",
    "Journal",
    "LLMClient",
    "LLM_KINDS",
    "LeaseLost",
    "MemoryJournal",
    "NodeCache",
    "NodeContext",
    "NodePorts",
    "NodeTimeout",
    "NodeType",
    "NonRetryableError",
    "OutputInvalid",
    "OutputNotStored",
    "PluginInfo",
    "PortMissing",
    "RetryPolicy",
    "RetryableError",
    "RunCancelled",
    "RunExecutor",
    "RunResult",
    "TaskChange",
    "TaskRecord",
    "TemplateRenderError",
    "ValidationCacheInfo",
    "cleaned",
    "dsl_schema",
    "dsl_shape_issues",
    "estimate_message_tokens",
    "get_node_type",
    "get_plugin_of",
    "guarded_async_client",
    "guarded_client",
    "json_text",
    "node_type_names",
    "outbound_errors",
    "outbound_policy",
    "parse_retry_after",
    "plugin_key",
    "plugin_threads_abandoned",
    "plugins_installed",
    "plugins_load",
    "plugins_reload",
    "read_limited",
    "register",
    "render_text",
    "storable_json",
    "validate_graph",
    "validation_cache_info",
]
