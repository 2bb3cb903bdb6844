from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm

from config.errors import InvalidInput

from .models import Agent, LLMProvider, Message, Session, SessionWorkflow, Tool
from .services import (
    PROVIDER_FIELDS,
    TOOL_FIELDS,
    agent_check_attachments,
    provider_create,
    provider_delete,
    provider_update,
    tool_approve,
    tool_config_check,
    tool_create,
    tool_delete,
    tool_headers_check,
    tool_parameters_check,
    tool_reject,
    tool_update,
)

# --- LLM providers: the key goes in, never comes out ---------------------------------------------


class LLMProviderAdminForm(forms.ModelForm):
    # Left out of a submitted form (a script written before kinds), it is the model's default.
    kind = forms.TypedChoiceField(
        choices=LLMProvider.Kind.choices,
        required=False,
        empty_value=LLMProvider.Kind.OPENAI,
        initial=LLMProvider.Kind.OPENAI,
        help_text="The API the provider speaks; the base URL and model names follow it.",
    )
    base_url = forms.URLField(max_length=500, assume_scheme="https")
    # Not the model field itself, so the stored key is neither put in the form's initial data nor
    # overwritten when the box is left empty.
    new_api_key = forms.CharField(
        label="API key",
        required=False,
        strip=False,
        max_length=4096,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. Leave empty to keep the stored key.",
    )
    clear_api_key = forms.BooleanField(label="Remove the stored key", required=False)

    class Meta:
        model = LLMProvider
        fields = ("owner", "name", "kind", "base_url", "model", "available_models", "metadata")

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("new_api_key") and cleaned.get("clear_api_key"):
            self.add_error("clear_api_key", "Either give a new key or remove the stored one, not both.")
        return cleaned


@admin.register(LLMProvider)
class LLMProviderAdmin(admin.ModelAdmin):
    form = LLMProviderAdminForm
    list_display = ("name", "owner", "kind", "base_url", "model", "has_api_key", "created_at")
    list_filter = ("kind", "created_at")
    search_fields = ("name", "base_url", "model", "owner__username")
    raw_id_fields = ("owner",)
    readonly_fields = ("has_api_key", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("owner", "name", "kind", "base_url", "model", "available_models", "metadata")}),
        ("API key", {"fields": ("has_api_key", "new_api_key", "clear_api_key")}),
        ("Dates", {"fields": ("created_at", "updated_at")}),
    )

    @admin.display(boolean=True, description="API key set")
    def has_api_key(self, provider: LLMProvider) -> bool:
        return bool(provider.api_key)

    def get_readonly_fields(self, request, obj=None):
        # A provider keeps its owner: its key is theirs (the API cannot move it either).
        return ("owner", *self.readonly_fields) if obj is not None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        # Through the services, as the API: checked, and a key change audited.
        fields = form.changed_data if change else form.cleaned_data
        data = {name: form.cleaned_data[name] for name in fields if name in PROVIDER_FIELDS}
        if form.cleaned_data.get("clear_api_key"):
            data["api_key"] = ""
        elif form.cleaned_data.get("new_api_key"):
            data["api_key"] = form.cleaned_data["new_api_key"]
        if change:
            saved = provider_update(provider=LLMProvider.objects.get(pk=obj.pk), actor=request.user, data=data)
        else:
            saved = provider_create(owner=form.cleaned_data["owner"], data=data, actor=request.user)
        obj.pk = saved.pk
        obj.refresh_from_db()

    def delete_model(self, request, obj):
        provider_delete(provider=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for provider in queryset:
            provider_delete(provider=provider, actor=request.user)


# --- Tools: operators approve or reject them ------------------------------------------------------


class ToolActionForm(ActionForm):
    reason = forms.CharField(
        label="Reason",
        required=False,
        max_length=2000,
        help_text="Required to reject; recorded with the review.",
    )


def _checked(check, value):
    try:
        check(value)
    except InvalidInput as exc:
        raise forms.ValidationError(exc.message, code=exc.code) from exc
    return value


class ToolAdminForm(forms.ModelForm):
    endpoint = forms.URLField(max_length=500, required=False, assume_scheme="https")
    # Like a provider's key: not the model field, so the stored headers are never put in the form.
    new_headers = forms.JSONField(
        label="Headers",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "autocomplete": "off"}),
        help_text='Write-only, e.g. {"Authorization": "Bearer ..."}. Leave empty to keep the stored headers.',
    )
    clear_headers = forms.BooleanField(label="Remove the stored headers", required=False)

    class Meta:
        model = Tool
        fields = ("owner", "name", "description", "category", "kind", "endpoint", "parameters", "config", "visibility")

    def clean_parameters(self):
        return _checked(tool_parameters_check, self.cleaned_data["parameters"])

    def clean_config(self):
        return _checked(tool_config_check, self.cleaned_data["config"])

    def clean_new_headers(self):
        headers = self.cleaned_data["new_headers"]
        return _checked(tool_headers_check, headers) if headers not in (None, "") else None

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("new_headers") and cleaned.get("clear_headers"):
            self.add_error("clear_headers", "Either give new headers or remove the stored ones, not both.")
        return cleaned


