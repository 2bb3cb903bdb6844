from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from config.api.root import ApiRootView

api_v1 = [
    path("", ApiRootView.as_view(), name="api-root"),
    path("auth/", include("accounts.urls")),
    path("app/", include("licensing.app_urls")),
    path("", include("workflows.urls")),
    path("", include("workflows.releases.urls")),
    path("", include("agents.urls")),
    path("", include("templates.urls")),
    path("", include("licensing.urls")),
    path("", include("history.urls")),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("", include("console.urls")),
]
