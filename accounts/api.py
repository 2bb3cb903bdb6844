from django.contrib.auth import logout as session_logout
from django.contrib.auth.signals import user_logged_in
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api.responses import LimitErrorSerializer
from config.api.throttling import ClientAddressThrottle

from .serializers import TokenRequestSerializer, TokenSerializer, UserSerializer, WsTicketSerializer
from .services import token_create, tokens_delete
from .tickets import TICKET_TTL_S, ws_ticket_issue

SIGN_IN_429 = OpenApiResponse(
    LimitErrorSerializer,
    description="Too many calls from this address (`throttled`), or too many failed sign-ins for this username "
    "or from this address (`locked_out`); wait `Retry-After` seconds.",
)


class TokenCreateApi(APIView):
    """Exchange a username and password for an API token (stored hashed; shown only here).

    The token ends after ``WEFT_TOKEN_TTL_HOURS`` without use; at the per-user cap, the least
    recently used token of the user ends to make room.
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [ClientAddressThrottle]
    throttle_scope = "auth_token"

    @extend_schema(request=TokenRequestSerializer, responses={200: TokenSerializer, 429: SIGN_IN_429})
    def post(self, request):
        serializer = TokenRequestSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        user = serializer.validated_data["user"]
        token = token_create(user=user)
        # As a session sign-in does: last_login, and the lockout's failure count reset.
        user_logged_in.send(sender=user.__class__, request=request, user=user)
        return Response({"token": token}, status=status.HTTP_200_OK)


class LogoutApi(APIView):
    """End the credential of this call: its API token, or its session."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={204: None})
    def post(self, request):
        if request.auth is not None:
            request.auth.delete()
        else:
            session_logout(request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class LogoutAllApi(APIView):
    """End every API token of the caller (and the session, if the call came with one)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={204: None})
    def post(self, request):
        tokens_delete(user=request.user)
        if request.auth is None:
            session_logout(request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WsTicketApi(APIView):
    """A single-use ticket to open a websocket as the caller: ``/ws/...?ticket=<ticket>``, within ``expires_in`` s."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={201: WsTicketSerializer})
    def post(self, request):
        ticket = ws_ticket_issue(user=request.user)
        return Response({"ticket": ticket, "expires_in": TICKET_TTL_S}, status=status.HTTP_201_CREATED)


class MeApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: UserSerializer})
    def get(self, request):
        return Response(UserSerializer(request.user).data)