@admin.register(Tool)
class ToolAdmin(admin.ModelAdmin):
    form = ToolAdminForm
    action_form = ToolActionForm
    actions = ("approve_tools", "reject_tools")
    list_display = ("name", "owner", "kind", "visibility", "status", "reviewer", "reviewed_at")
    list_filter = ("status", "visibility", "kind")
    search_fields = ("name", "description", "category", "owner__username")
    raw_id_fields = ("owner",)
    readonly_fields = (
        "header_names",
        "status",
        "review_reason",
        "reviewer",
        "reviewed_at",
        "created_at",
        "updated_at",
    )

    @admin.display(description="Stored headers (names only)")
    def header_names(self, tool: Tool) -> str:
        return ", ".join(sorted(tool.secret_headers or {})) or "-"

    def get_readonly_fields(self, request, obj=None):
        # A tool keeps its owner (the API cannot move it either); a new owner is a new tool.
        return ("owner", *self.readonly_fields) if obj is not None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        # Through the services, as the API: checked, a changed tool goes back to review, audited.
        fields = form.changed_data if change else form.cleaned_data
        data = {name: form.cleaned_data[name] for name in fields if name in TOOL_FIELDS}
        if form.cleaned_data.get("clear_headers"):
            data["secret_headers"] = {}
        elif form.cleaned_data.get("new_headers"):
            data["secret_headers"] = form.cleaned_data["new_headers"]
        if change:
            saved = tool_update(tool=Tool.objects.get(pk=obj.pk), data=data, actor=request.user)
        else:
            saved = tool_create(owner=form.cleaned_data["owner"], data=data)
        obj.pk = saved.pk
        obj.refresh_from_db()

    def delete_model(self, request, obj):
        tool_delete(tool=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for tool in queryset:
            tool_delete(tool=tool, actor=request.user)

    @admin.action(description="Approve selected tools", permissions=["change"])
    def approve_tools(self, request, queryset):
        reason = request.POST.get("reason", "").strip()
        tools = list(queryset)
        for tool in tools:
            tool_approve(tool=tool, reviewer=request.user, reason=reason)
        self.message_user(request, f"Approved {len(tools)} tool(s).", messages.SUCCESS)

    @admin.action(description="Reject selected tools (write the reason first)", permissions=["change"])
    def reject_tools(self, request, queryset):
        reason = request.POST.get("reason", "").strip()
        if not reason:
            self.message_user(request, "Write why in the Reason box to reject tools; nothing changed.", messages.ERROR)
            return
        tools = list(queryset)
        for tool in tools:
            tool_reject(tool=tool, reviewer=request.user, reason=reason)
        self.message_user(request, f"Rejected {len(tools)} tool(s).", messages.SUCCESS)


# --- Agents ---------------------------------------------------------------------------------------


class AgentAdminForm(forms.ModelForm):
    class Meta:
        model = Agent
        fields = (
            "owner",
            "name",
            "start",
            "goal",
            "status",
            "provider",
            "model",
            "system_prompt",
            "tools",
            "max_steps",
            "token_budget",
        )

    def clean(self):
        cleaned = super().clean()
        owner = cleaned.get("owner")
        if owner is not None:
            try:
                agent_check_attachments(
                    owner=owner, provider=cleaned.get("provider"), tools=list(cleaned.get("tools") or [])
                )
            except InvalidInput as exc:
                self.add_error(exc.field, exc.message)
        return cleaned


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    form = AgentAdminForm
    list_display = ("name", "owner", "status", "provider", "model", "created_at")
    list_filter = ("status",)
    search_fields = ("name", "goal", "owner__username")
    raw_id_fields = ("owner", "provider")
    filter_horizontal = ("tools",)
    readonly_fields = ("created_at", "updated_at")

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "tools":
            kwargs["queryset"] = Tool.objects.filter(status=Tool.Status.APPROVED)
        return super().formfield_for_manytomany(db_field, request, **kwargs)


# --- Sessions -------------------------------------------------------------------------------------


class MessageInline(admin.TabularInline):
    model = Message
    fields = ("sequence_number", "role", "content", "user", "created_at")
    readonly_fields = fields
    ordering = ("sequence_number",)
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    inlines = (MessageInline,)
    list_display = ("__str__", "owner", "status", "agent", "last_sequence_number", "created_at")
    list_filter = ("status",)
    search_fields = ("title", "owner__username")
    raw_id_fields = ("owner", "agent")
    readonly_fields = ("last_sequence_number", "created_at", "updated_at")


@admin.register(SessionWorkflow)
class SessionWorkflowAdmin(admin.ModelAdmin):
    """Versions are history: they are looked at, never edited (a new one is a new row)."""

    list_display = ("__str__", "session", "sequence_number", "is_current", "status", "source_type", "created_at")
    list_filter = ("is_current", "status", "source_type")
    search_fields = ("session__title", "user__username")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
