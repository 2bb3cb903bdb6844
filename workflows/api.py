"""The builder's API for workflows, their members and versions, runs (read-only) and schedules."""

import django_filters
from django.urls import reverse
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.filters import OrderingFilter
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from config.api.responses import RUN_QUOTA_429, WORKFLOW_QUOTA_403
from config.errors import NotFound

from . import services
from .execution.serializers import RunStartedSerializer
from .models import (
    Run,
    RunStatus,
    ScheduledWorkflow,
    ScheduledWorkflowStatus,
    Workflow,
    WorkflowMember,
    WorkflowSource,
    WorkflowStatus,
)
from .permissions import CAN_EDIT, CAN_MANAGE, CAN_VIEW
from .schedules import services as schedule_services
from .selectors import (
    runs_for_user,
    schedules_for_user,
    workflow_get_for_user,
    workflow_members,
    workflows_for_user,
)
from .serializers import (
    MAX_ID,
    RunSerializer,
    ScheduleActionSerializer,
    SchedulePauseSerializer,
    ScheduleSerializer,
    WorkflowMemberRoleSerializer,
    WorkflowMemberSerializer,
    WorkflowMemberSetSerializer,
    WorkflowSerializer,
    WorkflowVersionSerializer,
)


# --- Workflows ---------------------------------------------------------------------------------
class WorkflowFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=WorkflowStatus.choices)
    source = django_filters.ChoiceFilter(choices=WorkflowSource.choices)

    class Meta:
        model = Workflow
        fields = ["status", "source"]


