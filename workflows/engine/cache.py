"""The node result cache: what the executor asks of a store, and the digest it asks under.

A node of a cacheable type (``NodeType.cacheable``: template, code, llm) may carry
``"cache": {"ttl_s": N}`` beside its error policy. Before it executes, the executor looks up the
digest of its type, its config and the values of the variables it reads; on a hit the stored
output is the node's (``node.succeeded`` with ``"cached": true``) and nothing executes; after an
execution that succeeded, the output is stored for ``ttl_s`` seconds.

The engine knows no store and no scope: whoever runs the graph gives the executor a
:class:`NodeCache` whose keys are already confined to the run's workflow, its owner and who
started it (``workflows.execution.node_cache``). A run given none (a node tried alone, a test)
caches nothing (:data:`NO_CACHE`).
"""

import hashlib
import json
from typing import Any, Protocol

from .templating import references

#: Moves whenever what a digest covers changes, so that entries digested by an older rule are never read.
DIGEST_VERSION = 1


class NodeCache(Protocol):
    """Outputs stored by digest, within one scope. Either call may raise: the executor then goes on uncached."""

    async def get(self, key: str) -> dict | None:
        """The output stored under ``key``, or None."""

    async def set(self, key: str, value: dict, ttl_s: int) -> None:
        """Store ``value`` under ``key`` for ``ttl_s`` seconds (or not at all, past the store's bounds)."""


class NullCache:
    """Finds nothing and keeps nothing."""

    async def get(self, key: str) -> dict | None:
        return None

    async def set(self, key: str, value: dict, ttl_s: int) -> None:
        return None


NO_CACHE = NullCache()


def node_digest(*, node_type: Any, type_name: str, config: dict, variables: dict) -> str | None:
    """The sha256 of the node's type, config and the values it reads, as canonical JSON; None if they are not JSON.

    A value read as ``{{ a.b }}`` counts as ``a.b`` alone; one read otherwise (``{{ a }}``, ``a[i]``)
    counts whole. So ``{{ sys.run_id }}`` makes every run a miss, as it should.
    """
    reads = {reference for _, source in node_type.template_strings(config) for reference in references(source)}
    document = {
        "v": DIGEST_VERSION,
        "type": type_name,
        "config": config,
        "reads": [
            [name, attribute, *_read(variables, name, attribute)]
            for name, attribute in sorted(reads, key=lambda pair: (pair[0], pair[1] or ""))
        ],
    }
    try:
        text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()
    except (TypeError, ValueError, RecursionError):
        return None


def _read(variables: dict, name: str, attribute: str | None) -> list:
    """``[value]`` of what ``name.attribute`` reads; ``[]`` when the name is not there (the render fails)."""
    if name not in variables:
        return []
    value = variables[name]
    if attribute is not None and isinstance(value, dict) and attribute in value:
        return [value[attribute]]
    return [value]
