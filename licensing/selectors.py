"""Reads of apps and licenses, scoped to who is asking."""

import uuid

from django.db.models import Q, QuerySet

from history.models import WorkflowNodeHistory
from workflows.models import Workflow, WorkflowMemberRole

from .models import App, EnabledStatus, License


def apps_for_user(*, user) -> QuerySet[App]:
    return App.objects.filter(owner=user).select_related("owner", "update_by")


def licenses_for_user(*, user) -> QuerySet[License]:
    """Licenses of the apps the user owns."""
    return License.objects.filter(app__owner=user).select_related("app", "group").order_by("-create_at")


def workflows_owned_by(*, user) -> QuerySet[Workflow]:
    """Workflows the user may license to an app: their own, or those they hold the owner role on."""
    owned = Q(owner=user) | Q(members__user=user, members__role=WorkflowMemberRole.OWNER)
    return Workflow.objects.filter(pk__in=Workflow.objects.filter(owned).values("pk"))


def memory_rounds_for_app(
    *, app, chat_id: str, workflow: uuid.UUID | None = None, node: str | None = None
) -> QuerySet[WorkflowNodeHistory]:
    """The app's rounds of ``chat_id``, oldest first, of workflows it holds an enabled license for."""
    licensed = License.objects.filter(app=app, status=EnabledStatus.ENABLED).values("group_id")
    rounds = WorkflowNodeHistory.objects.filter(app=app, chat_id=chat_id, flow__workflow__in=licensed)
    if workflow is not None:
        rounds = rounds.filter(flow__workflow=workflow)
    if node is not None:
        rounds = rounds.filter(node_id=node)
    return rounds.select_related("flow").order_by("create_time", "id")
