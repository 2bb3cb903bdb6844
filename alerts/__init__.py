"""When a run ends: an error workflow started for a failed run, and notifications (webhook, email).

The workflows app knows nothing of this app: it sends ``workflows.execution.signals.run_ended``
once a run's end is committed, and :mod:`alerts.receivers` acts on it.
"""
