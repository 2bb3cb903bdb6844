import pytest
from django.urls import reverse

# Written into a provider as its key; no response, page or audit row may ever contain it.
CANARY_KEY = "sk-canary-4b1d9e7c-never-shown"


@pytest.fixture
def operator(client, staff_user):
    """Django's test client, signed in to the admin as a superuser."""
    client.force_login(staff_user)
    return client


def admin_changelist(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def admin_change(obj) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
