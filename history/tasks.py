"""Celery beat tasks of the history app: the retention purge."""

from dataclasses import asdict

from celery import shared_task


@shared_task(name="history.retention_purge", ignore_result=True)
def retention_purge_task() -> dict:
    """Beat task: delete finished runs and node history older than WEFT["RETENTION_DAYS"]."""
    from history.retention import retention_purge

    return asdict(retention_purge())
