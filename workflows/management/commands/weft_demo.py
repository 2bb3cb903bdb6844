"""Load the demo that `make run` serves: a builder, an operator and three workflows.

Safe to run again: a user is given a password (printed) only when it is created, so a password
someone changed is kept; workflows are created only when the demo user has none of that name.

"Trip advice (LLM)" asks a model, so it needs an LLM provider of the demo user's. When the demo
user has none yet, its llm node names ``MISSING_PROVIDER``, and a run of it fails saying that no
such provider exists; the console's Providers page then adds one and points the workflow at it.
"""

import copy
import secrets

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import User
from agents.models import LLMProvider
from workflows.models import Workflow
from workflows.services import workflow_create

DEMO_USERNAME = "demo"
ADMIN_USERNAME = "admin"

GREETING = {
    "name": "Greeting",
    "description": "The smallest workflow: a start, one template and an end.",
    "graph": {
        "nodes": [
            {
                "id": "start",
                "type": "start",
                "name": "Start",
                "config": {"inputs": [{"name": "name", "type": "string", "required": True}]},
            },
            {
                "id": "greet",
                "type": "template",
                "name": "Greet",
                "config": {"template": "Hello, {{ start.name }}! Welcome to Weft."},
            },
            {"id": "end", "type": "end", "name": "End", "config": {"outputs": {"text": "{{ greet.text }}"}}},
        ],
        "edges": [{"source": "start", "target": "greet"}, {"source": "greet", "target": "end"}],
    },
}

TRIP_ADVICE = {
    "name": "Trip advice",
    "description": (
        "Two branches run in parallel: a summary, and a condition that picks warm or cold advice "
        "(joined by an aggregator). The end joins both."
    ),
    "graph": {
        "nodes": [
            {
                "id": "start",
                "type": "start",
                "name": "Start",
                "config": {
                    "inputs": [
                        {"name": "city", "type": "string", "required": True},
                        {"name": "temperature", "type": "number", "required": True},
                    ]
                },
            },
            {
                "id": "summary",
                "type": "template",
                "name": "Summary",
                "config": {"template": "{{ start.city }}: {{ start.temperature }} degrees."},
            },
            {
                "id": "check",
                "type": "condition",
                "name": "Warm enough?",
                "config": {
                    "cases": [
                        {
                            "id": "warm",
                            "conditions": [{"variable": "{{ start.temperature }}", "operator": "ge", "value": 20}],
                        }
                    ]
                },
            },
            {
                "id": "warm",
                "type": "template",
                "name": "Warm advice",
                "config": {"template": "Pack light for {{ start.city }}."},
            },
            {
                "id": "cold",
                "type": "template",
                "name": "Cold advice",
                "config": {"template": "Bring a coat to {{ start.city }}."},
            },
            {
                "id": "advice",
                "type": "aggregator",
                "name": "Advice",
                "config": {"variables": ["{{ warm.text }}", "{{ cold.text }}"], "mode": "first"},
            },
            {
                "id": "end",
                "type": "end",
                "name": "End",
                "config": {"outputs": {"summary": "{{ summary.text }}", "advice": "{{ advice.output }}"}},
            },
        ],
        "edges": [
            {"source": "start", "target": "summary"},
            {"source": "start", "target": "check"},
            {"source": "check", "target": "warm", "source_handle": "warm"},
            {"source": "check", "target": "cold", "source_handle": "else"},
            {"source": "warm", "target": "advice"},
            {"source": "cold", "target": "advice"},
            {"source": "summary", "target": "end"},
            {"source": "advice", "target": "end"},
        ],
    },
}

#: Stands for "no provider chosen yet": a well-formed id that no provider ever has.
MISSING_PROVIDER = "00000000-0000-0000-0000-000000000000"


