"""Reads of workflow templates: what a user may see, and of which kind each one is to them."""

from django.db import models
from django.db.models import Q, QuerySet

from .models import WorkflowTemplate


class TemplateKind(models.TextChoices):
    """How a template stands to the user: the three kinds split the visible templates."""

    OFFICIAL = "official", "Official"
    COMMUNITY = "community", "Community"
    MINE = "mine", "Mine"


def templates_visible_to_user(*, user) -> QuerySet[WorkflowTemplate]:
    """Official templates, public ones, and the user's own; official first, then the most used."""
    if not getattr(user, "is_authenticated", False):
        return WorkflowTemplate.objects.none()
    return WorkflowTemplate.objects.filter(Q(is_official=True) | Q(is_public=True) | Q(owner=user)).order_by(
        "-is_official", "-usage_count", "name", "id"
    )


def templates_of_kind(*, queryset: QuerySet[WorkflowTemplate], user, kind: str) -> QuerySet[WorkflowTemplate]:
    """Narrow ``queryset`` to one kind: official; mine (own, not official); community (the rest)."""
    if kind == TemplateKind.OFFICIAL:
        return queryset.filter(is_official=True)
    if kind == TemplateKind.MINE:
        return queryset.filter(owner=user, is_official=False)
    return queryset.filter(is_official=False, is_public=True).exclude(owner=user)


def template_kind_for_user(*, template: WorkflowTemplate, user) -> str:
    if template.is_official:
        return TemplateKind.OFFICIAL
    if user is not None and template.owner_id == user.pk:
        return TemplateKind.MINE
    return TemplateKind.COMMUNITY
