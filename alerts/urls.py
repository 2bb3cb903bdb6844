from django.urls import path

from . import api

urlpatterns = [
    path("workflows/<uuid:id>/failure-policy/", api.FailurePolicyApi.as_view(), name="workflow-failure-policy"),
    path("workflows/<uuid:id>/notifications/", api.NotificationListApi.as_view(), name="workflow-notifications"),
]
