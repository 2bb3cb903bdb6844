"""The node result cache of a run (``workflows.engine.cache``), kept in Django's cache: Redis in
production, this process's memory in the embedded mode.

The executor asks by digest; this module confines every key to one scope:
``weft:node-cache:<workflow>:<generation>:<owner>:<requester>:<digest>``.

- The workflow and its owner: a result is reused within one workflow of one owner, never elsewhere.
- Who started the run (``user:<id>``; a client app's end user ``app:<id>:<uid digest>``; ``-`` for a run on
  the owner's behalf, a schedule's say): runs of different users never share a result, so that
  none learns what another asked from how fast, or how alike, an answer came.
- The workflow's generation (``config.generations``): :func:`node_cache_flush` replaces it, and
  every entry kept under the old one is never read again and expires with its ttl. A flush is one
  write, however many entries there are.

An entry is the output's JSON text, kept only if it holds at most ``NODE_CACHE_MAX_ENTRY_BYTES``, for
at most ``NODE_CACHE_MAX_TTL_S`` seconds (validation already refuses a node that asks for longer).
Nothing here is in a run's way: the calls run on a thread, and the executor goes on uncached if
the store fails.
"""

import hashlib
import json
from collections.abc import Awaitable, Callable

from django.core.cache import cache
from django.db import transaction

from config.conf import weft_settings
from config.db import on_db_thread
from config.generations import generation, generation_move
from history.services import audit_log_record
from workflows.engine import NodeCache
from workflows.models import Run

KEY_PREFIX = "weft:node-cache"


def _generation_name(workflow_id) -> str:
    return f"node-cache:{workflow_id}"


def run_node_cache(run: Run, *, owner_id: Callable[[], Awaitable]) -> NodeCache:
    """The cache of ``run``'s nodes, scoped to its workflow, its owner (``owner_id``: the run's port, which
    reads it once for the run and its nodes) and who started it."""
    if run.triggered_by_id is not None:
        requester = f"user:{run.triggered_by_id}"
    elif run.app_id is not None:
        requester = f"app:{run.app_id}:{hashlib.sha256(run.uid.encode()).hexdigest()[:32]}"
    else:
        requester = "-"
    return ScopedNodeCache(workflow_id=run.workflow_id, owner_id=owner_id, requester=requester)


class ScopedNodeCache:
    """Entries of one workflow, its owner and one requester."""

    def __init__(self, *, workflow_id, owner_id: Callable[[], Awaitable], requester: str):
        self.workflow_id = workflow_id
        self.owner_id = owner_id
        self.requester = requester

    async def get(self, key: str) -> dict | None:
        owner_id = await self.owner_id()
        return None if owner_id is None else await on_db_thread(self._get)(owner_id, key)

    async def set(self, key: str, value: dict, ttl_s: int) -> None:
        owner_id = await self.owner_id()
        if owner_id is not None:  # None: the workflow is gone
            await on_db_thread(self._set)(owner_id, key, value, ttl_s)

    def _key(self, owner_id, digest: str) -> str:
        """The entry's key under the workflow's current generation (one read of it: Redis, or this process)."""
        token = generation(_generation_name(self.workflow_id))
        return f"{KEY_PREFIX}:{self.workflow_id}:{token}:{owner_id}:{self.requester}:{digest}"

    def _get(self, owner_id, key: str) -> dict | None:
        text = cache.get(self._key(owner_id, key))
        return json.loads(text) if isinstance(text, str) else None

    def _set(self, owner_id, key: str, value: dict, ttl_s: int) -> None:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        if len(text.encode()) > weft_settings.NODE_CACHE_MAX_ENTRY_BYTES:
            return
        cache.set(self._key(owner_id, key), text, timeout=min(ttl_s, weft_settings.NODE_CACHE_MAX_TTL_S))


def node_cache_flush(*, workflows, operator) -> int:
    """An operator drops the cached node results of ``workflows``: each one's generation is replaced
    (its entries are never read again); audited per workflow. How many were flushed."""
    flushed = 0
    with transaction.atomic():
        for workflow in workflows:
            generation_move(_generation_name(workflow.pk))
            audit_log_record(actor=operator, action="workflow.node_cache_flush", target=workflow)
            flushed += 1
    return flushed
