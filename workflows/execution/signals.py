"""The end of a run, for the apps above workflows to act on: they connect to :data:`run_ended`.

Sent once the run's final status is committed, by the process that ended it: the runner after
its journal finishes (on the run's database thread), or :func:`~workflows.execution.ending.run_close`
after its transaction commits (a pending run cancelled, a run the reaper ends). A receiver runs
in that process's hot path for every run: it must be cheap, and hand real work to a task.
"""

import logging

from django.dispatch import Signal

logger = logging.getLogger(__name__)

#: Keyword arguments: ``run_id``, ``workflow_id`` and ``status`` (succeeded, failed or cancelled).
run_ended = Signal()


def run_ended_send(*, run_id, workflow_id, status: str) -> None:
    """Tell the receivers; a receiver's failure is logged and never touches the run."""
    for receiver, result in run_ended.send_robust(sender=None, run_id=run_id, workflow_id=workflow_id, status=status):
        if isinstance(result, Exception):
            logger.error("A run_ended receiver (%r) failed for run %s.", receiver, run_id, exc_info=result)
