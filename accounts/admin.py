from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from config.conf import weft_settings

from .models import QUOTAS, User, UserQuota
from .services import user_access_change_record, user_access_state, user_delete, user_password_change_record


class UserQuotaInline(admin.StackedInline):
    """The user's quota overrides; a blank field keeps the default, shown in it."""

    model = UserQuota
    verbose_name = verbose_name_plural = "quota overrides"

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name in QUOTAS and field is not None:
            field.widget.attrs["placeholder"] = f"default {getattr(weft_settings, db_field.name.upper())}"
        return field


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    inlines = [UserQuotaInline]

    # Access changes are audited: flags in save_model, groups and permissions once save_related ran.
    def save_model(self, request, obj, form, change):
        form.access_before = user_access_state(user=obj) if change else None
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        user_access_change_record(user=form.instance, actor=request.user, before=form.access_before)

    def delete_model(self, request, obj):
        user_delete(user=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for user in queryset:
            user_delete(user=user, actor=request.user)

    def user_change_password(self, request, id, form_url=""):
        user = self.get_object(request, unquote(id))
        response = super().user_change_password(request, id, form_url)
        if request.method == "POST" and user is not None:
            user_password_change_record(user=user, actor=request.user, before_hash=user.password)
        return response
