"""Operators' pages for webhook triggers: listed, switched off or on, their deliveries read.

A trigger's secret and token are on no page (the token is not even stored, only its hash):
they are shown once, by the API that creates or rotates the trigger. Changes go through the
services, so that each writes its audit row.
"""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import HookDelivery, Trigger
from .services import trigger_set_enabled, trigger_update

_EDITABLE_FIELDS = ("enabled", "rate_limit_per_minute")


@admin.register(Trigger)
class TriggerAdmin(admin.ModelAdmin):
    list_display = ("__str__", "workflow", "kind", "enabled", "version", "wait", "has_secret", "created_at")
    list_filter = ("kind", "enabled", "wait")
    search_fields = ("name", "token_prefix", "workflow__name")
    list_select_related = ("workflow",)
    fields = (
        "workflow",
        "kind",
        "name",
        *_EDITABLE_FIELDS,
        "token_prefix",
        "has_secret",
        "version",
        "input_mapping",
        "wait",
        "wait_timeout_s",
        "response_template",
        "response_content_type",
        "created_by",
        "created_at",
        "updated_at",
        "rotated_at",
    )
    readonly_fields = tuple(field for field in fields if field not in _EDITABLE_FIELDS)
    actions = ("enable_triggers", "disable_triggers")

    @admin.display(boolean=True, description="Signed")
    def has_secret(self, trigger: Trigger) -> bool:
        return trigger.has_secret

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a token is shown once, by the API that creates the trigger

    def save_model(self, request: HttpRequest, obj: Trigger, form, change: bool) -> None:
        stored = Trigger.objects.get(pk=obj.pk)
        changes = {name: form.cleaned_data[name] for name in form.changed_data if name in _EDITABLE_FIELDS}
        trigger_update(trigger=stored, user=request.user, **changes)
        obj.refresh_from_db()

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet[Trigger], enabled: bool) -> None:
        for trigger in queryset:
            trigger_set_enabled(trigger=trigger, enabled=enabled, user=request.user)
        state = "switched on" if enabled else "switched off"
        self.message_user(request, f"{queryset.count()} trigger(s) {state}.", messages.SUCCESS)

    @admin.action(description="Switch the selected triggers on", permissions=["change"])
    def enable_triggers(self, request: HttpRequest, queryset: QuerySet[Trigger]) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Switch the selected triggers off", permissions=["change"])
    def disable_triggers(self, request: HttpRequest, queryset: QuerySet[Trigger]) -> None:
        self._set_enabled(request, queryset, False)


@admin.register(HookDelivery)
class HookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("id", "trigger", "run", "idempotency_key", "response_status", "created_at")
    list_filter = ("response_status",)
    search_fields = ("idempotency_key", "run__id")
    list_select_related = ("trigger", "run")
    date_hierarchy = "created_at"
    readonly_fields = (
        "trigger",
        "run",
        "idempotency_key",
        "response_status",
        "response_content_type",
        "response_body",
        "created_at",
    )
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
