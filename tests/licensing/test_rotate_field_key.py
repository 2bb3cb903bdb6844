"""`manage.py rotate_field_key`: values written with an old key are readable with the new one."""

import pickle
import secrets
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection, models
from django.test import override_settings
from django.utils.encoding import force_bytes
from django_cryptography.core.signing import FernetSigner
from django_cryptography.fields import encrypt
from django_cryptography.utils.crypto import FernetBytes

from agents.models import LLMProvider
from alerts.models import FailurePolicy
from hooks.models import Trigger
from licensing.management.commands.rotate_field_key import (
    current_writer,
    derive_field_key,
    driver_bytes,
    encrypted_fields,
    field_format_problem,
)
from licensing.models import App
from tests.factories import AppFactory, LLMProviderFactory, ToolFactory, WorkflowFactory

pytestmark = pytest.mark.django_db

KEY_A = "the-previous-field-encryption-key-A"


def db_pk(model, pk):
    """The primary key as the database stores it (UUIDs are hex text on SQLite)."""
    return model._meta.pk.get_db_prep_value(pk, connection)


def write_with(model, pk, field_name: str, value, *, field_key: str | None = None, signing_key: str | None = None):
    """Store ``value`` as django_cryptography would under another key, bypassing the ORM."""
    aes_key = derive_field_key(field_key) if field_key else settings.CRYPTOGRAPHY_KEY
    fernet = FernetBytes(aes_key, FernetSigner(signing_key or settings.SECRET_KEY))
    column = model._meta.get_field(field_name).column
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {model._meta.db_table} SET {column} = %s WHERE id = %s",  # noqa: S608
            [connection.Database.Binary(fernet.encrypt(pickle.dumps(value))), db_pk(model, pk)],
        )


def stored(model, pk, field_name: str) -> bytes:
    column = model._meta.get_field(field_name).column
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {model._meta.db_table} WHERE id = %s", [db_pk(model, pk)])  # noqa: S608
        return force_bytes(cursor.fetchone()[0])


def rotate(*args) -> str:
    out = StringIO()
    call_command("rotate_field_key", *args, stdout=out)
    return out.getvalue()


def test_the_key_derivation_matches_django_cryptography():
    assert derive_field_key(settings.FIELD_ENCRYPTION_KEY) == settings.CRYPTOGRAPHY_KEY
    assert derive_field_key(KEY_A) != settings.CRYPTOGRAPHY_KEY


def test_every_encrypted_field_is_found():
    found = {f"{model._meta.label}.{field.name}" for model, field in encrypted_fields()}
    assert {"licensing.App.api_secret", "agents.LLMProvider.api_key"} <= found


@override_settings(FIELD_ENCRYPTION_KEY_PREVIOUS=KEY_A)
def test_values_written_with_the_previous_key_are_re_encrypted_with_the_current_one():
    old_app, current_app = AppFactory(), AppFactory(api_secret="already-current")
    provider = LLMProviderFactory()
    write_with(App, old_app.pk, "api_secret", "secret-under-key-A", field_key=KEY_A)
    write_with(LLMProvider, provider.pk, "api_key", "sk-under-key-A", field_key=KEY_A)
    current_bytes = stored(App, current_app.pk, "api_secret")

    output = rotate()

    assert "licensing.App.api_secret: re-encrypted 1, already current 1" in output
    assert "agents.LLMProvider.api_key: re-encrypted 1, already current 0" in output
    assert App.objects.get(pk=old_app.pk).api_secret == "secret-under-key-A"
    assert LLMProvider.objects.get(pk=provider.pk).api_key == "sk-under-key-A"
    assert App.objects.get(pk=current_app.pk).api_secret == "already-current"
    assert stored(App, current_app.pk, "api_secret") == current_bytes
    assert "secret-under-key-A" not in output


@override_settings(FIELD_ENCRYPTION_KEY_PREVIOUS=KEY_A)
def test_running_twice_changes_nothing_the_second_time():
    app = AppFactory()
    write_with(App, app.pk, "api_secret", "secret-under-key-A", field_key=KEY_A)
    rotate()
    after_first = stored(App, app.pk, "api_secret")

    output = rotate()

    assert "licensing.App.api_secret: re-encrypted 0, already current 1" in output
    assert stored(App, app.pk, "api_secret") == after_first


@override_settings(FIELD_ENCRYPTION_KEY_PREVIOUS=KEY_A)
def test_dry_run_changes_nothing():
    app = AppFactory()
    write_with(App, app.pk, "api_secret", "secret-under-key-A", field_key=KEY_A)
    before = stored(App, app.pk, "api_secret")

    output = rotate("--dry-run")

    assert "licensing.App.api_secret: would re-encrypt 1" in output
    assert stored(App, app.pk, "api_secret") == before


@override_settings(FIELD_ENCRYPTION_KEY_PREVIOUS=KEY_A)
def test_an_unreadable_value_stops_everything_and_changes_nothing():
    readable, unreadable = AppFactory(), AppFactory()
    write_with(App, readable.pk, "api_secret", "secret-under-key-A", field_key=KEY_A)
    write_with(App, unreadable.pk, "api_secret", "secret-under-key-C", field_key="some-other-key-C")
    before = stored(App, readable.pk, "api_secret")

    with pytest.raises(CommandError, match=f"row {unreadable.pk}"):
        rotate()

    assert stored(App, readable.pk, "api_secret") == before


