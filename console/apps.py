from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The browser console: pages served by Django, driven by the API and the run websocket."""

    name = "console"
    verbose_name = "Console"
