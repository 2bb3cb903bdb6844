"""Websockets that follow runs live: ``/ws/runs/<id>/`` and ``/ws/workflows/<id>/runs/``.

Both are authenticated by the session (AuthMiddlewareStack) or a knox token (``?token=`` or an
``Authorization: Token <token>`` header), and permission-checked: a run or workflow the user
cannot view closes with code 4404, as if it did not exist; without credentials, 4401.

``/ws/runs/<id>/`` sends a ``snapshot`` (the run with its tasks, as the run API shows it), then
every event ``{"type", "run", "node", "seq", "at", "data"}``. With ``?after=<seq>`` the stored
events after ``seq`` are sent first. The consumer joins the run's group before it reads
anything, then drops live events it has already sent, so nothing is missed nor sent twice; a
live event that skips seqs (stored, never streamed: their worker died in between) makes it send
the stored ones first.
"""

import asyncio
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.utils import timezone
from knox.auth import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from workflows.execution import live
from workflows.models import RUN_FINAL_STATUSES, Run, RunEvent
from workflows.permissions import CAN_VIEW
from workflows.selectors import runs_for_user, workflows_for_user
from workflows.serializers import RunSerializer

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
RECENT_RUNS = 50
REPLAY_BATCH = 500
#: Seconds without a live event after which a run's follower reads the stored events it lacks.
CATCH_UP_S = 3.0
FINAL_EVENT_TYPES = frozenset(f"run.{status}" for status in RUN_FINAL_STATUSES)


