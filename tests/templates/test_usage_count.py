import threading

import pytest
from django.db import connection

from templates.models import WorkflowTemplate
from templates.services import template_instantiate
from tests.factories import UserFactory, WorkflowTemplateFactory
from workflows.models import Workflow


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_concurrent_instantiations_each_count_once():
    template = WorkflowTemplateFactory(is_public=True)
    users = [UserFactory() for _ in range(8)]
    barrier = threading.Barrier(len(users))
    errors = []

    def instantiate(user):
        try:
            barrier.wait()
            template_instantiate(template=WorkflowTemplate.objects.get(pk=template.pk), user=user)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=instantiate, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    template.refresh_from_db()
    assert template.usage_count == len(users)
    assert Workflow.objects.filter(source_template=template).count() == len(users)
