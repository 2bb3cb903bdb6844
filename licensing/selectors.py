"""Reads of apps and licenses, scoped to who is asking."""

from django.db.models import Q, QuerySet

from workflows.models import Workflow, WorkflowMemberRole

from .models import App, License


def apps_for_user(*, user) -> QuerySet[App]:
    return App.objects.filter(owner=user).select_related("owner", "update_by")


def licenses_for_user(*, user) -> QuerySet[License]:
    """Licenses of the apps the user owns."""
    return License.objects.filter(app__owner=user).select_related("app", "group").order_by("-create_at")


def workflows_owned_by(*, user) -> QuerySet[Workflow]:
    """Workflows the user may license to an app: their own, or those they hold the owner role on."""
    owned = Q(owner=user) | Q(members__user=user, members__role=WorkflowMemberRole.OWNER)
    return Workflow.objects.filter(pk__in=Workflow.objects.filter(owned).values("pk"))
