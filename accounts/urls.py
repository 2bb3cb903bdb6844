from django.urls import path

from .api import LogoutAllApi, LogoutApi, MeApi, TokenCreateApi, WsTicketApi

urlpatterns = [
    path("token/", TokenCreateApi.as_view(), name="auth-token"),
    path("logout/", LogoutApi.as_view(), name="auth-logout"),
    path("logout-all/", LogoutAllApi.as_view(), name="auth-logout-all"),
    path("ws-ticket/", WsTicketApi.as_view(), name="auth-ws-ticket"),
    path("me/", MeApi.as_view(), name="auth-me"),
]
