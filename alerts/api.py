"""A workflow's failure policy (error workflow, notifications) and the notifications sent."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from workflows.permissions import CAN_EDIT, CAN_VIEW
from workflows.selectors import workflow_get_for_user

from . import services
from .models import Delivery, FailurePolicy
from .selectors import deliveries_for_workflow, policy_for_workflow
from .serializers import (
    DeliveryFilterSerializer,
    DeliverySerializer,
    FailurePolicySerializer,
    FailurePolicySetSerializer,
)


class FailurePolicyApi(GenericAPIView):
    """What happens when a run of the workflow fails (or succeeds, or is cancelled). Anyone who sees the
    workflow sees it (the webhook URL cut to its scheme and host unless they may edit it); its editors
    change it."""

    serializer_class = FailurePolicySerializer
    filter_backends: list = []
    queryset = FailurePolicy.objects.none()

    def get_object(self) -> FailurePolicy:
        """The policy an editor changes (DRF's OPTIONS asks for it to describe PUT)."""
        workflow = workflow_get_for_user(user=self.request.user, workflow_id=self.kwargs["id"], roles=CAN_EDIT)
        return policy_for_workflow(workflow=workflow) or FailurePolicy(workflow=workflow)

    @extend_schema(operation_id="failure_policy_get", responses=FailurePolicySerializer, tags=["alerts"])
    def get(self, request, id):
        """The policy; the defaults (nothing set) when the workflow has none."""
        workflow = workflow_get_for_user(user=request.user, workflow_id=id, roles=CAN_VIEW)
        policy = policy_for_workflow(workflow=workflow) or FailurePolicy(
            workflow=workflow, enabled=False, on_failed=False
        )
        return Response(FailurePolicySerializer(policy, context=_context(workflow)).data)

    @extend_schema(
        operation_id="failure_policy_set",
        request=FailurePolicySetSerializer,
        responses=FailurePolicySerializer,
        tags=["alerts"],
    )
    def put(self, request, id):
        """Set the whole policy (editors)."""
        workflow = workflow_get_for_user(user=request.user, workflow_id=id, roles=CAN_EDIT)
        serializer = FailurePolicySetSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        policy = services.policy_set(workflow=workflow, user=request.user, **serializer.validated_data)
        return Response(FailurePolicySerializer(policy, context=_context(workflow)).data)

    @extend_schema(operation_id="failure_policy_delete", responses={204: None}, tags=["alerts"])
    def delete(self, request, id):
        """Remove the policy and its deliveries (editors)."""
        workflow = workflow_get_for_user(user=request.user, workflow_id=id, roles=CAN_EDIT)
        services.policy_delete(workflow=workflow, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class NotificationListApi(GenericAPIView):
    """The notifications of the workflow's runs, newest first, with their status, attempts and last error."""

    serializer_class = DeliverySerializer
    filter_backends: list = []
    queryset = Delivery.objects.none()

    @extend_schema(
        operation_id="notifications_list",
        parameters=[
            OpenApiParameter("run", str, description="Only this run's."),
            OpenApiParameter("status", str, description="pending, sending, delivered, failed or cancelled."),
            OpenApiParameter("event", str, description="The run status notified: failed, succeeded or cancelled."),
        ],
        responses=DeliverySerializer(many=True),
        tags=["alerts"],
    )
    def get(self, request, id):
        workflow = workflow_get_for_user(user=request.user, workflow_id=id, roles=CAN_VIEW)
        filters = DeliveryFilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        deliveries = deliveries_for_workflow(workflow=workflow)
        for name in ("run", "status", "event"):
            if name in filters.validated_data:
                deliveries = deliveries.filter(**{name: filters.validated_data[name]})
        page = self.paginate_queryset(deliveries)
        return self.get_paginated_response(DeliverySerializer(page, many=True, context=_context(workflow)).data)


def _context(workflow) -> dict:
    """Editors see webhook URLs whole; others see their scheme and host."""
    return {"can_edit": workflow.caller_role in CAN_EDIT}
