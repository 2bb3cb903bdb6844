import pytest
from django.db import IntegrityError, transaction

from licensing.models import App, License
from tests.factories import AppFactory, LicenseFactory

pytestmark = pytest.mark.django_db


def test_the_database_rejects_an_unknown_app_status():
    app = AppFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        App.objects.filter(pk=app.pk).update(status="paused")
    assert App.objects.get(pk=app.pk).status == "enabled"


def test_the_database_rejects_an_unknown_license_status():
    license = LicenseFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        License.objects.filter(pk=license.pk).update(status="maybe")


def test_the_database_rejects_a_second_license_for_the_same_app_and_group():
    license = LicenseFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        License.objects.create(app=license.app, group=license.group)
    assert License.objects.filter(app=license.app).count() == 1


def test_the_database_rejects_a_duplicate_alias_id():
    AppFactory(alias_id="shop")
    with pytest.raises(IntegrityError), transaction.atomic():
        AppFactory(alias_id="shop")
