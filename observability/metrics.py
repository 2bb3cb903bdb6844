"""Prometheus metrics: what runs, nodes, model calls and HTTP requests did, plus gauges read at scrape time.

Counters and histograms are updated where things happen (a dictionary look-up and an add; in
multiprocess mode a write to a memory-mapped file, no system call). With
``PROMETHEUS_MULTIPROC_DIR`` set (before the process starts, the same directory for every
process of the host, emptied when the host's processes are started anew), each process writes
its own files there and a scrape of any process adds them all up; without it a process's own
registry is scraped. Queue depth and the number of pending and running runs are read when
``/metrics`` is scraped (Redis ``LLEN``, one grouped database count), never kept.
"""

import logging
import os
import threading
from urllib.parse import urlsplit

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

logger = logging.getLogger(__name__)

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
if os.environ.get(MULTIPROC_DIR_VARIABLE):
    os.makedirs(os.environ[MULTIPROC_DIR_VARIABLE], exist_ok=True)

# No "_created" series: they double what is exposed and no dashboard here reads them.
disable_created_metrics()

#: This process's metrics (scraped directly in single-process mode).
REGISTRY = CollectorRegistry(auto_describe=True)

RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
NODE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

runs_started = Counter(
    "weft_runs_started", "Runs whose execution began (resumptions not included).", ["trigger"], registry=REGISTRY
)
runs_resumed = Counter(
    "weft_runs_resumed", "Runs taken up again by a worker after their worker was lost.", registry=REGISTRY
)
runs_finished = Counter("weft_runs_finished", "Runs that ended, by final status.", ["status"], registry=REGISTRY)
runs_deferred = Counter(
    "weft_runs_deferred",
    "Run messages a worker gave back to the queue because the run's user had their share of its runs.",
    registry=REGISTRY,
)
run_duration = Histogram(
    "weft_run_duration_seconds",
    "From a run's start to its end, by final status.",
    ["status"],
    buckets=RUN_BUCKETS,
    registry=REGISTRY,
)
node_duration = Histogram(
    "weft_node_duration_seconds",
    "One attempt of a node, by node type and how it ended (succeeded, failed, retrying).",
    ["node_type", "status"],
    buckets=NODE_BUCKETS,
    registry=REGISTRY,
)
node_retries = Counter(
    "weft_node_retries", "Node attempts that failed and were retried, by node type.", ["node_type"], registry=REGISTRY
)
llm_tokens = Counter(
    "weft_llm_tokens",
    "Tokens of model calls, by provider host, model and kind (prompt, completion).",
    ["provider", "model", "kind"],
    registry=REGISTRY,
)
http_requests = Counter(
    "weft_http_requests",
    "HTTP requests answered, by method, route pattern and status code.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
http_request_duration = Histogram(
    "weft_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route pattern.",
    ["method", "route"],
    buckets=HTTP_BUCKETS,
    registry=REGISTRY,
)
if not os.environ.get(MULTIPROC_DIR_VARIABLE):
    ProcessCollector(registry=REGISTRY)


def runs_finished_count(*, status: str) -> None:
    """A run ended without an executor (cancelled while pending, or ended by the reaper)."""
    runs_finished.labels(status).inc()


OTHER = "other"


class BoundedLabelValues:
    """A label whose values users choose (a provider's host, a model's name), kept to a bounded set.

    Each series costs memory in every process and in Prometheus, so a process keeps the first
    ``limit`` distinct values it sees (each at most ``max_length`` characters) and counts any other
    under ``other``: the totals stay right, only their split is coarser.
    """

    def __init__(self, *, limit: int, max_length: int = 100):
        self.limit = limit
        self.max_length = max_length
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(value) > self.max_length:
            return OTHER
        with self._lock:
            if len(self._seen) < self.limit:
                self._seen.add(value)
            return value if value in self._seen else OTHER


#: The provider hosts and model names that get series of their own, per process.
llm_providers = BoundedLabelValues(limit=20)
llm_models = BoundedLabelValues(limit=50)


def llm_tokens_count(*, base_url: str, model: str, usage: dict) -> None:
    """Count a model call's tokens; the provider is the host of its ``base_url`` (both bounded)."""
    provider = llm_providers(urlsplit(base_url).hostname or "unknown")
    model = llm_models(model or "unknown")
    for kind in ("prompt", "completion"):
        count = usage.get(f"{kind}_tokens")
        if isinstance(count, int) and count > 0:
            llm_tokens.labels(provider, model, kind).inc(count)


# --- Scraping ----------------------------------------------------------------------------------
def multiprocess_dir() -> str:
    return os.environ.get(MULTIPROC_DIR_VARIABLE, "")


#: Collectors read at each scrape (gauges of what the database or the broker holds now), registered by the
#: apps that own what they count (``scrape_collector_register``).
_scrape_collectors: list = []


def scrape_collector_register(collector) -> None:
    """Add a collector (``collect()`` yields metric families) that each scrape reads, after the process's metrics."""
    if collector not in _scrape_collectors:
        _scrape_collectors.append(collector)


class _Scrape:
    """What one scrape exposes: this process's (or every process's) metrics, then the scrape-time gauges."""

    def collect(self):
        directory = multiprocess_dir()
        if directory:
            yield from MultiProcessCollector(None, path=directory).collect()
        else:
            yield from REGISTRY.collect()
        for collector in _scrape_collectors:
            yield from collector.collect()


def exposition() -> bytes:
    """The Prometheus text exposition of everything, for ``/metrics``."""
    return generate_latest(_Scrape())
