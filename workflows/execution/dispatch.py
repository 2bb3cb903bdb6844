"""Handing a run to whoever executes it: the server's run loop in embedded mode, a Celery worker
otherwise, or the web process that started it for a run of computing nodes (``here``).

The Celery task is sent by name (``RUN_EXECUTE_TASK``): this module does not import the task
module, which imports the runner.
"""

import uuid

from celery import current_app
from django.conf import settings

from config.conf import weft_settings
from workflows.engine import get_node_type

#: The Celery task that executes a run on a worker (workflows.tasks.run_execute_task).
RUN_EXECUTE_TASK = "workflows.run_execute"


def runs_here(graph: dict) -> bool:
    """Whether a web process may execute a run of ``graph`` itself: every node computes in-process
    (no sandbox, network or model: ``NodeType.in_process``), so the run is short and bounded."""
    return all(get_node_type(node["type"]).in_process for node in graph["nodes"])


def run_here_possible(graph: dict) -> bool:
    """Whether this web process may execute a run of ``graph`` now, for the request that starts it:
    its nodes run here (:func:`runs_here`) and the request run loop holds fewer than
    WEFT_ENGINE_RUNS_HERE_MAX runs (a bound each request thread checks on its own: concurrent
    starts may pass it together, by at most the process's request threads)."""
    from .run_loop import request_run_loop

    return not settings.EMBEDDED and request_run_loop.executing < weft_settings.RUNS_HERE_MAX and runs_here(graph)


def run_dispatch(*, run_id: uuid.UUID, claimed=None, **options) -> None:
    """Hand the run to a worker: a Celery task with Redis, the server's run loop without.

    ``claimed``: the run, created already leased to this process (:func:`run_here_possible`): this
    process's request run loop executes it.
    ``options`` go to Celery's ``send_task`` (``countdown``, ``kwargs``); embedded mode runs it now.
    """
    # Here, not above: the run loop's reaper dispatches through this module.
    from .run_loop import request_run_loop, server_run_loop

    if settings.EMBEDDED:
        server_run_loop.submit(run_id)
    elif claimed is not None:
        request_run_loop.submit(run_id, claimed=claimed)
    else:
        current_app.send_task(RUN_EXECUTE_TASK, args=[str(run_id)], **options)
