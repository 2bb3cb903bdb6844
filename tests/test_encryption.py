"""Secrets are ciphertext in their tables and plaintext only through the ORM."""

import pytest
from django.db import connection
from django.utils.encoding import force_bytes

from agents.models import LLMProvider
from licensing.models import App
from tests.factories import AppFactory, LLMProviderFactory

pytestmark = pytest.mark.django_db

APP_SECRET = "canary-app-secret-in-the-table-3b1f"
PROVIDER_KEY = "sk-canary-provider-key-in-the-table-9d2e"


def db_pk(model, pk):
    """The primary key as the database stores it (UUIDs are hex text on SQLite)."""
    return model._meta.pk.get_db_prep_value(pk, connection)


def stored_bytes(model, pk, field_name: str) -> bytes:
    table = connection.ops.quote_name(model._meta.db_table)
    column = connection.ops.quote_name(model._meta.get_field(field_name).column)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [db_pk(model, pk)])  # noqa: S608
        (value,) = cursor.fetchone()
    return force_bytes(value)


@pytest.mark.parametrize(
    ("model", "make", "field_name", "secret"),
    [
        (App, lambda: AppFactory(api_secret=APP_SECRET), "api_secret", APP_SECRET),
        (LLMProvider, lambda: LLMProviderFactory(api_key=PROVIDER_KEY), "api_key", PROVIDER_KEY),
    ],
    ids=["app-api-secret", "provider-api-key"],
)
def test_secret_is_ciphertext_in_the_table_and_plaintext_through_the_orm(model, make, field_name, secret):
    obj = make()

    raw = stored_bytes(model, obj.pk, field_name)

    assert raw
    assert secret.encode() not in raw
    assert secret.encode().hex().encode() not in raw.lower()
    assert getattr(model.objects.get(pk=obj.pk), field_name) == secret


def test_the_same_secret_encrypts_differently_each_time():
    first, second = AppFactory(api_secret=APP_SECRET), AppFactory(api_secret=APP_SECRET)
    assert stored_bytes(App, first.pk, "api_secret") != stored_bytes(App, second.pk, "api_secret")
