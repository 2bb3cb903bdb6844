"""What the app API reads on every call, kept in this process between calls: the app a key names, the
workflow a license lets that app call, and the workflow's latest release on the API channel.

Each call reads one token first, the ``access`` generation (``config.generations``: one Redis
``GET``), which every change to an app, a license, a workflow or a release replaces (the models'
signals, and the services that write with ``update()``). What was kept under another token is read
again. So a license switched off, an app disabled or a secret rotated is refused
on the very next call, in every process, as when each call read the database. Entries also expire
after :data:`ACCESS_CACHE_TTL_S`, so that a change made around Django (SQL by hand) is seen within
that time, and at most :data:`ACCESS_CACHE_MAX` are kept.

Each call gets its own model instances (copies; a release's graph is parsed again from its JSON
text), so nothing a call changes reaches another.
"""

import copy
import json
from dataclasses import dataclass

from django.db.models.signals import post_delete, post_save

from config.generations import ACCESS, GenerationCache, generation_move
from workflows.models import ReleaseChannel, Workflow, WorkflowVersion
from workflows.releases.selectors import flow_latest_released

from .models import App, License

ACCESS_CACHE_TTL_S = 60.0
ACCESS_CACHE_MAX = 4096

_kept = GenerationCache(ACCESS, most=ACCESS_CACHE_MAX, ttl_s=ACCESS_CACHE_TTL_S)


@dataclass(frozen=True)
class Access:
    """One call's view of the kept entries: those kept under the generation it read."""

    generation: str

    def app(self, api_key: str) -> App:
        """The app with this key (App.DoesNotExist if none)."""
        # unique: get() compiles no ordering, as first() would
        kept = _kept.get(("app", api_key), lambda: App.objects.get(api_key=api_key), token=self.generation)
        return copy.copy(kept)

    def license(self, *, app_id: int, workflow_id) -> License:
        """The app's license for the workflow, with the workflow (License.DoesNotExist if none)."""
        kept = _kept.get(
            ("license", app_id, str(workflow_id)),
            lambda: License.objects.select_related("group").get(app_id=app_id, group_id=workflow_id),
            token=self.generation,
        )
        found = copy.copy(kept)
        found.group = copy.copy(kept.group)
        return found

    def latest_release(self, *, workflow_id) -> WorkflowVersion | None:
        """The workflow's greatest version released to apps (``flow_latest_released`` on the API channel)."""

        def load() -> tuple[WorkflowVersion | None, str | None]:
            flow = flow_latest_released(workflow_id=workflow_id, channel=ReleaseChannel.API)
            return flow, None if flow is None else json.dumps(flow.release_data)

        flow, graph = _kept.get(("release", str(workflow_id)), load, token=self.generation)
        if flow is None:
            return None
        found = copy.copy(flow)
        found.release_data = json.loads(graph)
        return found


def access_now() -> Access:
    """The kept entries a call may use: one read of the generation's token."""
    return Access(_kept.token())


def access_changed(**kwargs) -> None:
    """A signal receiver (and a call for services that write with ``update()``): drop every kept entry."""
    generation_move(ACCESS)


def access_signals_connect() -> None:
    for model in (App, License, Workflow, WorkflowVersion):
        post_save.connect(access_changed, sender=model, dispatch_uid=f"access-{model._meta.label}")
        post_delete.connect(access_changed, sender=model, dispatch_uid=f"access-{model._meta.label}-delete")
