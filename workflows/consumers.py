"""Websockets that follow runs live: ``/ws/runs/<id>/`` and ``/ws/workflows/<id>/runs/``.

Both are authenticated by a single-use ticket (``?ticket=``, from ``POST /api/v1/auth/ws-ticket/``,
see accounts/tickets.py), a knox token in an ``Authorization: Token <token>`` header, or the session
(AuthMiddlewareStack); never by a token in the query string, which logs would keep. Then they are
permission-checked: a run or workflow the user cannot view closes with code 4404, as if it did not
exist; without credentials, 4401.

``/ws/runs/<id>/`` sends a ``snapshot`` (the run with its tasks, as the run API shows it), then
every event ``{"type", "run", "node", "seq", "at", "data"}``. With ``?after=<seq>`` the stored
events after ``seq`` are sent first. The consumer joins the run's group before it reads
anything, then drops live events it has already sent, so nothing is missed nor sent twice; a
live event that skips seqs (stored, never streamed: their worker died in between) makes it send
the stored ones first.
"""

import asyncio
from collections import deque
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.auth import get_user_model
from django.utils import timezone
from knox.auth import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from accounts.tickets import ws_ticket_redeem
from config.api.parsers import json_loads_bounded
from config.errors import InvalidInput
from workflows.execution import fanout, live
from workflows.models import RUN_FINAL_STATUSES, Run
from workflows.permissions import CAN_VIEW
from workflows.selectors import runs_for_user, workflows_for_user
from workflows.serializers import RunSerializer

User = get_user_model()

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
RECENT_RUNS = 50


