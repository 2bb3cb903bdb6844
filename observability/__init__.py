"""What an operator watches: Prometheus metrics, OpenTelemetry traces, structured logs, health probes.

The rest of the project calls in through a few small functions: ``tracing.trace_id_for_new_run``
when a run is created, ``runs.run_observed`` around a run's execution (its span, its log
context and its metrics, all derived from the journal's events), ``metrics.llm_tokens_count``
after a model call and ``metrics.runs_finished_count`` where a run ends without an executor.
``middleware.ObservabilityMiddleware`` serves ``/healthz``, ``/readyz`` and ``/metrics`` and
watches every other request. Nothing here queries the database or writes to a socket per node.
"""
