"""Operators' pages for apps and licenses.

The app's ``api_secret`` is on no form, list or detail page: it is shown once, on a page of its
own, when the admin creates an app or rotates its credentials. Never in a message: Django keeps
messages in a cookie, which is signed but not encrypted. Changes of access and credentials go through
the services so that each writes its audit row.
"""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from .models import App, AppSource, EnabledStatus, License
from .services import (
    app_create,
    app_delete,
    app_rotate_credentials,
    app_set_status,
    app_update,
    license_grant,
    license_revoke,
    license_set_status,
)

_APP_EDITABLE_FIELDS = (
    "name",
    "alias_id",
    "description",
    "owner",
    "status",
    "is_tenant",
    "source",
    "actual_source",
    "plat_release_auth",
    "audit_policy",
    "rate_limit_per_minute",
)


def _credentials_page(request: HttpRequest, model_admin: admin.ModelAdmin, credentials: list[dict]) -> HttpResponse:
    """The page that shows new secrets (``credentials``: ``app``, ``secret``, ``what`` each), once."""
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "New app credentials",
        "opts": model_admin.model._meta,
        "credentials": credentials,
    }
    return TemplateResponse(request, "admin/licensing/app/credentials_shown_once.html", context)


@admin.register(App)
class AppAdmin(admin.ModelAdmin):
    list_display = ("name", "alias_id", "api_key", "owner", "status", "is_tenant", "create_at")
    list_filter = ("status", "is_tenant")
    search_fields = ("name", "alias_id", "api_key")
    list_select_related = ("owner",)
    raw_id_fields = ("owner",)
    date_hierarchy = "create_at"
    fields = (*_APP_EDITABLE_FIELDS, "api_key", "create_at", "update_at", "update_by")
    readonly_fields = ("api_key", "create_at", "update_at", "update_by")
    actions = ("enable_apps", "disable_apps", "rotate_credentials")

    def save_model(self, request: HttpRequest, obj: App, form, change: bool) -> None:
        if not change:
            data = form.cleaned_data
            app, secret = app_create(
                owner=data["owner"],
                name=data["name"],
                alias_id=data["alias_id"],
                description=data["description"],
                status=data["status"],
                is_tenant=data["is_tenant"],
                source=data["source"],
                actual_source=data["actual_source"],
                plat_release_auth=data["plat_release_auth"],
                audit_policy=data["audit_policy"],
                rate_limit_per_minute=data["rate_limit_per_minute"],
                actor=request.user,
            )
            # The admin goes on with the instance its form built: make it the row just created.
            obj.pk = app.pk
            obj.refresh_from_db()
            # Shown by response_add, on the page it answers with instead of the usual redirect.
            request._app_created_credentials = [{"app": obj, "secret": secret, "what": "Created"}]
            return
        # Through the service, as the API: who owns the app and how it may call are audited.
        stored = App.objects.get(pk=obj.pk)
        changes = {name: form.cleaned_data[name] for name in form.changed_data if name in _APP_EDITABLE_FIELDS}
        app_update(app=stored, actor=request.user, **changes)
        obj.refresh_from_db()

    def response_add(self, request: HttpRequest, obj: App, post_url_continue=None) -> HttpResponse:
        credentials = getattr(request, "_app_created_credentials", None)
        if credentials is None:
            return super().response_add(request, obj, post_url_continue)
        return _credentials_page(request, self, credentials)

    def delete_model(self, request: HttpRequest, obj: App) -> None:
        app_delete(app=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[App]) -> None:
        for app in queryset:
            app_delete(app=app, actor=request.user)

    def _set_status(self, request: HttpRequest, queryset: QuerySet[App], status: EnabledStatus) -> None:
        for app in queryset:
            app_set_status(app=app, status=status, actor=request.user)
        self.message_user(request, f"{queryset.count()} app(s) {status.label.lower()}.", messages.SUCCESS)

    @admin.action(description="Enable the selected apps", permissions=["change"])
    def enable_apps(self, request: HttpRequest, queryset: QuerySet[App]) -> None:
        self._set_status(request, queryset, EnabledStatus.ENABLED)

    @admin.action(description="Disable the selected apps", permissions=["change"])
    def disable_apps(self, request: HttpRequest, queryset: QuerySet[App]) -> None:
        self._set_status(request, queryset, EnabledStatus.DISABLED)

    @admin.action(description="Rotate the API key and secret of the selected apps", permissions=["change"])
    def rotate_credentials(self, request: HttpRequest, queryset: QuerySet[App]) -> HttpResponse:
        credentials = [
            {
                "app": app,
                "secret": app_rotate_credentials(app=app, actor=request.user),
                "what": "Rotated the credentials of",
            }
            for app in queryset
        ]
        return _credentials_page(request, self, credentials)


@admin.register(AppSource)
class AppSourceAdmin(admin.ModelAdmin):
    list_display = ("source_id", "source", "description", "update_at")
    search_fields = ("source_id", "description")
    list_filter = ("source",)
    readonly_fields = ("create_at", "update_at")


@admin.register(License)
class LicenseAdmin(admin.ModelAdmin):
    list_display = ("id", "app", "group", "status", "create_at", "update_at")
    list_filter = ("status", "create_at")
    search_fields = ("app__name", "app__alias_id", "app__api_key", "group__name")
    list_select_related = ("app", "group")
    raw_id_fields = ("app", "group")
    readonly_fields = ("create_at", "update_at")
    actions = ("enable_licenses", "disable_licenses")

    def get_readonly_fields(self, request: HttpRequest, obj: License | None = None):
        # Pointing a license at another app or workflow is a revoke plus a grant, not an edit.
        if obj is not None:
            return ("app", "group", *self.readonly_fields)
        return self.readonly_fields

    def save_model(self, request: HttpRequest, obj: License, form, change: bool) -> None:
        if not change:
            license = license_grant(app=obj.app, workflow=obj.group, actor=request.user, status=obj.status)
            obj.pk = license.pk
            obj.refresh_from_db()
        elif "status" in form.changed_data:
            license_set_status(license=obj, status=obj.status, actor=request.user)

    def delete_model(self, request: HttpRequest, obj: License) -> None:
        license_revoke(license=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[License]) -> None:
        for license in queryset:
            license_revoke(license=license, actor=request.user)

    def _set_status(self, request: HttpRequest, queryset: QuerySet[License], status: EnabledStatus) -> None:
        for license in queryset:
            license_set_status(license=license, status=status, actor=request.user)
        self.message_user(request, f"{queryset.count()} license(s) {status.label.lower()}.", messages.SUCCESS)

    @admin.action(description="Enable the selected licenses", permissions=["change"])
    def enable_licenses(self, request: HttpRequest, queryset: QuerySet[License]) -> None:
        self._set_status(request, queryset, EnabledStatus.ENABLED)

    @admin.action(description="Disable the selected licenses", permissions=["change"])
    def disable_licenses(self, request: HttpRequest, queryset: QuerySet[License]) -> None:
        self._set_status(request, queryset, EnabledStatus.DISABLED)
