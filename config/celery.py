"""The Celery application: workers run runs, beat fires schedules and housekeeping.

Workers use the threads pool by default: a task thread only waits while its run executes on
the process's event loop (workflows.tasks), so WORKER_CONCURRENCY is how many runs one
worker process holds at once, not how many processes it forks. Scale out with more worker
processes (on more machines); they share the queue. ``WEFT_CELERY_QUEUE`` names the queue,
for deployments (or test runs) that share one Redis.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("weft")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    worker_pool=os.environ.get("WEFT_WORKER_POOL", "threads"),
    worker_concurrency=int(os.environ.get("WORKER_CONCURRENCY", "64")),
    task_default_queue=os.environ.get("WEFT_CELERY_QUEUE", "celery"),
)
app.autodiscover_tasks()
# Packages inside apps that hold tasks too (autodiscovery only looks at <app>.tasks).
app.autodiscover_tasks(["workflows.schedules"])
