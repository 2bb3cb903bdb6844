from django.urls import path

from . import api, export

urlpatterns = [
    path("workflows/<uuid:id>/runs/", api.WorkflowRunStartApi.as_view(), name="workflow-run-start"),
    path("workflows/<uuid:id>/validate/", api.WorkflowValidateApi.as_view(), name="workflow-validate"),
    path("runs/export/", export.RunExportApi.as_view(), name="runs-export"),
    path("runs/<uuid:id>/cancel/", api.RunCancelApi.as_view(), name="run-cancel"),
    path("runs/<uuid:id>/retry/", api.RunRetryApi.as_view(), name="run-retry"),
    path("runs/<uuid:id>/outputs/<str:key>/", api.RunStoredOutputApi.as_view(), name="run-stored-output"),
]
