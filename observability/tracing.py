"""OpenTelemetry tracing: a trace per run, carried from the API request through Celery to the worker.

Off unless the standard ``OTEL_*`` variables ask for it (an OTLP endpoint, or
``OTEL_TRACES_EXPORTER=otlp|console``; ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``
win): then :data:`tracer` is None and every function here returns at its first line. On, spans
go through a batch processor to the OTLP/HTTP exporter, which reads its endpoint, headers and
timeout from ``OTEL_EXPORTER_OTLP_*``; ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER`` and ``OTEL_BSP_*`` apply as the SDK defines them.

The run's trace id is chosen when the run is created (:func:`trace_id_for_new_run`: the request's
trace, or a new one) and stored on ``Run.trace_id``. The worker continues that trace: under the
span that dispatched the run when the Celery message carries it (``task_signals``), else as a new
root span with the stored trace id, so a run resumed by another worker stays in its trace.
This module keeps its own provider instead of the global one, so that tests can install theirs.
With tracing on, OpenTelemetry's instrumentation of Django, Celery, SQL, httpx and Redis gives its
spans to the same provider (:mod:`observability.instrumentation`).
"""

import contextvars
import logging
import os
import secrets

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

logger = logging.getLogger(__name__)

INSTRUMENTATION_NAME = "weft"
DEFAULT_SERVICE_NAME = "weft"

#: The tracer spans come from; None while tracing is off.
tracer: trace.Tracer | None = None
_provider: TracerProvider | None = None
_propagator = TraceContextTextMapPropagator()
#: A trace id the next root span must take (the run's stored one).
_wanted_trace_id: contextvars.ContextVar[int] = contextvars.ContextVar("weft_wanted_trace_id", default=0)


class _RunTraceIdGenerator(RandomIdGenerator):
    """Random ids, except that a root span started for a run takes the trace id stored on the run."""

    def generate_trace_id(self) -> int:
        return _wanted_trace_id.get() or super().generate_trace_id()


def tracing_wanted(environ=os.environ) -> str:
    """The exporter the environment asks for: ``"otlp"``, ``"console"`` or ``""`` (tracing off)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ""
    exporters = [name.strip().lower() for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()]
    if "none" in exporters:
        return ""
    if "console" in exporters:
        return "console"
    if (
        "otlp" in exporters
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    ):
        return "otlp"
    return ""


def configure_from_environment() -> None:
    """Turn tracing on in this process if the ``OTEL_*`` variables ask for it (see the module's doc)."""
    exporter_name = tracing_wanted()
    if not exporter_name or tracer is not None:
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if exporter_name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        exporter = ConsoleSpanExporter()
    service = os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
    provider = TracerProvider(resource=Resource.create({"service.name": service}), id_generator=_RunTraceIdGenerator())
    provider.add_span_processor(BatchSpanProcessor(exporter))
    install(provider)
    from . import instrumentation

    instrumentation.instrument(provider)
    logger.info("Tracing is on: spans go to the %s exporter.", exporter_name)


def install(provider: TracerProvider | None) -> None:
    """Use ``provider`` for Weft's spans from now on (None: tracing off). Tests install their own."""
    global tracer, _provider
    _provider = provider
    tracer = provider.get_tracer(INSTRUMENTATION_NAME) if provider is not None else None


def new_provider(**kwargs) -> TracerProvider:
    """A provider that gives runs their stored trace id (what :func:`configure_from_environment` builds)."""
    return TracerProvider(id_generator=_RunTraceIdGenerator(), **kwargs)


def trace_id_hex(trace_id: int) -> str:
    return format(trace_id, "032x")


def current_trace_id() -> str:
    """The trace id of the current span, or ``""``."""
    if tracer is None:
        return ""
    span_context = trace.get_current_span().get_span_context()
    return trace_id_hex(span_context.trace_id) if span_context.is_valid else ""


def trace_id_for_new_run() -> str:
    """The trace a new run belongs to: the current one (the API request's), else a new one; ``""`` when off."""
    if tracer is None:
        return ""
    return current_trace_id() or trace_id_hex(secrets.randbits(128) or 1)


# --- Carrying the context across processes (W3C traceparent) ----------------------------------
def inject(carrier: dict) -> None:
    """Write the current span's context into ``carrier`` (message headers)."""
    if tracer is not None:
        _propagator.inject(carrier)


def extract(carrier) -> otel_context.Context | None:
    """The context that message headers ``carrier`` carry; None when off."""
    if tracer is None:
        return None
    return _propagator.extract(carrier)


class MetaGetter:
    """Reads ``traceparent`` / ``tracestate`` from a WSGI/ASGI ``META`` dict."""

    def get(self, carrier: dict, key: str) -> list[str] | None:
        value = carrier.get(f"HTTP_{key.upper().replace('-', '_')}")
        return [value] if value is not None else None

    def keys(self, carrier: dict) -> list[str]:
        return [key[5:].lower().replace("_", "-") for key in carrier if key.startswith("HTTP_")]


def extract_from_meta(meta: dict) -> otel_context.Context | None:
    """The context an HTTP request's ``traceparent`` header carries; None when off."""
    if tracer is None:
        return None
    return _propagator.extract(meta, getter=MetaGetter())


# --- A run's span -------------------------------------------------------------------------------
def run_span_start(*, run_trace_id: str, name: str, attributes: dict) -> trace.Span | None:
    """Start the span of a run's execution in the run's trace (see the module's doc); None when off.

    The span is not made current: its children get it explicitly (:func:`child_span_start`).
    """
    if tracer is None:
        return None
    current = trace.get_current_span().get_span_context()
    if current.is_valid and trace_id_hex(current.trace_id) == run_trace_id:
        return tracer.start_span(name, attributes=attributes)
    wanted = _parse_trace_id(run_trace_id)
    token = _wanted_trace_id.set(wanted)
    try:
        # An empty context: a root span, whatever request or task the run was handed over in.
        return tracer.start_span(name, context=otel_context.Context(), attributes=attributes)
    finally:
        _wanted_trace_id.reset(token)


def child_span_start(parent: trace.Span, name: str, *, attributes: dict) -> trace.Span:
    return tracer.start_span(name, context=trace.set_span_in_context(parent), attributes=attributes)


def span_trace_id(span: trace.Span | None) -> str:
    if span is None:
        return ""
    span_context = span.get_span_context()
    return trace_id_hex(span_context.trace_id) if span_context.is_valid else ""


def _parse_trace_id(value: str) -> int:
    try:
        return int(value, 16) if len(value) == 32 else 0
    except ValueError:
        return 0
