"""The API client apps call with their credentials and a license: run published workflows.

``POST /app/workflows/<id>/runs/`` with ``Accept: text/event-stream`` answers a server-sent event
stream of the run: each event of the run as ``id: <seq>``, ``event: <type>``, ``data: <the
event as the websocket sends it>``; then ``event: run.finished`` whose data is the finished run
(status, outputs, error, tasks); then the stream closes. A ``: keep-alive`` comment is sent when
nothing else was for 15 seconds.
"""

import asyncio
import json
from collections.abc import AsyncIterator

from channels.db import database_sync_to_async
from django.http import StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.permissions import BasePermission
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from config.api.pagination import PageNumberPagination
from config.api.responses import RUN_QUOTA_429
from config.api.throttling import ClientAddressThrottle, throttle_rate_parse
from config.call_checks import call_checks_read
from config.conf import weft_settings
from config.errors import Forbidden, NotFound, RateLimited
from config.generations import ACCESS
from config.rate_limits import flag_raise, flag_raised, rate_limit_hit
from workflows.execution import live
from workflows.execution import services as execution
from workflows.execution.large_outputs import output_response
from workflows.models import ReleaseChannel, Run, RunTrigger, Workflow
from workflows.releases.selectors import flow_latest_released
from workflows.serializers import RunSerializer, finished_run_data

from .access import Access
from .app_serializers import (
    AppChatHistoryQuerySerializer,
    AppChatRoundSerializer,
    AppRunStartedSerializer,
    AppRunStartSerializer,
)
from .authentication import AppCredentialsAuthentication, AppPrincipal
from .models import App, EnabledStatus, License
from .selectors import memory_rounds_for_app

#: Failed authentications allowed per client address; ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``
#: can set it as ``app_auth_failure``.
DEFAULT_APP_AUTH_FAILURE_RATE = "30/min"
#: Seconds of silence after which an event stream sends a comment, so that proxies keep it open.
SSE_HEARTBEAT_S = 15.0
SSE_FINAL_EVENT = "run.finished"


def app_rate_limit_check(*, app: App) -> None:
    limit = app.rate_limit_per_minute or weft_settings.APP_RATE_LIMIT_PER_MINUTE
    decision = rate_limit_hit(key=f"app:{app.pk}", limit=limit, window_s=60)
    if not decision.allowed:
        raise RateLimited(f"This app may make {limit} calls a minute.", retry_after=decision.retry_after, limit=limit)


def _auth_failure_rate() -> tuple[int, int]:
    rates = api_settings.DEFAULT_THROTTLE_RATES
    return throttle_rate_parse(rates.get("app_auth_failure") or DEFAULT_APP_AUTH_FAILURE_RATE)


def _auth_blocked_key(address: str) -> str:
    return f"app-auth-blocked:{address}"


def app_auth_blocked_check(*, address: str, blocked: bool | None = None) -> None:
    """429 for an address that failed too often: it tries no credentials, right or wrong, until the window ends.

    ``blocked``: whether its flag is up, if the caller read it already (None: read it).
    """
    if blocked is None:
        blocked = flag_raised(key=_auth_blocked_key(address))
    if blocked:
        limit, window_s = _auth_failure_rate()
        raise RateLimited(
            f"Too many failed app authentications from this address: {limit} per {window_s} s are allowed.",
            code="throttled",
            retry_after=window_s,
            throttle="app_auth_failure",
            limit=limit,
            window_s=window_s,
        )


def app_auth_failure_record(*, address: str) -> None:
    """Count a failed authentication; past the rate, the address is blocked for the rest of the window."""
    limit, window_s = _auth_failure_rate()
    decision = rate_limit_hit(key=f"app-auth-failure:{address}", limit=limit, window_s=window_s)
    if not decision.allowed:
        flag_raise(key=_auth_blocked_key(address), seconds=decision.retry_after)


def licensed_workflow(*, app: App, workflow_id, access: Access | None = None) -> Workflow:
    """The workflow ``app`` may call, with its license, in one query (none if ``access`` kept them: it
    drops them the moment a license changes, so switching one off takes effect at once). 404 for no
    such workflow, 403 for no license."""
    try:  # one license per (app, workflow): get() compiles no ordering
        if access is not None:
            license_ = access.license(app_id=app.pk, workflow_id=workflow_id)
        else:
            license_ = License.objects.select_related("group").get(app=app, group_id=workflow_id)
    except License.DoesNotExist:
        if not Workflow.objects.filter(pk=workflow_id).exists():
            raise NotFound("No such workflow.") from None
        raise Forbidden("This app has no license for this workflow.", code="no_license") from None
    if license_.status != EnabledStatus.ENABLED:
        raise Forbidden("This app's license for this workflow is disabled.", code="license_disabled")
    return license_.group


