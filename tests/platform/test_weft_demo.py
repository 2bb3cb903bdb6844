import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import User
from workflows.engine import validate_graph
from workflows.models import Workflow

pytestmark = pytest.mark.django_db

PASSWORD = re.compile(r"username: (\w+)\s+password: (\S+)")


def load_demo(**options) -> dict[str, str]:
    out = StringIO()
    call_command("weft_demo", stdout=out, **options)
    return dict(PASSWORD.findall(out.getvalue()))


def graph_of(workflow: Workflow) -> dict:
    nodes = [{"id": n.key, "type": n.type, "config": n.config} for n in workflow.nodes.all()]
    edges = [
        {"source": e.source_node.key, "target": e.target_node.key, "source_handle": e.source_handle}
        for e in workflow.edges.select_related("source_node", "target_node")
    ]
    return {"nodes": nodes, "edges": [{k: v for k, v in e.items() if v} for e in edges]}


def test_the_demo_creates_a_builder_an_operator_and_two_valid_workflows(settings):
    settings.DEBUG = True
    passwords = load_demo()

    demo, admin = User.objects.get(username="demo"), User.objects.get(username="admin")
    assert demo.check_password(passwords["demo"])
    assert not demo.is_staff
    assert admin.check_password(passwords["admin"])
    assert admin.is_staff
    assert admin.is_superuser
    workflows = Workflow.objects.filter(owner=demo)
    assert sorted(w.name for w in workflows) == ["Greeting", "Trip advice"]
    for workflow in workflows:
        assert validate_graph(graph_of(workflow)) == []
    trip = workflows.get(name="Trip advice")
    assert {n.type for n in trip.nodes.all()} >= {"condition", "aggregator"}


def test_loading_the_demo_again_adds_nothing_and_prints_passwords_that_work(settings):
    settings.DEBUG = True
    first = load_demo()
    second = load_demo()

    assert Workflow.objects.count() == 2
    assert User.objects.filter(username__in=["demo", "admin"]).count() == 2
    assert second["demo"] != first["demo"]
    assert User.objects.get(username="demo").check_password(second["demo"])


def test_the_demo_refuses_to_run_without_debug(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG=1"):
        load_demo()
    assert not User.objects.filter(username="admin").exists()
