"""Large outputs in object storage: the row keeps a reference, readers fetch the value back.

A node's output, or a run's outputs, whose JSON is larger than ``OUTPUT_STORE_ABOVE_BYTES``
(256 KiB by default) is written through Django's storage API (``STORAGES["outputs"]``: files
under ``var/outputs`` by default, S3-compatible storage in production) by the run's journal, on
its database thread, *before* the batch that refers to it commits: a crash leaves at most an
object nobody refers to, never a reference to nothing. The task row (or the run), and the event
that reports it, keep a reference instead of the value::

    {"$stored": {"key": "<22 random characters>", "bytes": 1048576,
                 "url": "/api/v1/runs/<run>/outputs/<key>/"}, "usage": {...}}

``usage`` (a model node's token counts) stays beside the reference, so that metering reads it
without fetching the object. Objects are named ``runs/<run id>/<key>.json``: a reader only ever
opens the prefix of the run it was asked about (a node cannot point a reference at another run's
object), and a key cannot be guessed. The same value written twice by one journal (an end node's
output, then the run's outputs) is one object.

Readers (the run API, the websocket snapshot, wait answers, webhooks answers, the JSON-lines
export) inline stored values up to ``OUTPUT_INLINE_MAX_BYTES`` per answer, in order (the run's
outputs, then its tasks); a value past that budget stays a reference, whose ``url`` streams it
(``RunStoredOutputApi``). An object that is gone shows as its reference with an ``error`` saying
so (the download answers 404 ``output_not_stored``), never as a server error.

A run that ever wrote an object is flagged (``Run.stored_outputs``, set before the first write);
retention deletes its objects once its rows are deleted. Objects of runs deleted another way (a
workflow's deletion cascading) are orphans: ``manage.py weft_outputs_sweep`` deletes them.
"""

import hashlib
import json
import re
import secrets
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.core.files.base import ContentFile, File
from django.core.files.storage import Storage, storages
from django.db import transaction
from django.http import StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone

from config.conf import weft_settings
from config.errors import NotFound, WeftError
from workflows.engine import OutputInvalid, cleaned, json_text, storable_json
from workflows.models import Run

