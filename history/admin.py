"""Operators' read-only pages over what happened: node history, the audit trail and usage."""

from django.contrib import admin
from django.http import HttpRequest

from .models import AuditLog, UsageMetric, WorkflowNodeHistory
from .selectors import usage_grand_total, usage_totals_by_app, usage_totals_by_user


class ReadOnlyAdmin(admin.ModelAdmin):
    """A record of the past: viewable, never added, edited or deleted by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(WorkflowNodeHistory)
class WorkflowNodeHistoryAdmin(ReadOnlyAdmin):
    list_display = ("create_time", "flow", "app", "node_id", "chat_id", "uid")
    list_filter = ("node_id", "create_time")
    search_fields = ("node_id", "chat_id", "uid")
    list_select_related = ("flow", "app")
    date_hierarchy = "create_time"


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor_repr", "action", "target_type", "target_id", "target_repr")
    list_filter = ("action", "target_type", "created_at")
    search_fields = ("actor_repr", "action", "target_id", "target_repr")
    date_hierarchy = "created_at"


@admin.register(UsageMetric)
class UsageMetricAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "user",
        "app",
        "workflow",
        "provider",
        "model",
        "tokens_in",
        "tokens_out",
        "node_count",
        "duration_ms",
    )
    list_filter = ("provider", "model", "created_at")
    search_fields = ("user__username", "app__name", "app__alias_id", "workflow__name", "model")
    list_select_related = ("user", "app", "workflow")
    date_hierarchy = "created_at"
    change_list_template = "admin/history/usagemetric/change_list.html"
    totals_shown = 20

    def changelist_view(self, request: HttpRequest, extra_context=None):
        response = super().changelist_view(request, extra_context=extra_context)
        context = getattr(response, "context_data", None)
        if context is None or "cl" not in context:
            return response
        # The totals follow the filters and the search the operator applied to the list.
        metrics = context["cl"].queryset
        context["usage_total"] = usage_grand_total(metrics=metrics)
        context["usage_by_user"] = usage_totals_by_user(metrics=metrics)[: self.totals_shown]
        context["usage_by_app"] = usage_totals_by_app(metrics=metrics)[: self.totals_shown]
        return response