class EventStreamRenderer(BaseRenderer):
    """Lets a client ask for ``text/event-stream``; the view streams it (errors are answered in JSON)."""

    media_type = "text/event-stream"
    format = "sse"
    charset = "utf-8"


def _sse_frame(*, event: str, data: dict | None = None, text: str | None = None, seq: int | None = None) -> bytes:
    head = f"id: {seq}\n" if seq is not None else ""
    if text is None:
        text = json.dumps(data, separators=(",", ":"))
    return f"{head}event: {event}\ndata: {text}\n\n".encode()


def _finished_run(run_id) -> dict:
    return dict(RunSerializer(Run.objects.prefetch_related("tasks").get(pk=run_id)).data)


async def _final_frame(run_id) -> bytes:
    return _sse_frame(event=SSE_FINAL_EVENT, data=await database_sync_to_async(_finished_run)(run_id))


async def run_event_stream(*, run_id, heartbeat_s: float = SSE_HEARTBEAT_S) -> AsyncIterator[bytes]:
    """The run's events as SSE frames, from the first, until the run has finished.

    Like the websocket consumer, it joins the run's group before it reads the stored events,
    then drops live events it has already sent. A live event that skips a seq (the layer lost
    one), and every heartbeat, send it back to the stored events, so nothing is missed.
    """
    live.bind_consumer_loop(asyncio.get_running_loop())
    last_seq = 0
    async with live.run_listening(run_id) as listener:
        while True:
            while True:
                stored = await database_sync_to_async(live.events_after)(run_id, last_seq)
                for event in stored:
                    last_seq = event["seq"]
                    yield _sse_frame(event=event["type"], data=event, seq=last_seq)
                    if event["type"] in live.FINAL_EVENT_TYPES:
                        yield await _final_frame(run_id)
                        return
                if len(stored) < live.REPLAY_BATCH:
                    break
            while True:
                message = await listener.receive(heartbeat_s)
                if message is None:
                    yield b": keep-alive\n\n"
                    break
                gap = False
                for payload in live.payloads(message):
                    if payload["seq"] <= last_seq:
                        continue
                    if payload["seq"] > last_seq + 1:
                        gap = True
                        break
                    last_seq = payload["seq"]
                    yield _sse_frame(event=payload["kind"], text=payload["text"], seq=last_seq)
                    if payload["kind"] in live.FINAL_EVENT_TYPES:
                        yield await _final_frame(run_id)
                        return
                if gap:
                    break


class IsApp(BasePermission):
    def has_permission(self, request, view) -> bool:
        return isinstance(request.user, AppPrincipal)


class AppApiView(APIView):
    authentication_classes = [AppCredentialsAuthentication]
    permission_classes = [IsApp]
    throttle_classes = [ClientAddressThrottle]
    throttle_scope = "app"

    def perform_authentication(self, request):
        # DRF throttles after authentication, so failures are counted here, per client address.
        # What every call checks first, in one round trip: the address's block, the access token
        # (licensing.access) and its hit of the address throttle (counted for a refused call too).
        address = request.META.get("REMOTE_ADDR") or "unknown"
        checks = call_checks_read(
            flag=_auth_blocked_key(address), generations=[ACCESS], hit=ClientAddressThrottle.hit(request, self)
        )
        app_auth_blocked_check(address=address, blocked=checks.flag_up)
        request.weft_access = Access(checks.tokens[ACCESS])
        request.weft_address_decision = checks.hit
        try:
            super().perform_authentication(request)
        except exceptions.AuthenticationFailed:
            app_auth_failure_record(address=address)
            app_auth_blocked_check(address=address)  # the failure past the rate is already a 429
            raise

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        app_rate_limit_check(app=request.auth)


RUN_STARTED_200 = (
    "With `wait`: the finished run. With `Accept: text/event-stream`: the run's events as server-sent events "
    "(`id: <seq>`, `event: <type>`, `data: <json>`), then `event: run.finished` with the finished run."
)


