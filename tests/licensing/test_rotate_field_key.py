"""`manage.py rotate_field_key`: values written with an old key are readable with the new one."""

import pickle
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings
from django.utils.encoding import force_bytes
from django_cryptography.core.signing import FernetSigner
from django_cryptography.utils.crypto import FernetBytes

from agents.models import LLMProvider
from licensing.management.commands.rotate_field_key import derive_field_key, encrypted_fields
from licensing.models import App
from tests.factories import AppFactory, LLMProviderFactory

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
