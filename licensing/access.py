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
import threading
import time
from dataclasses import dataclass

from django.db.models.signals import post_delete, post_save

from config.generations import ACCESS, generation, generation_move
from workflows.models import ReleaseChannel, Workflow, WorkflowVersion
from workflows.releases.selectors import flow_latest_released

from .models import App, License

ACCESS_CACHE_TTL_S = 60.0
ACCESS_CACHE_MAX = 4096

_kept: dict[tuple, tuple[str, float, object]] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Access:
    """One call's view of the kept entries: those kept under the generation it read."""

    generation: str

    def _get(self, key: tuple):
        entry = _kept.get(key)
        if entry is None or entry[0] != self.generation or entry[1] < time.monotonic():
            return None
        return entry[2]

    def _keep(self, key: tuple, value) -> None:
        with _lock:
            if len(_kept) >= ACCESS_CACHE_MAX:
                _kept.clear()
            _kept[key] = (self.generation, time.monotonic() + ACCESS_CACHE_TTL_S, value)

    def app(self, api_key: str) -> App:
        """The app with this key (App.DoesNotExist if none)."""
        key = ("app", api_key)
        kept = self._get(key)
        if kept is None:
            kept = App.objects.get(api_key=api_key)  # unique: no ordering to compile, as first() would
            self._keep(key, kept)
        return copy.copy(kept)

    def license(self, *, app_id: int, workflow_id) -> License:
        """The app's license for the workflow, with the workflow (License.DoesNotExist if none)."""
        key = ("license", app_id, str(workflow_id))
        kept = self._get(key)
        if kept is None:
            kept = License.objects.select_related("group").get(app_id=app_id, group_id=workflow_id)
            self._keep(key, (kept, kept.group))
        else:
            kept = kept[0]
        found = copy.copy(kept)
        found.group = copy.copy(kept.group)
        return found

    def latest_release(self, *, workflow_id) -> WorkflowVersion | None:
        """The workflow's greatest version released to apps (``flow_latest_released`` on the API channel)."""
        key = ("release", str(workflow_id))
        kept = self._get(key)
        if kept is None:
            flow = flow_latest_released(workflow_id=workflow_id, channel=ReleaseChannel.API)
            kept = (flow, None if flow is None else json.dumps(flow.release_data))
            self._keep(key, kept)
        flow, graph = kept
        if flow is None:
            return None
        found = copy.copy(flow)
        found.release_data = json.loads(graph)
        return found


def access_now() -> Access:
    """The kept entries a call may use: one read of the generation's token."""
    return Access(generation(ACCESS))


def access_changed(**kwargs) -> None:
    """A signal receiver (and a call for services that write with ``update()``): drop every kept entry."""
    generation_move(ACCESS)


def access_signals_connect() -> None:
    for model in (App, License, Workflow, WorkflowVersion):
        post_save.connect(access_changed, sender=model, dispatch_uid=f"access-{model._meta.label}")
        post_delete.connect(access_changed, sender=model, dispatch_uid=f"access-{model._meta.label}-delete")
