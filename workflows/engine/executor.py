"""The executor: one run of a graph, on one asyncio loop.

Nodes start as soon as every inbound edge is resolved: taken (its source finished and chose
that edge's handle) or dead (its source was skipped, failed with ``skip``, or chose another
branch). A node with at least one taken inbound edge runs; a node whose inbound edges are all
dead is skipped, and so are its edges. Independent branches therefore run concurrently and a
join waits for the branches that were taken. The work per node is proportional to its edges
and to the variables it reads, so nothing grows with the square of the graph.

A node's attempt runs under its timeout; a failure is retried after the policy's delay (an
``asyncio.sleep``: other nodes and runs go on meanwhile); once the attempts are spent the
node's ``on_failure`` decides: ``fail`` ends the run, ``continue`` yields ``default_output``
(plus ``error``), ``skip`` kills its outgoing edges, ``branch`` takes its ``error`` edges.

Durability follows what a node does outside the run (``NodeType.effects``), as a write-ahead
log does: before a node with effects (a request, a model or tool call) executes, everything
recorded before it is stored (``journal.flush``), and its outcome is recorded ``durable`` (stored
before the run goes on), so a crash never makes it act again on inputs that were not kept, nor
act again once it succeeded. A node without effects (start, template, condition, code in the
sandbox, aggregator, iteration, end) is a computation: its events are stored a moment later,
together with others (group commit), and a crash that loses its outcome only means it is
computed again on resume. A failure is always recorded ``durable``, and the run's end is stored
with everything before it.

Node executions recorded by an earlier attempt of the run (a crashed worker) as succeeded,
skipped or handled failures are not executed again: their outcome is replayed silently.

A node with ``cache`` first looks its digest up in the run's :class:`~.cache.NodeCache`: a hit
is its success (``cached: true``) without executing; a success of its own is stored there.
"""

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from config.conf import weft_settings

from .cache import NO_CACHE, NodeCache, node_digest
from .errors import EngineError, InvalidGraph, NodeTimeout, NonRetryableError
from .graph import ERROR_HANDLE, GraphSpec, NodeSpec
from .journal import Journal, OutputNotStored, TaskChange, TaskRecord
from .nodes import NodeContext, NodeType, get_node_type
from .outputs import cleaned, output_checked
from .policy import ErrorPolicy
from .ports import NO_PORTS, NodePorts
from .templating import references, strings_in
from .validation import validate_graph

logger = logging.getLogger(__name__)

SUCCEEDED, FAILED, SKIPPED, RUNNING, RETRYING = "succeeded", "failed", "skipped", "running", "retrying"
PLAIN = frozenset({""})


class NodeFailed(NonRetryableError):
    """A node failed with ``on_failure: fail``: the graph it belongs to fails."""

    def __init__(self, node_id: str, scope: str, error: str):
        where = f"{node_id} ({scope})" if scope else node_id
        super().__init__(f"Node {where} failed: {error}")
        self.node_id = node_id
        self.error = error


class LeaseLost(EngineError):
    """Another worker owns the run now: stop without writing anything more."""


@dataclass(frozen=True)
class RunResult:
    status: str
    outputs: dict | None = None
    error: str = ""


@dataclass(frozen=True)
class _Outcome:
    """How a node ended, as far as its edges are concerned."""

    output: dict | None
    handles: frozenset[str] | None  # None: every plain edge; empty: no edge at all


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, EngineError):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def referenced_names(node_type: NodeType, config: dict) -> frozenset[str]:
    """Top-level names a node (and the sub-graphs it runs) may read."""
    names = {name for _, source in node_type.template_strings(config) for name, _ in references(source)}
    for _, subgraph, _ in node_type.subgraphs(config):
        for raw in subgraph.get("nodes", []):
            names.update(name for _, source in strings_in(raw.get("config", {}), "") for name, _ in references(source))
    return frozenset(names)


