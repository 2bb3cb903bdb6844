"""Writes to client apps and their licenses.

Every change of access (status, grant, revoke, delete) or of credentials writes an ``audit_logs``
row in the same transaction. Audit rows carry the public ``api_key`` at most, never a secret.
"""

import secrets

from django.db import IntegrityError, transaction
from django.utils import timezone

from config.errors import Conflict, InvalidInput, NotFound
from config.generations import ACCESS, generation_move
from history.services import audit_log_record
from workflows.models import Workflow

from .models import App, EnabledStatus, License

API_KEY_PREFIX = "wk_"

_STATUS_VERBS = {EnabledStatus.ENABLED: "enable", EnabledStatus.DISABLED: "disable"}


def _new_api_key() -> str:
    return f"{API_KEY_PREFIX}{secrets.token_hex(20)}"


def _new_api_secret() -> str:
    return secrets.token_urlsafe(32)


def _new_alias_id() -> str:
    return f"app-{secrets.token_hex(8)}"


def _checked_status(status: str) -> EnabledStatus:
    if status not in EnabledStatus.values:
        raise InvalidInput(
            f"Unknown status {status!r}; expected one of {', '.join(EnabledStatus.values)}.", field="status"
        )
    return EnabledStatus(status)


def _alias_id_conflict(alias_id: str) -> Conflict:
    return Conflict(f"An app with alias_id {alias_id!r} already exists.", field="alias_id", code="duplicate")


@transaction.atomic
def app_create(
    *,
    owner,
    name: str,
    alias_id: str | None = None,
    description: str = "",
    status: str = EnabledStatus.ENABLED,
    is_tenant: bool = False,
    source: int = 0,
    actual_source: int = 0,
    plat_release_auth: int = 0,
    audit_policy: int = 0,
    rate_limit_per_minute: int = 0,
    actor=None,
) -> tuple[App, str]:
    """Create an app with fresh credentials; the plaintext secret is returned here and never again.

    ``actor`` is who did it (an operator creating an app for someone); it defaults to the owner.
    """
    alias_id = alias_id or _new_alias_id()
    api_secret = _new_api_secret()
    try:
        with transaction.atomic():
            app = App.objects.create(
                owner=owner,
                name=name,
                alias_id=alias_id,
                description=description,
                api_key=_new_api_key(),
                api_secret=api_secret,
                status=_checked_status(status),
                is_tenant=is_tenant,
                source=source,
                actual_source=actual_source,
                plat_release_auth=plat_release_auth,
                audit_policy=audit_policy,
                rate_limit_per_minute=rate_limit_per_minute,
                update_by=actor or owner,
            )
    except IntegrityError:
        if App.objects.filter(alias_id=alias_id).exists():
            raise _alias_id_conflict(alias_id) from None
        raise
    audit_log_record(
        actor=actor or owner,
        action="app.create",
        target=app,
        after={"alias_id": app.alias_id, "api_key": app.api_key, "status": app.status, "owner": owner.pk},
    )
    return app, api_secret


#: What an operator may change of an app besides its descriptive fields: who owns it, and how it may
#: call (audited as ``app.update``). Not through the builder's API.
APP_ACCESS_FIELDS = (
    "owner",
    "is_tenant",
    "source",
    "actual_source",
    "plat_release_auth",
    "audit_policy",
    "rate_limit_per_minute",
)


@transaction.atomic
def app_update(
    *,
    app: App,
    actor,
    name: str | None = None,
    alias_id: str | None = None,
    description: str | None = None,
    status: str | None = None,
    **access,
) -> App:
    """Change an app's descriptive fields, and (an operator) its ``APP_ACCESS_FIELDS``, audited.

    A status change goes through ``app_set_status``.
    """
    unknown = set(access) - set(APP_ACCESS_FIELDS)
    if unknown:
        raise TypeError(f"app_update() got unexpected fields: {', '.join(sorted(unknown))}")
    access = {field: value for field, value in access.items() if value is not None and getattr(app, field) != value}
    changes = {
        field: value
        for field, value in (("name", name), ("alias_id", alias_id), ("description", description))
        if value is not None
    }
    changes.update(access)
    if changes:
        before = {field: _audit_value(getattr(app, field)) for field in access}
        try:
            with transaction.atomic():
                App.objects.filter(pk=app.pk).update(**changes, update_by=actor, update_at=timezone.now())
                generation_move(ACCESS)
        except IntegrityError:
            raise _alias_id_conflict(alias_id) from None
        if access:
            audit_log_record(
                actor=actor,
                action="app.update",
                target=app,
                before=before,
                after={field: _audit_value(value) for field, value in access.items()},
            )
    if status is not None:
        app_set_status(app=app, status=status, actor=actor)
    app.refresh_from_db()
    return app


