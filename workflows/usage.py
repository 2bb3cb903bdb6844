"""What a finished run used: one ``usage_metrics`` row per (provider, model), kept after the run is purged.

Tokens come from the ``usage`` of the run's llm and agent tasks (``prompt_tokens`` in,
``completion_tokens`` out, as the llm node returns them). The provider is named by its name
(the owner's ``llm_providers.name``), the model as the node asked for it. ``duration_ms`` and
``node_count`` (node executions that ran: succeeded or failed, iterations' included) are the
run's; they are written on the first row only and are 0 on the others, so that sums over rows
are the run's totals. A run that used no model gets one row with provider and model empty.

The worker that ends a run meters it right after the final status is committed. If it dies in
between, :func:`usage_sweep` meters the run later: every minute over the runs of the last hour
(the ``history.usage_sweep`` beat task, or the server's run loop in embedded mode), every hour over all runs (with
the retention purge, which also meters any run it is about to delete). A run is metered once
however many of them try: its row is locked while its rows are checked and written, and
(run, provider, model) is unique.
"""

import functools
import logging
import uuid
from collections import defaultdict
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from agents.models import Agent, LLMProvider
from config.conf import weft_settings
from config.errors import Conflict, NotFound
from history.models import UsageMetric
from workflows.engine import TemplateRenderError, get_node_type, render_text
from workflows.models import RUN_FINAL_STATUSES, Run, Task, TaskStatus

logger = logging.getLogger(__name__)

#: Node types whose output carries the ``usage`` of a model.
MODEL_NODE_TYPES = ("llm", "agent")
RAN = (TaskStatus.SUCCEEDED, TaskStatus.FAILED)

_DEFAULT = object()


def usage_record_for_run(*, run_id: uuid.UUID | str) -> list[UsageMetric]:
    """Write the run's usage rows once; later calls write nothing and return the rows already there.

    The run is locked while its rows are checked and written, so two callers (the worker that
    ended the run and a reaper, say) cannot both write them.
    """
    return _usage_write(run_id=run_id)[0]


def usage_record_ended(*, run_id: uuid.UUID | str, graph: dict) -> None:
    """Meter a run that just ended here, its frozen ``graph`` at hand.

    On PostgreSQL a run of a graph without model nodes has one row that the database can compute
    alone: it is written in one statement (the run locked as :func:`usage_record_for_run` locks it,
    nothing written if the run has rows). Otherwise, :func:`usage_record_for_run`.
    """
    if connection.vendor == "postgresql" and not graph_uses_models(graph):
        with connection.cursor() as cursor:
            cursor.execute(_modelless_usage_sql(), {"run": run_id, "ran": list(RAN), "final": list(RUN_FINAL_STATUSES)})
        return
    usage_record_for_run(run_id=run_id)


def graph_uses_models(graph: dict) -> bool:
    """Whether ``graph`` (or a sub-graph one of its nodes runs) has a node that calls a model."""
    for node in graph["nodes"]:
        if node["type"] in MODEL_NODE_TYPES:
            return True
        subgraphs = get_node_type(node["type"]).subgraphs(node.get("config") or {})
        if any(graph_uses_models(subgraph) for _, subgraph, _ in subgraphs):
            return True
    return False


def modelless_usage_insert_sql(*, run: str) -> str:
    """The INSERT of the one row of a run that used no model, from ``run`` (an alias with the run's
    columns as they are once it ended), its node count a parameter (``%s``); nothing if it has rows.
    For ``DatabaseJournal``, which meters such a run in the statement that ends it."""
    return _modelless_usage_insert(run=run, node_count="%s")


def _modelless_usage_insert(*, run: str, node_count: str) -> str:
    quote = connection.ops.quote_name
    usage, runs = UsageMetric._meta, Run._meta
    workflows = runs.get_field("workflow").related_model._meta

    def column(meta, name: str) -> str:
        return quote(meta.get_field(name).column)

    columns = ", ".join(
        column(usage, name)
        for name in (
            "user", "app", "workflow", "run", "provider", "model", "tokens_in", "tokens_out", "node_count",
            "duration_ms", "created_at",
        )
    )  # fmt: skip
    return f"""INSERT INTO {quote(usage.db_table)} ({columns})
SELECT COALESCE({run}.{column(runs, "triggered_by")}, w.{column(workflows, "owner")}), {run}.{column(runs, "app")},
    {run}.{column(runs, "workflow")}, {run}.{column(runs, "id")}, '', '', 0, 0, {node_count},
    GREATEST(0, COALESCE(floor(1000 * extract(epoch FROM {run}.{column(runs, "finished_at")}
        - COALESCE({run}.{column(runs, "started_at")}, {run}.{column(runs, "created_at")}))), 0))::bigint,
    now()
FROM {run} JOIN {quote(workflows.db_table)} w ON w.{column(workflows, "id")} = {run}.{column(runs, "workflow")}
WHERE NOT EXISTS (
    SELECT 1 FROM {quote(usage.db_table)} u WHERE u.{column(usage, "run")} = {run}.{column(runs, "id")}
)
ON CONFLICT ({column(usage, "run")}, {column(usage, "provider")}, {column(usage, "model")})
    WHERE {column(usage, "run")} IS NOT NULL DO NOTHING"""  # noqa: S608


