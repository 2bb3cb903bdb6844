from django.urls import path

from . import app_api

urlpatterns = [
    path("workflows/<uuid:id>/runs/", app_api.AppWorkflowRunApi.as_view(), name="app-workflow-runs"),
    path("runs/<uuid:id>/", app_api.AppRunDetailApi.as_view(), name="app-run-detail"),
    path("runs/<uuid:id>/outputs/<str:key>/", app_api.AppRunStoredOutputApi.as_view(), name="app-run-stored-output"),
    path("chats/<str:chat_id>/history/", app_api.AppChatHistoryApi.as_view(), name="app-chat-history"),
]
