"""Writes for agents, tools, providers and sessions: every rule lives here, whoever calls it."""

from dataclasses import dataclass

import httpx
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from config.errors import Conflict, InvalidInput, NotFound
from history.services import audit_log_record
from workflows.engine import EngineError, LLMClient, NonRetryableError, guarded_client

from .models import Agent, LLMProvider, Message, Session, SessionWorkflow, Tool
from .selectors import tools_attachable_by_user

# --- LLM providers ------------------------------------------------------------------------------

PROVIDER_FIELDS = ("name", "kind", "base_url", "model", "available_models", "metadata")
PROVIDER_TEST_TIMEOUT_S = 5.0


def _provider_name_check(*, owner, name: str, exclude_pk=None) -> None:
    if LLMProvider.objects.filter(owner=owner, name=name).exclude(pk=exclude_pk).exists():
        raise InvalidInput("You already have a provider with this name.", field="name", code="unique")


def _provider_record_key_change(*, provider: LLMProvider, actor) -> None:
    # The audit row says that the key changed and whether one is set, never anything about its value.
    audit_log_record(
        actor=actor,
        action="provider.api_key_change",
        target=provider,
        after={"has_api_key": bool(provider.api_key)},
    )


def provider_create(*, owner, data: dict, actor=None) -> LLMProvider:
    """A provider of ``owner``'s; ``actor`` (the owner when None: an operator in the admin) is audited for its key."""
    _provider_name_check(owner=owner, name=data["name"])
    api_key = data.get("api_key", "")
    with transaction.atomic():
        provider = LLMProvider.objects.create(
            owner=owner, api_key=api_key, **{name: data[name] for name in PROVIDER_FIELDS if name in data}
        )
        if api_key:
            _provider_record_key_change(provider=provider, actor=actor or owner)
    return provider


def provider_update(*, provider: LLMProvider, actor, data: dict) -> LLMProvider:
    """Change the given fields. ``api_key`` left out keeps the stored key; an empty one clears it."""
    if "name" in data:
        _provider_name_check(owner=provider.owner, name=data["name"], exclude_pk=provider.pk)
    update_fields = ["updated_at"]
    for name in PROVIDER_FIELDS:
        if name in data:
            setattr(provider, name, data[name])
            update_fields.append(name)
    key_changed = "api_key" in data and data["api_key"] != provider.api_key
    if key_changed:
        provider.api_key = data["api_key"]
        update_fields.append("api_key")
    with transaction.atomic():
        provider.save(update_fields=update_fields)
        if key_changed:
            _provider_record_key_change(provider=provider, actor=actor)
    return provider


def provider_delete(*, provider: LLMProvider, actor) -> None:
    """Delete a provider with its key; the audit row says whether one was set, never what it was."""
    with transaction.atomic():
        audit_log_record(
            actor=actor,
            action="provider.delete",
            target=provider,
            before={
                "owner": provider.owner_id,
                "name": provider.name,
                "base_url": provider.base_url,
                "has_api_key": bool(provider.api_key),
            },
        )
        provider.delete()


def provider_set_api_key(*, provider: LLMProvider, actor, api_key: str) -> LLMProvider:
    return provider_update(provider=provider, actor=actor, data={"api_key": api_key})


@dataclass(frozen=True)
class ProviderTestResult:
    """``code`` says what to fix: empty when ``ok``; ``blocked`` (the outbound guard refused the
    address), ``unreachable`` (no connection or no answer in time), ``unauthorized`` (the key was
    refused), ``not_found`` (no ``/models`` there: check the base URL), ``invalid_url`` or
    ``http_error``."""

    ok: bool
    status: int | None
    error: str
    code: str = ""


def _provider_fetch(url: str, *, headers: dict) -> httpx.Response:
    """The one request a provider test sends, to a URL its owner chose, through the outbound guard."""
    with guarded_client(timeout_s=PROVIDER_TEST_TIMEOUT_S, follow_redirects=False) as client:
        return client.get(url, headers=headers)


def _provider_answer_code(status: int) -> str:
    if status in (401, 403):
        return "unauthorized"
    if status == 404:
        return "not_found"
    return "http_error"