@override_settings(FIELD_ENCRYPTION_KEY_PREVIOUS="", SECRET_KEY_FALLBACKS=["the-old-django-secret-key"])
def test_values_signed_with_a_fallback_secret_key_are_re_signed():
    app = AppFactory()
    write_with(App, app.pk, "api_secret", "signed-with-old-secret-key", signing_key="the-old-django-secret-key")

    output = rotate()

    assert "licensing.App.api_secret: re-encrypted 1" in output
    assert App.objects.get(pk=app.pk).api_secret == "signed-with-old-secret-key"


@override_settings(FIELD_ENCRYPTION_KEY_PREVIOUS="", SECRET_KEY_FALLBACKS=[])
def test_without_a_previous_key_it_refuses():
    with pytest.raises(CommandError, match="WEFT_FIELD_ENCRYPTION_KEY_PREVIOUS"):
        rotate()


# --- End to end: values the field library wrote under the old key --------------------------------


#: A secret per encrypted field; a new encrypted field fails the test until it is added here.
def _trigger():
    return Trigger.objects.create(workflow=WorkflowFactory(), token_hash=secrets.token_hex(32), token_prefix="whk_test")


def _failure_policy():
    return FailurePolicy.objects.create(workflow=WorkflowFactory())


SECRETS = {
    "licensing.App.api_secret": (AppFactory, "app-secret-under-key-A"),
    "agents.LLMProvider.api_key": (LLMProviderFactory, "sk-provider-under-key-A"),
    "agents.Tool.secret_headers": (ToolFactory, {"Authorization": "Bearer tool-token-under-key-A"}),
    "hooks.Trigger.secret": (_trigger, "trigger-secret-under-key-A"),
    "alerts.FailurePolicy.webhook_secret": (_failure_policy, "webhook-secret-under-key-A"),
}


def field_with_key(raw_key: str) -> models.Field:
    """An encrypted field as the library builds one for ``raw_key``: its public ``key`` argument."""
    field = encrypt(models.JSONField(), key=derive_field_key(raw_key))
    field.set_attributes_from_name("probe")
    return field


def read_through(field: models.Field, data: bytes):
    """What ``field`` reads from stored ``data``; ``None`` where it cannot (a wrong key fails in several ways)."""
    try:
        return field.from_db_value(data, None, connection)
    except Exception:  # a bad signature or padding, or the noise a wrong key decrypts to
        return None


def store_through(field: models.Field, model, pk, field_name: str, value) -> None:
    """Store the bytes that ``field`` writes for ``value`` (the library's own encryption, not ours)."""
    column = model._meta.get_field(field_name).column
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {model._meta.db_table} SET {column} = %s WHERE id = %s",  # noqa: S608
            [field.get_db_prep_value(value, connection), db_pk(model, pk)],
        )


@override_settings(FIELD_ENCRYPTION_KEY_PREVIOUS=KEY_A)
def test_every_secret_written_under_the_old_key_is_readable_with_the_new_key_only():
    assert {f"{model._meta.label}.{field.name}" for model, field in encrypted_fields()} == set(SECRETS)
    old_key_field = field_with_key(KEY_A)
    rows = []
    for model, field in encrypted_fields():
        factory, secret = SECRETS[f"{model._meta.label}.{field.name}"]
        pk = factory().pk
        store_through(old_key_field, model, pk, field.name, secret)
        assert read_through(field, stored(model, pk, field.name)) is None
        rows.append((model, field, pk, secret))

    first = rotate()

    for model, field, pk, secret in rows:
        assert f"{model._meta.label}.{field.name}: re-encrypted 1, already current 0" in first
        assert getattr(model.objects.get(pk=pk), field.name) == secret
        assert read_through(old_key_field, stored(model, pk, field.name)) is None

    after_first = [stored(model, pk, field.name) for model, field, pk, _ in rows]
    second = rotate()

    for model, field, _pk, _secret in rows:
        assert f"{model._meta.label}.{field.name}: re-encrypted 0, already current 1" in second
    assert [stored(model, pk, field.name) for model, field, pk, _ in rows] == after_first


def test_the_command_reads_and_writes_exactly_what_each_field_does():
    writer = current_writer()
    for model, field in encrypted_fields():
        _, value = SECRETS[f"{model._meta.label}.{field.name}"]
        written_by_field = driver_bytes(field.get_db_prep_value(value, connection))
        assert writer.decrypt(written_by_field) == pickle.dumps(value)
        assert field.from_db_value(writer.encrypt(pickle.dumps(value)), None, connection) == value
        assert field_format_problem(field, writer) == ""


@override_settings(FIELD_ENCRYPTION_KEY_PREVIOUS=KEY_A, SECRET_KEY="not-what-the-fields-sign-with")
def test_a_field_the_command_cannot_read_stops_it_before_anything_changes():
    """Fields that write otherwise than the command: what an upgrade that changed the format would do."""
    app = AppFactory()
    write_with(App, app.pk, "api_secret", "secret-under-key-A", field_key=KEY_A)
    before = stored(App, app.pk, "api_secret")

    with pytest.raises(CommandError, match="stored format"):
        rotate()

    assert stored(App, app.pk, "api_secret") == before


@override_settings(FIELD_ENCRYPTION_KEY_PREVIOUS=KEY_A, FIELD_ENCRYPTION_KEY="derived-otherwise")
def test_a_changed_key_derivation_stops_it_before_anything_changes():
    with pytest.raises(CommandError, match="no longer derives"):
        rotate()
