from django import forms
from django.contrib import admin

from workflows.services import GraphInvalid, graph_clean

from .models import WorkflowTemplate


class WorkflowTemplateAdminForm(forms.ModelForm):
    class Meta:
        model = WorkflowTemplate
        fields = ("name", "description", "category", "owner", "is_official", "is_public", "template_data")

    def clean_template_data(self):
        try:
            return graph_clean(self.cleaned_data["template_data"])
        except GraphInvalid as exc:
            raise forms.ValidationError(
                [f"{issue.field}: {issue.message}" for issue in exc.issues], code="invalid_graph"
            ) from exc


@admin.register(WorkflowTemplate)
class WorkflowTemplateAdmin(admin.ModelAdmin):
    """Official templates are made and edited here, by staff; users manage their own through the API."""

    form = WorkflowTemplateAdminForm
    list_display = ("name", "category", "is_official", "is_public", "owner", "usage_count", "updated_at")
    list_filter = ("is_official", "is_public", "category")
    search_fields = ("name", "description", "category", "owner__username")
    raw_id_fields = ("owner",)
    readonly_fields = ("usage_count", "created_at", "updated_at")
