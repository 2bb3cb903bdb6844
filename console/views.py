"""The console's pages. Each is a shell that its script fills from the API (session auth).

The pages only check that the object is visible to the user (another user's workflow or run is
a 404, as in the API); everything else is read and written through ``/api/v1/``.
"""

from functools import partial

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from workflows.engine import dsl_schema as engine_dsl_schema
from workflows.selectors import runs_for_user, workflows_for_user

console_login_required = partial(login_required, login_url="console:login")


def _page(request: HttpRequest, *, page: str, title: str, **context) -> HttpResponse:
    """The page's own template, ``console/<page>.html``; ``page`` also picks its script."""
    return render(request, f"console/{page}.html", {"page": page, "title": title, **context})


@console_login_required()
def workflow_list(request: HttpRequest) -> HttpResponse:
    return _page(request, page="workflows", title="Workflows")


@console_login_required()
def workflow_detail(request: HttpRequest, workflow_id) -> HttpResponse:
    workflow = workflows_for_user(user=request.user).filter(pk=workflow_id).only("pk", "name").first()
    if workflow is None:
        raise Http404("No such workflow.")
    return _page(request, page="workflow", title=workflow.name, workflow_id=str(workflow.pk))


@console_login_required()
def run_detail(request: HttpRequest, run_id) -> HttpResponse:
    # The run's own graph (frozen when it started), which the run API does not show.
    run = runs_for_user(user=request.user).filter(pk=run_id).select_related("workflow").first()
    if run is None:
        raise Http404("No such run.")
    return _page(
        request,
        page="run",
        title=f"Run of {run.workflow.name}",
        run_id=str(run.pk),
        workflow_id=str(run.workflow_id),
        workflow_name=run.workflow.name,
        run_graph=run.graph or {"nodes": [], "edges": []},
    )


@console_login_required()
def template_list(request: HttpRequest) -> HttpResponse:
    return _page(request, page="templates", title="Templates")


@console_login_required()
def provider_list(request: HttpRequest) -> HttpResponse:
    return _page(request, page="providers", title="LLM providers")


@console_login_required()
def app_list(request: HttpRequest) -> HttpResponse:
    return _page(request, page="apps", title="Apps and licenses")


def dsl_schema(request: HttpRequest) -> JsonResponse:
    """The DSL's JSON Schema, which the graph editor checks a graph with before it is sent."""
    return JsonResponse(engine_dsl_schema())
