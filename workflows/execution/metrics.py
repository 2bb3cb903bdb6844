"""The gauges of runs that ``/metrics`` reads at each scrape: the Celery queue's length, the runs pending and running.

Registered with observability's scrape (``WorkflowsConfig.ready``).
"""

import logging

from celery import current_app
from django.conf import settings
from django.db.models import Count
from kombu.transport.redis import PRIORITY_STEPS, Channel
from prometheus_client.core import GaugeMetricFamily

from config.redis_connection import redis_client
from workflows.models import Run, RunStatus

logger = logging.getLogger(__name__)


class RunsCollector:
    """Gauges read when scraped: the Celery queue's length and the runs pending and running."""

    def collect(self):
        depth = GaugeMetricFamily(
            "weft_queue_depth", "Run messages waiting in the Celery queue (0 in embedded mode).", labels=["queue"]
        )
        try:
            queue, length = queue_depth()
            depth.add_metric([queue], length)
        except Exception:
            logger.warning("Could not read the queue depth for /metrics.", exc_info=True)
        yield depth
        runs = GaugeMetricFamily("weft_runs", "Runs now pending or running (database count).", labels=["status"])
        try:
            for status, count in runs_by_open_status().items():
                runs.add_metric([status], count)
        except Exception:
            logger.warning("Could not count the open runs for /metrics.", exc_info=True)
        yield runs


def queue_depth() -> tuple[str, int]:
    """The Celery queue's name and its length in Redis (every priority list of it); 0 in embedded mode."""
    queue = current_app.conf.task_default_queue
    if settings.EMBEDDED:
        return queue, 0
    keys = [queue] + [f"{queue}{Channel.sep}{step}" for step in PRIORITY_STEPS if step]
    pipeline = redis_client().pipeline(transaction=False)
    for key in keys:
        pipeline.llen(key)
    return queue, sum(pipeline.execute())


def runs_by_open_status() -> dict[str, int]:
    counts = dict.fromkeys((RunStatus.PENDING.value, RunStatus.RUNNING.value), 0)
    rows = Run.objects.filter(status__in=list(counts)).values_list("status").annotate(count=Count("pk")).order_by()
    counts.update(dict(rows))
    return counts
