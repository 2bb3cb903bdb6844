"""Celery hooks: the trace context travels in each task message, and workers log as the web does.

``before_task_publish`` writes the publisher's trace context (``traceparent``) into the
message's headers; ``task_prerun`` makes it current in the worker's task thread for the task's
duration (the engine's loop inherits it when the thread hands the run over), ``task_postrun``
ends that (with the libraries instrumented, Celery's instrumentation does all this instead, with
a span for the publish and one for the task). Receiving ``setup_logging`` keeps Celery from
replacing the ``LOGGING`` setting with its own format, so worker and beat lines are JSON (or text)
like the web's.
"""

from celery import signals
from opentelemetry import context as otel_context

from . import instrumentation, tracing

_tokens: dict[str, object] = {}


def _headers_inject(headers=None, **kwargs) -> None:
    if tracing.tracer is None or headers is None or instrumentation.instrumented():
        return
    carrier: dict = {}
    tracing.inject(carrier)
    headers.update(carrier)


def _context_attach(task_id=None, task=None, **kwargs) -> None:
    if tracing.tracer is None or task is None or task_id is None or instrumentation.instrumented():
        return
    request = task.request
    carrier = {name: value for name in ("traceparent", "tracestate") if (value := getattr(request, name, None))}
    if not carrier:
        headers = getattr(request, "headers", None) or {}
        carrier = {name: headers[name] for name in ("traceparent", "tracestate") if headers.get(name)}
    if carrier:
        _tokens[task_id] = otel_context.attach(tracing.extract(carrier))


def _context_detach(task_id=None, **kwargs) -> None:
    token = _tokens.pop(task_id, None)
    if token is not None:
        otel_context.detach(token)


def _logging_keep(**kwargs) -> None:
    """Django has configured logging from settings.LOGGING already."""


def connect() -> None:
    signals.before_task_publish.connect(_headers_inject, weak=False, dispatch_uid="weft-trace-inject")
    signals.task_prerun.connect(_context_attach, weak=False, dispatch_uid="weft-trace-attach")
    signals.task_postrun.connect(_context_detach, weak=False, dispatch_uid="weft-trace-detach")
    signals.setup_logging.connect(_logging_keep, weak=False, dispatch_uid="weft-logging")
