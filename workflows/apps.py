from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"
    verbose_name = "Workflows"

    def ready(self) -> None:
        # The system checks, and the API schema of the DSL's graph fields.
        from observability.metrics import scrape_collector_register

        from . import checks, openapi  # noqa: F401
        from .execution.metrics import RunsCollector

        scrape_collector_register(RunsCollector())
        # The enabled node plugins are imported as the process starts, not by the first run that needs them.
        from workflows.engine import plugins_load

        plugins_load()
