"""Factories for every model, so tests say only what matters to them."""

import secrets

import factory
from django.utils import timezone

from accounts.models import User
from agents.models import Agent, LLMProvider, Message, Session, SessionWorkflow, Tool
from history.models import AuditLog, UsageMetric, WorkflowNodeHistory
from licensing.models import App, AppSource, License
from templates.models import WorkflowTemplate
from workflows.engine import NodePorts
from workflows.models import (
    Edge,
    Node,
    Run,
    RunEvent,
    ScheduledWorkflow,
    Task,
    Workflow,
    WorkflowMember,
    WorkflowSnapshot,
    WorkflowVersion,
)

SIMPLE_GRAPH = {
    "nodes": [
        {"id": "start", "type": "start", "config": {"inputs": [{"name": "city", "type": "string"}]}},
        {"id": "greet", "type": "template", "config": {"template": "Weather for {{ start.city }}"}},
        {"id": "end", "type": "end", "config": {"outputs": {"text": "{{ greet.text }}"}}},
    ],
    "edges": [{"source": "start", "target": "greet"}, {"source": "greet", "target": "end"}],
}


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    password = factory.django.Password("correct horse battery staple")


class WorkflowFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Workflow

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"Workflow {n}")
    description = "A workflow made by a factory."


class WorkflowMemberFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WorkflowMember

    workflow = factory.SubFactory(WorkflowFactory)
    user = factory.SubFactory(UserFactory)
    role = WorkflowMember.Role.VIEWER


class NodeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Node

    workflow = factory.SubFactory(WorkflowFactory)
    key = factory.Sequence(lambda n: f"node{n}")
    type = "template"
    name = factory.LazyAttribute(lambda o: o.key)
    config = factory.LazyFunction(lambda: {"template": "hello"})


class EdgeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Edge

    workflow = factory.SubFactory(WorkflowFactory)
    source_node = factory.SubFactory(NodeFactory, workflow=factory.SelfAttribute("..workflow"))
    target_node = factory.SubFactory(NodeFactory, workflow=factory.SelfAttribute("..workflow"))


class WorkflowVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WorkflowVersion

    workflow = factory.SubFactory(WorkflowFactory)
    name = factory.LazyAttribute(lambda o: o.workflow.name[:128])
    data = factory.LazyFunction(lambda: dict(SIMPLE_GRAPH))
    release_data = factory.LazyFunction(lambda: dict(SIMPLE_GRAPH))
    version_major = 1
    version_minor = 0
    version_patch = factory.Sequence(lambda n: n)
    version = factory.LazyAttribute(lambda o: f"{o.version_major}.{o.version_minor}.{o.version_patch}")
    create_by = factory.LazyAttribute(lambda o: o.workflow.owner)


class WorkflowSnapshotFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WorkflowSnapshot

    workflow = factory.SubFactory(WorkflowFactory)
    graph = factory.LazyFunction(lambda: dict(SIMPLE_GRAPH))
    label = factory.Sequence(lambda n: f"snapshot {n}")


class RunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Run

    workflow = factory.SubFactory(WorkflowFactory)
    triggered_by = factory.LazyAttribute(lambda o: o.workflow.owner)
    graph = factory.LazyFunction(lambda: dict(SIMPLE_GRAPH))
    inputs = factory.LazyFunction(lambda: {"city": "Lyon"})


class TaskFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Task

    run = factory.SubFactory(RunFactory)
    node_id = factory.Sequence(lambda n: f"node{n}")
    node_type = "template"
    name = factory.LazyAttribute(lambda o: o.node_id)
    # As the journal writes a task: with the events of its execution (a row a retry copied has none).
    events = factory.LazyFunction(
        lambda: [{"seq": 1, "type": "node.started", "attempt": 1, "at": timezone.now().isoformat()}]
    )


class RunEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RunEvent

    run = factory.SubFactory(RunFactory)
    seq = factory.Sequence(lambda n: n + 1)
    type = "run.started"
    at = factory.LazyFunction(timezone.now)


class ScheduledWorkflowFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ScheduledWorkflow

    workflow = factory.SubFactory(WorkflowFactory)
    owner = factory.LazyAttribute(lambda o: o.workflow.owner)
    cron_expression = "*/5 * * * *"


class AppFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = App

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"app{n}")
    alias_id = factory.Sequence(lambda n: f"app-alias-{n}")
    api_key = factory.LazyFunction(lambda: secrets.token_hex(16))
    api_secret = factory.LazyFunction(lambda: secrets.token_urlsafe(32))


class AppSourceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AppSource

    source = 1
    source_id = factory.Sequence(lambda n: f"tenant-{n}")


class LicenseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = License

    app = factory.SubFactory(AppFactory)
    group = factory.SubFactory(WorkflowFactory)


class LLMProviderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LLMProvider

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"provider{n}")
    base_url = "http://127.0.0.1:9/v1"
    api_key = factory.LazyFunction(lambda: f"sk-{secrets.token_hex(12)}")
    model = "fake-model"


class ToolFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tool

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"tool_{n}")
    description = "A tool made by a factory."
    endpoint = "http://127.0.0.1:9/tool"
    parameters = factory.LazyFunction(lambda: {"type": "object", "properties": {}})


class AgentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Agent

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"Agent {n}")
    model = "fake-model"


class SessionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Session

    owner = factory.SubFactory(UserFactory)
    title = factory.Sequence(lambda n: f"Session {n}")


class MessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Message

    session = factory.SubFactory(SessionFactory)
    user = factory.LazyAttribute(lambda o: o.session.owner)
    role = Message.Role.USER
    content = "Hello"
    sequence_number = factory.Sequence(lambda n: n + 1)


class SessionWorkflowFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SessionWorkflow

    session = factory.SubFactory(SessionFactory)
    user = factory.LazyAttribute(lambda o: o.session.owner)
    sequence_number = factory.Sequence(lambda n: n + 1)
    workflow_data = factory.LazyFunction(lambda: dict(SIMPLE_GRAPH))


class WorkflowTemplateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WorkflowTemplate

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"Template {n}")
    template_data = factory.LazyFunction(lambda: dict(SIMPLE_GRAPH))


class WorkflowNodeHistoryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WorkflowNodeHistory

    flow = factory.SubFactory(WorkflowVersionFactory)
    node_id = "llm"
    uid = "user-1"
    chat_id = "chat-1"
    raw_question = "What is Weft?"
    raw_answer = "A workflow platform."


class AuditLogFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AuditLog

    actor = factory.SubFactory(UserFactory)
    action = "license.enable"
    target_type = "licensing.license"
    target_id = "1"


class UsageMetricFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UsageMetric

    user = factory.SubFactory(UserFactory)
    tokens_in = 10
    tokens_out = 20


def owner_ports(workflow) -> NodePorts:
    """The ports a run of ``workflow`` gets for the nodes that use its owner's providers, tools and agents."""
    owner_id = workflow.owner_id

    async def owner():
        return owner_id

    return NodePorts(owner_id=owner)
