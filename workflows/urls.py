from django.urls import include, path
from rest_framework.routers import SimpleRouter

from . import api, node_types

router = SimpleRouter(use_regex_path=False)
router.register("workflows", api.WorkflowViewSet, basename="workflow")
router.register("runs", api.RunViewSet, basename="run")
router.register("schedules", api.ScheduleViewSet, basename="schedule")

urlpatterns = [
    path("", include("workflows.execution.urls")),
    path("node-types/", node_types.NodeTypeListApi.as_view(), name="node-types"),
    path("workflows/<uuid:id>/nodes/<str:node_id>/try/", node_types.NodeTryApi.as_view(), name="workflow-node-try"),
    path("workflows/<uuid:id>/members/", api.WorkflowMemberListApi.as_view(), name="workflow-members"),
    path(
        "workflows/<uuid:id>/members/<int:user_id>/",
        api.WorkflowMemberDetailApi.as_view(),
        name="workflow-member-detail",
    ),
    *router.urls,
]