def _audit_value(value):
    """A field's value as an audit row keeps it: a related row by its key."""
    return getattr(value, "pk", value)


def _locked_app(app: App) -> App:
    try:
        return App.objects.select_for_update().get(pk=app.pk)
    except App.DoesNotExist:
        raise NotFound("This app no longer exists.") from None


@transaction.atomic
def app_rotate_credentials(*, app: App, actor) -> str:
    """Replace the app's key and secret; the old pair stops working at once. Returns the new secret."""
    locked = _locked_app(app)
    old_key = locked.api_key
    locked.api_key = _new_api_key()
    locked.api_secret = _new_api_secret()
    locked.update_by = actor
    locked.save(update_fields=["api_key", "api_secret", "update_by", "update_at"])
    audit_log_record(
        actor=actor,
        action="app.rotate_credentials",
        target=locked,
        before={"api_key": old_key},
        after={"api_key": locked.api_key},
    )
    app.api_key, app.api_secret, app.update_by, app.update_at = (
        locked.api_key,
        locked.api_secret,
        locked.update_by,
        locked.update_at,
    )
    return locked.api_secret


@transaction.atomic
def app_set_status(*, app: App, status: str, actor) -> App:
    """Enable or disable an app; setting the status it already has changes and records nothing."""
    status = _checked_status(status)
    locked = _locked_app(app)
    previous = locked.status
    if previous != status:
        App.objects.filter(pk=locked.pk, status=previous).update(
            status=status, update_by=actor, update_at=timezone.now()
        )
        generation_move(ACCESS)
        audit_log_record(
            actor=actor,
            action=f"app.{_STATUS_VERBS[status]}",
            target=locked,
            before={"status": previous},
            after={"status": status},
        )
    app.refresh_from_db(fields=["status", "update_by", "update_at"])
    return app


@transaction.atomic
def app_delete(*, app: App, actor) -> None:
    """Delete an app with its licenses; its credentials stop working at once."""
    locked = _locked_app(app)
    audit_log_record(
        actor=actor,
        action="app.delete",
        target=locked,
        before={"alias_id": locked.alias_id, "api_key": locked.api_key, "status": locked.status},
    )
    locked.delete()


@transaction.atomic
def license_grant(*, app: App, workflow: Workflow, actor, status: str = EnabledStatus.ENABLED) -> License:
    """Let ``app`` call the published versions of ``workflow``. One license per (app, workflow)."""
    status = _checked_status(status)
    try:
        with transaction.atomic():
            license = License.objects.create(app=app, group=workflow, status=status)
    except IntegrityError:
        raise Conflict("This app already has a license for this workflow.", field="group", code="duplicate") from None
    audit_log_record(
        actor=actor,
        action="license.grant",
        target=license,
        after={"app": app.pk, "group": str(workflow.pk), "status": status},
    )
    return license


def _locked_license(license: License) -> License:
    try:
        return License.objects.select_for_update().get(pk=license.pk)
    except License.DoesNotExist:
        raise NotFound("This license no longer exists.") from None


@transaction.atomic
def license_set_status(*, license: License, status: str, actor) -> License:
    """Turn a license on or off; setting the status it already has changes and records nothing."""
    status = _checked_status(status)
    locked = _locked_license(license)
    previous = locked.status
    if previous != status:
        License.objects.filter(pk=locked.pk, status=previous).update(status=status, update_at=timezone.now())
        generation_move(ACCESS)
        audit_log_record(
            actor=actor,
            action=f"license.{_STATUS_VERBS[status]}",
            target=locked,
            before={"status": previous},
            after={"status": status},
        )
    license.refresh_from_db(fields=["status", "update_at"])
    return license


@transaction.atomic
def license_revoke(*, license: License, actor) -> None:
    """Delete a license: the app may no longer call the workflow."""
    locked = _locked_license(license)
    audit_log_record(
        actor=actor,
        action="license.revoke",
        target=locked,
        before={"app": locked.app_id, "group": str(locked.group_id), "status": locked.status},
    )
    locked.delete()
