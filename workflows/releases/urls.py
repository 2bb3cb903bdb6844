from django.urls import path

from . import api

urlpatterns = [
    path("workflows/<uuid:id>/publish/", api.WorkflowPublishApi.as_view(), name="workflow-publish"),
    path("workflows/<uuid:id>/versions/<str:version>/", api.FlowDetailApi.as_view(), name="flow-detail"),
    path("workflows/<uuid:id>/versions/<str:version>/diff/", api.FlowDiffApi.as_view(), name="flow-diff"),
    path("workflows/<uuid:id>/versions/<str:version>/rollback/", api.FlowRollbackApi.as_view(), name="flow-rollback"),
    path("workflows/<uuid:id>/versions/<str:version>/release/", api.FlowReleaseApi.as_view(), name="flow-release"),
    path("workflows/<uuid:id>/versions/<str:version>/withdraw/", api.FlowWithdrawApi.as_view(), name="flow-withdraw"),
]
