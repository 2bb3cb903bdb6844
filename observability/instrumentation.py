"""OpenTelemetry's own instrumentation: spans for requests, Celery messages, SQL, outbound HTTP and Redis.

On exactly when tracing is (:func:`observability.tracing.configure_from_environment` calls
:func:`instrument`), and with Weft's provider rather than the global one, so that these spans land
in the same traces as Weft's run and node spans. With it on:

- Django's instrumentation starts the server span of each request (under its ASGI request
  handling, which needs opentelemetry-instrumentation-asgi); Weft's middleware names it by route;
- Celery's carries the trace in each task message and starts the publish and the task's spans;
- httpx's gives each outbound call (``http_request`` nodes, LLM providers, tools) a client span;
- SQL gets a span per statement from the DB-API instrumentation wrapped around ``psycopg.connect``
  (psycopg's own instrumentation has no release matching the SDK's: see requirements/base.in);
- Redis gets a span per command (the channel layer, the cache, rate limits).
"""

import psycopg
from opentelemetry.instrumentation import dbapi
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace import TracerProvider

#: Answered before every other middleware (observability.middleware), not counted: not traced either.
EXCLUDED_URLS = "/healthz,/readyz,/metrics"
#: The attributes the DB-API instrumentation reads from a psycopg connection (its ``info``).
PSYCOPG_CONNECTION_ATTRIBUTES = {
    "database": "info.dbname",
    "port": "info.port",
    "host": "info.host",
    "user": "info.user",
}

_instrumented = False


def instrumented() -> bool:
    """Whether the libraries are instrumented (then Celery's instrumentation carries the trace, not Weft's hooks)."""
    return _instrumented


def instrument(provider: TracerProvider) -> None:
    """Instrument Django, Celery, httpx, psycopg and Redis, their spans going to ``provider``."""
    global _instrumented
    if _instrumented:
        return
    DjangoInstrumentor().instrument(tracer_provider=provider, excluded_urls=EXCLUDED_URLS)
    CeleryInstrumentor().instrument(tracer_provider=provider)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    RedisInstrumentor().instrument(tracer_provider=provider)
    dbapi.wrap_connect(
        __name__,
        psycopg,
        "connect",
        "postgresql",
        PSYCOPG_CONNECTION_ATTRIBUTES,
        version=psycopg.__version__,
        tracer_provider=provider,
    )
    _instrumented = True


def uninstrument() -> None:
    """Undo :func:`instrument` (tests); connections opened meanwhile keep their spans until closed."""
    global _instrumented
    if not _instrumented:
        return
    dbapi.unwrap_connect(psycopg, "connect")
    RedisInstrumentor().uninstrument()
    HTTPXClientInstrumentor().uninstrument()
    CeleryInstrumentor().uninstrument()
    DjangoInstrumentor().uninstrument()
    _instrumented = False
