"""Writes to workflow templates: save one (from a graph or a workflow), edit, delete, instantiate."""

from django.db import transaction
from django.db.models import F

from config.errors import Forbidden
from workflows.models import Workflow
from workflows.permissions import CAN_MANAGE
from workflows.selectors import workflow_graph, workflow_role_for_user
from workflows.services import graph_clean, workflow_create

from .models import WorkflowTemplate

TEMPLATE_FIELDS = ("name", "description", "category", "is_public", "template_data")


def template_check_can_change(*, template: WorkflowTemplate, user) -> None:
    """Only the owner changes a template; official ones belong to the operators (the admin)."""
    if template.is_official:
        raise Forbidden("Official templates are managed by operators.", code="official_template")
    if template.owner_id != user.pk:
        raise Forbidden("Only the template's owner may change it.")


def _template_check_can_publish(*, publishable: bool) -> None:
    if not publishable:
        raise Forbidden(
            "This template copies a workflow you cannot manage: it stays private. "
            "Publishing a workflow as a public template needs its owner's role.",
            field="is_public",
            code="not_publishable",
        )


def template_create(
    *,
    owner,
    name: str,
    template_data: dict,
    description: str = "",
    category: str = "",
    is_public: bool = False,
    publishable: bool = True,
) -> WorkflowTemplate:
    """Save a graph as the owner's template; the graph must be one a workflow could be made from."""
    if is_public:
        _template_check_can_publish(publishable=publishable)
    return WorkflowTemplate.objects.create(
        owner=owner,
        name=name,
        description=description,
        category=category,
        is_public=is_public,
        publishable=publishable,
        template_data=graph_clean(template_data),
    )


def template_create_from_workflow(
    *,
    owner,
    workflow: Workflow,
    name: str | None = None,
    description: str | None = None,
    category: str = "",
    is_public: bool = False,
) -> WorkflowTemplate:
    """Save a workflow's current draft as a template (the caller has checked they may view it).

    Anyone who may view a workflow may keep a private copy; only who may manage it (its owner)
    may publish it, then or later: a copy by anyone else is never publishable.
    """
    return template_create(
        owner=owner,
        name=name or workflow.name,
        description=workflow.description if description is None else description,
        category=category,
        is_public=is_public,
        publishable=workflow_role_for_user(workflow=workflow, user=owner) in CAN_MANAGE,
        template_data=workflow_graph(workflow=workflow),
    )


def template_update(*, template: WorkflowTemplate, user, data: dict) -> WorkflowTemplate:
    template_check_can_change(template=template, user=user)
    if data.get("is_public") and not template.is_public:
        _template_check_can_publish(publishable=template.publishable)
    changed = [name for name in TEMPLATE_FIELDS if name in data]
    for name in changed:
        value = graph_clean(data[name]) if name == "template_data" else data[name]
        setattr(template, name, value)
    template.save(update_fields=[*changed, "updated_at"])
    return template


def template_delete(*, template: WorkflowTemplate, user) -> None:
    template_check_can_change(template=template, user=user)
    template.delete()


def template_instantiate(*, template: WorkflowTemplate, user, name: str | None = None) -> Workflow:
    """Make the user a new workflow from the template, which remembers where it came from."""
    with transaction.atomic():
        workflow = workflow_create(
            owner=user,
            name=name or template.name,
            description=template.description,
            graph=template.template_data,
            source=Workflow.Source.TEMPLATE,
            source_template=template,
        )
        # In the database, so that concurrent instantiations all count.
        WorkflowTemplate.objects.filter(pk=template.pk).update(usage_count=F("usage_count") + 1)
    return workflow
