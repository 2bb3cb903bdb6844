"""Reads for agents, tools, providers and sessions: each scoped to what the user may see."""

from django.db.models import Q, QuerySet

from config.errors import NotFound

from .models import Agent, LLMProvider, Message, Session, SessionWorkflow, Tool


def providers_for_user(*, user) -> QuerySet[LLMProvider]:
    return LLMProvider.objects.filter(owner=user)


def tools_for_user(*, user) -> QuerySet[Tool]:
    """The user's own tools: the ones they may edit."""
    return Tool.objects.filter(owner=user)


def tools_visible_to_user(*, user) -> QuerySet[Tool]:
    """Own tools, whatever their status, plus other users' public tools an operator approved."""
    return Tool.objects.filter(Q(owner=user) | Q(visibility=Tool.Visibility.PUBLIC, status=Tool.Status.APPROVED))


def tools_attachable_by_user(*, user) -> QuerySet[Tool]:
    """Tools the user may give to an agent: approved, and their own or public."""
    return Tool.objects.filter(Q(owner=user) | Q(visibility=Tool.Visibility.PUBLIC), status=Tool.Status.APPROVED)


def agents_for_user(*, user) -> QuerySet[Agent]:
    return Agent.objects.filter(owner=user).select_related("provider").prefetch_related("tools")


def sessions_for_user(*, user) -> QuerySet[Session]:
    return Session.objects.filter(owner=user)


def session_get_for_user(*, user, session_id) -> Session:
    """The user's session; anyone else's does not exist for them."""
    session = sessions_for_user(user=user).filter(pk=session_id).first()
    if session is None:
        raise NotFound("No such session.", field="session_id")
    return session


def session_messages(*, session: Session) -> QuerySet[Message]:
    return Message.objects.filter(session=session).order_by("sequence_number")


def session_workflow_versions(*, session: Session) -> QuerySet[SessionWorkflow]:
    return SessionWorkflow.objects.filter(session=session).order_by("sequence_number")


def session_workflow_current(*, session: Session) -> SessionWorkflow:
    current = session_workflow_versions(session=session).filter(is_current=True).first()
    if current is None:
        raise NotFound("This session has no workflow yet.", code="no_current_workflow")
    return current


def session_workflow_previous(*, session: Session) -> SessionWorkflow:
    """The version just before the current one (seed 002: ``sequence_number = current - 1``).

    Versions only ever append (a revert appends a copy), so this is also the current one's parent.
    """
    current = session_workflow_current(session=session)
    previous = session_workflow_versions(session=session).filter(sequence_number=current.sequence_number - 1).first()
    if previous is None:
        raise NotFound("The current workflow is the first version.", code="no_previous_workflow")
    return previous


def session_workflow_get(*, session: Session, version: int) -> SessionWorkflow:
    found = session_workflow_versions(session=session).filter(sequence_number=version).first()
    if found is None:
        raise NotFound(f"This session has no workflow version {version}.", field="version")
    return found
