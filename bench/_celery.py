"""A bare Celery app for the round-trip figure: one no-op task, results on Redis (pub/sub, push-based)."""

import os

from celery import Celery

QUEUE = "weft-bench-ping"

app = Celery("weft-bench", broker=os.environ.get("REDIS_URL"), backend=os.environ.get("REDIS_URL"))
app.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,
    result_expires=300,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.ping")
def ping(value: int) -> int:
    return value
