from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import viewsets

from .models import AuditLog
from .selectors import audit_logs_for_actor
from .serializers import AuditLogSerializer


class AuditLogFilter(filters.FilterSet):
    created_after = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AuditLog
        fields = ["action", "target_type", "target_id"]


@extend_schema_view(
    list=extend_schema(summary="List what you changed: your audit trail"),
    retrieve=extend_schema(summary="Show one row of your audit trail"),
)
class AuditLogViewSet(viewsets.ReadOnlyModelViewSet):
    """Changes of access and credentials you made. Rows never carry a secret."""

    queryset = AuditLog.objects.none()
    serializer_class = AuditLogSerializer
    filterset_class = AuditLogFilter
    search_fields = ["target_repr", "action"]
    ordering_fields = ["created_at"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return AuditLog.objects.none()
        return audit_logs_for_actor(user=self.request.user)
