from rest_framework import serializers

from config.api.serializers import StrictModelSerializer

from .models import App, License
from .selectors import apps_for_user, workflows_owned_by


class AppSerializer(serializers.ModelSerializer):
    """An app as every response shows it: the public ``api_key``, never the secret."""

    class Meta:
        model = App
        fields = [
            "id",
            "name",
            "alias_id",
            "description",
            "api_key",
            "status",
            "is_tenant",
            "source",
            "actual_source",
            "plat_release_auth",
            "audit_policy",
            "rate_limit_per_minute",
            "owner",
            "create_at",
            "update_at",
        ]
        read_only_fields = fields


class AppCredentialsSerializer(AppSerializer):
    """The app with its new secret: only the answers of create and rotate use this."""

    api_secret = serializers.CharField(
        read_only=True, help_text="Shown in this response only: store it now, it cannot be read again."
    )

    class Meta(AppSerializer.Meta):
        fields = [*AppSerializer.Meta.fields, "api_secret"]
        read_only_fields = fields


class AppCreateSerializer(StrictModelSerializer):
    class Meta:
        model = App
        fields = ["name", "alias_id", "description"]
        extra_kwargs = {"alias_id": {"required": False, "help_text": "Unique; generated when left out."}}


class AppUpdateSerializer(StrictModelSerializer):
    class Meta:
        model = App
        fields = ["name", "alias_id", "description", "status"]


class CallerAppField(serializers.PrimaryKeyRelatedField):
    def get_queryset(self):
        return apps_for_user(user=self.context["request"].user)


class CallerWorkflowField(serializers.PrimaryKeyRelatedField):
    def get_queryset(self):
        return workflows_owned_by(user=self.context["request"].user)


class LicenseSerializer(serializers.ModelSerializer):
    app_name = serializers.CharField(source="app.name", read_only=True)
    group_name = serializers.CharField(source="group.name", read_only=True)

    class Meta:
        model = License
        fields = ["id", "app", "app_name", "group", "group_name", "status", "create_at", "update_at"]
        read_only_fields = fields


class LicenseCreateSerializer(StrictModelSerializer):
    """Grant one of the caller's apps access to one of the caller's workflows."""

    app = CallerAppField(help_text="One of your apps.")
    group = CallerWorkflowField(pk_field=serializers.UUIDField(), help_text="A workflow you own.")

    class Meta:
        model = License
        fields = ["app", "group", "status"]
        # A duplicate is answered by the service as a 409 naming `group`, race or not.
        validators: list = []


class LicenseStatusSerializer(StrictModelSerializer):
    class Meta:
        model = License
        fields = ["status"]
        extra_kwargs = {"status": {"required": True}}