class AppWorkflowRunApi(AppApiView):
    renderer_classes = [*api_settings.DEFAULT_RENDERER_CLASSES, EventStreamRenderer]

    def finalize_response(self, request, response, *args, **kwargs):
        if isinstance(response, Response) and isinstance(
            getattr(request, "accepted_renderer", None), EventStreamRenderer
        ):
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)

    @extend_schema(
        operation_id="app_workflow_run_start",
        request=AppRunStartSerializer,
        responses={
            (202, "application/json"): AppRunStartedSerializer,
            (200, "application/json"): OpenApiResponse(RunSerializer, description=RUN_STARTED_200),
            (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, description=RUN_STARTED_200),
            (429, "application/json"): RUN_QUOTA_429,
        },
        parameters=[OpenApiParameter("id", str, OpenApiParameter.PATH, description="Workflow group id.")],
        tags=["app"],
    )
    def post(self, request, id):
        """Run the latest released version (or the `version` asked for) of a workflow this app is licensed for."""
        app: App = request.auth
        workflow = licensed_workflow(app=app, workflow_id=id, access=request.weft_access)
        serializer = AppRunStartSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if data.get("version"):
            flow = flow_latest_released(
                workflow_id=workflow.pk, channel=ReleaseChannel.API, version_range=data["version"]
            )
        else:
            flow = request.weft_access.latest_release(workflow_id=workflow.pk)
        if flow is None:
            raise NotFound("No released version matches.", field="version" if data.get("version") else None)
        run = execution.run_start(
            workflow=workflow,
            user=None,
            inputs=data["inputs"],
            trigger=RunTrigger.APP,
            flow=flow,
            app=app,
            chat_id=data["chat_id"],
            uid=data["uid"],
            in_request=True,
        )
        if isinstance(request.accepted_renderer, EventStreamRenderer):
            return StreamingHttpResponse(
                run_event_stream(run_id=run.pk),
                content_type="text/event-stream; charset=utf-8",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        if data["wait"]:
            finished = execution.run_wait_finished(run=run)
            if finished is not None:
                return Response(finished_run_data(finished), status=status.HTTP_200_OK)
            run.refresh_from_db(fields=["status"])  # still running: say so
        body = {
            "id": run.pk,
            "status": run.status,
            "version": run.version,
            "url": request.build_absolute_uri(reverse("app-run-detail", kwargs={"id": run.pk})),
        }
        return Response(AppRunStartedSerializer(body).data, status=status.HTTP_202_ACCEPTED)


class AppRunDetailApi(AppApiView):
    @extend_schema(
        operation_id="app_run_retrieve",
        responses={200: RunSerializer},
        parameters=[OpenApiParameter("id", str, OpenApiParameter.PATH, description="Run id.")],
        tags=["app"],
    )
    def get(self, request, id):
        """A run this app started."""
        run = Run.objects.filter(pk=id, app=request.auth).prefetch_related("tasks").first()
        if run is None:
            raise NotFound("No such run.")
        return Response(RunSerializer(run).data)


class AppRunStoredOutputApi(AppApiView):
    @extend_schema(
        operation_id="app_run_stored_output",
        responses={
            (200, "application/json"): OpenApiResponse(description="The output's JSON, streamed."),
            404: OpenApiResponse(description="No such run, or `output_not_stored`: the output is gone."),
        },
        tags=["app"],
    )
    def get(self, request, id, key):
        """Download an output of a run this app started that was kept in object storage and not inlined
        (a `{"$stored": {"key", "bytes", "url"}}` reference: `url` is the user API's, this is the app's)."""
        run_id = Run.objects.filter(pk=id, app=request.auth).values_list("pk", flat=True).first()
        if run_id is None:
            raise NotFound("No such run.")
        return output_response(request, run_id=run_id, key=key)


class AppChatHistoryApi(AppApiView):
    pagination_class = PageNumberPagination

    @extend_schema(
        operation_id="app_chat_history",
        parameters=[
            OpenApiParameter("chat_id", str, OpenApiParameter.PATH, description="The conversation's chat_id."),
            AppChatHistoryQuerySerializer,
        ],
        responses={200: AppChatRoundSerializer(many=True)},
        tags=["app"],
    )
    def get(self, request, chat_id):
        """The conversation's rounds with llm nodes that have memory, newest last (`?page=last` for the newest).

        Only this app's rounds, of workflows it holds an enabled license for.
        """
        query = AppChatHistoryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        rounds = memory_rounds_for_app(app=request.auth, chat_id=chat_id, **query.validated_data)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(rounds, request, view=self)
        return paginator.get_paginated_response(AppChatRoundSerializer(page, many=True).data)
