from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "alerts"
    verbose_name = "Run alerts"

    def ready(self) -> None:
        # Connects the receiver of workflows.execution.signals.run_ended.
        from . import receivers  # noqa: F401
