"""Workflow templates: official (operators), community (public) and a user's own (seed 002)."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class WorkflowTemplate(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=255, db_column="template_name")
    description = models.TextField(blank=True, default="")
    category = models.CharField(max_length=64, blank=True, default="")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="workflow_templates",
        db_column="created_by_user_id",
    )
    is_official = models.BooleanField(default=False)
    is_public = models.BooleanField(default=False)
    # False for a copy of a workflow its saver could view but not manage: it may never be made public.
    publishable = models.BooleanField(default=True)
    template_data = models.JSONField(default=dict)
    usage_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "workflow_templates"
        ordering = ["-is_official", "-usage_count", "name"]
        indexes = [
            models.Index(fields=["is_official", "-usage_count"], name="idx_templates_official_usage"),
            models.Index(fields=["category"], name="idx_templates_category"),
        ]
        constraints = [
            # Official templates belong to the platform; every other template has an owner.
            models.CheckConstraint(
                condition=Q(is_official=True) | Q(owner__isnull=False), name="templates_owner_unless_official"
            ),
        ]

    def __str__(self) -> str:
        return self.name
