"""Results out: ``GET /api/v1/runs/export/`` streams the runs a user may see, as JSON lines or CSV.

Each run is one record: ``id``, ``workflow``, ``status``, ``trigger``, ``version``, ``retry_of``,
``inputs``, ``outputs``, ``error``, ``created_at``, ``started_at``, ``finished_at`` (ISO 8601 in UTC,
to the microsecond: ``2026-12-05T08:00:00.000000Z``) and ``duration_ms`` (from start to end; null
until both are known), oldest first. On PostgreSQL the database writes each JSON line (and the
times, the duration); elsewhere Python does, the same.

Filters (query parameters; a bad value is a 400 naming it, an unknown parameter too):
``workflow`` (a workflow id), ``status`` (one status or several, comma-separated), ``since``
and ``until`` (ISO 8601 dates or times, naive ones in UTC: ``since <= created_at < until``),
``format`` (``jsonl``, the default, or ``csv``).

The export stays in constant memory however many runs it holds: the rows come from a
server-side cursor (``QuerySet.iterator``), ``chunk_size`` at a time, and are sent in pieces of
about ``PIECE_BYTES``. Under ASGI (daphne) the pieces are an asynchronous iterator, each read on
the request's database thread: a synchronous one would be read whole into memory by Django.

CSV flattens one level of ``inputs`` and ``outputs`` into columns ``inputs.<key>`` and
``outputs.<key>``. The columns must be known before the first row: they are the keys the exported
runs hold, read by one query before streaming (on PostgreSQL, ``jsonb_object_keys``; elsewhere,
a first pass over the rows), sorted. A side with more than ``MAX_FLATTENED_KEYS`` keys is one
column of JSON text instead (``inputs``). A cell holds a string as it is, any other value as JSON
(``true``, ``3``, ``{"a": 1}``), nothing for null or a missing key. A string that a spreadsheet
would take for a formula (it starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return)
is prefixed with ``'``.

Outputs kept in object storage (docs/large-outputs.md) are inlined in JSON lines, up to
``OUTPUT_INLINE_MAX_BYTES`` a run (past it, their reference with its download ``url``); CSV shows
the reference (its columns are known before the rows are read).
"""

import csv
import io
import json
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time

from asgiref.sync import sync_to_async
from django.db import connection
from django.db.models import BigIntegerField, F, Func, QuerySet, TextField
from django.db.models.functions import Cast, JSONObject
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from config.errors import InvalidInput
from workflows.models import RunStatus
from workflows.permissions import CAN_VIEW
from workflows.selectors import runs_for_user, workflow_get_for_user

from .large_outputs import InlineBudget, export_line_inlined, output_inlined

#: Rows fetched from the server-side cursor at a time.
CHUNK_SIZE = 2000
#: The size of the pieces the response is sent in (bytes, about).
PIECE_BYTES = 64 * 1024
#: Past this many keys, a side (inputs, outputs) of the CSV is one JSON column.
MAX_FLATTENED_KEYS = 100

FORMATS = {"jsonl": "application/x-ndjson; charset=utf-8", "csv": "text/csv; charset=utf-8"}
PARAMETERS = ("workflow", "status", "since", "until", "format")
_FIELDS = (
    "id",
    "workflow_id",
    "status",
    "trigger",
    "version",
    "retry_of_id",
    "inputs",
    "outputs",
    "error",
    "created_at",
    "started_at",
    "finished_at",
)
_CSV_HEAD = ["id", "workflow", "status", "trigger", "version", "retry_of", "error"]
_CSV_TAIL = ["created_at", "started_at", "finished_at", "duration_ms"]
_FORMULA_STARTS = frozenset("=+-@\t\r")


@dataclass(frozen=True)
class RunExport:
    """What to export: the runs, in the order they are sent, and the format."""

    runs: QuerySet
    format: str


def run_export_clean(*, user, params) -> RunExport:
    """The runs ``user`` may see that ``params`` (the query parameters) select; InvalidInput naming a bad one."""
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        name = unknown[0] or "(a parameter without a name)"
        raise InvalidInput(f"Unknown parameter; the filters are {', '.join(PARAMETERS)}.", field=name)
    export_format = params.get("format") or "jsonl"
    if export_format not in FORMATS:
        raise InvalidInput(f"One of {', '.join(FORMATS)}.", field="format")
    runs = runs_for_user(user=user)
    if params.get("workflow"):
        try:
            workflow_id = uuid.UUID(params["workflow"])
        except ValueError:
            raise InvalidInput("Not a workflow id.", field="workflow") from None
        runs = runs.filter(workflow=workflow_get_for_user(user=user, workflow_id=workflow_id, roles=CAN_VIEW))
    if params.get("status"):
        statuses = params["status"].split(",")
        wrong = [status for status in statuses if status not in RunStatus.values]
        if wrong:
            raise InvalidInput(f"Not a run status: {wrong[0]!r}; one of {', '.join(RunStatus.values)}.", field="status")
        runs = runs.filter(status__in=statuses)
    since, until = _moment(params, "since"), _moment(params, "until")
    if since is not None:
        runs = runs.filter(created_at__gte=since)
    if until is not None:
        runs = runs.filter(created_at__lt=until)
    if since is not None and until is not None and since >= until:
        raise InvalidInput("Must be after since.", field="until")
    return RunExport(runs=runs.order_by("created_at", "id"), format=export_format)


