from rest_framework import serializers

from config.api.serializers import StrictModelSerializer, StrictSerializer
from templates.models import WorkflowTemplate
from templates.selectors import templates_visible_to_user

from .models import Agent, LLMProvider, Message, Session, SessionWorkflow, Tool
from .selectors import agents_for_user, providers_for_user, tools_visible_to_user


def _request_user(serializer):
    request = serializer.context.get("request")
    return getattr(request, "user", None)


class ProviderSerializer(StrictModelSerializer):
    # Write-only: a response says whether a key is set, and nothing derived from it.
    api_key = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=4096,
        style={"input_type": "password"},
        help_text="Write-only. Left out on update, the stored key is kept; an empty string clears it.",
    )
    has_api_key = serializers.SerializerMethodField()
    available_models = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, max_length=500
    )
    metadata = serializers.DictField(required=False, help_text='e.g. {"rate_limit": {"requests_per_minute": 60}}')

    class Meta:
        model = LLMProvider
        fields = [
            "id",
            "name",
            "kind",
            "base_url",
            "api_key",
            "has_api_key",
            "model",
            "available_models",
            "metadata",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        extra_kwargs = {
            "kind": {
                "help_text": "The API the provider speaks: openai (any OpenAI-compatible /chat/completions, the "
                "default), anthropic (the Messages API) or gemini (the Gemini API)."
            },
        }

    def get_has_api_key(self, provider: LLMProvider) -> bool:
        return bool(provider.api_key)


class ProviderTestResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    status = serializers.IntegerField(allow_null=True, help_text="The provider's HTTP status, if it answered.")
    error = serializers.CharField(allow_blank=True)
    code = serializers.ChoiceField(
        choices=["", "blocked", "unreachable", "unauthorized", "not_found", "invalid_url", "http_error"],
        allow_blank=True,
        help_text="Empty when ok; otherwise what to fix: blocked (the outbound guard refused the address), "
        "unreachable (no connection or no answer in time), unauthorized (the key was refused), not_found "
        "(nothing at {base_url}/models: check the base URL), invalid_url, http_error.",
    )


class ToolSerializer(StrictModelSerializer):
    parameters = serializers.DictField(
        required=False, help_text="The JSON Schema (draft 2020-12) of the object the tool is called with."
    )
    config = serializers.DictField(
        required=False,
        allow_null=True,
        help_text="method, timeout_s, builtin: shown to the tool's owner only (null to others).",
    )
    # Write-only, like a provider's key: credentials travel in headers, and a public tool is seen by all.
    headers = serializers.DictField(
        source="secret_headers",
        child=serializers.CharField(max_length=8192, allow_blank=True, trim_whitespace=False),
        write_only=True,
        required=False,
        help_text="Write-only HTTP headers sent with every call (Authorization...), stored encrypted. "
        "Left out on update, the stored ones are kept; {} clears them.",
    )
    header_names = serializers.SerializerMethodField(help_text="The names of the stored headers (owner only).")
    is_own = serializers.SerializerMethodField()

    class Meta:
        model = Tool
        fields = [
            "id",
            "name",
            "description",
            "category",
            "kind",
            "endpoint",
            "parameters",
            "config",
            "headers",
            "header_names",
            "visibility",
            "status",
            "review_reason",
            "reviewed_at",
            "is_own",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "status", "review_reason", "reviewed_at", "created_at", "updated_at"]

    def get_is_own(self, tool: Tool) -> bool:
        user = _request_user(self)
        return user is not None and tool.owner_id == user.pk

    def get_header_names(self, tool: Tool) -> list[str] | None:
        return sorted(tool.secret_headers or {}) if self.get_is_own(tool) else None

    def to_representation(self, tool: Tool) -> dict:
        data = super().to_representation(tool)
        if not self.get_is_own(tool):
            data["config"] = None
        return data


class AgentSerializer(StrictModelSerializer):
    provider = serializers.PrimaryKeyRelatedField(queryset=LLMProvider.objects.none(), allow_null=True, required=False)
    tools = serializers.PrimaryKeyRelatedField(
        queryset=Tool.objects.none(),
        many=True,
        required=False,
        help_text="Approved tools that are yours or public.",
    )

    class Meta:
        model = Agent
        fields = [
            "id",
            "name",
            "start",
            "goal",
            "status",
            "provider",
            "model",
            "system_prompt",
            "tools",
            "max_steps",
            "token_budget",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        extra_kwargs = {"max_steps": {"min_value": 1, "max_value": 1000}}

    def get_fields(self):
        fields = super().get_fields()
        user = _request_user(self)
        if user is not None and user.is_authenticated:
            fields["provider"].queryset = providers_for_user(user=user)
            fields["tools"].child_relation.queryset = tools_visible_to_user(user=user)
        return fields


class SessionSerializer(StrictModelSerializer):
    agent = serializers.PrimaryKeyRelatedField(queryset=Agent.objects.none(), allow_null=True, required=False)

    class Meta:
        model = Session
        fields = ["id", "title", "status", "agent", "last_sequence_number", "created_at", "updated_at"]
        read_only_fields = ["id", "last_sequence_number", "created_at", "updated_at"]

    def get_fields(self):
        fields = super().get_fields()
        user = _request_user(self)
        if user is not None and user.is_authenticated:
            fields["agent"].queryset = agents_for_user(user=user)
        return fields


class MessageSerializer(StrictModelSerializer):
    content = serializers.CharField(max_length=100_000, trim_whitespace=False)
    metadata = serializers.DictField(required=False)

    class Meta:
        model = Message
        fields = ["id", "session", "role", "content", "sequence_number", "metadata", "created_at"]
        read_only_fields = ["id", "session", "sequence_number", "created_at"]


class SessionChatSerializer(StrictSerializer):
    content = serializers.CharField(max_length=100_000, trim_whitespace=False, help_text="The user's message.")


class SessionChatResultSerializer(serializers.Serializer):
    messages = MessageSerializer(many=True, help_text="The messages this turn appended, in order.")
    text = serializers.CharField(allow_blank=True, help_text="The agent's answer.")
    steps = serializers.ListField(child=serializers.DictField(), help_text="The loop's steps (model and tool calls).")
    usage = serializers.DictField(help_text="Tokens used by the turn.")


class SessionWorkflowSerializer(serializers.ModelSerializer):
    class Meta:
        model = SessionWorkflow
        fields = [
            "id",
            "session",
            "sequence_number",
            "parent",
            "is_current",
            "status",
            "source_type",
            "source_template",
            "source_workflow",
            "workflow_data",
            "created_at",
        ]
        read_only_fields = fields


class SessionWorkflowCreateSerializer(StrictSerializer):
    workflow_data = serializers.DictField(
        required=False, help_text="The workflow graph; from a template it defaults to the template's."
    )
    status = serializers.ChoiceField(choices=SessionWorkflow.Status.choices, required=False)
    source_type = serializers.ChoiceField(choices=SessionWorkflow.SourceType.choices, required=False)
    source_template = serializers.PrimaryKeyRelatedField(
        queryset=WorkflowTemplate.objects.none(), required=False, allow_null=True
    )

    def get_fields(self):
        fields = super().get_fields()
        user = _request_user(self)
        if user is not None and user.is_authenticated:
            fields["source_template"].queryset = templates_visible_to_user(user=user)
        return fields