class _AuthenticatedConsumer(AsyncJsonWebsocketConsumer):
    def query(self, name: str) -> str | None:
        values = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get(name)
        return values[0] if values else None

    def credentials(self):
        """The knox token the client sent (``?token=`` or ``Authorization: Token``), else the session's user."""
        token = self.query("token")
        if token is None:
            header = dict(self.scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
            scheme, _, value = header.partition(" ")
            if scheme.lower() == "token" and value:
                token = value.strip()
        if token is not None:
            return token
        user = self.scope.get("user")
        return user if getattr(user, "is_authenticated", False) else None

    async def authenticated_user(self):
        credentials = self.credentials()
        return await database_sync_to_async(_user_for)(credentials) if isinstance(credentials, str) else credentials

    async def dispatch(self, message: dict) -> None:
        # A live event touches no database: skip the close_old_connections() thread hop that
        # channels makes before every handler, one per client per event (most of the fan-out's cost).
        if message["type"] == live.HANDLER:
            await self.run_event(message)
            return
        await super().dispatch(message)

    async def run_event(self, message: dict) -> None:
        raise NotImplementedError

    async def refuse(self, code: int) -> None:
        await self.accept()
        await self.close(code=code)


def _user_for(credentials):
    """The user of a knox token (a string), or ``credentials`` itself (a session's user, or None)."""
    if not isinstance(credentials, str):
        return credentials
    try:
        user, _ = TokenAuthentication().authenticate_credentials(credentials.encode("utf-8"))
    except (AuthenticationFailed, UnicodeError):
        return None
    return user


class RunConsumer(_AuthenticatedConsumer):
    group: str | None = None
    run_id = None
    last_seq = 0
    ended = False
    _catch_up: asyncio.Task | None = None

    async def connect(self) -> None:
        # Two database calls in all (who and which run; then what happened so far): connecting
        # many clients at once, as after a server is lost, must not queue on the database thread.
        live.bind_consumer_loop(asyncio.get_running_loop())
        credentials = self.credentials()
        if credentials is None:
            await self.refuse(CLOSE_UNAUTHENTICATED)
            return
        after = self.query("after")
        if after is not None and not (after.isdigit() and len(after) < 10):
            await self.refuse(CLOSE_BAD_REQUEST)
            return
        user, run = await database_sync_to_async(_user_and_run)(
            credentials, self.scope["url_route"]["kwargs"]["run_id"]
        )
        if user is None:
            await self.refuse(CLOSE_UNAUTHENTICATED)
            return
        if run is None:
            await self.refuse(CLOSE_NOT_FOUND)
            return
        self.run_id = run.pk
        self.sending = asyncio.Lock()
        self.group = live.RUN_GROUP.format(run.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        async with self.sending:
            snapshot, events = await database_sync_to_async(_snapshot_and_events)(
                run.pk, None if after is None else int(after)
            )
            await self.send_json(snapshot)
            self.last_seq = snapshot["seq"]
            self.ended = snapshot["data"]["status"] in RUN_FINAL_STATUSES
            if after is not None:
                self.last_seq = int(after)
                await self._send_stored(events)
        self.heard = asyncio.get_running_loop().time()
        if not self.ended:
            self._catch_up = asyncio.create_task(self._catch_up_while_silent())

    async def disconnect(self, code) -> None:
        if self._catch_up is not None:
            self._catch_up.cancel()
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        """Clients only listen."""

    async def run_event(self, message: dict) -> None:
        self.heard = asyncio.get_running_loop().time()
        async with self.sending:
            if message["seq"] <= self.last_seq:
                return
            if message["seq"] > self.last_seq + 1:
                # Events this client never got live (their worker died after storing them, before
                # streaming them): send the stored ones first, so that the client sees every seq.
                await self._send_stored(before=message["seq"])
            self.last_seq = message["seq"]
            self.ended = self.ended or message["kind"] in FINAL_EVENT_TYPES
            await self.send(text_data=message["text"])

    async def _send_stored(self, events: list[dict] | None = None, *, before: int | None = None) -> None:
        """Send the stored events after ``last_seq`` (those given first), up to ``before`` if given."""
        while True:
            if events is None:
                events = await database_sync_to_async(events_after)(self.run_id, self.last_seq)
            sent = [event for event in events if before is None or event["seq"] < before]
            for event in sent:
                await self.send_json(event)
                self.last_seq = event["seq"]
                self.ended = self.ended or event["type"] in FINAL_EVENT_TYPES
            if len(events) < REPLAY_BATCH or len(sent) < len(events):
                return
            events = None

    async def _catch_up_while_silent(self) -> None:
        """The channel layer delivers at most once, and a worker that dies between storing events
        and streaming them never streams them: after ``CATCH_UP_S`` without a live event, the stored
        ones this client lacks are sent, until the run's end has been."""
        loop = asyncio.get_running_loop()
        while not self.ended:
            await asyncio.sleep(max(self.heard + CATCH_UP_S - loop.time(), 0.05))
            if loop.time() - self.heard < CATCH_UP_S:
                continue
            self.heard = loop.time()
            async with self.sending:
                await self._send_stored()


class WorkflowRunsConsumer(_AuthenticatedConsumer):
    """The runs of one workflow: a snapshot of the latest, then every run's start and end events."""

    group: str | None = None

    async def connect(self) -> None:
        live.bind_consumer_loop(asyncio.get_running_loop())
        user = await self.authenticated_user()
        if user is None:
            await self.refuse(CLOSE_UNAUTHENTICATED)
            return
        workflow_id = self.scope["url_route"]["kwargs"]["workflow_id"]
        visible = await database_sync_to_async(_visible_workflow)(user, workflow_id)
        if not visible:
            await self.refuse(CLOSE_NOT_FOUND)
            return
        self.group = live.WORKFLOW_RUNS_GROUP.format(workflow_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json(await database_sync_to_async(_workflow_snapshot)(workflow_id))

    async def disconnect(self, code) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        """Clients only listen."""

    async def run_event(self, message: dict) -> None:
        await self.send(text_data=message["text"])


def _visible_run(user, run_id) -> Run | None:
    return runs_for_user(user=user).filter(pk=run_id).only("pk", "workflow_id").first()


def _visible_workflow(user, workflow_id) -> bool:
    return workflows_for_user(user=user, roles=CAN_VIEW).filter(pk=workflow_id).exists()


def _envelope(message_type: str, *, run, seq: int, data) -> dict:
    at = timezone.now().isoformat().replace("+00:00", "Z")
    return {"type": message_type, "run": str(run) if run else None, "node": None, "seq": seq, "at": at, "data": data}


def _user_and_run(credentials, run_id) -> tuple:
    user = _user_for(credentials)
    return user, (_visible_run(user, run_id) if user is not None else None)


def _snapshot_and_events(run_id, after: int | None) -> tuple[dict, list[dict]]:
    return _snapshot(run_id), ([] if after is None else events_after(run_id, after))


def _snapshot(run_id) -> dict:
    run = Run.objects.prefetch_related("tasks").get(pk=run_id)
    return _envelope("snapshot", run=run.pk, seq=run.last_seq, data=RunSerializer(run).data)


def events_after(run_id, seq: int) -> list[dict]:
    return [
        live.event_message(
            run_id=run_id, seq=event.seq, event_type=event.type, node_id=event.node_id, data=event.data, at=event.at
        )
        for event in RunEvent.objects.filter(run_id=run_id, seq__gt=seq).order_by("seq")[:REPLAY_BATCH]
    ]


def _workflow_snapshot(workflow_id) -> dict:
    runs = Run.objects.filter(workflow_id=workflow_id).order_by("-created_at")[:RECENT_RUNS]
    data = {
        "workflow": str(workflow_id),
        "runs": [
            {
                "id": str(run.pk),
                "status": run.status,
                "trigger": run.trigger,
                "created_at": run.created_at.isoformat(),
                "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            }
            for run in runs.only("pk", "status", "trigger", "created_at", "finished_at")
        ],
    }
    return _envelope("snapshot", run=None, seq=0, data=data)
