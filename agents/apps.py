from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Agents, tools and providers"

    def ready(self):
        from . import nodes  # noqa: F401 - registers the llm, agent and tool node types with the engine
