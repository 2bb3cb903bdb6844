from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

COLLECTIONS = [
    "workflows",
    "runs",
    "schedules",
    "agents",
    "tools",
    "providers",
    "templates",
    "sessions",
    "apps",
    "licenses",
    "audit-logs",
]


class ApiRootView(APIView):
    """Where to start: the collections of the API, its schema and its documentation."""

    permission_classes = [AllowAny]

    @extend_schema(exclude=True)
    def get(self, request):
        base = request.build_absolute_uri("/api/v1/")
        return Response(
            {
                "collections": {name: f"{base}{name}/" for name in COLLECTIONS},
                "auth_token": f"{base}auth/token/",
                "schema": request.build_absolute_uri(reverse("schema")),
                "docs": request.build_absolute_uri(reverse("swagger-ui")),
            }
        )