def _moment(params, name: str) -> datetime | None:
    text = params.get(name)
    if not text:
        return None
    try:
        moment = parse_datetime(text)
        if moment is None:
            day = parse_date(text)
            moment = datetime.combine(day, time.min) if day is not None else None
    except ValueError:
        moment = None
    if moment is None:
        raise InvalidInput("Not an ISO 8601 date or time (2026-12-05, 2026-12-05T08:00:00Z).", field=name)
    return moment if timezone.is_aware(moment) else moment.replace(tzinfo=UTC)


def run_export_pieces(export: RunExport) -> Iterator[bytes]:
    """The export's bytes, in pieces of about PIECE_BYTES."""
    if export.format == "jsonl":
        lines = _jsonl_lines(export.runs)
    else:
        lines = _csv_lines(_records(export.runs), _csv_columns(export.runs))
    piece, size = [], 0
    for line in lines:
        piece.append(line)
        size += len(line)
        if size >= PIECE_BYTES:
            yield "".join(piece).encode()
            piece, size = [], 0
    if piece:
        yield "".join(piece).encode()


def _utc_text(name: str) -> Func:
    """PostgreSQL: the time in column ``name`` as ISO 8601 text in UTC, as :func:`_time` writes it."""
    return Func(
        F(name),
        template="to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        output_field=TextField(),
    )


def _duration_ms() -> Func:
    """PostgreSQL: milliseconds from the run's start to its end (null until both are known)."""
    return Func(
        F("finished_at"),
        F("started_at"),
        arg_joiner=" - ",
        template="round(extract(epoch from (%(expressions)s)) * 1000)::bigint",
        output_field=BigIntegerField(),
    )


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _records(runs: QuerySet) -> Iterator[dict]:
    """Each run's record. On PostgreSQL the database writes the times and the duration (their parsing
    and formatting was most of an export's time); elsewhere Python does."""
    postgresql = connection.vendor == "postgresql"
    if postgresql:
        rows = runs.values(
            *_FIELDS[:-3],
            created=_utc_text("created_at"),
            started=_utc_text("started_at"),
            finished=_utc_text("finished_at"),
            duration=_duration_ms(),
        )
    else:
        rows = runs.values(*_FIELDS)
    for row in rows.iterator(chunk_size=CHUNK_SIZE):
        if postgresql:
            times = (row["created"], row["started"], row["finished"])
            duration = row["duration"]
        else:
            started, finished = row["started_at"], row["finished_at"]
            times = (_time(row["created_at"]), _time(started), _time(finished))
            duration = None
            if started is not None and finished is not None:
                duration = round((finished - started).total_seconds() * 1000)
        yield {
            "id": str(row["id"]),
            "workflow": str(row["workflow_id"]),
            "status": row["status"],
            "trigger": row["trigger"],
            "version": row["version"],
            "retry_of": None if row["retry_of_id"] is None else str(row["retry_of_id"]),
            "inputs": row["inputs"],
            "outputs": row["outputs"],
            "error": row["error"],
            "created_at": times[0],
            "started_at": times[1],
            "finished_at": times[2],
            "duration_ms": duration,
        }


def _jsonl_lines(runs: QuerySet) -> Iterator[str]:
    if connection.vendor == "postgresql":  # each line written by the database: a few objects per run here
        record = JSONObject(
            id="id",
            workflow="workflow_id",
            status="status",
            trigger="trigger",
            version="version",
            retry_of="retry_of_id",
            inputs="inputs",
            outputs="outputs",
            error="error",
            created_at=_utc_text("created_at"),
            started_at=_utc_text("started_at"),
            finished_at=_utc_text("finished_at"),
            duration_ms=_duration_ms(),
        )
        lines = runs.annotate(line=Cast(record, TextField())).values_list("line", flat=True)
        for line in lines.iterator(chunk_size=CHUNK_SIZE):
            yield export_line_inlined(line) + "\n"
        return
    for record in _records(runs):
        record["outputs"] = output_inlined(record["outputs"], run_id=record["id"], budget=InlineBudget.new())
        yield json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


