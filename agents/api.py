from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api.viewsets import OwnedModelViewSet
from config.errors import Forbidden

from .chat import session_chat
from .models import Agent, LLMProvider, Message, Session, SessionWorkflow, Tool
from .selectors import (
    agents_for_user,
    providers_for_user,
    session_get_for_user,
    session_messages,
    session_workflow_current,
    session_workflow_get,
    session_workflow_previous,
    session_workflow_versions,
    sessions_for_user,
    tools_visible_to_user,
)
from .serializers import (
    AgentSerializer,
    MessageSerializer,
    ProviderSerializer,
    ProviderTestResultSerializer,
    SessionChatResultSerializer,
    SessionChatSerializer,
    SessionSerializer,
    SessionWorkflowCreateSerializer,
    SessionWorkflowSerializer,
    ToolSerializer,
)
from .services import (
    agent_create,
    agent_update,
    message_create,
    provider_create,
    provider_delete,
    provider_test,
    provider_update,
    session_workflow_create,
    session_workflow_revert,
    tool_create,
    tool_delete,
    tool_update,
)

# --- Providers, tools, agents -------------------------------------------------------------------


class ProviderViewSet(OwnedModelViewSet):
    """Your LLM providers. The API key is write-only: responses only say whether one is set."""

    queryset = LLMProvider.objects.all()
    serializer_class = ProviderSerializer
    filterset_fields = ["name", "model"]
    search_fields = ["name", "model"]
    ordering_fields = ["name", "created_at"]
    lookup_value_converter = "uuid"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return LLMProvider.objects.none()
        return providers_for_user(user=self.request.user)

    def perform_create(self, serializer):
        serializer.instance = provider_create(owner=self.request.user, data=serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = provider_update(
            provider=serializer.instance, actor=self.request.user, data=serializer.validated_data
        )

    def perform_destroy(self, instance):
        provider_delete(provider=instance, actor=self.request.user)

    @extend_schema(request=None, responses={200: ProviderTestResultSerializer})
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        """Ask the provider for its models (``GET {base_url}/models``, 5 s) to check the URL and key.

        Always 200: ``ok``, the provider's HTTP ``status`` if it answered, and when not ok an
        ``error`` and its ``code``. The key is never echoed.
        """
        result = provider_test(provider=self.get_object())
        return Response(ProviderTestResultSerializer(result).data)


class ToolViewSet(viewsets.ModelViewSet):
    """Your tools, and other users' public approved tools (read-only). A new or changed tool waits for review."""

    serializer_class = ToolSerializer
    filterset_fields = ["kind", "status", "visibility", "category"]
    search_fields = ["name", "description", "category"]
    ordering_fields = ["name", "created_at", "status"]
    lookup_value_converter = "uuid"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Tool.objects.none()
        return tools_visible_to_user(user=self.request.user)

    def get_object(self):
        tool = super().get_object()
        if self.action in ("update", "partial_update", "destroy") and tool.owner_id != self.request.user.pk:
            raise Forbidden("Only the tool's owner may change it.")
        return tool

    def perform_create(self, serializer):
        serializer.instance = tool_create(owner=self.request.user, data=serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = tool_update(
            tool=serializer.instance, data=serializer.validated_data, actor=self.request.user
        )

    def perform_destroy(self, instance):
        tool_delete(tool=instance, actor=self.request.user)


class AgentViewSet(OwnedModelViewSet):
    """Your agents. Their provider must be yours; their tools approved, and yours or public."""

    queryset = Agent.objects.all()
    serializer_class = AgentSerializer
    filterset_fields = ["status", "provider"]
    search_fields = ["name", "goal"]
    ordering_fields = ["name", "created_at"]
    lookup_value_converter = "uuid"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Agent.objects.none()
        return agents_for_user(user=self.request.user)

    def perform_create(self, serializer):
        serializer.instance = agent_create(owner=self.request.user, data=serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = agent_update(agent=serializer.instance, data=serializer.validated_data)


# --- Sessions -----------------------------------------------------------------------------------


class SessionViewSet(OwnedModelViewSet):
    """Your chat sessions."""

    queryset = Session.objects.all()
    serializer_class = SessionSerializer
    filterset_fields = ["status", "agent"]
    search_fields = ["title"]
    ordering_fields = ["created_at", "updated_at", "title"]
    lookup_value_converter = "uuid"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Session.objects.none()
        return sessions_for_user(user=self.request.user)


class SessionScopedMixin:
    """A view under ``/sessions/<session_id>/``: the session must be the caller's (else 404)."""

    def get_session(self) -> Session:
        if not hasattr(self, "_session"):
            self._session = session_get_for_user(user=self.request.user, session_id=self.kwargs["session_id"])
        return self._session


class SessionMessageListApi(SessionScopedMixin, generics.ListCreateAPIView):
    """The session's messages in order. A posted message gets the next ``sequence_number``."""

    serializer_class = MessageSerializer
    filter_backends: list = []

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Message.objects.none()
        return session_messages(session=self.get_session())

    def perform_create(self, serializer):
        serializer.instance = message_create(
            session=self.get_session(), user=self.request.user, **serializer.validated_data
        )


class SessionChatApi(SessionScopedMixin, APIView):
    @extend_schema(
        request=SessionChatSerializer,
        responses={
            201: SessionChatResultSerializer,
            400: OpenApiResponse(description="The session has no usable agent (names `agent`), or a bad body."),
            429: OpenApiResponse(description="The provider's rate limit is reached; see Retry-After."),
            502: OpenApiResponse(description="The agent failed: the provider refused, or the step limit or budget."),
            504: OpenApiResponse(description="The agent did not answer in time."),
        },
    )
    def post(self, request, session_id):
        """Send a message to the session's agent; the message, any tool calls and results, and the answer are appended.

        The agent's tool-calling loop runs while the request waits (bounded by
        `AGENT_CHAT_TIMEOUT_S`, 60 s by default); nothing is appended if it fails.
        """
        serializer = SessionChatSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        turn = session_chat(session=self.get_session(), user=request.user, **serializer.validated_data)
        return Response(SessionChatResultSerializer(turn).data, status=status.HTTP_201_CREATED)


class SessionWorkflowListApi(SessionScopedMixin, generics.ListAPIView):
    """The session's workflow versions, oldest first; exactly one is current."""

    serializer_class = SessionWorkflowSerializer
    filter_backends: list = []

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return SessionWorkflow.objects.none()
        return session_workflow_versions(session=self.get_session())

    @extend_schema(request=SessionWorkflowCreateSerializer, responses={201: SessionWorkflowSerializer})
    def post(self, request, session_id):
        """Store version n+1 (its parent the current one) and make it current."""
        serializer = SessionWorkflowCreateSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        version = session_workflow_create(session=self.get_session(), user=request.user, **serializer.validated_data)
        return Response(SessionWorkflowSerializer(version).data, status=status.HTTP_201_CREATED)


class SessionWorkflowCurrentApi(SessionScopedMixin, APIView):
    @extend_schema(responses={200: SessionWorkflowSerializer, 404: OpenApiResponse(description="No version yet.")})
    def get(self, request, session_id):
        return Response(SessionWorkflowSerializer(session_workflow_current(session=self.get_session())).data)


class SessionWorkflowPreviousApi(SessionScopedMixin, APIView):
    @extend_schema(
        responses={200: SessionWorkflowSerializer, 404: OpenApiResponse(description="The current is the first.")}
    )
    def get(self, request, session_id):
        """The version just before the current one."""
        return Response(SessionWorkflowSerializer(session_workflow_previous(session=self.get_session())).data)


class SessionWorkflowDetailApi(SessionScopedMixin, APIView):
    @extend_schema(responses={200: SessionWorkflowSerializer})
    def get(self, request, session_id, version: int):
        found = session_workflow_get(session=self.get_session(), version=version)
        return Response(SessionWorkflowSerializer(found).data)


class SessionWorkflowRevertApi(SessionScopedMixin, APIView):
    @extend_schema(
        request=None,
        responses={
            201: SessionWorkflowSerializer,
            200: OpenApiResponse(SessionWorkflowSerializer, description="That version already is the current one."),
        },
    )
    def post(self, request, session_id, version: int):
        """Make an earlier version current again, by storing a copy of it as the newest version."""
        result = session_workflow_revert(session=self.get_session(), user=request.user, version=version)
        created = result.sequence_number != version
        return Response(
            SessionWorkflowSerializer(result).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )
