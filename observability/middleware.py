"""The outermost middleware: the operators' endpoints first, then every request timed, counted and traced.

``/healthz``, ``/readyz`` and ``/metrics`` are answered here, before the security middleware and
host validation: a load balancer or Prometheus reaches each server by its address over plain
HTTP, which would otherwise get a redirect to HTTPS or a 400 for an unknown host (``/metrics``
has its own protection, see ``views.metrics``). They are not counted. Other requests are counted
by method, route pattern (``api/v1/runs/<uuid:id>/``, never the raw path) and status, timed,
and with tracing on run inside a server span that continues the caller's ``traceparent``.
"""

import time

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import instrumentation, logs, metrics, tracing, views

OPERATOR_ENDPOINTS = {"/healthz": views.healthz, "/readyz": views.readyz, "/metrics": views.metrics}
#: The route label of a request that matched no URL pattern.
UNMATCHED = "unmatched"
#: Other methods are counted as "other", so that a client cannot make up label values.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class ObservabilityMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        endpoint = OPERATOR_ENDPOINTS.get(request.path_info)
        if endpoint is not None:
            return endpoint(request)
        watch = _RequestWatch(request)
        try:
            response = self.get_response(request)
        finally:
            watch.end_context()
        watch.done(request, response)
        return response

    async def __acall__(self, request):
        endpoint = OPERATOR_ENDPOINTS.get(request.path_info)
        if endpoint is not None:
            return await sync_to_async(endpoint)(request)
        watch = _RequestWatch(request)
        try:
            response = await self.get_response(request)
        finally:
            watch.end_context()
        watch.done(request, response)
        return response


class _RequestWatch:
    """One request's clock, and with tracing on its span, current (with its log trace id) until ``end_context``."""

    def __init__(self, request):
        self.started = time.perf_counter()
        self.method = request.method if request.method in KNOWN_METHODS else "other"
        self.span = None
        self._context_token = self._trace_id_token = None
        self._owns_span = False
        if tracing.tracer is None:
            return
        if instrumentation.instrumented():
            # Django's instrumentation, outside this middleware, started the server span.
            self.span = trace.get_current_span()
            self._trace_id_token = logs.trace_id_var.set(tracing.span_trace_id(self.span))
            return
        self._owns_span = True
        self.span = tracing.tracer.start_span(
            self.method,
            context=tracing.extract_from_meta(request.META),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": self.method},
        )
        self._context_token = otel_context.attach(trace.set_span_in_context(self.span))
        self._trace_id_token = logs.trace_id_var.set(tracing.span_trace_id(self.span))

    def end_context(self) -> None:
        if self._trace_id_token is not None:
            logs.trace_id_var.reset(self._trace_id_token)
        if self._context_token is not None:
            otel_context.detach(self._context_token)
        self._context_token = self._trace_id_token = None

    def done(self, request, response) -> None:
        match = getattr(request, "resolver_match", None)
        route = match.route if match is not None and match.route else UNMATCHED
        status = response.status_code
        metrics.http_requests.labels(self.method, route, str(status)).inc()
        metrics.http_request_duration.labels(self.method, route).observe(time.perf_counter() - self.started)
        if self.span is not None:
            self.span.update_name(f"{self.method} /{route}" if route != UNMATCHED else self.method)
            self.span.set_attribute("http.route", route)
            self.span.set_attribute("http.response.status_code", status)
            if status >= 500:
                self.span.set_status(Status(StatusCode.ERROR))
            if self._owns_span:
                self.span.end()
