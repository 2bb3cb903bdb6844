from django.urls import path

from .api import MeApi, TokenCreateApi

urlpatterns = [
    path("token/", TokenCreateApi.as_view(), name="auth-token"),
    path("me/", MeApi.as_view(), name="auth-me"),
]
