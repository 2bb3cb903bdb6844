"""Webhook triggers: managed by whoever may edit the workflow; called by anyone who holds the URL."""

from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api.responses import RUN_QUOTA_429
from config.errors import NotFound
from workflows.permissions import CAN_EDIT
from workflows.selectors import workflow_get_for_user

from . import services
from .delivery import DATE_HEADER, IDEMPOTENCY_HEADER, NONCE_HEADER, SIGNATURE_HEADER, HookCall, hook_deliver
from .models import Trigger
from .selectors import triggers_for_workflow
from .serializers import TriggerSerializer, TriggerWithTokenSerializer, TriggerWriteSerializer

#: Sent with every answer of a hook that started (or replayed) a run.
RUN_HEADER = "X-Weft-Run"
REPLAYED_HEADER = "Idempotent-Replayed"


def _with_token(request, trigger: Trigger, token: str) -> dict:
    url = request.build_absolute_uri(reverse("hook", kwargs={"token": token}))
    # TriggerWithTokenSerializer's fields: the trigger as shown, with its token and URL this once.
    return {**TriggerSerializer(trigger).data, "token": token, "url": url}


def _trigger(*, workflow, trigger_id) -> Trigger:
    trigger = triggers_for_workflow(workflow=workflow).filter(pk=trigger_id).first()
    if trigger is None:
        raise NotFound("This workflow has no such trigger.")
    return trigger


class TriggerListApi(GenericAPIView):
    """A workflow's webhook triggers (for whoever may edit the workflow)."""

    serializer_class = TriggerSerializer
    filter_backends: list = []
    # Only for the browsable API's forms; the triggers come from the workflow, once its role is checked.
    queryset = Trigger.objects.none()

    @extend_schema(responses=TriggerSerializer(many=True))
    def get(self, request, id):
        workflow = workflow_get_for_user(user=request.user, workflow_id=id, roles=CAN_EDIT)
        page = self.paginate_queryset(triggers_for_workflow(workflow=workflow))
        return self.get_paginated_response(TriggerSerializer(page, many=True).data)

    @extend_schema(request=TriggerWriteSerializer, responses={201: TriggerWithTokenSerializer})
    def post(self, request, id):
        """Create a webhook trigger: the answer holds its token and URL, shown this once."""
        workflow = workflow_get_for_user(user=request.user, workflow_id=id, roles=CAN_EDIT)
        serializer = TriggerWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        trigger, token = services.trigger_create(workflow=workflow, user=request.user, **serializer.validated_data)
        return Response(_with_token(request, trigger, token), status=status.HTTP_201_CREATED)


class TriggerDetailApi(GenericAPIView):
    serializer_class = TriggerSerializer
    filter_backends: list = []
    queryset = Trigger.objects.none()

    @extend_schema(responses=TriggerSerializer)
    def get(self, request, id, trigger_id):
        workflow = workflow_get_for_user(user=request.user, workflow_id=id, roles=CAN_EDIT)
        return Response(TriggerSerializer(_trigger(workflow=workflow, trigger_id=trigger_id)).data)

    @extend_schema(request=TriggerWriteSerializer, responses=TriggerSerializer)
    def patch(self, request, id, trigger_id):
        """Change a trigger (`enabled: false` switches its URL off; `secret: ""` stops requiring signatures)."""
        workflow = workflow_get_for_user(user=request.user, workflow_id=id, roles=CAN_EDIT)
        trigger = _trigger(workflow=workflow, trigger_id=trigger_id)
        serializer = TriggerWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        trigger = services.trigger_update(trigger=trigger, user=request.user, **serializer.validated_data)
        return Response(TriggerSerializer(trigger).data)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request, id, trigger_id):
        workflow = workflow_get_for_user(user=request.user, workflow_id=id, roles=CAN_EDIT)
        services.trigger_delete(trigger=_trigger(workflow=workflow, trigger_id=trigger_id), user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TriggerRotateApi(GenericAPIView):
    serializer_class = TriggerWithTokenSerializer
    filter_backends: list = []
    queryset = Trigger.objects.none()

    @extend_schema(request=None, responses=TriggerWithTokenSerializer)
    def post(self, request, id, trigger_id):
        """A new token and URL (shown this once); the old URL stops working at once."""
        workflow = workflow_get_for_user(user=request.user, workflow_id=id, roles=CAN_EDIT)
        trigger, token = services.trigger_rotate(
            trigger=_trigger(workflow=workflow, trigger_id=trigger_id), user=request.user
        )
        return Response(_with_token(request, trigger, token))


_HOOK_ANSWERS = (
    "202 `{id, status}`: the run started (or, for a trigger that waits, outlasted its timeout). "
    "200: the finished run `{id, status, outputs, error}`, or the trigger's response template rendered over "
    f"its outputs. A replay (the same `{IDEMPOTENCY_HEADER}` within 24 h) answers as the first call did, "
    f"with `{REPLAYED_HEADER}: true`. `{RUN_HEADER}` names the run."
)


class HookApi(APIView):
    """The URL of a webhook trigger: needs no account, only the token (and a signature if it has a secret)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []
    # The body is read as it came (it is signed so); the delivery parses it.
    parser_classes: list = []
    renderer_classes = [JSONRenderer]

    @extend_schema(
        operation_id="hook_call",
        request={"application/json": OpenApiTypes.OBJECT, "application/x-www-form-urlencoded": OpenApiTypes.OBJECT},
        responses={
            (200, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description=_HOOK_ANSWERS),
            (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description="A response template's text."),
            (202, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description=_HOOK_ANSWERS),
            (429, "application/json"): RUN_QUOTA_429,
        },
        parameters=[
            OpenApiParameter("token", str, OpenApiParameter.PATH, description="The trigger's token."),
            OpenApiParameter(IDEMPOTENCY_HEADER, str, OpenApiParameter.HEADER, required=False),
            OpenApiParameter(
                SIGNATURE_HEADER,
                str,
                OpenApiParameter.HEADER,
                required=False,
                description="With a secret: base64 HMAC-SHA256 as the app API's "
                f"(method, path with query, `{DATE_HEADER}`, `{NONCE_HEADER}`, hex SHA-256 of the body).",
            ),
            OpenApiParameter(DATE_HEADER, str, OpenApiParameter.HEADER, required=False),
            OpenApiParameter(NONCE_HEADER, str, OpenApiParameter.HEADER, required=False),
        ],
        auth=[],
        tags=["hooks"],
    )
    def post(self, request, token):
        """Start a run of the trigger's workflow."""
        answer = hook_deliver(
            call=HookCall(
                token=token,
                method=request.method,
                full_path=request.get_full_path(),
                headers=request.headers,
                query=request.GET,
                body=request.body,
                content_type=request.content_type,
                address=request.META.get("REMOTE_ADDR") or "",
            )
        )
        content_type = answer.content_type
        if content_type.startswith("text/"):
            content_type += "; charset=utf-8"
        response = HttpResponse(answer.body, status=answer.status, content_type=content_type)
        response[RUN_HEADER] = str(answer.run_id)
        if answer.replayed:
            response[REPLAYED_HEADER] = "true"
        response["Cache-Control"] = "no-store"
        return response
