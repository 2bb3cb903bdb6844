"""Operators see failure policies, their deliveries and the error workflow runs, and switch them off.

Policies are set through the API by the workflows' editors; here only ``enabled`` changes (the
actions, or the form), through the services so that every process sees it at once. The webhook
secret is never shown.
"""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import Delivery, ErrorWorkflowRun, FailurePolicy
from .services import deliveries_cancel, policies_enabled_set, policy_delete


@admin.register(FailurePolicy)
class FailurePolicyAdmin(admin.ModelAdmin):
    list_display = (
        "workflow",
        "enabled",
        "error_workflow",
        "on_failed",
        "on_succeeded",
        "on_cancelled",
        "webhook_url",
        "updated_at",
    )
    list_filter = ("enabled", "on_failed", "on_succeeded", "on_cancelled")
    search_fields = ("workflow__name", "webhook_url")
    list_select_related = ("workflow", "error_workflow")
    fields = (
        "workflow",
        "enabled",
        "error_workflow",
        "on_failed",
        "on_succeeded",
        "on_cancelled",
        "webhook_url",
        "emails",
        "updated_by",
        "created_at",
        "updated_at",
    )
    readonly_fields = tuple(name for name in fields if name != "enabled")
    actions = ("switch_on", "switch_off")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: FailurePolicy, form, change: bool) -> None:
        if "enabled" in form.changed_data:
            policies_enabled_set(policy_ids=[obj.pk], enabled=obj.enabled, actor=request.user)

    def delete_model(self, request: HttpRequest, obj: FailurePolicy) -> None:
        policy_delete(workflow=obj.workflow, user=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[FailurePolicy]) -> None:
        for policy in queryset.select_related("workflow"):
            policy_delete(workflow=policy.workflow, user=request.user)

    @admin.action(description="Switch the selected policies on", permissions=["change"])
    def switch_on(self, request: HttpRequest, queryset: QuerySet[FailurePolicy]) -> None:
        changed = policies_enabled_set(
            policy_ids=list(queryset.values_list("pk", flat=True)), enabled=True, actor=request.user
        )
        self.message_user(request, f"{changed} policy(ies) switched on.", messages.SUCCESS)

    @admin.action(description="Switch the selected policies off", permissions=["change"])
    def switch_off(self, request: HttpRequest, queryset: QuerySet[FailurePolicy]) -> None:
        changed = policies_enabled_set(
            policy_ids=list(queryset.values_list("pk", flat=True)), enabled=False, actor=request.user
        )
        self.message_user(request, f"{changed} policy(ies) switched off.", messages.SUCCESS)


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "run", "event", "channel", "target", "status", "attempts", "response_status")
    list_filter = ("status", "channel", "event")
    search_fields = ("target", "run__id")
    list_select_related = ("run",)
    readonly_fields = (
        "policy",
        "run",
        "event",
        "channel",
        "target",
        "status",
        "attempts",
        "next_attempt_at",
        "claimed_until",
        "response_status",
        "last_error",
        "created_at",
        "updated_at",
        "delivered_at",
    )
    actions = ("cancel_pending",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Cancel the selected deliveries still waiting to be sent", permissions=["change"])
    def cancel_pending(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        cancelled = deliveries_cancel(delivery_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{cancelled} delivery(ies) cancelled.", messages.SUCCESS)


@admin.register(ErrorWorkflowRun)
class ErrorWorkflowRunAdmin(admin.ModelAdmin):
    list_display = ("created_at", "failed_run", "error_workflow", "error_run", "not_started_reason")
    list_select_related = ("error_workflow",)
    search_fields = ("failed_run__id", "error_run__id")
    readonly_fields = ("failed_run", "error_workflow", "error_run", "not_started_reason", "created_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
