"""The node types as the API shows them (``GET /api/v1/node-types/``), and trying one node of a draft.

``node_types_list`` reads the engine's registry: the built-in types and those the apps register
(the agents app's llm, agent and tool, plugins). The editor builds its palette and its config
forms from it, so a new node type needs no front-end change. Trying a node is
``workflows.trial.node_try``; this module is its endpoint.
"""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api.parsers import StrictJSONParser
from config.api.responses import RUN_QUOTA_429
from config.api.serializers import StrictSerializer
from workflows.engine import get_node_type, get_plugin_of, node_type_names

from .execution.serializers import GraphInvalidSerializer
from .permissions import CAN_EDIT
from .selectors import workflow_get_for_user
from .trial import node_try


def node_types_list() -> list[dict]:
    """Every registered node type, by name: what it does, its config's JSON Schema, its outputs, its effects."""
    types = []
    for name in node_type_names():
        node_type = get_node_type(name)
        plugin = get_plugin_of(name)
        types.append(
            {
                "type": name,
                "description": node_type.description,
                "config_schema": node_type.config_schema,
                "outputs": sorted(node_type.outputs) if node_type.outputs is not None else None,
                "effects": node_type.effects,
                "example_config": node_type.example_config,
                "plugin": {"name": plugin.name, "version": plugin.version} if plugin else None,
            }
        )
    return types


class NodeTypePluginSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The plugin's distribution name.")
    version = serializers.CharField(help_text="Its installed version.")


class NodeTypeSerializer(serializers.Serializer):
    type = serializers.CharField(help_text="The name a graph's node gives as its `type`.")
    description = serializers.CharField(help_text="What the node does, in one line.")
    config_schema = serializers.JSONField(help_text="The JSON Schema (draft 2020-12) of the node's `config`.")
    outputs = serializers.ListField(
        child=serializers.CharField(),
        allow_null=True,
        help_text="The fields of its output, sorted; null when they depend on the config or the run "
        "(code: what `main` returns; start: its declared inputs; end: its `outputs` keys).",
    )
    effects = serializers.BooleanField(
        help_text="Whether executing it acts outside the run (a request, a model or tool call): its outcome is "
        "stored before the run goes on, and a succeeded one is never executed again."
    )
    example_config = serializers.JSONField(allow_null=True, help_text="A valid `config`, as an example.")
    plugin = NodeTypePluginSerializer(
        allow_null=True, help_text="The installed plugin that provides it (docs/plugins.md); null for Weft's own."
    )


class NodeTypeListApi(APIView):
    @extend_schema(operation_id="node_types_list", responses={200: NodeTypeSerializer(many=True)}, tags=["workflows"])
    def get(self, request):
        """The node types a graph may use (built-in and plugins), for palettes and config forms."""
        return Response(NodeTypeSerializer(node_types_list(), many=True).data)


class NodeTrySerializer(StrictSerializer):
    inputs = serializers.DictField(
        required=False,
        default=dict,
        help_text="What the node's templates read: "
        '`{"start": {<the run\'s inputs>}, "<ancestor id>": {<its output>}}`. '
        "An ancestor left out counts as not run (a branch not taken).",
    )


class NodeTrialErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="`node_failed`.")
    detail = serializers.CharField(help_text="The error, as a run's task would show it.")
    retryable = serializers.BooleanField(
        help_text="Whether a run would try the node again (as its retry policy allows) after this failure."
    )


class NodeTrialSerializer(serializers.Serializer):
    node = serializers.CharField()
    type = serializers.CharField()
    status = serializers.ChoiceField(choices=["succeeded", "failed"])
    output = serializers.JSONField(allow_null=True, help_text="The node's output when it succeeded, else null.")
    error = NodeTrialErrorSerializer(allow_null=True, help_text="How it failed, else null.")
    duration_ms = serializers.FloatField(help_text="How long the node executed.")


class NotFoundSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField(help_text="`not_found`.")
    field = serializers.CharField(required=False, help_text="`node_id` when the draft has no such node.")


class NodeTryApi(APIView):
    parser_classes = [StrictJSONParser]

    @extend_schema(
        operation_id="workflow_node_try",
        request=NodeTrySerializer,
        responses={
            200: OpenApiResponse(
                NodeTrialSerializer,
                description="The node was executed once (no retry; `on_failure` does not apply): its output, or "
                "how it failed. Nothing is stored but an audit row.",
            ),
            400: OpenApiResponse(
                GraphInvalidSerializer,
                description="An input the node cannot read (`field`: `inputs.<key>`), or the node's own problems "
                "(`errors`, as the validate endpoint reports them).",
            ),
            404: OpenApiResponse(NotFoundSerializer, description="No such workflow, or no such node in its draft."),
            429: RUN_QUOTA_429,
        },
        tags=["workflows"],
    )
    def post(self, request, id, node_id):
        """Try one node of the draft with sample inputs, executed by the engine as in a run; a try counts as a run
        for the quotas."""
        workflow = workflow_get_for_user(user=request.user, workflow_id=id, roles=CAN_EDIT)
        body = NodeTrySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        trial = node_try(workflow=workflow, user=request.user, node_id=node_id, inputs=body.validated_data["inputs"])
        return Response(NodeTrialSerializer(trial).data)
