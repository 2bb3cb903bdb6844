import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import User
from tests.factories import LLMProviderFactory
from workflows.engine import validate_graph
from workflows.management.commands.weft_demo import MISSING_PROVIDER
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


def test_the_demo_creates_a_builder_an_operator_and_three_valid_workflows(settings):
    settings.DEBUG = True
    passwords = load_demo()

    demo, admin = User.objects.get(username="demo"), User.objects.get(username="admin")
    assert demo.check_password(passwords["demo"])
    assert not demo.is_staff
    assert admin.check_password(passwords["admin"])
    assert admin.is_staff
    assert admin.is_superuser
    workflows = Workflow.objects.filter(owner=demo)
    assert sorted(w.name for w in workflows) == ["Greeting", "Trip advice", "Trip advice (LLM)"]
    for workflow in workflows:
        assert validate_graph(graph_of(workflow)) == []
    trip = workflows.get(name="Trip advice")
    assert {n.type for n in trip.nodes.all()} >= {"condition", "aggregator"}


def test_loading_the_demo_again_adds_nothing_and_keeps_a_changed_password(settings):
    settings.DEBUG = True
    first = load_demo()
    demo = User.objects.get(username="demo")
    demo.set_password("changed-by-someone")
    demo.save()

    out = StringIO()
    call_command("weft_demo", stdout=out)

    assert Workflow.objects.count() == 3
    assert User.objects.filter(username__in=["demo", "admin"]).count() == 2
    assert PASSWORD.findall(out.getvalue()) == []
    assert "python manage.py changepassword demo" in out.getvalue()
    assert User.objects.get(username="demo").check_password("changed-by-someone")
    assert User.objects.get(username="admin").check_password(first["admin"])


def test_the_passwords_are_printed_with_how_to_reset_them(settings):
    settings.DEBUG = True
    out = StringIO()
    call_command("weft_demo", stdout=out)

    assert set(dict(PASSWORD.findall(out.getvalue()))) == {"demo", "admin"}
    assert "python manage.py changepassword demo" in out.getvalue()


def test_the_llm_demo_names_a_missing_provider_until_the_demo_user_has_one(settings):
    settings.DEBUG = True
    load_demo()
    demo = User.objects.get(username="demo")
    llm = Workflow.objects.get(owner=demo, name="Trip advice (LLM)")
    assert llm.nodes.get(key="ask").config["provider"] == MISSING_PROVIDER
    assert validate_graph(graph_of(llm)) == []

    provider = LLMProviderFactory(owner=demo)
    llm.delete()
    load_demo()

    llm = Workflow.objects.get(owner=demo, name="Trip advice (LLM)")
    assert llm.nodes.get(key="ask").config["provider"] == str(provider.pk)


def test_the_demo_refuses_to_run_without_debug(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG=1"):
        load_demo()
    assert not User.objects.filter(username="admin").exists()