def provider_test(*, provider: LLMProvider) -> ProviderTestResult:
    """List the provider's models (``GET {base_url}/models``, as its kind asks) to see whether it answers and
    accepts the key."""
    url, headers = LLMClient.for_provider(provider).models_request()
    try:
        response = _provider_fetch(url, headers=headers)
    except (httpx.HTTPError, httpx.InvalidURL, UnicodeError, EngineError) as exc:
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if provider.api_key:
            message = message.replace(provider.api_key, "***")
        # The guard's refusals are not retryable; a failed connection or a timeout may pass.
        if isinstance(exc, httpx.InvalidURL | UnicodeError):
            code = "invalid_url"
        else:
            code = "blocked" if isinstance(exc, NonRetryableError) else "unreachable"
        return ProviderTestResult(ok=False, status=None, error=message, code=code)
    if response.is_success:
        return ProviderTestResult(ok=True, status=response.status_code, error="")
    # The body is not echoed: a provider may repeat the key it was sent.
    return ProviderTestResult(
        ok=False,
        status=response.status_code,
        error=f"The provider answered HTTP {response.status_code}.",
        code=_provider_answer_code(response.status_code),
    )


# --- Tools --------------------------------------------------------------------------------------

TOOL_FIELDS = (
    "name",
    "description",
    "category",
    "kind",
    "endpoint",
    "parameters",
    "config",
    "secret_headers",
    "visibility",
)


def tool_parameters_check(parameters) -> None:
    """A tool's parameters are the JSON Schema of the object an LLM passes when it calls the tool."""
    if not isinstance(parameters, dict):
        raise InvalidInput("Must be a JSON Schema object.", field="parameters", code="invalid_schema")
    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError as exc:
        message = f"Not a valid JSON Schema: {exc.message}"
        raise InvalidInput(message, field="parameters", code="invalid_schema") from exc
    if parameters.get("type", "object") != "object":
        raise InvalidInput(
            'The schema must describe an object ("type": "object").', field="parameters", code="invalid_schema"
        )


def tool_config_check(config) -> None:
    """``config`` is shown to the tool's owner: headers, which may hold credentials, are kept apart."""
    if not isinstance(config, dict):
        raise InvalidInput("Must be an object.", field="config", code="invalid")
    if "headers" in config:
        raise InvalidInput(
            "Headers go in the write-only `headers` field, where they are stored encrypted.",
            field="config",
            code="headers_in_config",
        )


TOOL_MAX_HEADERS = 50


def tool_headers_check(headers) -> None:
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise InvalidInput("Must be an object of header names to strings.", field="headers", code="invalid")
    if len(headers) > TOOL_MAX_HEADERS:
        raise InvalidInput(f"A tool has at most {TOOL_MAX_HEADERS} headers.", field="headers", code="max_length")


def _tool_check(*, owner, values: dict, exclude_pk=None) -> None:
    tool_parameters_check(values["parameters"])
    tool_config_check(values["config"])
    tool_headers_check(values["secret_headers"])
    if values["kind"] == Tool.Kind.HTTP and not values["endpoint"]:
        raise InvalidInput("An HTTP tool needs an endpoint.", field="endpoint", code="required")
    if Tool.objects.filter(owner=owner, name=values["name"]).exclude(pk=exclude_pk).exists():
        raise InvalidInput("You already have a tool with this name.", field="name", code="unique")


def tool_create(*, owner, data: dict) -> Tool:
    """A new tool waits for an operator's review before it can run or be given to an agent."""
    tool = Tool(owner=owner, status=Tool.Status.PENDING, **{name: data[name] for name in TOOL_FIELDS if name in data})
    _tool_check(owner=owner, values={name: getattr(tool, name) for name in TOOL_FIELDS})
    tool.save()
    return tool


def tool_update(*, tool: Tool, data: dict, actor=None) -> Tool:
    """Change a tool; any real change sends it back to review, since what was approved is gone.

    ``actor`` (the owner when None) is audited when the change alters who may use the tool: its
    visibility, or the loss of its approval.
    """
    changed = [name for name in TOOL_FIELDS if name in data and data[name] != getattr(tool, name)]
    if not changed:
        return tool
    values = {name: data.get(name, getattr(tool, name)) for name in TOOL_FIELDS}
    _tool_check(owner=tool.owner, values=values, exclude_pk=tool.pk)
    before = {"visibility": tool.visibility, "status": tool.status}
    for name in changed:
        setattr(tool, name, data[name])
    tool.status = Tool.Status.PENDING
    tool.reviewer = None
    tool.reviewed_at = None
    tool.review_reason = ""
    with transaction.atomic():
        tool.save(update_fields=[*changed, "status", "reviewer", "reviewed_at", "review_reason", "updated_at"])
        tool_access_change_record(tool=tool, actor=actor or tool.owner, before=before)
    return tool


