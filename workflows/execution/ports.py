"""The ports the engine's nodes get for one run (``workflows.engine.ports``), built from the run's row.

- ``owner_id``: the workflow's owner, whose LLM providers, tools and agents the run may use;
  read once, when a node first asks (most runs never do).
- ``memory``: the conversation the run continues (``history.memory.RunConversation``) when it
  runs a released version with a ``chat_id``; None otherwise.
"""

from config.db import on_db_thread
from history.memory import RunConversation
from workflows.engine import NodePorts
from workflows.models import Run, Workflow


def run_ports(run: Run) -> NodePorts:
    memory = None
    if run.flow_id is not None and run.chat_id:
        memory = RunConversation(flow_id=run.flow_id, app_id=run.app_id, chat_id=run.chat_id, uid=run.uid)
    return NodePorts(owner_id=_OwnerOf(run.workflow_id), memory=memory)


class _OwnerOf:
    """The workflow's owner id, read on the first call and kept for the rest of the run."""

    def __init__(self, workflow_id):
        self.workflow_id = workflow_id
        self.read = False
        self.owner_id = None

    async def __call__(self):
        if not self.read:
            self.owner_id = await on_db_thread(self._owner_id)()
            self.read = True
        return self.owner_id

    def _owner_id(self):
        return Workflow.objects.filter(pk=self.workflow_id).values_list("owner_id", flat=True).first()