class RunExecutor:
    """Execute ``graph`` with ``inputs`` and report everything to ``journal``."""

    def __init__(
        self,
        *,
        graph: dict,
        inputs: dict,
        system: dict,
        journal: Journal,
        resumed: bool = False,
        ports: NodePorts = NO_PORTS,
        cache: NodeCache = NO_CACHE,
    ):
        self.graph = graph
        self.inputs = inputs
        self.system = system
        self.journal = journal
        self.resumed = resumed
        self.ports = ports
        self.cache = cache
        self.cancelled = asyncio.Event()
        self.slots = asyncio.Semaphore(weft_settings.MAX_PARALLEL_NODES)
        self.previous: dict[tuple[str, str], TaskRecord] = {}
        self._specs: dict[int, GraphSpec] = {}
        self._names: dict[tuple[int, str], frozenset[str]] = {}

    async def run(self) -> RunResult:
        issues = validate_graph(self.graph)
        if issues:
            result = RunResult("failed", error=str(InvalidGraph(issues)))
            await self.journal.finish("failed", outputs=None, error=result.error, data={"error": result.error})
            return result
        self.previous = await self.journal.completed()
        await self.journal.record("run.started", "", {"resumed": True} if self.resumed else {})
        main = asyncio.create_task(self._graph(self.graph, scope="", outer={}))
        watcher = asyncio.create_task(self._watch(main))
        try:
            outputs = await main
        except asyncio.CancelledError:
            if watcher.done() and watcher.result() == "lost":
                return RunResult("lost")
            await self.journal.finish("cancelled", outputs=None, error="", data={})
            return RunResult("cancelled")
        except LeaseLost:
            return RunResult("lost")
        except NodeFailed as failure:
            await self.journal.finish(
                "failed", outputs=None, error=str(failure), data={"error": str(failure), "node": failure.node_id}
            )
            return RunResult("failed", error=str(failure))
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await self.journal.finish("succeeded", outputs=outputs, error="", data={"outputs": outputs})
        return RunResult("succeeded", outputs=outputs)

    async def _watch(self, main: asyncio.Task) -> str:
        """Poll the journal for a cancel request or a lost lease; stop ``main`` on either."""
        while True:
            await asyncio.sleep(weft_settings.CANCEL_POLL_S)
            state = await self.journal.heartbeat()
            if state in ("cancel", "lost"):
                self.cancelled.set()
                main.cancel()
                return state

    def _spec(self, graph: dict) -> GraphSpec:
        key = id(graph)
        if key not in self._specs:
            self._specs[key] = GraphSpec.parse(graph)
        return self._specs[key]

    def _variables(self, spec: GraphSpec, node: NodeSpec, outputs: dict, outer: dict) -> dict:
        key = (id(spec), node.id)
        if key not in self._names:
            self._names[key] = referenced_names(get_node_type(node.type), node.config)
        variables = {"start": self.inputs, "sys": self.system, **outer}
        for name in self._names[key]:
            if name in outputs:
                variables[name] = outputs[name]
        return variables

    async def _graph(self, graph: dict, *, scope: str, outer: dict) -> dict:
        """Run one graph to its end; return the merged outputs of the end nodes that ran."""
        spec = self._spec(graph)
        unresolved = {node_id: len(node.inbound) for node_id, node in spec.nodes.items()}
        taken = dict.fromkeys(spec.nodes, 0)
        outputs: dict[str, dict] = {}
        ended: list[tuple[int, dict]] = []
        ready = deque(node_id for node_id, count in unresolved.items() if count == 0)
        finished: asyncio.Queue = asyncio.Queue()
        running: dict[str, asyncio.Task] = {}

        def resolve(node: NodeSpec, handles: frozenset[str] | None) -> None:
            for edge in node.outbound:
                if (edge.handle in PLAIN and handles is None) or (handles is not None and edge.handle in handles):
                    taken[edge.target] += 1
                unresolved[edge.target] -= 1
                if unresolved[edge.target] == 0:
                    ready.append(edge.target)

        async def attend(node: NodeSpec) -> None:
            try:
                result: Any = await self._node(
                    spec, node, scope=scope, variables=self._variables(spec, node, outputs, outer)
                )
            except BaseException as exc:
                result = exc
            finished.put_nowait((node, result))

        try:
            while ready or running:
                while ready:
                    node = spec.nodes[ready.popleft()]
                    if node.inbound and taken[node.id] == 0:
                        await self._skip(node, scope=scope)
                        resolve(node, frozenset())
                        continue
                    running[node.id] = asyncio.create_task(attend(node))
                if not running:
                    break
                node, result = await finished.get()
                del running[node.id]
                if isinstance(result, BaseException):
                    raise result
                if result.output is not None:
                    outputs[node.id] = result.output
                    if node.type == "end":
                        ended.append((node.index, result.output))
                resolve(node, result.handles)
        finally:
            for task in running.values():
                task.cancel()
            if running:
                await asyncio.gather(*running.values(), return_exceptions=True)
        merged: dict = {}
        for _, end_outputs in sorted(ended, key=lambda pair: pair[0]):
            merged.update(end_outputs)
        return merged

    async def _skip(self, node: NodeSpec, *, scope: str) -> None:
        if (scope, node.id) in self.previous:
            return
        data = {"reason": "upstream", **({"scope": scope} if scope else {})}
        task = TaskChange(node.id, scope, node.type, node.name, SKIPPED, 0, finished=True)
        await self.journal.record("node.skipped", node.id, data, task)

    async def _node(self, spec: GraphSpec, node: NodeSpec, *, scope: str, variables: dict) -> _Outcome:
        node_type = get_node_type(node.type)
        policy = ErrorPolicy.from_dsl(node.error_policy)
        earlier = self.previous.get((scope, node.id))
        if earlier is not None and earlier.status in (SUCCEEDED, SKIPPED):
            return (
                self._success(node_type, node, earlier.output)
                if earlier.status == SUCCEEDED
                else _Outcome(None, frozenset())
            )
        if earlier is not None and earlier.status == FAILED:
            if policy.on_failure == "fail":  # stored: the run fails as it would have, the node is not redone
                raise NodeFailed(node.id, scope, earlier.error)
            return self._handled(node_type, node, policy, earlier.error)
        first = (earlier.attempt if earlier else 0) + 1
        extra = {"scope": scope} if scope else {}
        attempt = first
        cache_key = await self._cache_key(node_type, node, variables)
        if cache_key is not None:
            reused = await self._cache_lookup(node_type, node, cache_key, scope=scope, attempt=attempt)
            if reused is not None:
                return reused
        if node_type.effects:
            await self.journal.flush()
        while True:
            change = TaskChange(node.id, scope, node.type, node.name, RUNNING, attempt, started=True)
            await self.journal.record("node.started", node.id, {"attempt": attempt, "type": node.type, **extra}, change)
            started = time.monotonic()
            try:
                output = await self._attempt(node_type, node, policy, scope=scope, attempt=attempt, variables=variables)
                output = output_checked(output)  # as it is stored and passed on; too large: not retried
            except Exception as exc:
                error = cleaned(_error_text(exc))
                retryable = not isinstance(exc, NonRetryableError)
                if not isinstance(exc, EngineError):
                    logger.warning("Node %s of run %s raised", node.id, self.system.get("run_id"), exc_info=exc)
                if retryable and attempt - first + 1 < policy.retry.max_attempts:
                    delay = policy.retry.delay(attempt - first + 1, getattr(exc, "retry_after", None))
                    change = TaskChange(node.id, scope, node.type, node.name, RETRYING, attempt, error=error)
                    data = {"attempt": attempt, "error": error, "delay_s": round(delay, 3), **extra}
                    await self.journal.record("node.retrying", node.id, data, change)
                    await asyncio.sleep(delay)
                    attempt += 1
                    continue
                return await self._failed(node_type, node, policy, scope=scope, attempt=attempt, error=error)
            duration_ms = round((time.monotonic() - started) * 1000, 3)
            change = TaskChange(node.id, scope, node.type, node.name, SUCCEEDED, attempt, output=output, finished=True)
            data = {"attempt": attempt, "output": output, "duration_ms": duration_ms, **extra}
            try:
                await self.journal.record("node.succeeded", node.id, data, change, durable=node_type.effects)
            except OutputNotStored as exc:  # stored as failed: its effect happened, so it is not retried
                return await self._failed(node_type, node, policy, scope=scope, attempt=attempt, error=str(exc))
            if cache_key is not None:
                await self._cache_store(cache_key, output, node.cache["ttl_s"])
            return self._success(node_type, node, output)

    async def _cache_key(self, node_type: NodeType, node: NodeSpec, variables: dict) -> str | None:
        """The node's digest if it is cached; in a thread, since it reads (and hashes) inputs of any size."""
        if not node.cache or self.cache is NO_CACHE:
            return None
        return await asyncio.to_thread(
            node_digest, node_type=node_type, type_name=node.type, config=node.config, variables=variables
        )

    async def _cache_lookup(self, node_type, node, key: str, *, scope: str, attempt: int) -> _Outcome | None:
        """The node's success from a stored result, recorded as such; None on a miss (or a store that failed)."""
        started = time.monotonic()
        try:
            stored = await self.cache.get(key)
        except Exception:
            logger.warning(
                "Could not read the node cache for %s of run %s", node.id, self.system.get("run_id"), exc_info=True
            )
            return None
        if not isinstance(stored, dict):
            return None
        output = node_type.reused_output(stored)
        change = TaskChange(
            node.id, scope, node.type, node.name, SUCCEEDED, attempt, output=output, started=True, finished=True
        )
        duration_ms = round((time.monotonic() - started) * 1000, 3)
        data = {"attempt": attempt, "output": output, "duration_ms": duration_ms, "cached": True}
        await self.journal.record("node.succeeded", node.id, {**data, **({"scope": scope} if scope else {})}, change)
        return self._success(node_type, node, output)

    async def _cache_store(self, key: str, output: dict, ttl_s: int) -> None:
        try:
            await self.cache.set(key, output, int(ttl_s))
        except Exception:
            logger.warning("Could not store a node result for run %s", self.system.get("run_id"), exc_info=True)

    async def _attempt(self, node_type, node, policy, *, scope, attempt, variables) -> dict:
        loop = asyncio.get_running_loop()
        ctx = NodeContext(
            run_id=str(self.system.get("run_id", "")),
            workflow_id=str(self.system.get("workflow_id", "")),
            node_id=node.id,
            node_type=node.type,
            attempt=attempt,
            variables=variables,
            scope=scope,
            deadline=loop.time() + policy.timeout_s if policy.timeout_s else None,
            cancelled=self.cancelled,
            emit=lambda event_type, data: self.journal.record(
                event_type, node.id, {**data, **({"scope": scope} if scope else {})}
            ),
            run_subgraph=self._subgraph_runner(variables),
            ports=self.ports,
        )
        holds_slot = not any(True for _ in node_type.subgraphs(node.config))
        async with contextlib.AsyncExitStack() as stack:
            if holds_slot:
                await stack.enter_async_context(self.slots)
            try:
                async with asyncio.timeout(policy.timeout_s):
                    output = await node_type.execute(ctx, node.config)
            except TimeoutError:
                if asyncio.current_task().cancelling():
                    raise asyncio.CancelledError from None  # a cancel that met the timeout (3.11)
                raise NodeTimeout(f"Timed out after {policy.timeout_s:g} s.") from None
        if not isinstance(output, dict):
            raise NonRetryableError(f"The node returned {type(output).__name__}, not an object.")
        return output

    def _subgraph_runner(self, variables: dict):
        async def run_subgraph(*, graph: dict, variables: dict[str, Any], scope: str) -> dict:
            try:
                return await self._graph(graph, scope=scope, outer={**outer, **variables})
            except NodeFailed as failure:
                raise NonRetryableError(str(failure)) from failure

        outer = {key: value for key, value in variables.items() if key not in ("start", "sys")}
        return run_subgraph

    def _success(self, node_type: NodeType, node: NodeSpec, output: dict) -> _Outcome:
        return _Outcome(output, node_type.taken_handles(node.config, output))

    def _handled(self, node_type: NodeType, node: NodeSpec, policy: ErrorPolicy, error: str) -> _Outcome:
        if policy.on_failure == "skip":
            return _Outcome(None, frozenset())
        if policy.on_failure == "branch":
            return _Outcome({"error": error}, frozenset({ERROR_HANDLE}))
        output = {**policy.default_output, "error": error}
        try:
            handles = node_type.taken_handles(node.config, output)
        except (KeyError, TypeError):
            handles = None
        return _Outcome(output, handles)

    async def _failed(self, node_type, node, policy, *, scope, attempt, error) -> _Outcome:
        outcome = None if policy.on_failure == "fail" else self._handled(node_type, node, policy, error)
        output = outcome.output if outcome else None
        change = TaskChange(
            node.id, scope, node.type, node.name, FAILED, attempt, output=output, error=error, finished=True
        )
        data = {
            "attempt": attempt,
            "error": error,
            "on_failure": policy.on_failure,
            **({"scope": scope} if scope else {}),
        }
        await self.journal.record("node.failed", node.id, data, change, durable=True)
        if outcome is None:
            raise NodeFailed(node.id, scope, error)
        return outcome
