import semantic_version
from django.db.models import Q, QuerySet

from workflows.models import Workflow, WorkflowVersion

from .versions import parse_range

#: ``release_status`` holds the ReleaseChannel bits: below 8 (a check constraint of the table).
RELEASE_STATUS_LIMIT = 8


def flows_for_workflow(*, workflow: Workflow) -> QuerySet[WorkflowVersion]:
    return WorkflowVersion.objects.filter(workflow=workflow).order_by(
        "-version_major", "-version_minor", "-version_patch"
    )


def flow_previous(*, flow: WorkflowVersion) -> WorkflowVersion | None:
    """The greatest version of the same group below ``flow``."""
    major, minor, patch = flow.version_major, flow.version_minor, flow.version_patch
    lower = (
        Q(version_major__lt=major)
        | Q(version_major=major, version_minor__lt=minor)
        | Q(version_major=major, version_minor=minor, version_patch__lt=patch)
    )
    return flows_for_workflow(workflow=flow.workflow).filter(lower).first()


def flow_latest_released(*, workflow_id, channel: int, version_range: str | None = None) -> WorkflowVersion | None:
    """The greatest version of a group released on ``channel``, optionally within a semver range,
    without the copy of the draft it was published from (``data``: runs read ``release_data``).

    Without a range this is one query walking the (group, major, minor, patch) index. The release
    bits are few (``release_status`` is below 8), so "released on the channel" is a list of values.
    """
    on_channel = [status for status in range(RELEASE_STATUS_LIMIT) if status & channel]
    released = (
        WorkflowVersion.objects.filter(workflow_id=workflow_id, release_status__in=on_channel)
        .defer("data")
        .order_by("-version_major", "-version_minor", "-version_patch")
    )
    if version_range is None:
        return released.first()
    spec = parse_range(version_range)
    for flow_id, version in released.values_list("id", "version").iterator(chunk_size=200):
        if spec.match(semantic_version.Version(version)):
            return released.get(pk=flow_id)
    return None


def flow_diff(*, old: dict, new: dict) -> dict:
    """Nodes and edges added, removed and changed between two graphs."""
    old_nodes = {node["id"]: node for node in old.get("nodes", [])}
    new_nodes = {node["id"]: node for node in new.get("nodes", [])}

    def edge_key(edge: dict) -> tuple:
        return (edge["source"], edge["target"], edge.get("source_handle") or "")

    old_edges = {edge_key(edge): edge for edge in old.get("edges", [])}
    new_edges = {edge_key(edge): edge for edge in new.get("edges", [])}
    return {
        "nodes": {
            "added": sorted(new_nodes.keys() - old_nodes.keys()),
            "removed": sorted(old_nodes.keys() - new_nodes.keys()),
            "changed": sorted(key for key in old_nodes.keys() & new_nodes.keys() if old_nodes[key] != new_nodes[key]),
        },
        "edges": {
            "added": [new_edges[key] for key in sorted(new_edges.keys() - old_edges.keys())],
            "removed": [old_edges[key] for key in sorted(old_edges.keys() - new_edges.keys())],
        },
    }
