"""Load the demo that `make run` serves: a builder, an operator and two workflows.

Safe to run again: users are reused and get a fresh password (printed, so the one on screen
always works), workflows are created only when the demo user has none of that name.
"""

import secrets

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import User
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

DEMO_WORKFLOWS = (GREETING, TRIP_ADVICE)


class Command(BaseCommand):
    help = "Create or refresh the demo: users 'demo' and 'admin' (new passwords, printed) and two workflows."

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
            demo, demo_password = self._user_with_new_password(username=DEMO_USERNAME, operator=False)
            admin, admin_password = self._user_with_new_password(username=ADMIN_USERNAME, operator=True)
            created = []
            for spec in DEMO_WORKFLOWS:
                if Workflow.objects.filter(owner=demo, name=spec["name"]).exists():
                    continue
                workflow_create(owner=demo, name=spec["name"], description=spec["description"], graph=spec["graph"])
                created.append(spec["name"])
        self.stdout.write(f"Demo workflows created: {', '.join(created) or 'none (already there)'}")
        self.stdout.write(self.style.SUCCESS("Sign in with (new passwords on every run):"))
        self.stdout.write(f"  builder   username: {demo.username}  password: {demo_password}")
        self.stdout.write(f"  operator  username: {admin.username}  password: {admin_password}  (/admin/)")

    def _user_with_new_password(self, *, username: str, operator: bool) -> tuple[User, str]:
        user, _ = User.objects.get_or_create(
            username=username,
            defaults={"email": f"{username}@example.com"},
        )
        password = secrets.token_urlsafe(12)
        user.set_password(password)
        user.is_active = True
        user.is_staff = operator
        user.is_superuser = operator
        user.save()
        return user, password
