"""System checks of the workflows app: what ``manage.py check`` (and ``migrate``) warn about."""

from django.core.checks import Tags, Warning, register

from workflows.engine.sandbox import isolation_required, isolation_status


@register(Tags.security)
def sandbox_isolation(app_configs, **kwargs):
    """weft.W010: code nodes cannot be isolated on this machine (bubblewrap or libseccomp missing)."""
    state = isolation_status()
    if state["isolated"]:
        return []
    required = isolation_required()
    consequence = "code nodes will fail" if required else "code nodes run UNISOLATED (SANDBOX_REQUIRE_ISOLATION off)"
    return [
        Warning(
            f"The code sandbox cannot isolate code here: {state['problem']}; {consequence}.",
            hint="Install bubblewrap (Debian: apt-get install bubblewrap) on every host that runs workers.",
            id="weft.W010",
        )
    ]
