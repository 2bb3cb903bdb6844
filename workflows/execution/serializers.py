from rest_framework import serializers

from config.api.serializers import StrictSerializer
from workflows.models import RunStatus
from workflows.serializers import DslGraphField


class RunStartSerializer(StrictSerializer):
    inputs = serializers.DictField(required=False, default=dict, help_text="Values of the start node's inputs.")
    wait = serializers.BooleanField(
        required=False, default=False, help_text="Answer 200 with the finished run, if it finishes in time."
    )


class RunStartedSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=RunStatus.choices)
    url = serializers.URLField(help_text="Where to read the run.")
    ws_url = serializers.CharField(help_text="The websocket that streams the run's events.")


class RunCancelSerializer(StrictSerializer):
    pass


class RunCancelledSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=RunStatus.choices)
    cancel_requested = serializers.BooleanField()


class GraphValidateSerializer(StrictSerializer):
    graph = DslGraphField(
        required=False, help_text="A graph to check instead of the workflow's saved draft (not saved)."
    )


class GraphValidSerializer(serializers.Serializer):
    valid = serializers.BooleanField()


class GraphIssueSerializer(serializers.Serializer):
    node = serializers.CharField(allow_null=True)
    field = serializers.CharField()
    message = serializers.CharField()


class GraphInvalidSerializer(serializers.Serializer):
    """The graph's issues; a malformed request body is answered with its field errors instead."""

    detail = serializers.CharField(required=False)
    code = serializers.CharField(required=False)
    errors = GraphIssueSerializer(many=True, required=False)