def tool_delete(*, tool: Tool, actor) -> None:
    """Delete a tool (agents lose it); the audit row keeps who could use it."""
    with transaction.atomic():
        audit_log_record(
            actor=actor,
            action="tool.delete",
            target=tool,
            before={"owner": tool.owner_id, "name": tool.name, "visibility": tool.visibility, "status": tool.status},
        )
        tool.delete()


def tool_access_change_record(*, tool: Tool, actor, before: dict) -> None:
    """Audit a change of ``tool``'s visibility or review status since ``before`` (no row when neither changed)."""
    after = {"visibility": tool.visibility, "status": tool.status}
    changed = [name for name in after if before.get(name) != after[name]]
    if not changed:
        return
    audit_log_record(
        actor=actor,
        action="tool.visibility_change" if "visibility" in changed else "tool.review_reset",
        target=tool,
        before={name: before.get(name) for name in changed},
        after={name: after[name] for name in changed},
    )


def _tool_review(*, tool: Tool, reviewer, status: str, reason: str) -> Tool:
    with transaction.atomic():
        locked = Tool.objects.select_for_update().filter(pk=tool.pk).first()
        if locked is None:
            raise NotFound("No such tool.")
        before = {"status": locked.status}
        locked.status = status
        locked.reviewer = reviewer
        locked.reviewed_at = timezone.now()
        locked.review_reason = reason
        locked.save(update_fields=["status", "reviewer", "reviewed_at", "review_reason", "updated_at"])
        audit_log_record(
            actor=reviewer,
            action="tool.approve" if status == Tool.Status.APPROVED else "tool.reject",
            target=locked,
            before=before,
            after={"status": status},
            payload={"reason": reason},
        )
    return locked


def tool_approve(*, tool: Tool, reviewer, reason: str = "") -> Tool:
    return _tool_review(tool=tool, reviewer=reviewer, status=Tool.Status.APPROVED, reason=reason)


def tool_reject(*, tool: Tool, reviewer, reason: str) -> Tool:
    reason = reason.strip()
    if not reason:
        raise InvalidInput("Say why the tool is rejected.", field="reason", code="required")
    return _tool_review(tool=tool, reviewer=reviewer, status=Tool.Status.REJECTED, reason=reason)


# --- Agents -------------------------------------------------------------------------------------

AGENT_FIELDS = ("name", "start", "goal", "status", "provider", "model", "system_prompt", "max_steps", "token_budget")


def agent_check_attachments(*, owner, provider: LLMProvider | None, tools) -> None:
    """An agent uses its owner's provider and approved tools that are the owner's or public."""
    if provider is not None and provider.owner_id != owner.pk:
        raise InvalidInput("Use one of your own providers.", field="provider", code="does_not_exist")
    attachable = tools_attachable_by_user(user=owner).filter(pk__in=[tool.pk for tool in tools])
    allowed = set(attachable.values_list("pk", flat=True))
    refused = [tool for tool in tools if tool.pk not in allowed]
    if refused:
        names = ", ".join(sorted(str(tool) for tool in refused))
        raise InvalidInput(
            f"Only approved tools that are yours or public can be given to an agent: {names}.",
            field="tools",
            code="tool_not_approved",
        )


def agent_create(*, owner, data: dict) -> Agent:
    tools = list(data.get("tools", []))
    agent_check_attachments(owner=owner, provider=data.get("provider"), tools=tools)
    with transaction.atomic():
        agent = Agent.objects.create(owner=owner, **{name: data[name] for name in AGENT_FIELDS if name in data})
        agent.tools.set(tools)
    return agent


def agent_update(*, agent: Agent, data: dict) -> Agent:
    tools = list(data["tools"]) if "tools" in data else None
    agent_check_attachments(owner=agent.owner, provider=data.get("provider", agent.provider), tools=tools or [])
    changed = [name for name in AGENT_FIELDS if name in data]
    for name in changed:
        setattr(agent, name, data[name])
    with transaction.atomic():
        agent.save(update_fields=[*changed, "updated_at"])
        if tools is not None:
            agent.tools.set(tools)
    return agent


