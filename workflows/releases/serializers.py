from rest_framework import serializers

from config.api.serializers import StrictSerializer
from workflows.models import ReleaseChannel, WorkflowVersion
from workflows.serializers import DslGraphField

from .services import channel_names

CHANNEL_CHOICES = [choice.name.lower() for choice in ReleaseChannel]


class FlowSerializer(serializers.ModelSerializer):
    workflow = serializers.UUIDField(source="workflow_id", read_only=True)
    channels = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="create_by.username", read_only=True)
    created_at = serializers.DateTimeField(source="create_at", read_only=True)

    class Meta:
        model = WorkflowVersion
        fields = [
            "id",
            "workflow",
            "version",
            "name",
            "description",
            "channels",
            "release_status",
            "tag",
            "created_by",
            "created_at",
        ]
        read_only_fields = fields

    def get_channels(self, flow: WorkflowVersion) -> list[str]:
        return channel_names(flow.release_status)


class FlowDetailSerializer(FlowSerializer):
    graph = DslGraphField(source="data", read_only=True)
    release_graph = DslGraphField(source="release_data", read_only=True)

    class Meta(FlowSerializer.Meta):
        fields = [*FlowSerializer.Meta.fields, "graph", "release_graph"]
        read_only_fields = fields


class PublishSerializer(StrictSerializer):
    version = serializers.CharField(max_length=128)
    description = serializers.CharField(max_length=1024, required=False, allow_blank=True, default="")
    channels = serializers.ListField(
        child=serializers.ChoiceField(choices=CHANNEL_CHOICES), required=False, min_length=1, max_length=8
    )


class ChannelsSerializer(StrictSerializer):
    channels = serializers.ListField(
        child=serializers.ChoiceField(choices=CHANNEL_CHOICES), required=False, min_length=1, max_length=8
    )


class FlowDiffSerializer(serializers.Serializer):
    old = serializers.CharField(help_text="The version compared from, or 'draft'.")
    new = serializers.CharField(help_text="The version compared to, or 'draft'.")
    nodes = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))
    edges = serializers.DictField(child=serializers.ListField(child=serializers.DictField()))