@dataclass(frozen=True)
class _Columns:
    """The CSV's flattened keys of each side; None: the side is one JSON column."""

    inputs: list[str] | None
    outputs: list[str] | None

    def header(self) -> list[str]:
        middle = []
        for side in ("inputs", "outputs"):
            keys = getattr(self, side)
            middle += [side] if keys is None else [f"{side}.{key}" for key in keys]
        return [*_CSV_HEAD, *middle, *_CSV_TAIL]


def _csv_columns(runs: QuerySet) -> _Columns:
    return _Columns(*(_side_keys(runs, side) for side in ("inputs", "outputs")))


def _side_keys(runs: QuerySet, side: str) -> list[str] | None:
    """The keys the runs' ``side`` objects hold, sorted; None past MAX_FLATTENED_KEYS."""
    runs = runs.order_by()
    if connection.vendor == "postgresql":
        keys = (
            runs.annotate(kind=Func(F(side), function="jsonb_typeof", output_field=TextField()))
            .filter(kind="object")
            .annotate(key=Func(F(side), function="jsonb_object_keys", output_field=TextField()))
            .values_list("key", flat=True)
            .distinct()
        )
        found = set(keys[: MAX_FLATTENED_KEYS + 1])
    else:  # SQLite (embedded mode): a first pass over the rows
        found = set()
        for value in runs.values_list(side, flat=True).iterator(chunk_size=CHUNK_SIZE):
            if isinstance(value, dict):
                found.update(value)
                if len(found) > MAX_FLATTENED_KEYS:
                    break
    return None if len(found) > MAX_FLATTENED_KEYS else sorted(found)


def _cell(value) -> str:
    if value.__class__ is str:
        return "'" + value if value[:1] in _FORMULA_STARTS else value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _csv_lines(records: Iterable[dict], columns: _Columns) -> Iterator[str]:
    """The header, then the rows, a few hundred to a string."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns.header())
    sides = [(side, getattr(columns, side)) for side in ("inputs", "outputs")]
    for count, record in enumerate(records, start=1):
        cells = [_cell(record[name]) for name in _CSV_HEAD]
        for side, keys in sides:
            value = record[side]
            if keys is None:
                cells.append(_cell(value))
            else:
                values = value if isinstance(value, dict) else {}
                cells += [_cell(values.get(key)) for key in keys]
        cells += [_cell(record[name]) for name in _CSV_TAIL]
        writer.writerow(cells)
        if count % 200 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


async def _read_on_request_thread(pieces: Iterator[bytes]) -> AsyncIterator[bytes]:
    """``pieces`` for an ASGI server, one at a time: each is read on the request's thread (its database
    connection and cursor), as a synchronous view's code runs."""
    take = sync_to_async(next, thread_sensitive=True)
    try:
        while (piece := await take(pieces, None)) is not None:
            yield piece
    finally:  # a client gone: the cursor is closed on its own thread
        await sync_to_async(pieces.close, thread_sensitive=True)()


class _FormatIsTheExports(DefaultContentNegotiation):
    """``?format=`` is the export's format, not DRF's choice of renderer: every JSON answer is JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class RunExportErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField()
    field = serializers.CharField(help_text="The parameter at fault.")


class RunExportApi(APIView):
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _FormatIsTheExports

    @extend_schema(
        operation_id="runs_export",
        parameters=[
            OpenApiParameter("workflow", OpenApiTypes.UUID, description="Only this workflow's runs."),
            OpenApiParameter(
                "status", str, description="A run status, or several comma-separated (`failed,cancelled`)."
            ),
            OpenApiParameter("since", str, description="Runs created at or after this ISO 8601 date or time (UTC)."),
            OpenApiParameter("until", str, description="Runs created before this ISO 8601 date or time (UTC)."),
            OpenApiParameter(
                "format",
                str,
                enum=list(FORMATS),
                default="jsonl",
                description="`jsonl`: a JSON object per line; `csv`: a header, then a row per run with one level "
                "of `inputs` and `outputs` flattened into columns (`inputs.city`).",
            ),
        ],
        responses={
            (200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.STR, description="A run per line, streamed."),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="A header and a row per run, streamed."),
            400: OpenApiResponse(RunExportErrorSerializer, description="A bad parameter, named in `field`."),
            404: OpenApiResponse(description="`workflow` is not one you may see."),
        },
        tags=["runs"],
    )
    def get(self, request):
        """Stream the runs you may see (filtered) with their inputs, outputs, status, error and duration."""
        export = run_export_clean(user=request.user, params=request.query_params)
        pieces = run_export_pieces(export)
        if getattr(request, "scope", None) is not None:  # served by ASGI
            pieces = _read_on_request_thread(pieces)
        response = StreamingHttpResponse(pieces, content_type=FORMATS[export.format])
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response["Content-Disposition"] = f'attachment; filename="runs-{stamp}.{export.format}"'
        response["Cache-Control"] = "no-store"
        response["X-Accel-Buffering"] = "no"  # nginx passes each piece on as it comes
        return response
