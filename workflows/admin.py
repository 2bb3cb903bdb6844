"""Operators' pages for workflows, their versions, runs and schedules.

The draft graph (nodes, edges) is shown but changed only through the API, where it is validated
as a whole. Runs, tasks, events, versions and snapshots are records: viewable, never edited.
Member changes go through the services so that each writes its audit row.
"""

from django import forms
from django.contrib import admin, messages
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest

from config.errors import Conflict, InvalidInput, WeftError

from .execution.node_cache import node_cache_flush
from .models import (
    Edge,
    Node,
    Run,
    RunEvent,
    ScheduledWorkflow,
    Task,
    Workflow,
    WorkflowMember,
    WorkflowSnapshot,
    WorkflowVersion,
)
from .permissions import CAN_RUN
from .schedules.services import (
    cron_check,
    schedule_create,
    schedule_delete,
    schedule_pause,
    schedule_resume,
    schedule_run_now,
    schedule_update,
    timezone_check,
)
from .selectors import workflow_role_for_user
from .services import workflow_delete, workflow_member_remove, workflow_member_set, workflow_retries_set


class ViewOnlyMixin:
    """Shown to operators, never added or edited by hand."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class RecordAdmin(ViewOnlyMixin, admin.ModelAdmin):
    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class NodeInline(ViewOnlyMixin, admin.TabularInline):
    model = Node
    fields = ("key", "type", "name", "config", "error_policy", "position_x", "position_y")
    extra = 0
    can_delete = False
    show_change_link = False


class EdgeInline(ViewOnlyMixin, admin.TabularInline):
    model = Edge
    fields = ("source_node", "target_node", "source_handle")
    extra = 0
    can_delete = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("source_node", "target_node")


class MemberFormSet(BaseInlineFormSet):
    def clean(self):
        super().clean()
        for form in self.forms:
            user = form.cleaned_data.get("user") if hasattr(form, "cleaned_data") else None
            if user is not None and user.pk == self.instance.owner_id:
                form.add_error("user", "The owner needs no member row: they are always the owner.")


class WorkflowMemberInline(admin.TabularInline):
    model = WorkflowMember
    formset = MemberFormSet
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)
    raw_id_fields = ("user",)
    extra = 0


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "status", "source", "retries_enabled", "updated_at")
    list_filter = ("status", "source", "retries_enabled")
    actions = ("retries_disable", "retries_enable", "node_cache_flush")
    search_fields = ("name", "owner__username", "=id")
    list_select_related = ("owner",)
    raw_id_fields = ("owner", "source_template")
    fields = (
        "id",
        "name",
        "description",
        "owner",
        "status",
        "source",
        "source_id",
        "source_template",
        "retries_enabled",
        "created_at",
        "updated_at",
    )
    readonly_fields = ("id", "retries_enabled", "created_at", "updated_at")
    inlines = (WorkflowMemberInline, NodeInline, EdgeInline)

    @admin.action(description="Switch off retries from failure", permissions=["change"])
    def retries_disable(self, request: HttpRequest, queryset) -> None:
        changed = workflow_retries_set(workflows=queryset, enabled=False, operator=request.user)
        self.message_user(request, f"Retries switched off for {changed} workflow(s).")

    @admin.action(description="Switch on retries from failure", permissions=["change"])
    def retries_enable(self, request: HttpRequest, queryset) -> None:
        changed = workflow_retries_set(workflows=queryset, enabled=True, operator=request.user)
        self.message_user(request, f"Retries switched on for {changed} workflow(s).")

    @admin.action(description="Flush cached node results", permissions=["change"])
    def node_cache_flush(self, request: HttpRequest, queryset) -> None:
        flushed = node_cache_flush(workflows=queryset, operator=request.user)
        self.message_user(request, f"Cached node results flushed for {flushed} workflow(s).")

    date_hierarchy = "updated_at"

    def delete_model(self, request: HttpRequest, obj: Workflow) -> None:
        # Through the service: its audit row, no delete under a live run.
        try:
            workflow_delete(workflow=obj, user=request.user, as_operator=True)
        except Conflict as error:
            self.message_user(request, f"{obj}: {error.message}", level="error")

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for workflow in queryset:
            self.delete_model(request, workflow)

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        if formset.model is not WorkflowMember:
            super().save_formset(request, form, formset, change)
            return
        workflow = form.instance
        members = formset.save(commit=False)
        for member in formset.deleted_objects:
            workflow_member_remove(workflow=workflow, actor=request.user, user=member.user, as_operator=True)
        for member, changed in formset.changed_objects:
            if "user" in changed:
                # The row now names someone else: the first user loses access, the new one gains it.
                previous = WorkflowMember.objects.select_related("user").get(pk=member.pk)
                workflow_member_remove(workflow=workflow, actor=request.user, user=previous.user, as_operator=True)
        for member in members:
            try:
                workflow_member_set(
                    workflow=workflow, actor=request.user, user=member.user, role=member.role, as_operator=True
                )
            except InvalidInput as error:
                self.message_user(request, f"{member.user}: {error.message}", level="error")


@admin.register(WorkflowVersion)
class FlowAdmin(RecordAdmin):
    list_display = ("workflow", "version", "name", "release_status", "create_by", "create_at")
    list_filter = ("release_status", "create_at")
    search_fields = ("name", "version", "workflow__name", "=workflow__id")
    list_select_related = ("workflow", "create_by")
    date_hierarchy = "create_at"


class TaskInline(ViewOnlyMixin, admin.TabularInline):
    model = Task
    fields = ("node_id", "node_type", "scope", "status", "attempt", "started_at", "finished_at", "error", "output_data")
    extra = 0
    can_delete = False
    ordering = ("created_at",)


@admin.register(Run)
class RunAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ("id", "workflow", "status", "trigger", "version", "created_at", "started_at", "finished_at")
    list_filter = ("status", "trigger", ("retry_of", admin.EmptyFieldListFilter), "created_at")
    search_fields = ("=id", "workflow__name", "=workflow__id", "chat_id")
    list_select_related = ("workflow",)
    date_hierarchy = "created_at"
    inlines = (TaskInline,)
    fields = (
        "id",
        "workflow",
        "flow",
        "version",
        "status",
        "trigger",
        "retry_of",
        "triggered_by",
        "app",
        "schedule",
        "scheduled_tick",
        "agent",
        "inputs",
        "outputs",
        "error",
        "chat_id",
        "cancel_requested",
        "lease_owner",
        "lease_expires_at",
        "dispatch_attempts",
        "last_seq",
        "trace_id",
        "created_at",
        "started_at",
        "finished_at",
        "updated_at",
    )


class ScheduledWorkflowForm(forms.ModelForm):
    class Meta:
        model = ScheduledWorkflow
        fields = (
            "workflow",
            "owner",
            "flow",
            "name",
            "cron_expression",
            "timezone",
            "inputs",
            "max_retries",
        )

    def clean_cron_expression(self) -> str:
        try:
            return cron_check(self.cleaned_data["cron_expression"])
        except InvalidInput as error:
            raise forms.ValidationError(error.message) from None

    def clean_timezone(self) -> str:
        try:
            return timezone_check(self.cleaned_data["timezone"])
        except InvalidInput as error:
            raise forms.ValidationError(error.message) from None

    def clean(self):
        cleaned = super().clean()
        flow, workflow = cleaned.get("flow"), cleaned.get("workflow")
        if flow is not None and workflow is not None and flow.workflow_id != workflow.pk:
            self.add_error("flow", "This version belongs to another workflow.")
        owner = cleaned.get("owner")
        if (
            owner is not None
            and workflow is not None
            and workflow_role_for_user(workflow=workflow, user=owner) not in CAN_RUN
        ):
            self.add_error("owner", "The schedule runs as its owner, who cannot run this workflow.")
        return cleaned


#: The admin form's fields and the schedule services' arguments they are.
_SCHEDULE_SERVICE_ARGUMENTS = {
    "workflow": "workflow",
    "owner": "owner",
    "name": "name",
    "cron_expression": "cron",
    "timezone": "timezone_name",
    "inputs": "inputs",
    "max_retries": "max_retries",
    "flow": "version",
}


def _schedule_service_values(cleaned: dict, *, fields: list[str] | None) -> dict:
    """The schedule services' arguments from the admin form's ``fields`` (all of them when None)."""
    names = _SCHEDULE_SERVICE_ARGUMENTS if fields is None else [f for f in fields if f in _SCHEDULE_SERVICE_ARGUMENTS]
    values = {_SCHEDULE_SERVICE_ARGUMENTS[name]: cleaned[name] for name in names}
    if "version" in values:
        values["version"] = values["version"].version if values["version"] is not None else None
    return values


@admin.register(ScheduledWorkflow)
class ScheduledWorkflowAdmin(admin.ModelAdmin):
    """Status changes go through the pause/resume actions, so that each is audited."""

    form = ScheduledWorkflowForm
    list_display = (
        "workflow",
        "name",
        "cron_expression",
        "timezone",
        "status",
        "last_execution_at",
        "last_execution_status",
        "consecutive_failures",
        "owner",
    )
    list_filter = ("status", "last_execution_status", "timezone")
    search_fields = ("name", "workflow__name", "cron_expression", "owner__username")
    list_select_related = ("workflow", "owner")
    raw_id_fields = ("workflow", "owner", "flow")
    readonly_fields = (
        "status",
        "pause_reason",
        "effective_from",
        "next_fire_at",
        "consecutive_failures",
        "last_execution_at",
        "last_execution_status",
        "last_error_message",
        "created_at",
        "updated_at",
    )
    actions = ("pause_schedules", "resume_schedules", "run_schedules_now")

    def save_model(self, request: HttpRequest, obj: ScheduledWorkflow, form, change: bool) -> None:
        # Through the services, as the API: checked, audited, and a new cron takes effect now.
        values = _schedule_service_values(form.cleaned_data, fields=form.changed_data if change else None)
        if change:
            stored = ScheduledWorkflow.objects.select_related("workflow", "owner", "flow").get(pk=obj.pk)
            saved = schedule_update(schedule=stored, user=request.user, as_operator=True, **values)
        else:
            saved = schedule_create(user=values.pop("owner"), actor=request.user, **values)
        # The admin goes on with the instance its form built: make it the row the service saved.
        obj.pk = saved.pk
        obj.refresh_from_db()

    def delete_model(self, request: HttpRequest, obj: ScheduledWorkflow) -> None:
        schedule_delete(schedule=obj, user=request.user, as_operator=True)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for schedule in queryset:
            self.delete_model(request, schedule)

    @admin.action(description="Pause the selected schedules")
    def pause_schedules(self, request: HttpRequest, queryset) -> None:
        for schedule in queryset:
            schedule_pause(
                schedule=schedule, user=request.user, reason=f"Paused by operator {request.user}.", as_operator=True
            )
        self.message_user(request, f"Paused {len(queryset)} schedule(s).")

    @admin.action(description="Resume the selected schedules")
    def resume_schedules(self, request: HttpRequest, queryset) -> None:
        for schedule in queryset:
            schedule_resume(schedule=schedule, user=request.user, as_operator=True)
        self.message_user(request, f"Resumed {len(queryset)} schedule(s).")

    @admin.action(description="Run the selected schedules now")
    def run_schedules_now(self, request: HttpRequest, queryset) -> None:
        for schedule in queryset.select_related("workflow", "owner", "flow"):
            try:
                run = schedule_run_now(schedule=schedule, user=schedule.owner)
            except WeftError as error:
                self.message_user(request, f"{schedule}: {error.message}", level=messages.ERROR)
            else:
                self.message_user(request, f"{schedule}: started run {run.pk}.")


@admin.register(WorkflowSnapshot)
class WorkflowSnapshotAdmin(RecordAdmin):
    list_display = ("workflow", "label", "created_by", "created_at")
    search_fields = ("label", "workflow__name", "=workflow__id")
    list_select_related = ("workflow", "created_by")
    date_hierarchy = "created_at"


@admin.register(RunEvent)
class RunEventAdmin(RecordAdmin):
    list_display = ("run", "seq", "type", "node_id", "at")
    list_filter = ("type",)
    search_fields = ("=run__id", "node_id")
    list_select_related = ("run",)
    date_hierarchy = "at"
