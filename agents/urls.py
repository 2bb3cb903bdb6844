from django.urls import path
from rest_framework.routers import SimpleRouter

from . import api

router = SimpleRouter(use_regex_path=False)
router.register("providers", api.ProviderViewSet, basename="provider")
router.register("tools", api.ToolViewSet, basename="tool")
router.register("agents", api.AgentViewSet, basename="agent")
router.register("sessions", api.SessionViewSet, basename="session")

urlpatterns = [
    *router.urls,
    path("sessions/<uuid:session_id>/messages/", api.SessionMessageListApi.as_view(), name="session-messages"),
    path("sessions/<uuid:session_id>/chat/", api.SessionChatApi.as_view(), name="session-chat"),
    path("sessions/<uuid:session_id>/workflows/", api.SessionWorkflowListApi.as_view(), name="session-workflows"),
    path(
        "sessions/<uuid:session_id>/workflows/current/",
        api.SessionWorkflowCurrentApi.as_view(),
        name="session-workflow-current",
    ),
    path(
        "sessions/<uuid:session_id>/workflows/previous/",
        api.SessionWorkflowPreviousApi.as_view(),
        name="session-workflow-previous",
    ),
    path(
        "sessions/<uuid:session_id>/workflows/<int:version>/",
        api.SessionWorkflowDetailApi.as_view(),
        name="session-workflow-detail",
    ),
    path(
        "sessions/<uuid:session_id>/workflows/<int:version>/revert/",
        api.SessionWorkflowRevertApi.as_view(),
        name="session-workflow-revert",
    ),
]
