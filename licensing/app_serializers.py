from rest_framework import serializers

from config.api.serializers import StrictSerializer
from workflows.models import RunStatus


class AppRunStartSerializer(StrictSerializer):
    inputs = serializers.DictField(required=False, default=dict, help_text="Values of the start node's inputs.")
    wait = serializers.BooleanField(required=False, default=False, help_text="Answer with the finished run.")
    version = serializers.CharField(
        required=False,
        max_length=128,
        help_text="An exact version (1.2.3) or a range (1.2.x, ^1.2); default: the latest released.",
    )
    chat_id = serializers.CharField(
        required=False, max_length=255, allow_blank=True, default="", help_text="Groups calls into one conversation."
    )
    uid = serializers.CharField(
        required=False,
        max_length=255,
        allow_blank=True,
        default="",
        help_text="The app's end user: chat memory is kept per (chat_id, uid).",
    )


class AppRunStartedSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=RunStatus.choices)
    version = serializers.CharField()
    url = serializers.URLField()


class AppChatHistoryQuerySerializer(serializers.Serializer):
    workflow = serializers.UUIDField(required=False, help_text="Only the rounds of this workflow.")
    node = serializers.CharField(required=False, max_length=255, help_text="Only the rounds of this llm node.")


class AppChatRoundSerializer(serializers.Serializer):
    """One question and answer of an llm node with memory."""

    id = serializers.IntegerField()
    workflow = serializers.UUIDField(source="flow.workflow_id")
    version = serializers.CharField(source="flow.version")
    node = serializers.CharField(source="node_id")
    uid = serializers.CharField()
    chat_id = serializers.CharField()
    question = serializers.CharField(source="raw_question")
    answer = serializers.CharField(source="raw_answer")
    created_at = serializers.DateTimeField(source="create_time")
