"""The number of workflows a user owns: a 403 naming the quota once it is reached, by any way of creating one."""

import pytest

from config.errors import QuotaLimitReached
from tests.factories import WorkflowFactory, WorkflowTemplateFactory
from workflows.models import Workflow
from workflows.quotas import quota_limits
from workflows.services import workflow_create

WORKFLOWS = "/api/v1/workflows/"


def test_creating_past_the_limit_is_a_403_naming_the_quota(user, user_client, set_quota):
    set_quota(user, max_workflows=2)
    statuses = [user_client.post(WORKFLOWS, {"name": f"w{index}"}).status_code for index in range(2)]

    refused = user_client.post(WORKFLOWS, {"name": "one too many"})

    assert statuses == [201, 201]
    assert refused.status_code == 403
    body = refused.json()
    assert (body["code"], body["quota"], body["limit"]) == ("quota_exceeded", "max_workflows", 2)
    assert body["resets_at"] is None
    assert "Retry-After" not in refused
    assert Workflow.objects.filter(owner=user).count() == 2


def test_deleting_a_workflow_frees_its_place(user, user_client, set_quota):
    set_quota(user, max_workflows=1)
    workflow = workflow_create(owner=user, name="only")
    with pytest.raises(QuotaLimitReached):
        workflow_create(owner=user, name="second")

    assert user_client.delete(f"{WORKFLOWS}{workflow.pk}/").status_code == 204
    assert user_client.post(WORKFLOWS, {"name": "second"}).status_code == 201


def test_a_template_instantiated_counts_too(user, user_client, set_quota, other_user):
    set_quota(user, max_workflows=1)
    WorkflowFactory(owner=user)
    template = WorkflowTemplateFactory(owner=other_user, is_public=True)

    refused = user_client.post(f"/api/v1/templates/{template.pk}/instantiate/", {})

    assert refused.status_code == 403
    assert refused.json()["quota"] == "max_workflows"
    template.refresh_from_db()
    assert template.usage_count == 0


def test_other_users_workflows_do_not_count(user, other_user, set_quota):
    set_quota(user, max_workflows=1)
    WorkflowFactory(owner=other_user)
    workflow_create(owner=user, name="mine")
    assert Workflow.objects.filter(owner=user).count() == 1


def test_blank_overrides_keep_the_defaults(user, set_quota, settings):
    set_quota(user, runs_per_day=7)
    limits = quota_limits(user_id=user.pk)
    assert limits.runs_per_day == 7
    assert limits.max_workflows == settings.WEFT["QUOTAS"]["MAX_WORKFLOWS"]
    assert limits.concurrent_runs == settings.WEFT["QUOTAS"]["CONCURRENT_RUNS"]
