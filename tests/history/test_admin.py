import pytest
from django.urls import reverse

from history.models import AuditLog, UsageMetric, WorkflowNodeHistory
from tests.factories import (
    AppFactory,
    AuditLogFactory,
    UsageMetricFactory,
    UserFactory,
    WorkflowNodeHistoryFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client, staff_user):
    client.force_login(staff_user)
    return client


def url(model, view: str, *args) -> str:
    return reverse(f"admin:history_{model._meta.model_name}_{view}", args=args)


@pytest.mark.parametrize("model", [AuditLog, WorkflowNodeHistory, UsageMetric])
def test_records_are_read_only_in_the_admin(operator, model):
    factory = {
        AuditLog: AuditLogFactory,
        WorkflowNodeHistory: WorkflowNodeHistoryFactory,
        UsageMetric: UsageMetricFactory,
    }[model]
    row = factory()

    assert operator.get(url(model, "changelist")).status_code == 200
    detail = operator.get(url(model, "change", row.pk))
    assert detail.status_code == 200
    assert b'name="_save"' not in detail.content
    assert operator.get(url(model, "add")).status_code == 403
    assert operator.post(url(model, "delete", row.pk), {"post": "yes"}).status_code == 403
    assert model.objects.filter(pk=row.pk).exists()


def test_audit_log_changelist_filters_and_searches(operator):
    AuditLogFactory(action="app.disable", target_repr="Shop (shop)")
    AuditLogFactory(action="license.enable", target_repr="other")
    assert operator.get(f"{url(AuditLog, 'changelist')}?action=app.disable").context["cl"].result_count == 1
    assert operator.get(f"{url(AuditLog, 'changelist')}?q=shop").context["cl"].result_count == 1


def test_node_history_is_searchable_by_chat_and_uid(operator):
    WorkflowNodeHistoryFactory(chat_id="chat-a", uid="alice", node_id="llm1")
    WorkflowNodeHistoryFactory(chat_id="chat-b", uid="bob", node_id="llm2")
    changelist = url(WorkflowNodeHistory, "changelist")
    assert operator.get(f"{changelist}?q=chat-a").context["cl"].result_count == 1
    assert operator.get(f"{changelist}?q=bob").context["cl"].result_count == 1
    assert operator.get(f"{changelist}?node_id=llm2").context["cl"].result_count == 1


def test_usage_changelist_shows_totals_per_user_and_per_app(operator):
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    shop = AppFactory(name="Shop")
    UsageMetricFactory(user=alice, app=shop, tokens_in=100, tokens_out=10, duration_ms=5)
    UsageMetricFactory(user=alice, app=None, tokens_in=50, tokens_out=5, duration_ms=5)
    UsageMetricFactory(user=bob, app=shop, tokens_in=1, tokens_out=1, duration_ms=1)

    response = operator.get(url(UsageMetric, "changelist"))

    assert response.status_code == 200
    by_user = {row["user__username"]: row for row in response.context["usage_by_user"]}
    assert (by_user["alice"]["runs"], by_user["alice"]["tokens_in"], by_user["alice"]["tokens_out"]) == (2, 150, 15)
    assert by_user["bob"]["tokens_in"] == 1
    by_app = {row["app__name"]: row for row in response.context["usage_by_app"]}
    assert (by_app["Shop"]["runs"], by_app["Shop"]["tokens_in"]) == (2, 101)
    assert by_app[None]["tokens_in"] == 50
    assert response.context["usage_total"]["tokens_in"] == 151
    assert b'id="usage-by-user"' in response.content

    searched = operator.get(f"{url(UsageMetric, 'changelist')}?q=bob")
    assert searched.context["usage_total"]["tokens_in"] == 1
