from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import NotFound
from workflows.models import WorkflowVersion
from workflows.permissions import CAN_EDIT, CAN_VIEW
from workflows.selectors import workflow_get_for_user, workflow_graph
from workflows.serializers import WorkflowSerializer

from . import services
from .selectors import flow_diff, flow_previous
from .serializers import ChannelsSerializer, FlowDetailSerializer, FlowDiffSerializer, FlowSerializer, PublishSerializer

VERSION_PARAMS = [
    OpenApiParameter("id", str, OpenApiParameter.PATH, description="Workflow id (UUID)."),
    OpenApiParameter("version", str, OpenApiParameter.PATH, description="A published version, e.g. 1.2.3."),
]


def _flow(workflow, version: str) -> WorkflowVersion:
    try:
        return WorkflowVersion.objects.select_related("create_by").get(workflow=workflow, version=version)
    except WorkflowVersion.DoesNotExist:
        raise NotFound(f"Version {version[:64]} of this workflow does not exist.", field="version") from None


class WorkflowPublishApi(APIView):
    @extend_schema(
        request=PublishSerializer,
        responses={201: FlowDetailSerializer},
        parameters=[OpenApiParameter("id", str, OpenApiParameter.PATH)],
    )
    def post(self, request, id):
        workflow = workflow_get_for_user(user=request.user, workflow_id=id, roles=CAN_EDIT)
        serializer = PublishSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        flow = services.workflow_publish(
            workflow=workflow,
            version=data["version"],
            description=data["description"],
            channels=data.get("channels", services.DEFAULT_CHANNELS),
            user=request.user,
        )
        return Response(FlowDetailSerializer(flow).data, status=status.HTTP_201_CREATED)


class FlowDetailApi(APIView):
    @extend_schema(responses={200: FlowDetailSerializer}, parameters=VERSION_PARAMS)
    def get(self, request, id, version):
        workflow = workflow_get_for_user(user=request.user, workflow_id=id, roles=CAN_VIEW)
        return Response(FlowDetailSerializer(_flow(workflow, version)).data)


class FlowDiffApi(APIView):
    @extend_schema(
        responses={200: FlowDiffSerializer},
        parameters=[
            *VERSION_PARAMS,
            OpenApiParameter(
                "against",
                str,
                description="The version to compare with; 'draft' for the current draft. "
                "Default: the version just before.",
            ),
        ],
    )
    def get(self, request, id, version):
        workflow = workflow_get_for_user(user=request.user, workflow_id=id, roles=CAN_VIEW)
        new = _flow(workflow, version)
        against = request.query_params.get("against")
        if against == "draft":
            old_label, old_graph = "draft", workflow_graph(workflow=workflow)
        elif against:
            old = _flow(workflow, against)
            old_label, old_graph = old.version, old.data
        else:
            previous = flow_previous(flow=new)
            old_label, old_graph = (previous.version, previous.data) if previous else ("", {"nodes": [], "edges": []})
        return Response({"old": old_label, "new": new.version, **flow_diff(old=old_graph, new=new.data)})


class FlowRollbackApi(APIView):
    @extend_schema(request=None, responses={200: WorkflowSerializer}, parameters=VERSION_PARAMS)
    def post(self, request, id, version):
        workflow = workflow_get_for_user(user=request.user, workflow_id=id, roles=CAN_EDIT)
        workflow = services.workflow_rollback(workflow=workflow, flow=_flow(workflow, version), user=request.user)
        return Response(WorkflowSerializer(workflow, context={"request": request}).data)


class FlowReleaseApi(APIView):
    @extend_schema(request=ChannelsSerializer, responses={200: FlowSerializer}, parameters=VERSION_PARAMS)
    def post(self, request, id, version):
        workflow = workflow_get_for_user(user=request.user, workflow_id=id, roles=CAN_EDIT)
        serializer = ChannelsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        flow = services.flow_release(
            flow=_flow(workflow, version),
            channels=serializer.validated_data.get("channels", list(services.DEFAULT_CHANNELS)),
            user=request.user,
        )
        return Response(FlowSerializer(flow).data)


class FlowWithdrawApi(APIView):
    @extend_schema(request=ChannelsSerializer, responses={200: FlowSerializer}, parameters=VERSION_PARAMS)
    def post(self, request, id, version):
        workflow = workflow_get_for_user(user=request.user, workflow_id=id, roles=CAN_EDIT)
        serializer = ChannelsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        flow = services.flow_withdraw(
            flow=_flow(workflow, version), channels=serializer.validated_data.get("channels"), user=request.user
        )
        return Response(FlowSerializer(flow).data)
