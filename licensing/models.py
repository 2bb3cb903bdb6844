"""Client applications, where they come from, and which workflow groups they may call (seed 000)."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django_cryptography.fields import encrypt


class EnabledStatus(models.TextChoices):
    ENABLED = "enabled", "Enabled"
    DISABLED = "disabled", "Disabled"


class App(models.Model):
    """A client application (``ai_app``) that calls published workflows with its credentials."""

    name = models.CharField(max_length=30)
    alias_id = models.CharField(max_length=64, unique=True)
    # The public half of the credentials, looked up on every call; the secret is the private half.
    api_key = models.CharField(max_length=50, unique=True)
    api_secret = encrypt(models.CharField(max_length=64))
    description = models.CharField(max_length=255, blank=True, default="")
    is_tenant = models.BooleanField(default=False)
    # Bit flags: each bit one tenant or platform the app belongs to.
    source = models.PositiveSmallIntegerField(default=0)
    actual_source = models.PositiveSmallIntegerField(default=0)
    plat_release_auth = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(max_length=16, choices=EnabledStatus.choices, default=EnabledStatus.ENABLED)
    audit_policy = models.PositiveSmallIntegerField(default=0)
    # Requests per minute for this app; 0 uses the platform default.
    rate_limit_per_minute = models.PositiveIntegerField(default=0)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="apps",
        db_column="create_by",
    )
    update_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_column="update_by",
    )
    create_at = models.DateTimeField(auto_now_add=True)
    update_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "ai_app"
        ordering = ["-create_at"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=EnabledStatus.values), name="ai_app_status_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.alias_id})"

    @property
    def is_enabled(self) -> bool:
        return self.status == EnabledStatus.ENABLED


class AppSource(models.Model):
    """A tenant or platform an app can come from; ``source`` is its bit in ``App.source``."""

    source = models.PositiveSmallIntegerField()
    source_id = models.CharField(max_length=64)
    description = models.CharField(max_length=255, blank=True, default="")
    create_at = models.DateTimeField(auto_now_add=True)
    update_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "app_source"
        constraints = [
            models.UniqueConstraint(fields=["source", "source_id"], name="app_source_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.source_id} (bit {self.source})"


class License(models.Model):
    """Permission for one app to call one workflow group; checked on every call."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="licenses")
    group = models.ForeignKey(
        "workflows.Workflow", on_delete=models.CASCADE, related_name="licenses", db_column="group_id"
    )
    status = models.CharField(max_length=16, choices=EnabledStatus.choices, default=EnabledStatus.ENABLED)
    create_at = models.DateTimeField(auto_now_add=True)
    update_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "license"
        constraints = [
            models.UniqueConstraint(fields=["app", "group"], name="license_app_group_unique"),
            models.CheckConstraint(condition=Q(status__in=EnabledStatus.values), name="license_status_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.app_id} → {self.group_id} ({self.status})"

    @property
    def is_enabled(self) -> bool:
        return self.status == EnabledStatus.ENABLED


class AppNonce(models.Model):
    """A nonce of a signed app request, refused when seen again (embedded mode; Redis otherwise)."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="+")
    nonce = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "app_request_nonces"
        constraints = [
            models.UniqueConstraint(fields=["app", "nonce"], name="app_nonce_unique"),
        ]
        indexes = [
            models.Index(fields=["app", "created_at"], name="idx_app_nonce_created"),
        ]

    def __str__(self) -> str:
        return self.nonce