#: The ``STORAGES`` alias outputs are written to.
STORAGE_ALIAS = "outputs"
#: The key of a reference (the whole stored value is ``{MARK: {...}}``, plus the fields kept beside it).
MARK = "$stored"
#: Fields of an output kept beside its reference (small ones only: ``KEPT_MAX_BYTES``).
KEPT_FIELDS = ("usage",)
KEPT_MAX_BYTES = 4096
#: The folder of each run's objects.
PREFIX = "runs"
#: Bytes of an object read or sent at a time.
CHUNK_BYTES = 64 * 1024
#: Objects of a run that does not exist are orphans once this old (seconds).
ORPHAN_MIN_AGE_S = 3600
#: Run folders the orphan sweep looks up at a time.
SWEEP_BATCH = 1000
_KEY = re.compile(r"[A-Za-z0-9_-]{22}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class StoredOutputGone(NotFound):
    """A stored output's object is gone (deleted by hand, or swept as an orphan)."""

    default_code = "output_not_stored"


class OutputStorageUnavailable(WeftError):
    """The object storage did not answer (or refused) a read: try again later."""

    status_code = 503
    default_code = "output_storage_unavailable"


class OutputStoreFailed(Exception):
    """The object storage refused to write an output: the journal stores the node (or run) as failed."""


def outputs_storage() -> Storage:
    return storages[STORAGE_ALIAS]


def object_name(*, run_id, key: str) -> str:
    return f"{PREFIX}/{run_id}/{key}.json"


def stored_reference(value: Any) -> dict | None:
    """The ``$stored`` part of ``value`` if it is a reference to a stored output, else None."""
    if value.__class__ is not dict:
        return None
    reference = value.get(MARK)
    if (
        reference.__class__ is dict
        and isinstance(reference.get("key"), str)
        and _KEY.fullmatch(reference["key"])
        and isinstance(reference.get("bytes"), int)
    ):
        return reference
    return None


# --- Writing (the journal) -------------------------------------------------------------------------
class OutputStore:
    """Where one journal (of run ``run_id``) puts the outputs too large for their row."""

    def __init__(self, *, run_id):
        self.run_id = run_id
        self._flagged = False
        self._written: dict[bytes, dict] = {}

    def stored(self, value: Any) -> Any:
        """``value`` itself, or a reference to it once written to storage if its JSON is over the threshold.

        Raises :class:`OutputStoreFailed` when the storage refuses the write.
        """
        if value is None or stored_reference(value) is not None:
            return value
        threshold = weft_settings.OUTPUT_STORE_ABOVE_BYTES
        text = storable_json(value)
        if text is None:
            try:
                text = json_text(cleaned(value))
            except OutputInvalid:
                return value  # the journal refuses it as it would have
        if len(text) * 4 <= threshold:  # four bytes a character at most
            return value
        data = text.encode()
        if len(data) <= threshold:
            return value
        digest = hashlib.blake2b(data, digest_size=16).digest()
        reference = self._written.get(digest)
        if reference is None:
            reference = self._written[digest] = self.write(data)
        return {MARK: dict(reference), **_kept(value)}

    def write(self, data: bytes) -> dict:
        """Write ``data`` as a new object of the run: its reference's ``$stored`` part."""
        if not self._flagged:  # before the first object: retention then knows to look
            Run.objects.filter(pk=self.run_id, stored_outputs=False).update(stored_outputs=True)
            self._flagged = True
        key = secrets.token_urlsafe(16)
        name = object_name(run_id=self.run_id, key=key)
        try:
            saved = outputs_storage().save(name, ContentFile(data))
        except Exception as exc:
            raise OutputStoreFailed(f"the object storage refused it: {type(exc).__name__}: {exc}") from exc
        if saved != name:
            raise OutputStoreFailed(f"the object storage saved it as {saved!r}, not {name!r}")
        return {"key": key, "bytes": len(data), "url": output_url(run_id=self.run_id, key=key)}


def _kept(value: Any) -> dict:
    if value.__class__ is not dict:
        return {}
    kept = {}
    for name in KEPT_FIELDS:
        field = value.get(name)
        if isinstance(field, dict) and len(json_text(field)) <= KEPT_MAX_BYTES:
            kept[name] = field
    return kept


def output_url(*, run_id, key: str) -> str:
    return reverse("run-stored-output", kwargs={"id": run_id, "key": key})


def stored_outputs_copy(*, tasks: list[dict], run: Run, to: Run) -> list[dict]:
    """``tasks`` (task rows' fields, of ``run``) with their stored outputs copied to run ``to``'s own
    objects: each run's objects go with it. Call it in the transaction that writes the rows."""
    store = None
    copied = []
    for task in tasks:
        reference = stored_reference(task.get("output_data"))
        if reference is not None:
            store = store or OutputStore(run_id=to.pk)
            with _opened(run_id=run.pk, key=reference["key"]) as file:
                data = file.read()
            new = store.write(data)
            task = {**task, "output_data": {**task["output_data"], MARK: new}}
        copied.append(task)
    return copied


# --- Reading --------------------------------------------------------------------------------------
def _opened(*, run_id, key: str) -> File:
    """The object ``key`` of run ``run_id``, open; StoredOutputGone if it is gone."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise StoredOutputGone("No such stored output.", field="key")
    try:
        return outputs_storage().open(object_name(run_id=run_id, key=key), "rb")
    except FileNotFoundError:
        raise StoredOutputGone("This output is no longer stored (its object was deleted).", field="key") from None
    except Exception as exc:
        raise OutputStorageUnavailable(f"The output storage could not be read: {type(exc).__name__}.") from exc


def output_loaded(*, run_id, value: Any) -> Any:
    """``value`` with its stored object read back if it is a reference (StoredOutputGone if gone)."""
    reference = stored_reference(value)
    if reference is None:
        return value
    with _opened(run_id=run_id, key=reference["key"]) as file:
        data = file.read()
    try:
        return json.loads(data)
    except ValueError:
        raise StoredOutputGone("This output's stored object is damaged (not JSON).", field="key") from None


def output_chunks(*, run_id, key: str) -> Iterator[bytes]:
    """The bytes of stored output ``key`` of run ``run_id``, a chunk at a time (StoredOutputGone at once if gone)."""
    opened = _opened(run_id=run_id, key=key)

    def chunks():
        with opened as file:
            while chunk := file.read(CHUNK_BYTES):
                yield chunk

    return chunks()


def output_response(request, *, run_id, key: str) -> StreamingHttpResponse:
    """The answer that streams stored output ``key`` of run ``run_id`` (whose permission the view checked)."""
    chunks = output_chunks(run_id=run_id, key=key)
    if getattr(request, "scope", None) is not None:  # served by ASGI: each chunk read off the event loop
        chunks = _read_in_thread(chunks)
    response = StreamingHttpResponse(chunks, content_type="application/json")
    response["Cache-Control"] = "private, no-store"
    response["Content-Disposition"] = f'inline; filename="{run_id}-{key}.json"'
    return response


async def _read_in_thread(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    take = sync_to_async(next, thread_sensitive=False)
    try:
        while (chunk := await take(chunks, None)) is not None:
            yield chunk
    finally:
        await sync_to_async(chunks.close, thread_sensitive=False)()


@dataclass
class InlineBudget:
    """Bytes of stored outputs one answer may still read back and inline."""

    remaining: int

    @classmethod
    def new(cls) -> "InlineBudget":
        return cls(weft_settings.OUTPUT_INLINE_MAX_BYTES)


def output_inlined(value: Any, *, run_id, budget: InlineBudget) -> Any:
    """``value``, its stored object read back if it fits in ``budget``; else the reference (a link),
    with an ``error`` if the object is gone or cannot be read."""
    reference = stored_reference(value)
    if reference is None:
        return value
    if reference["bytes"] > budget.remaining:
        return value
    try:
        loaded = output_loaded(run_id=run_id, value=value)
    except WeftError as exc:
        return {**value, MARK: {**reference, "error": exc.message}}
    budget.remaining -= reference["bytes"]
    return loaded


def run_data_inlined(data: dict, *, run_id, budget: InlineBudget | None = None) -> dict:
    """``data`` (a run as ``RunSerializer`` shows it) with its stored outputs inlined, in order: the run's
    outputs, then its tasks'."""
    budget = budget or InlineBudget.new()
    data["outputs"] = output_inlined(data.get("outputs"), run_id=run_id, budget=budget)
    for task in data.get("tasks") or ():
        task["output"] = output_inlined(task.get("output"), run_id=run_id, budget=budget)
    return data


def export_line_inlined(line: str) -> str:
    """A JSON line of the export (a run's record) with the run's stored outputs inlined (the line itself
    if it holds none)."""
    if MARK not in line:
        return line
    record = json.loads(line)
    if stored_reference(record.get("outputs")) is None:
        return line
    record["outputs"] = output_inlined(record["outputs"], run_id=record["id"], budget=InlineBudget.new())
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


# --- Deleting -------------------------------------------------------------------------------------
def stored_outputs_delete_on_commit(*, run_ids: Iterable) -> None:
    """Once the current transaction commits (the rows that referred to them are gone), delete the
    objects of those of ``run_ids`` that stored any."""
    flagged = [
        str(pk) for pk in Run.objects.filter(pk__in=list(run_ids), stored_outputs=True).values_list("pk", flat=True)
    ]
    if flagged:
        transaction.on_commit(lambda: run_objects_delete(run_ids=flagged), robust=True)  # else: orphans, swept


def run_objects_delete(*, run_ids: Iterable[str], older_than: datetime | None = None) -> int:
    """Delete the objects of the runs ``run_ids`` (only those last written before ``older_than``, if
    given) and, on a filesystem, their emptied folders: how many objects."""
    storage = outputs_storage()
    deleted = 0
    for run_id in run_ids:
        folder = f"{PREFIX}/{run_id}"
        try:
            _, names = storage.listdir(folder)
        except FileNotFoundError:
            continue
        kept = 0
        for name in names:
            path = f"{folder}/{name}"
            if older_than is not None and storage.get_modified_time(path) >= older_than:
                kept += 1
                continue
            storage.delete(path)
            deleted += 1
        if not kept:
            storage.delete(folder)  # a filesystem's empty folder; nothing to do on S3
    return deleted


def orphan_objects_sweep(*, now: datetime | None = None) -> int:
    """Delete the objects of runs that no longer exist (deleted other than by retention): how many.

    Objects younger than ``ORPHAN_MIN_AGE_S`` are left: their run's row may not be committed yet
    (a retry copies its original's objects in the transaction that creates it).
    """
    try:
        folders, _ = outputs_storage().listdir(PREFIX)
    except FileNotFoundError:
        return 0
    older_than = (now or timezone.now()) - timedelta(seconds=ORPHAN_MIN_AGE_S)
    run_ids = [name for name in folders if _UUID.fullmatch(name)]
    deleted = 0
    for start in range(0, len(run_ids), SWEEP_BATCH):
        chunk = run_ids[start : start + SWEEP_BATCH]
        alive = {str(pk) for pk in Run.objects.filter(pk__in=chunk).values_list("pk", flat=True)}
        gone = [run_id for run_id in chunk if run_id not in alive]
        deleted += run_objects_delete(run_ids=gone, older_than=older_than)
    return deleted
