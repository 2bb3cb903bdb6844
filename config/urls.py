from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from config.api.root import ApiRootView

api_v1 = [
    path("", ApiRootView.as_view(), name="api-root"),
    path("auth/", include("accounts.urls")),
    path("app/", include("licensing.app_urls")),
    path("", include("workflows.urls")),
    path("", include("alerts.urls")),
    path("", include("workflows.releases.urls")),
    path("", include("agents.urls")),
    path("", include("templates.urls")),
    path("", include("licensing.urls")),
    path("", include("history.urls")),
    path("", include("hooks.urls")),
]

# Under /api/, Django's own 400 (a body too large for request.body...) answers the API's JSON error.
handler400 = "config.api.exceptions.bad_request"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The docs pages run no inline script (the Content-Security-Policy allows none without a nonce):
    # Swagger UI's start-up script comes from /api/docs/?script, Redoc's page is config/templates/api/.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema", template_name="api/redoc.html"), name="redoc"),
    path("", include("console.urls")),
]