@functools.cache
def _modelless_usage_sql() -> str:
    """The one row of a finished run that used no model, from the run, its workflow and its tasks.

    The run's row is locked as :func:`usage_record_for_run` locks it. This statement's snapshot
    predates the lock, so a row written meanwhile by the lock's previous holder is not seen by
    ``NOT EXISTS``: the unique constraint then stops the second row (``ON CONFLICT DO NOTHING``).
    """
    quote = connection.ops.quote_name
    runs, tasks = Run._meta, Task._meta

    def column(meta, name: str) -> str:
        return quote(meta.get_field(name).column)

    # Names from the models' _meta, quoted; the values are parameters.
    task_run, task_status, task_events = column(tasks, "run"), column(tasks, "status"), column(tasks, "events")
    # A row a retry copied (no events) did not run again.
    node_count = f"""(SELECT count(*) FROM {quote(tasks.db_table)} t
        WHERE t.{task_run} = run.{column(runs, "id")} AND t.{task_status} = ANY(%(ran)s)
            AND t.{task_events} <> '[]'::jsonb)"""  # noqa: S608
    return f"""
WITH run AS (
    SELECT * FROM {quote(runs.db_table)} WHERE {column(runs, "id")} = %(run)s
        AND {column(runs, "status")} = ANY(%(final)s) FOR UPDATE
)
{_modelless_usage_insert(run="run", node_count=node_count)}"""  # noqa: S608


def usage_sweep(*, now: datetime | None = None, limit: int | None = None, lookback_s=_DEFAULT) -> int:
    """Meter finished runs that have no usage rows (their worker died first), oldest first; how many were.

    At most ``limit`` runs per call (``USAGE_SWEEP_BATCH_SIZE``), among those created in the
    last ``lookback_s`` seconds (``USAGE_SWEEP_LOOKBACK_S``; None looks at every run). A run that
    cannot be metered is logged and skipped; the next sweep tries it again.
    """
    now = now or timezone.now()
    limit = limit or weft_settings.USAGE_SWEEP_BATCH_SIZE
    # The minutely sweep reads a short stretch of the created_at index; the hourly retention task
    # sweeps every run (lookback None).
    lookback_s = weft_settings.USAGE_SWEEP_LOOKBACK_S if lookback_s is _DEFAULT else lookback_s
    settled = now - timedelta(seconds=weft_settings.USAGE_SWEEP_GRACE_S)
    unmetered = Run.objects.filter(
        Q(finished_at__lt=settled) | Q(finished_at__isnull=True, updated_at__lt=settled),
        ~Exists(UsageMetric.objects.filter(run=OuterRef("pk"))),
        status__in=RUN_FINAL_STATUSES,
    )
    if lookback_s is not None:
        unmetered = unmetered.filter(created_at__gte=now - timedelta(seconds=lookback_s))
    run_ids = list(unmetered.order_by("created_at").values_list("pk", flat=True)[:limit])
    return usage_record_missing(run_ids=run_ids)


def usage_record_missing(*, run_ids) -> int:
    """Meter those of ``run_ids`` that have no usage rows yet; how many this call metered."""
    metered = set(UsageMetric.objects.filter(run_id__in=run_ids).values_list("run_id", flat=True))
    written = 0
    for run_id in run_ids:
        if run_id in metered:
            continue
        try:
            if _usage_write(run_id=run_id)[1]:
                written += 1
        except NotFound:
            continue  # purged meanwhile
        except Exception:
            logger.exception("Could not record the usage of run %s.", run_id)
    return written