def trip_advice_llm(*, provider_id: str) -> dict:
    """Trip advice, then a model turns the facts and the advice into one friendly sentence."""
    graph = copy.deepcopy(TRIP_ADVICE["graph"])
    graph["nodes"] = [node for node in graph["nodes"] if node["id"] != "end"]
    graph["nodes"] += [
        {
            "id": "ask",
            "type": "llm",
            "name": "Ask the model",
            "config": {
                "provider": provider_id,
                "system": "You give short, friendly travel advice.",
                "prompt": "In one sentence, advise a traveller. Facts: {{ summary.text }} Advice: {{ advice.output }}",
                "temperature": 0.2,
                "max_tokens": 120,
            },
        },
        {
            "id": "end",
            "type": "end",
            "name": "End",
            "config": {"outputs": {"summary": "{{ summary.text }}", "advice": "{{ ask.text }}"}},
        },
    ]
    graph["edges"] = [edge for edge in graph["edges"] if edge["target"] != "end"]
    graph["edges"] += [
        {"source": "summary", "target": "ask"},
        {"source": "advice", "target": "ask"},
        {"source": "ask", "target": "end"},
    ]
    return {
        "name": "Trip advice (LLM)",
        "description": (
            "Trip advice, worded by a model: its llm node needs one of your LLM providers "
            "(add one on the Providers page)."
        ),
        "graph": graph,
    }


def demo_workflows(*, owner) -> list[dict]:
    provider = LLMProvider.objects.filter(owner=owner).order_by("created_at").first()
    provider_id = str(provider.pk) if provider is not None else MISSING_PROVIDER
    return [GREETING, TRIP_ADVICE, trip_advice_llm(provider_id=provider_id)]


class Command(BaseCommand):
    help = "Create the demo: users 'demo' and 'admin' (passwords printed when they are created) and three workflows."

    def add_arguments(self, parser):
        parser.add_argument(
            "--allow-production",
            action="store_true",
            help="Run even with DEBUG off (it creates a superuser with a printed password).",
        )

    def handle(self, *args, allow_production: bool = False, **options):
        if not settings.DEBUG and not allow_production:
            raise CommandError("weft_demo creates a superuser with a known password: run it with DEBUG=1 only.")
        with transaction.atomic():
            demo, demo_password = self._user(username=DEMO_USERNAME, operator=False)
            admin, admin_password = self._user(username=ADMIN_USERNAME, operator=True)
            created = []
            for spec in demo_workflows(owner=demo):
                if Workflow.objects.filter(owner=demo, name=spec["name"]).exists():
                    continue
                workflow_create(owner=demo, name=spec["name"], description=spec["description"], graph=spec["graph"])
                created.append(spec["name"])
        self.stdout.write(f"Demo workflows created: {', '.join(created) or 'none (already there)'}")
        users = ((demo, demo_password, "builder", ""), (admin, admin_password, "operator", "  (/admin/)"))
        if demo_password or admin_password:
            self.stdout.write(self.style.SUCCESS("Sign in with (shown once, when the user is created):"))
        for user, password, role, where in users:
            if password:
                self.stdout.write(f"  {role:<9} username: {user.username}  password: {password}{where}")
        kept = [user.username for user, password, _, _ in users if not password]
        if kept:
            self.stdout.write(f"Users {' and '.join(kept)} already exist: their passwords are kept.")
        reset = f"python manage.py changepassword {DEMO_USERNAME}"
        self.stdout.write(f"To set a new password: {reset} (or {ADMIN_USERNAME})")

    def _user(self, *, username: str, operator: bool) -> tuple[User, str]:
        """The user, and its new password if it was created now ("" when it existed: nothing is changed)."""
        user, created = User.objects.get_or_create(
            username=username,
            defaults={"email": f"{username}@example.com", "is_staff": operator, "is_superuser": operator},
        )
        if not created:
            return user, ""
        password = secrets.token_urlsafe(12)
        user.set_password(password)
        user.save(update_fields=["password"])
        return user, password
