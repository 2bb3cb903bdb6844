import ipaddress

from django.apps import AppConfig
from django.conf import settings
from django.core import checks


class ObservabilityConfig(AppConfig):
    name = "observability"
    verbose_name = "Observability"

    def ready(self) -> None:
        from . import task_signals, tracing

        tracing.configure_from_environment()
        task_signals.connect()
        checks.register(metrics_allow_check)


def metrics_allow_check(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Every WEFT_METRICS_ALLOW entry is a network or an address."""
    problems = []
    for entry in settings.METRICS_ALLOW:
        try:
            ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            problems.append(
                checks.Error(
                    f"WEFT_METRICS_ALLOW: {entry!r} is not a network or an address (e.g. 10.0.0.0/8, 192.0.2.7).",
                    id="observability.E001",
                )
            )
    return problems
