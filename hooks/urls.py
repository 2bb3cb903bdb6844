from django.urls import path

from . import api

urlpatterns = [
    path("workflows/<uuid:id>/triggers/", api.TriggerListApi.as_view(), name="workflow-triggers"),
    path(
        "workflows/<uuid:id>/triggers/<uuid:trigger_id>/",
        api.TriggerDetailApi.as_view(),
        name="workflow-trigger-detail",
    ),
    path(
        "workflows/<uuid:id>/triggers/<uuid:trigger_id>/rotate/",
        api.TriggerRotateApi.as_view(),
        name="workflow-trigger-rotate",
    ),
    path("hooks/<str:token>/", api.HookApi.as_view(), name="hook"),
]
