"""System checks of the workflows app: what ``manage.py check`` (and ``migrate``) warn about."""

from django.core.checks import Tags, Warning, register

from config.conf import weft_settings
from workflows.engine import plugin_key, plugins_installed
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


@register()
def node_plugins(app_configs, **kwargs):
    """weft.W020: an enabled node plugin is not installed; weft.W021: one cannot be used (docs/plugins.md)."""
    installed = {plugin_key(info.name): info for info in plugins_installed()}
    problems = [
        Warning(
            f"WEFT_ENGINE_PLUGINS names {name!r}, which is not installed.",
            hint="Install it into Weft's environment on every host, or remove it from WEFT_ENGINE_PLUGINS.",
            id="weft.W020",
        )
        for name in weft_settings.PLUGINS
        if plugin_key(name) not in installed
    ]
    problems += [
        Warning(
            f"The node plugin {info.label} cannot be used: {info.error}",
            hint="Its node types fail validation until it is fixed; `manage.py check` tells again.",
            id="weft.W021",
        )
        for info in installed.values()
        if info.enabled and info.error
    ]
    return problems