# --- Sessions: messages and workflow versions ---------------------------------------------------


def _session_lock(session: Session) -> Session:
    """Lock the session row for this transaction: messages and versions are numbered under it."""
    locked = Session.objects.select_for_update().filter(pk=session.pk).first()
    if locked is None:
        raise NotFound("No such session.", field="session_id")
    return locked


def message_create(*, session: Session, user, role: str, content: str, metadata: dict | None = None) -> Message:
    """Append a message with the session's next sequence number.

    The session row is locked while the number is taken, so concurrent posts queue up and the
    numbers stay 1..n without gaps; the unique (session, sequence_number) constraint backs it up.
    """
    try:
        with transaction.atomic():
            locked = _session_lock(session)
            locked.last_sequence_number += 1
            locked.save(update_fields=["last_sequence_number", "updated_at"])
            message = Message.objects.create(
                session=locked,
                user=user,
                role=role,
                content=content,
                sequence_number=locked.last_sequence_number,
                metadata=metadata or {},
            )
    except IntegrityError as exc:
        raise Conflict("Another message took this sequence number; retry.", code="sequence_conflict") from exc
    session.last_sequence_number = locked.last_sequence_number
    return message


def _session_workflow_append(*, session: Session, user, **values) -> SessionWorkflow:
    """Add version n+1 as the current one, its parent the old current. Call with the session locked."""
    versions = SessionWorkflow.objects.filter(session=session)
    current = versions.filter(is_current=True).first()
    last = versions.aggregate(last=Max("sequence_number"))["last"] or 0
    if current is not None:
        versions.filter(pk=current.pk).update(is_current=False)
    return SessionWorkflow.objects.create(
        session=session, user=user, sequence_number=last + 1, parent=current, is_current=True, **values
    )


def session_workflow_create(
    *,
    session: Session,
    user,
    workflow_data: dict | None = None,
    status: str = SessionWorkflow.Status.DRAFT,
    source_type: str | None = None,
    source_template=None,
) -> SessionWorkflow:
    """Store a new version of the session's workflow and make it the current one.

    From a template, ``source_type`` is ``template`` and ``workflow_data`` defaults to the
    template's data (seed 002's "create from template").
    """
    if source_template is not None:
        if source_type not in (None, SessionWorkflow.SourceType.TEMPLATE):
            raise InvalidInput(
                "A workflow made from a template has source_type 'template'.", field="source_type", code="invalid"
            )
        source_type = SessionWorkflow.SourceType.TEMPLATE
        if workflow_data is None:
            workflow_data = source_template.template_data
    elif source_type == SessionWorkflow.SourceType.TEMPLATE:
        raise InvalidInput("Name the template this workflow comes from.", field="source_template", code="required")
    if workflow_data is None:
        raise InvalidInput("This field is required.", field="workflow_data", code="required")
    try:
        with transaction.atomic():
            _session_lock(session)
            return _session_workflow_append(
                session=session,
                user=user,
                workflow_data=workflow_data,
                status=status,
                source_type=source_type or SessionWorkflow.SourceType.SCRATCH,
                source_template=source_template,
            )
    except IntegrityError as exc:
        raise Conflict("The session's workflow changed meanwhile; reload and retry.", code="version_conflict") from exc


def session_workflow_revert(*, session: Session, user, version: int) -> SessionWorkflow:
    """Make ``version`` current again by appending a copy of it, so history stays a straight line.

    The copy's parent is the version that was current; nothing is rewritten or lost, and a later
    "previous" is the version the user reverted from. Reverting to the current version changes
    nothing and returns it.
    """
    try:
        with transaction.atomic():
            _session_lock(session)
            target = SessionWorkflow.objects.filter(session=session, sequence_number=version).first()
            if target is None:
                raise NotFound(f"This session has no workflow version {version}.", field="version")
            if target.is_current:
                return target
            return _session_workflow_append(
                session=session,
                user=user,
                workflow_data=target.workflow_data,
                status=target.status,
                source_type=target.source_type,
                source_template=target.source_template,
                source_workflow=target.source_workflow,
            )
    except IntegrityError as exc:
        raise Conflict("The session's workflow changed meanwhile; reload and retry.", code="version_conflict") from exc
