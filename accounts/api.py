from drf_spectacular.utils import extend_schema
from knox.models import AuthToken
from rest_framework import status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api.responses import THROTTLED_429
from config.api.throttling import ClientAddressThrottle

from .serializers import TokenRequestSerializer, TokenSerializer, UserSerializer


class TokenCreateApi(APIView):
    """Exchange a username and password for an API token (stored hashed; shown only here)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [ClientAddressThrottle]
    throttle_scope = "auth_token"

    @extend_schema(request=TokenRequestSerializer, responses={200: TokenSerializer, 429: THROTTLED_429})
    def post(self, request):
        serializer = TokenRequestSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        _, token = AuthToken.objects.create(serializer.validated_data["user"])
        return Response({"token": token}, status=status.HTTP_200_OK)


class MeApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: UserSerializer})
    def get(self, request):
        return Response(UserSerializer(request.user).data)