def _usage_write(*, run_id) -> tuple[list[UsageMetric], bool]:
    """The run's usage rows, and whether this call wrote them."""
    with transaction.atomic():
        run = (
            Run.objects.select_for_update(of=("self",))
            .annotate(workflow_owner_id=F("workflow__owner_id"))
            .filter(pk=run_id)
            .first()
        )
        if run is None:
            raise NotFound("No such run.", field="run_id")
        # A statement of its own, once the lock is held: in READ COMMITTED it sees the rows of a
        # writer that held the lock before (the locking statement's snapshot would not).
        existing = list(UsageMetric.objects.filter(run=run).order_by("id"))
        if existing:
            return existing, False
        if not run.is_finished:
            raise Conflict("The run has not finished; its usage is not known yet.", code="run_not_finished")
        # Rows a retry copied from the run it retries (no events: workflows.execution.retry) did not run again.
        tasks = list(
            Task.objects.filter(run=run, status__in=RAN)
            .exclude(events=[])
            .only("node_id", "node_type", "scope", "output_data")
        )
        tokens = _tokens_by_model(run=run, tasks=tasks) or {("", ""): (0, 0)}
        started = run.started_at or run.created_at
        duration_ms = max(int((run.finished_at - started).total_seconds() * 1000), 0) if run.finished_at else 0
        rows = [
            UsageMetric(
                user_id=run.triggered_by_id or run.workflow_owner_id,
                app_id=run.app_id,
                workflow_id=run.workflow_id,
                run=run,
                provider=provider,
                model=model,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                node_count=len(tasks) if index == 0 else 0,
                duration_ms=duration_ms if index == 0 else 0,
            )
            for index, ((provider, model), (tokens_in, tokens_out)) in enumerate(sorted(tokens.items()))
        ]
        return UsageMetric.objects.bulk_create(rows), True


def _tokens_by_model(*, run: Run, tasks: list[Task]) -> dict[tuple[str, str], tuple[int, int]]:
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    providers: dict[str, tuple[str, str]] = {}
    for task in tasks:
        usage = (task.output_data or {}).get("usage") if isinstance(task.output_data, dict) else None
        if task.node_type not in MODEL_NODE_TYPES or not isinstance(usage, dict):
            continue
        config = _node_config(graph=run.graph, node_id=task.node_id, scope=task.scope)
        provider, model = _provider_and_model(run=run, config=config, usage=usage, cache=providers)
        # Cut to the columns' length here, so that names alike in their first 100 characters add up.
        counts = totals[(provider[:100], model[:100])]
        counts[0] += _count(usage, "prompt_tokens", "input_tokens")
        counts[1] += _count(usage, "completion_tokens", "output_tokens")
    return {key: (tokens_in, tokens_out) for key, (tokens_in, tokens_out) in totals.items()}


def _count(usage: dict, *names: str) -> int:
    for name in names:
        value = usage.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return 0


def _node_config(*, graph: dict, node_id: str, scope: str) -> dict:
    """The config of ``node_id`` in the frozen graph, found through the iterations its scope names."""
    for part in filter(None, scope.split("/")):
        container = _node(graph, part.split("[", 1)[0])
        graph = (container or {}).get("config", {}).get("graph") or {}
    return (_node(graph, node_id) or {}).get("config") or {}


def _node(graph: dict, node_id: str) -> dict | None:
    return next((node for node in graph.get("nodes", []) if node.get("id") == node_id), None)


def _provider_and_model(*, run: Run, config: dict, usage: dict, cache: dict) -> tuple[str, str]:
    """The provider's name and the model, from the usage when it says, else from the node's config."""
    provider_ref = str(usage.get("provider") or config.get("provider") or "")
    model = str(usage.get("model") or config.get("model") or "")
    if "{{" in provider_ref or "{%" in provider_ref:
        # Most providers are a run input ("{{ start.provider }}"); other references stay unresolved.
        try:
            provider_ref = render_text(provider_ref, {"start": run.inputs or {}, "sys": {}})
        except TemplateRenderError:
            provider_ref = ""
    if not provider_ref and config.get("agent"):
        agent = Agent.objects.filter(pk=_uuid(config["agent"])).values("provider", "model").first() or {}
        provider_ref, model = str(agent.get("provider") or ""), model or agent.get("model") or ""
    if provider_ref not in cache:
        key = _uuid(provider_ref)
        found = LLMProvider.objects.filter(pk=key).values("name", "model").first() if key else None
        cache[provider_ref] = (found["name"], found["model"]) if found else (provider_ref, "")
    name, default_model = cache[provider_ref]
    return name, model or default_model


def _uuid(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
