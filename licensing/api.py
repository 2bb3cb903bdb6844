from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from config.api.serializers import StrictSerializer
from config.api.viewsets import OwnedModelViewSet

from .models import App, EnabledStatus, License
from .selectors import licenses_for_user
from .serializers import (
    AppCreateSerializer,
    AppCredentialsSerializer,
    AppSerializer,
    AppUpdateSerializer,
    LicenseCreateSerializer,
    LicenseSerializer,
    LicenseStatusSerializer,
)
from .services import (
    app_create,
    app_delete,
    app_rotate_credentials,
    app_update,
    license_grant,
    license_revoke,
    license_set_status,
)


class EmptyBodySerializer(StrictSerializer):
    """An action that takes no input refuses any field it is sent."""


@extend_schema_view(
    list=extend_schema(summary="List your apps"),
    retrieve=extend_schema(summary="Show one of your apps (never its secret)"),
    create=extend_schema(
        summary="Create an app",
        description="The answer carries `api_secret`: the only time it is shown. Store it.",
        request=AppCreateSerializer,
        responses={201: AppCredentialsSerializer},
    ),
    update=extend_schema(request=AppUpdateSerializer, responses={200: AppSerializer}),
    partial_update=extend_schema(request=AppUpdateSerializer, responses={200: AppSerializer}),
    destroy=extend_schema(summary="Delete an app and its licenses"),
)
class AppViewSet(OwnedModelViewSet):
    """Your client applications and their credentials."""

    queryset = App.objects.select_related("owner")
    serializer_class = AppSerializer
    filterset_fields = ["status", "is_tenant"]
    search_fields = ["name", "alias_id", "description"]
    ordering_fields = ["create_at", "update_at", "name"]
    ordering = ["-create_at"]

    def get_serializer_class(self):
        if self.action == "create":
            return AppCreateSerializer
        if self.action in ("update", "partial_update"):
            return AppUpdateSerializer
        return AppSerializer

    def create(self, request: Request, *args, **kwargs) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        app, _secret = app_create(owner=request.user, **serializer.validated_data)
        return Response(AppCredentialsSerializer(app).data, status=status.HTTP_201_CREATED)

    def update(self, request: Request, *args, **kwargs) -> Response:
        app = self.get_object()
        serializer = self.get_serializer(app, data=request.data, partial=kwargs.get("partial", False))
        serializer.is_valid(raise_exception=True)
        app = app_update(app=app, actor=request.user, **serializer.validated_data)
        return Response(AppSerializer(app).data)

    def perform_destroy(self, instance: App) -> None:
        app_delete(app=instance, actor=self.request.user)

    @extend_schema(
        summary="Rotate the app's key and secret",
        description="The old pair stops working at once. The answer is the only time the new secret is shown.",
        request=None,
        responses={200: AppCredentialsSerializer},
    )
    @action(detail=True, methods=["post"])
    def rotate(self, request: Request, pk=None) -> Response:
        app = self.get_object()
        EmptyBodySerializer(data=request.data).is_valid(raise_exception=True)
        app_rotate_credentials(app=app, actor=request.user)
        return Response(AppCredentialsSerializer(app).data)


class LicenseFilter(filters.FilterSet):
    app = filters.NumberFilter(field_name="app_id")
    group = filters.UUIDFilter(field_name="group_id")

    class Meta:
        model = License
        fields = ["app", "group", "status"]


@extend_schema_view(
    list=extend_schema(summary="List the licenses of your apps"),
    retrieve=extend_schema(summary="Show one license of your apps"),
    create=extend_schema(
        summary="Let one of your apps call one of your workflows",
        request=LicenseCreateSerializer,
        responses={201: LicenseSerializer},
    ),
    partial_update=extend_schema(
        summary="Turn a license on or off", request=LicenseStatusSerializer, responses={200: LicenseSerializer}
    ),
    destroy=extend_schema(summary="Revoke a license"),
)
class LicenseViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Which of your apps may call which of your workflows."""

    queryset = License.objects.none()
    serializer_class = LicenseSerializer
    filterset_class = LicenseFilter
    ordering_fields = ["create_at", "update_at"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return License.objects.none()
        return licenses_for_user(user=self.request.user)

    def get_serializer_class(self):
        if self.action == "create":
            return LicenseCreateSerializer
        if self.action == "partial_update":
            return LicenseStatusSerializer
        return LicenseSerializer

    def create(self, request: Request, *args, **kwargs) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        license = license_grant(
            app=data["app"],
            workflow=data["group"],
            actor=request.user,
            status=data.get("status", EnabledStatus.ENABLED),
        )
        return Response(LicenseSerializer(license).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, *args, **kwargs) -> Response:
        license = self.get_object()
        # Status is the only field a license has to change, so it is required even on PATCH.
        serializer = self.get_serializer(license, data=request.data)
        serializer.is_valid(raise_exception=True)
        license = license_set_status(license=license, status=serializer.validated_data["status"], actor=request.user)
        return Response(LicenseSerializer(license).data)

    def perform_destroy(self, instance: License) -> None:
        license_revoke(license=instance, actor=self.request.user)
