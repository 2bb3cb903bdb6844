"""Websocket routes of every app, gathered in one place."""

from django.urls import path

from workflows import consumers

websocket_urlpatterns: list = [
    path("ws/runs/<uuid:run_id>/", consumers.RunConsumer.as_asgi()),
    path("ws/workflows/<uuid:workflow_id>/runs/", consumers.WorkflowRunsConsumer.as_asgi()),
]