@extend_schema_view(create=extend_schema(responses={201: WorkflowSerializer, 403: WORKFLOW_QUOTA_403}))
class WorkflowViewSet(viewsets.ModelViewSet):
    """Workflows you own or are a member of. Editing needs the owner or editor role, deleting the owner."""

    serializer_class = WorkflowSerializer
    filterset_class = WorkflowFilter
    search_fields = ["name"]
    ordering_fields = ["name", "created_at", "updated_at"]
    lookup_url_kwarg = "id"
    lookup_value_converter = "uuid"
    roles_by_action = {
        "retrieve": CAN_VIEW,
        "update": CAN_EDIT,
        "partial_update": CAN_EDIT,
        "destroy": CAN_MANAGE,
        "versions": CAN_VIEW,
    }

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Workflow.objects.none()
        return workflows_for_user(user=self.request.user).select_related("owner").prefetch_related("nodes", "edges")

    def get_object(self) -> Workflow:
        workflow = workflow_get_for_user(
            user=self.request.user, workflow_id=self.kwargs["id"], roles=self.roles_by_action.get(self.action, CAN_VIEW)
        )
        self.check_object_permissions(self.request, workflow)
        return workflow

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        workflow = services.workflow_create(owner=request.user, **serializer.validated_data)
        workflow = self.get_queryset().get(pk=workflow.pk)
        return Response(self.get_serializer(workflow).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        workflow = self.get_object()
        serializer = self.get_serializer(workflow, data=request.data, partial=kwargs.get("partial", False))
        serializer.is_valid(raise_exception=True)
        workflow = services.workflow_update(workflow=workflow, user=request.user, **serializer.validated_data)
        return Response(self.get_serializer(workflow).data)

    def destroy(self, request, *args, **kwargs):
        services.workflow_delete(workflow=self.get_object(), user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses=WorkflowVersionSerializer(many=True), filters=False)
    @action(detail=True, methods=["get"], filter_backends=[], serializer_class=WorkflowVersionSerializer)
    def versions(self, request, *args, **kwargs):
        """The workflow's published versions, newest first."""
        workflow = self.get_object()
        page = self.paginate_queryset(workflow.versions.all())
        return self.get_paginated_response(WorkflowVersionSerializer(page, many=True).data)


# --- Members -----------------------------------------------------------------------------------
class WorkflowMemberListApi(GenericAPIView):
    """Who shares a workflow, and with which role. Anyone who sees the workflow sees its members;
    only an owner adds them."""

    serializer_class = WorkflowMemberSerializer
    filter_backends: list = []
    # Only for the browsable API's forms; the members come from the workflow, once its role is checked.
    queryset = WorkflowMember.objects.none()

    @extend_schema(responses=WorkflowMemberSerializer(many=True))
    def get(self, request, id):
        workflow = workflow_get_for_user(user=request.user, workflow_id=id, roles=CAN_VIEW)
        page = self.paginate_queryset(workflow_members(workflow=workflow))
        return self.get_paginated_response(WorkflowMemberSerializer(page, many=True).data)

    @extend_schema(request=WorkflowMemberSetSerializer, responses={201: WorkflowMemberSerializer})
    def post(self, request, id):
        workflow = workflow_get_for_user(user=request.user, workflow_id=id, roles=CAN_MANAGE)
        serializer = WorkflowMemberSetSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        member = services.workflow_member_set(
            workflow=workflow,
            actor=request.user,
            user=serializer.validated_data["user"],
            role=serializer.validated_data["role"],
        )
        return Response(WorkflowMemberSerializer(member).data, status=status.HTTP_201_CREATED)


class WorkflowMemberDetailApi(GenericAPIView):
    """Change a member's role or remove them (owner only)."""

    serializer_class = WorkflowMemberSerializer
    filter_backends: list = []

    def _member(self, *, workflow, user_id: int):
        member = workflow_members(workflow=workflow).filter(user_id=user_id).first() if user_id <= MAX_ID else None
        if member is None:
            raise NotFound("This user is not a member of the workflow.", field="user")
        return member

    @extend_schema(request=WorkflowMemberRoleSerializer, responses={200: WorkflowMemberSerializer})
    def patch(self, request, id, user_id):
        workflow = workflow_get_for_user(user=request.user, workflow_id=id, roles=CAN_MANAGE)
        member = self._member(workflow=workflow, user_id=user_id)
        serializer = WorkflowMemberRoleSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        member = services.workflow_member_set(
            workflow=workflow, actor=request.user, user=member.user, role=serializer.validated_data["role"]
        )
        return Response(WorkflowMemberSerializer(member).data)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request, id, user_id):
        workflow = workflow_get_for_user(user=request.user, workflow_id=id, roles=CAN_MANAGE)
        member = self._member(workflow=workflow, user_id=user_id)
        services.workflow_member_remove(workflow=workflow, actor=request.user, user=member.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Runs --------------------------------------------------------------------------------------
class RunFilter(django_filters.FilterSet):
    workflow = django_filters.UUIDFilter(field_name="workflow_id")
    status = django_filters.ChoiceFilter(choices=RunStatus.choices)

    class Meta:
        model = Run
        fields = ["workflow", "status"]


class RunViewSet(viewsets.ReadOnlyModelViewSet):
    """Runs of the workflows you can see, with their tasks. Start and cancel them elsewhere."""

    serializer_class = RunSerializer
    filterset_class = RunFilter
    filter_backends = [DjangoFilterBackend, OrderingFilter]
    ordering_fields = ["created_at", "started_at", "finished_at"]
    lookup_url_kwarg = "id"
    lookup_value_converter = "uuid"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Run.objects.none()
        return runs_for_user(user=self.request.user).prefetch_related("tasks")


# --- Schedules ---------------------------------------------------------------------------------
class ScheduleFilter(django_filters.FilterSet):
    workflow = django_filters.UUIDFilter(field_name="workflow_id")
    status = django_filters.ChoiceFilter(choices=ScheduledWorkflowStatus.choices)

    class Meta:
        model = ScheduledWorkflow
        fields = ["workflow", "status"]


def _run_started(request, run) -> dict:
    scheme = "wss" if request.is_secure() else "ws"
    return {
        "id": run.pk,
        "status": run.status,
        "url": request.build_absolute_uri(reverse("run-detail", kwargs={"id": run.pk})),
        "ws_url": f"{scheme}://{request.get_host()}/ws/runs/{run.pk}/",
    }


@extend_schema_view(create=extend_schema(responses={201: ScheduleSerializer}))
class ScheduleViewSet(viewsets.ModelViewSet):
    """Cron schedules of the workflows you can run; changed, paused and resumed by their maker or the
    workflow's owner."""

    serializer_class = ScheduleSerializer
    filterset_class = ScheduleFilter
    search_fields = ["name"]
    ordering_fields = ["created_at", "updated_at"]
    lookup_url_kwarg = "id"
    lookup_value_converter = "uuid"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ScheduledWorkflow.objects.none()
        return schedules_for_user(user=self.request.user).select_related("workflow", "flow")

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        schedule = schedule_services.schedule_create(user=request.user, **serializer.to_service_arguments())
        return Response(self.get_serializer(schedule).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        schedule = self.get_object()
        serializer = self.get_serializer(schedule, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        schedule = schedule_services.schedule_update(
            schedule=schedule, user=request.user, **serializer.to_service_arguments()
        )
        return Response(self.get_serializer(schedule).data)

    def destroy(self, request, *args, **kwargs):
        schedule_services.schedule_delete(schedule=self.get_object(), user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=SchedulePauseSerializer, responses={200: ScheduleSerializer}, filters=False)
    @action(detail=True, methods=["post"], filter_backends=[], serializer_class=SchedulePauseSerializer)
    def pause(self, request, *args, **kwargs):
        """Stop firing ticks until resumed (audited); pausing a paused schedule changes nothing."""
        schedule = self.get_object()
        body = SchedulePauseSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        schedule = schedule_services.schedule_pause(
            schedule=schedule, user=request.user, reason=body.validated_data.get("reason", "")
        )
        return Response(ScheduleSerializer(schedule, context=self.get_serializer_context()).data)

    @extend_schema(request=ScheduleActionSerializer, responses={200: ScheduleSerializer}, filters=False)
    @action(detail=True, methods=["post"], filter_backends=[], serializer_class=ScheduleActionSerializer)
    def resume(self, request, *args, **kwargs):
        """Fire ticks again from now on, with the failure count at zero (audited); missed ticks are not replayed."""
        schedule = self.get_object()
        ScheduleActionSerializer(data=request.data).is_valid(raise_exception=True)
        schedule = schedule_services.schedule_resume(schedule=schedule, user=request.user)
        return Response(ScheduleSerializer(schedule, context=self.get_serializer_context()).data)

    @extend_schema(
        request=ScheduleActionSerializer, responses={202: RunStartedSerializer, 429: RUN_QUOTA_429}, filters=False
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="run-now",
        filter_backends=[],
        serializer_class=ScheduleActionSerializer,
    )
    def run_now(self, request, *args, **kwargs):
        """Start a run of the schedule (its version and inputs) now, outside its ticks. 202 at once."""
        schedule = self.get_object()
        ScheduleActionSerializer(data=request.data).is_valid(raise_exception=True)
        run = schedule_services.schedule_run_now(schedule=schedule, user=request.user)
        return Response(RunStartedSerializer(_run_started(request, run)).data, status=status.HTTP_202_ACCEPTED)