class _AuthenticatedConsumer(AsyncJsonWebsocketConsumer):
    def query(self, name: str) -> str | None:
        values = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get(name)
        return values[0] if values else None

    def credentials(self):
        """What the client sent: a ``Ticket`` (``?ticket=``), a knox token (``Authorization: Token``),
        else the session's user (None without one)."""
        ticket = self.query("ticket")
        if ticket is not None:
            return Ticket(ticket)
        header = dict(self.scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "token" and value.strip():
            return value.strip()
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

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        """Clients only listen; a frame that is not JSON nested at most WEFT_JSON_MAX_DEPTH deep closes 4400."""
        try:
            content = json_loads_bounded(text_data or "")
        except (InvalidInput, ValueError):
            await self.close(code=CLOSE_BAD_REQUEST)
            return
        await self.receive_json(content, **kwargs)

    async def refuse(self, code: int) -> None:
        await self.accept()
        await self.close(code=code)


class Ticket(str):
    """A websocket ticket from the query string (a knox token is a plain ``str``)."""


def _user_for(credentials):
    """The user of a ticket (used up now) or of a knox token (a string), or ``credentials`` itself
    (a session's user, or None)."""
    if isinstance(credentials, Ticket):
        user_id = ws_ticket_redeem(credentials)
        return None if user_id is None else User.objects.filter(pk=user_id, is_active=True).first()
    if not isinstance(credentials, str):
        return credentials
    try:
        user, _ = TokenAuthentication().authenticate_credentials(credentials.encode("utf-8"))
    except (AuthenticationFailed, UnicodeError):
        return None
    return user


class RunConsumer(_AuthenticatedConsumer):
    """A run's follower. Live events come from the process's ``fanout`` (one subscription for all
    of a run's followers): sent at once when this client is up to date, else queued in ``backlog``
    and sent by ``run_event`` (which fills gaps from the stored events)."""

    run_id = None
    following = False
    last_seq = 0
    ended = False
    _drain: asyncio.Task | None = None

    async def connect(self) -> None:
        # One database call (who, which run, what happened so far): connecting many clients at
        # once, as after a server is lost, must not queue on the database thread.
        live.bind_consumer_loop(asyncio.get_running_loop())
        credentials = self.credentials()
        if credentials is None:
            await self.refuse(CLOSE_UNAUTHENTICATED)
            return
        after = self.query("after")
        if after is not None and not (after.isdigit() and len(after) < 10):
            await self.refuse(CLOSE_BAD_REQUEST)
            return
        # Accepted at once: daphne drops a handshake that waits over 5 s, which the reads below
        # may, behind a crowd of reconnecting clients; a refusal is a close code all the same.
        await self.accept()
        self.run_id = self.scope["url_route"]["kwargs"]["run_id"]
        self.sending = asyncio.Lock()
        self.backlog: deque[dict] = deque()
        hub = fanout.fanout()
        async with self.sending:
            # Followed before the snapshot is read: events from now on wait in the backlog (and
            # nothing is sent before the reads have shown that the user may see the run).
            await hub.follow(self.run_id, self)
            self.following = True
            try:
                user, snapshot, events = await database_sync_to_async(_connect_reads)(
                    credentials, self.run_id, None if after is None else int(after)
                )
                if user is None or snapshot is None:
                    self.following = False
                    await hub.unfollow(self.run_id, self)
                    await self.close(code=CLOSE_UNAUTHENTICATED if user is None else CLOSE_NOT_FOUND)
                    return
                await self.send_json(snapshot)
                self.last_seq = snapshot["seq"]
                self.ended = snapshot["data"]["status"] in RUN_FINAL_STATUSES
                if after is not None:
                    self.last_seq = int(after)
                    await self._send_stored(events)
            except BaseException:
                # No disconnect follows a consumer that failed to connect: leave the run here.
                if self.following:
                    self.following = False
                    await hub.unfollow(self.run_id, self)
                raise
            hub.seen(self.run_id, self.last_seq, ended=self.ended)

    async def disconnect(self, code) -> None:
        if self._drain is not None:
            self._drain.cancel()
        if self.following:
            self.following = False
            await fanout.fanout().unfollow(self.run_id, self)

    async def receive_json(self, content, **kwargs) -> None:
        """Clients only listen."""

    async def live_event(self, message: dict) -> None:
        """From the fan-out: one live event of this run, sent now if it is the next one this client
        needs and nothing of this consumer is being sent, else queued (the fan-out does not wait)."""
        if not self.backlog and not self.sending.locked():
            if message["seq"] <= self.last_seq:
                return
            if message["seq"] == self.last_seq + 1:
                async with self.sending:
                    self.last_seq = message["seq"]
                    self.ended = self.ended or live.is_final(message["kind"])
                    await self.send(text_data=message["text"])
                return
        self.backlog.append(message)
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._drain_backlog())

    async def _drain_backlog(self) -> None:
        while self.backlog:
            await self.run_event(self.backlog[0])
            self.backlog.popleft()

    async def run_event(self, message: dict) -> None:
        async with self.sending:
            if message["seq"] <= self.last_seq:
                return
            if message["seq"] > self.last_seq + 1:
                # Events this client never got live (their worker died after storing them, before
                # streaming them): send the stored ones first, so that the client sees every seq.
                await self._send_stored(before=message["seq"])
            self.last_seq = message["seq"]
            self.ended = self.ended or live.is_final(message["kind"])
            await self.send(text_data=message["text"])

    async def _send_stored(self, events: list[dict] | None = None, *, before: int | None = None) -> None:
        """Send the stored events after ``last_seq`` (those given first), up to ``before`` if given."""
        while True:
            if events is None:
                events = await database_sync_to_async(live.events_after)(self.run_id, self.last_seq)
            sent = [event for event in events if before is None or event["seq"] < before]
            for event in sent:
                await self.send_json(event)
                self.last_seq = event["seq"]
                self.ended = self.ended or live.is_final(event["type"])
            if len(events) < live.REPLAY_BATCH or len(sent) < len(events):
                return
            events = None


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

    async def run_events(self, message: dict) -> None:
        for payload in live.payloads(message):
            await self.send(text_data=payload["text"])


def _visible_workflow(user, workflow_id) -> bool:
    return workflows_for_user(user=user, roles=CAN_VIEW).filter(pk=workflow_id).exists()


def _envelope(message_type: str, *, run, seq: int, data) -> dict:
    at = timezone.now().isoformat().replace("+00:00", "Z")
    return {"type": message_type, "run": str(run) if run else None, "node": None, "seq": seq, "at": at, "data": data}


def _connect_reads(credentials, run_id, after: int | None) -> tuple:
    """(the user or None, the run's snapshot or None if the user may not see it, the stored events after ``after``)."""
    user = _user_for(credentials)
    run = None if user is None else runs_for_user(user=user).prefetch_related("tasks").filter(pk=run_id).first()
    if run is None:
        return user, None, []
    snapshot = _envelope("snapshot", run=run.pk, seq=run.last_seq, data=RunSerializer(run).data)
    return user, snapshot, ([] if after is None else live.events_after(run_id, after))


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
