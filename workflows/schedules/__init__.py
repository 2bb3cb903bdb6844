"""Cron schedules that start runs of a workflow, exactly once per tick (see ``services``)."""
