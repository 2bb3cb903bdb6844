"""Start, cancel and validate: the run API's writes. Reading runs is ``workflows.api.RunViewSet``."""

from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api.parsers import StrictJSONParser
from config.api.responses import RUN_QUOTA_429
from config.api.serializers import StrictSerializer
from config.errors import Forbidden, NotFound
from workflows.engine import validate_graph
from workflows.permissions import CAN_RUN, CAN_VIEW
from workflows.selectors import runs_for_user, workflow_get_for_user, workflow_graph
from workflows.serializers import RunSerializer, finished_run_data
from workflows.services import GraphInvalid

from . import large_outputs, retry, services
from .serializers import (
    GraphInvalidSerializer,
    GraphValidateSerializer,
    GraphValidSerializer,
    RunCancelledSerializer,
    RunCancelSerializer,
    RunStartedSerializer,
    RunStartSerializer,
)


def _run_links(request, run) -> dict:
    scheme = "wss" if request.is_secure() else "ws"
    return {
        "id": run.pk,
        "status": run.status,
        "url": request.build_absolute_uri(reverse("run-detail", kwargs={"id": run.pk})),
        "ws_url": f"{scheme}://{request.get_host()}/ws/runs/{run.pk}/",
    }


class _JsonApi(APIView):
    """These endpoints take JSON bodies only (a multipart body cannot carry `inputs` or a graph)."""

    parser_classes = [StrictJSONParser]


class WorkflowRunStartApi(_JsonApi):
    @extend_schema(
        operation_id="workflow_run_start",
        request=RunStartSerializer,
        responses={
            202: RunStartedSerializer,
            200: OpenApiResponse(RunSerializer, description="With `wait`: the run, finished in time."),
            429: RUN_QUOTA_429,
        },
        tags=["runs"],
    )
    def post(self, request, id):
        """Start a run of the workflow's draft. 202 at once; with `wait`, 200 and the run if it ends in time."""
        workflow = workflow_get_for_user(user=request.user, workflow_id=id, roles=CAN_RUN)
        serializer = RunStartSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        wait = serializer.validated_data["wait"]
        run = services.run_start(
            workflow=workflow, user=request.user, inputs=serializer.validated_data["inputs"], in_request=True
        )
        if wait:
            finished = services.run_wait_finished(run=run, runs=runs_for_user(user=request.user))
            if finished is not None:
                return Response(finished_run_data(finished), status=status.HTTP_200_OK)
            run.refresh_from_db(fields=["status"])  # still running: say so
        return Response(RunStartedSerializer(_run_links(request, run)).data, status=status.HTTP_202_ACCEPTED)


class RunCancelApi(_JsonApi):
    @extend_schema(
        operation_id="run_cancel",
        request=RunCancelSerializer,
        responses={202: RunCancelledSerializer},
        tags=["runs"],
    )
    def post(self, request, id):
        """Cancel the run: a pending run ends now, a running one stops within seconds."""
        run = runs_for_user(user=request.user).filter(pk=id).first()
        if run is None:
            raise NotFound("No such run.")
        try:
            workflow_get_for_user(user=request.user, workflow_id=run.workflow_id, roles=CAN_RUN)
        except Forbidden:
            raise Forbidden("Your role does not allow cancelling runs of this workflow.") from None
        RunCancelSerializer(data=request.data).is_valid(raise_exception=True)
        run = services.run_cancel(run=run, user=request.user)
        body = {"id": run.pk, "status": run.status, "cancel_requested": run.cancel_requested}
        return Response(RunCancelledSerializer(body).data, status=status.HTTP_202_ACCEPTED)


class RunRetrySerializer(StrictSerializer):
    graph = serializers.ChoiceField(
        choices=retry.RETRY_GRAPHS,
        required=False,
        default=retry.RETRY_GRAPH_SAME,
        help_text="`same`: the failed run's own graph and version; `current`: the workflow's draft, if the nodes "
        "that succeeded are unchanged in it.",
    )


class RunRetriedSerializer(RunStartedSerializer):
    retry_of = serializers.UUIDField(help_text="The run retried.")


class RunRetryConflictSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField(help_text="`run_not_retryable` or `retry_graph_changed`.")
    field = serializers.CharField(required=False)
    nodes = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="`retry_graph_changed`: the succeeded nodes that differ (`each/call`: a node of iteration `each`).",
    )


class RunRetryApi(_JsonApi):
    @extend_schema(
        operation_id="run_retry",
        request=RunRetrySerializer,
        responses={
            202: RunRetriedSerializer,
            400: OpenApiResponse(GraphInvalidSerializer, description="`current`: the draft is not valid."),
            409: RunRetryConflictSerializer,
            429: RUN_QUOTA_429,
        },
        tags=["runs"],
    )
    def post(self, request, id):
        """Retry a failed or cancelled run from its failure: a new run (`retry_of`) that reuses the outputs
        of the nodes that succeeded, without executing them again, and executes the rest."""
        run = runs_for_user(user=request.user).filter(pk=id).first()
        if run is None:
            raise NotFound("No such run.")
        try:
            workflow = workflow_get_for_user(user=request.user, workflow_id=run.workflow_id, roles=CAN_RUN)
        except Forbidden:
            raise Forbidden("Your role does not allow retrying runs of this workflow.") from None
        serializer = RunRetrySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        new = retry.run_retry(run=run, workflow=workflow, user=request.user, graph=serializer.validated_data["graph"])
        body = {**_run_links(request, new), "retry_of": run.pk}
        return Response(RunRetriedSerializer(body).data, status=status.HTTP_202_ACCEPTED)


class WorkflowValidateApi(_JsonApi):
    @extend_schema(
        operation_id="workflow_validate",
        request=GraphValidateSerializer,
        responses={200: GraphValidSerializer, 400: GraphInvalidSerializer},
        tags=["workflows"],
    )
    def post(self, request, id):
        """Check the workflow's draft (or the `graph` given) as a run would: every problem at once."""
        workflow = workflow_get_for_user(user=request.user, workflow_id=id, roles=CAN_VIEW)
        serializer = GraphValidateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        graph = serializer.validated_data.get("graph")
        issues = validate_graph(workflow_graph(workflow=workflow) if graph is None else graph)
        if issues:
            raise GraphInvalid(issues)
        return Response(GraphValidSerializer({"valid": True}).data)


class RunStoredOutputApi(APIView):
    @extend_schema(
        operation_id="run_stored_output",
        responses={
            (200, "application/json"): OpenApiResponse(description="The output's JSON, streamed."),
            404: OpenApiResponse(description="No such run, or `output_not_stored`: the output is gone."),
            503: OpenApiResponse(description="`output_storage_unavailable`: try again later."),
        },
        tags=["runs"],
    )
    def get(self, request, id, key):
        """Download an output kept in object storage: the `url` of a `{"$stored": ...}` reference in a run's
        `outputs` or a task's `output` (too large to be inlined)."""
        run_id = runs_for_user(user=request.user).filter(pk=id).values_list("pk", flat=True).first()
        if run_id is None:
            raise NotFound("No such run.")
        return large_outputs.output_response(request, run_id=run_id, key=key)
