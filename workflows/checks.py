"""System checks of the workflows app: what ``manage.py check`` (and ``migrate``) warn about."""

from django.core.checks import Tags, Warning, register


@register(Tags.security)
def sandbox_isolation(app_configs, **kwargs):
    """weft.W010: code nodes cannot be isolated on this machine (bubblewrap or libseccomp missing)."""
    from workflows.engine.sandbox import jail
    from workflows.engine.sandbox.pool import isolation_required

    state = jail.status()
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
