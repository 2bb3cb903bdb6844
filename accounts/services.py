"""Writes to users that change what they may do; each one leaves an ``audit_logs`` row."""

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from knox.models import AuthToken
from knox.settings import knox_settings

from history.services import audit_log_record

from .models import User

ACCESS_FLAGS = ("is_active", "is_staff", "is_superuser")


def user_access_state(*, user: User) -> dict:
    """What the user may do, as the database holds it now: flags, groups and direct permissions."""
    flags = User.objects.filter(pk=user.pk).values(*ACCESS_FLAGS).first() or {}
    groups = User.groups.through.objects.filter(user_id=user.pk).values_list("group__name", flat=True)
    permissions = User.user_permissions.through.objects.filter(user_id=user.pk).values_list(
        "permission__content_type__app_label", "permission__codename"
    )
    return {
        **flags,
        "groups": sorted(groups),
        "user_permissions": sorted(f"{app_label}.{codename}" for app_label, codename in permissions),
    }


def user_access_change_record(*, user: User, actor, before: dict | None) -> None:
    """Audit what changed in ``user``'s access since ``before`` (None: the user was just created).

    Only the entries that changed go in ``before``/``after``; a save that changed none records nothing.
    """
    after = user_access_state(user=user)
    if before is None:
        audit_log_record(actor=actor, action="user.create", target=user, after=after)
        return
    changed = [name for name in after if before.get(name) != after[name]]
    if changed:
        audit_log_record(
            actor=actor,
            action="user.access_change",
            target=user,
            before={name: before.get(name) for name in changed},
            after={name: after[name] for name in changed},
        )


def user_password_change_record(*, user: User, actor, before_hash: str) -> None:
    """Audit that ``user``'s password was set or removed; neither the password nor its hash is stored."""
    current = User.objects.filter(pk=user.pk).first()
    if current is not None and current.password != before_hash:
        audit_log_record(
            actor=actor,
            action="user.password_change",
            target=current,
            after={"password": "changed", "usable": current.has_usable_password()},
        )


def user_delete(*, user: User, actor) -> None:
    """Delete a user; the audit row keeps what access they had."""
    with transaction.atomic():
        audit_log_record(actor=actor, action="user.delete", target=user, before=user_access_state(user=user))
        user.delete()


def token_create(*, user: User) -> str:
    """A new API token for ``user``, who keeps at most ``TOKEN_LIMIT_PER_USER`` live tokens.

    At the cap, the least recently used tokens (earliest expiry: each use pushes it back) give way
    to the new one, rather than the sign-in being refused: a refusal would let forgotten scripts,
    or someone holding the password, keep the owner out until tokens expire, while giving way still
    bounds what one user holds. The user's row is locked so that parallel sign-ins respect the cap.
    """
    with transaction.atomic():
        User.objects.select_for_update().filter(pk=user.pk).exists()
        tokens = AuthToken.objects.filter(user=user)
        tokens.filter(expiry__lt=timezone.now()).delete()
        limit = knox_settings.TOKEN_LIMIT_PER_USER
        if limit:
            newest_first = tokens.order_by(F("expiry").desc(nulls_last=True), "-created")
            stale = list(newest_first.values_list("digest", flat=True)[limit - 1 :])
            AuthToken.objects.filter(digest__in=stale).delete()
        _, token = AuthToken.objects.create(user)
    return token


def tokens_delete(*, user: User) -> int:
    """Sign ``user`` out of every API token; the number of tokens ended."""
    deleted, _ = AuthToken.objects.filter(user=user).delete()
    return deleted
