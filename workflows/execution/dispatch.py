"""Handing a run to whoever executes it: the server's run loop in embedded mode, a Celery worker otherwise.

The Celery task is sent by name (``RUN_EXECUTE_TASK``): this module does not import the task
module, which imports the runner.
"""

import uuid

from celery import current_app
from django.conf import settings

#: The Celery task that executes a run on a worker (workflows.tasks.run_execute_task).
RUN_EXECUTE_TASK = "workflows.run_execute"


def run_dispatch(*, run_id: uuid.UUID, **options) -> None:
    """Hand the run to a worker: a Celery task with Redis, the server's run loop without.

    ``options`` go to Celery's ``send_task`` (``countdown``, ``kwargs``); embedded mode runs it now.
    """
    if settings.EMBEDDED:
        # Here, not above: the run loop's reaper dispatches through this module.
        from .run_loop import server_run_loop

        server_run_loop.submit(run_id)
    else:
        current_app.send_task(RUN_EXECUTE_TASK, args=[str(run_id)], **options)
