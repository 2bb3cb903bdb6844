import django_filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from workflows.permissions import CAN_VIEW
from workflows.selectors import workflow_get_for_user
from workflows.serializers import WorkflowSerializer

from .models import WorkflowTemplate
from .selectors import TemplateKind, templates_of_kind, templates_visible_to_user
from .serializers import TemplateCreateSerializer, TemplateInstantiateSerializer, TemplateSerializer
from .services import (
    template_check_can_change,
    template_create,
    template_create_from_workflow,
    template_delete,
    template_instantiate,
    template_update,
)


class TemplateFilter(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(
        choices=TemplateKind.choices,
        method="filter_kind",
        help_text="official; community: other users' public templates; mine: your own. Default: all you can see.",
    )

    class Meta:
        model = WorkflowTemplate
        fields = ["kind", "category"]

    def filter_kind(self, queryset, name, value):
        return templates_of_kind(queryset=queryset, user=self.request.user, kind=value)


@extend_schema_view(
    create=extend_schema(request=TemplateCreateSerializer, responses={201: TemplateSerializer}),
)
class TemplateViewSet(viewsets.ModelViewSet):
    """Templates you can see: official ones, public ones, and your own. Only your own can change."""

    serializer_class = TemplateSerializer
    filterset_class = TemplateFilter
    search_fields = ["name", "description", "category"]
    ordering_fields = ["usage_count", "created_at", "name"]
    lookup_value_converter = "uuid"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return WorkflowTemplate.objects.none()
        return templates_visible_to_user(user=self.request.user)

    def get_object(self):
        # Someone else's private template is a 404; a visible one that isn't yours is a 403.
        template = super().get_object()
        if self.action in ("update", "partial_update", "destroy"):
            template_check_can_change(template=template, user=self.request.user)
        return template

    def create(self, request, *args, **kwargs):
        serializer = TemplateCreateSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        workflow_id = data.pop("workflow", None)
        if workflow_id is not None:
            workflow = workflow_get_for_user(user=request.user, workflow_id=workflow_id, roles=CAN_VIEW)
            template = template_create_from_workflow(owner=request.user, workflow=workflow, **data)
        else:
            template = template_create(owner=request.user, **data)
        return Response(TemplateSerializer(template, context=self.get_serializer_context()).data, status=201)

    def perform_update(self, serializer):
        serializer.instance = template_update(
            template=serializer.instance, user=self.request.user, data=serializer.validated_data
        )

    def perform_destroy(self, instance):
        template_delete(template=instance, user=self.request.user)

    @extend_schema(request=TemplateInstantiateSerializer, responses={201: WorkflowSerializer})
    @action(detail=True, methods=["post"])
    def instantiate(self, request, pk=None):
        """Make yourself a new workflow from this template."""
        template = self.get_object()
        serializer = TemplateInstantiateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        workflow = template_instantiate(template=template, user=request.user, **serializer.validated_data)
        return Response(
            WorkflowSerializer(workflow, context=self.get_serializer_context()).data, status=status.HTTP_201_CREATED
        )
