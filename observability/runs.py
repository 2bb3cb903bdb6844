"""A run's execution, watched: its span and node spans, its log context, its metrics.

``workflows.execution.runner.run_execute`` wraps the run's journal in :func:`run_observed`;
everything here is derived from the events the executor reports (``run.started``,
``node.started``, ``node.retrying``, ``node.succeeded``, ``node.failed``, ``node.skipped``, the
final ``run.<status>``), on the loop, before they are handed to the journal. Per event that is a
few dictionary operations and, with tracing on, a span started or ended in memory; no I/O.

``node.started`` is recorded by the node's own asyncio task, so setting the log context's node
id there marks that task's log lines (and those of the tasks it starts) and no other node's.
"""

import contextlib
import logging
import time

from django.utils import timezone
from opentelemetry.trace import Status, StatusCode

from . import logs, metrics, tracing

logger = logging.getLogger(__name__)

_NODE_OUTCOMES = {"node.succeeded": "succeeded", "node.failed": "failed", "node.retrying": "retrying"}
#: The error text kept on a span or in a log line.
ERROR_MAX_CHARS = 500


class ObservedJournal:
    """Hands everything to ``journal`` unchanged, observing the events on the way."""

    def __init__(self, journal, *, run, run_span):
        self._journal = journal
        self._run = run
        self._run_span = run_span
        self._attempts: dict[tuple[str, str], tuple[str, float]] = {}
        self._node_spans: dict[tuple[str, str], object] = {}

    def __getattr__(self, name):
        return getattr(self._journal, name)

    def record(self, event_type: str, node_id: str, data: dict, task=None, *, durable: bool = False):
        try:
            if event_type.startswith("node."):
                self._node_event(event_type, node_id, data, task)
            elif event_type == "run.started":
                self._run_started(data)
        except Exception:  # watching a run never breaks it
            logger.exception("Could not observe event %s.", event_type)
        return self._journal.record(event_type, node_id, data, task, durable=durable)

    def finish(self, status: str, *, outputs, error: str, data: dict):
        try:
            self._run_finished(status, error)
        except Exception:
            logger.exception("Could not observe the end of the run.")
        return self._journal.finish(status, outputs=outputs, error=error, data=data)

    # --- the run -----------------------------------------------------------------------------------
    def _run_started(self, data: dict) -> None:
        if data.get("resumed"):
            metrics.runs_resumed.inc()
            logger.info("Run resumed (attempt %s).", self._run.dispatch_attempts)
        else:
            metrics.runs_started.labels(self._run.trigger).inc()
            logger.info("Run started.", extra={"workflow_id": str(self._run.workflow_id), "trigger": self._run.trigger})

    def _run_finished(self, status: str, error: str) -> None:
        started = self._run.started_at
        seconds = max((timezone.now() - started).total_seconds(), 0.0) if started else 0.0
        metrics.runs_finished.labels(status).inc()
        metrics.run_duration.labels(status).observe(seconds)
        self.spans_close(status="cancelled" if status == "cancelled" else "unfinished")
        span = self._run_span
        if span is not None:
            span.set_attribute("weft.run.status", status)
            if status == "failed":
                span.set_status(Status(StatusCode.ERROR, error[:ERROR_MAX_CHARS]))
        if status == "failed":
            logger.warning("Run failed after %.3f s: %s", seconds, error[:ERROR_MAX_CHARS])
        else:
            logger.info("Run %s after %.3f s.", status, seconds)

    # --- its nodes ---------------------------------------------------------------------------------
    def _node_event(self, event_type: str, node_id: str, data: dict, task) -> None:
        scope = data.get("scope", "")
        key = (scope, node_id)
        if event_type == "node.started":
            logs.node_id_var.set(node_id)
            node_type = task.node_type if task is not None else data.get("type", "")
            self._attempts[key] = (node_type, time.monotonic())
            if self._run_span is not None and key not in self._node_spans:
                self._node_spans[key] = self._node_span(node_id, node_type, scope)
            return
        if event_type == "node.skipped":
            if self._run_span is not None:
                node_type = task.node_type if task is not None else ""
                span = self._node_span(node_id, node_type, scope)
                span.set_attribute("weft.node.status", "skipped")
                span.end()
            return
        outcome = _NODE_OUTCOMES.get(event_type)
        if outcome is None:
            return  # node.delta and the like
        attempt = self._attempts.pop(key, None)
        if attempt is not None:
            node_type, began = attempt
            metrics.node_duration.labels(node_type, outcome).observe(time.monotonic() - began)
            if outcome == "retrying":
                metrics.node_retries.labels(node_type).inc()
        span = self._node_spans.get(key)
        if span is None:
            return
        if outcome == "retrying":
            span.add_event(
                "retry",
                {"attempt": data.get("attempt", 0), "error": str(data.get("error", ""))[:ERROR_MAX_CHARS]},
            )
            return
        del self._node_spans[key]
        span.set_attribute("weft.node.status", outcome)
        span.set_attribute("weft.node.attempts", data.get("attempt", 1))
        if outcome == "failed":
            span.set_status(Status(StatusCode.ERROR, str(data.get("error", ""))[:ERROR_MAX_CHARS]))
        span.end()

    def _node_span(self, node_id: str, node_type: str, scope: str):
        attributes = {"weft.node.id": node_id, "weft.node.type": node_type}
        if scope:
            attributes["weft.node.scope"] = scope
        return tracing.child_span_start(self._run_span, f"node.{node_type or 'unknown'}", attributes=attributes)

    def spans_close(self, *, status: str) -> None:
        for span in self._node_spans.values():
            span.set_attribute("weft.node.status", status)
            span.end()
        self._node_spans.clear()


@contextlib.contextmanager
def run_observed(*, run, journal):
    """Around a run's execution: its span, its log context; yields the journal to give the executor."""
    run_span = tracing.run_span_start(
        run_trace_id=run.trace_id,
        name="workflow.run",
        attributes={
            "weft.run.id": str(run.pk),
            "weft.workflow.id": str(run.workflow_id),
            "weft.run.trigger": run.trigger,
            "weft.run.attempt": run.dispatch_attempts,
        },
    )
    observed = ObservedJournal(journal, run=run, run_span=run_span)
    tokens = [
        (logs.run_id_var, logs.run_id_var.set(str(run.pk))),
        (logs.node_id_var, logs.node_id_var.set("")),
        (logs.trace_id_var, logs.trace_id_var.set(run.trace_id or tracing.span_trace_id(run_span))),
    ]
    try:
        yield observed
    finally:
        observed.spans_close(status="unfinished")
        if run_span is not None:
            run_span.end()
        for variable, token in reversed(tokens):
            variable.reset(token)
