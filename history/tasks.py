"""Celery beat tasks of the history app: the retention purge and the usage sweep."""

from dataclasses import asdict

from celery import shared_task


@shared_task(name="history.retention_purge", ignore_result=True)
def retention_purge_task() -> dict:
    """Beat task: meter any finished run still unmetered, then delete what is older than WEFT["RETENTION_DAYS"]."""
    from history.retention import retention_purge
    from history.usage import usage_sweep

    metered = usage_sweep(lookback_s=None)
    return {**asdict(retention_purge()), "metered": metered}


@shared_task(name="history.usage_sweep", ignore_result=True)
def usage_sweep_task() -> int:
    """Beat task: meter the recent finished runs whose worker died before it metered them."""
    from history.usage import usage_sweep

    return usage_sweep()
