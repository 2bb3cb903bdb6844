from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from config.api.serializers import StrictModelSerializer, StrictSerializer
from workflows.openapi import DslGraphFieldExtension

from .models import WorkflowTemplate
from .selectors import TemplateKind, template_kind_for_user


class TemplateGraphField(serializers.DictField):
    """A DSL v1 graph; the service checks it as it would a workflow's draft."""


class TemplateGraphFieldExtension(DslGraphFieldExtension):
    """The API schema shows it as the DSL's ``DslGraph``, as a workflow's graph."""

    target_class = TemplateGraphField


class TemplateSerializer(StrictModelSerializer):
    template_data = TemplateGraphField(required=False)
    kind = serializers.SerializerMethodField(help_text="official, community (another user's public one) or mine.")

    class Meta:
        model = WorkflowTemplate
        fields = [
            "id",
            "name",
            "description",
            "category",
            "kind",
            "is_official",
            "is_public",
            "publishable",
            "template_data",
            "usage_count",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "kind", "is_official", "publishable", "usage_count", "created_at", "updated_at"]
        extra_kwargs = {
            "description": {"max_length": 10_000},
            "publishable": {"help_text": "False for a copy of a workflow you cannot manage: it cannot be made public."},
        }

    @extend_schema_field(serializers.ChoiceField(choices=TemplateKind.choices))
    def get_kind(self, template: WorkflowTemplate) -> str:
        request = self.context.get("request")
        return template_kind_for_user(template=template, user=getattr(request, "user", None))


class TemplateCreateSerializer(StrictSerializer):
    """Either a graph (``template_data``) or a workflow you can view (``workflow``) to save as a template."""

    name = serializers.CharField(max_length=255, required=False, help_text="Defaults to the workflow's name.")
    description = serializers.CharField(max_length=10_000, required=False, allow_blank=True)
    category = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    is_public = serializers.BooleanField(required=False, default=False)
    template_data = TemplateGraphField(required=False)
    workflow = serializers.UUIDField(required=False, help_text="Save this workflow's draft as the template.")

    def validate(self, attrs):
        if ("template_data" in attrs) == ("workflow" in attrs):
            raise serializers.ValidationError(
                {"template_data": ["Give either template_data or workflow, not both or neither."]}, code="invalid"
            )
        if "template_data" in attrs and "name" not in attrs:
            raise serializers.ValidationError({"name": ["This field is required."]}, code="required")
        return attrs


class TemplateInstantiateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=255, required=False, help_text="Defaults to the template's name.")
