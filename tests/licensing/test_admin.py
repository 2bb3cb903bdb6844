import re

import pytest
from django.urls import reverse
from django.utils import timezone

from history.models import AuditLog
from licensing.models import App, License
from tests.factories import AppFactory, AppSourceFactory, LicenseFactory
from tests.licensing.conftest import CANARY_SECRET

pytestmark = pytest.mark.django_db

SHOWN_ONCE = re.compile(r"shown only this once, is: ([A-Za-z0-9_\-]+)")


@pytest.fixture
def operator(client, staff_user):
    client.force_login(staff_user)
    return client


def changelist(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def change(obj) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


def run_action(operator, model, action, objects):
    return operator.post(
        changelist(model), {"action": action, "_selected_action": [obj.pk for obj in objects]}, follow=True
    )


def test_app_pages_never_show_the_secret(operator, canary_app):
    app_label = "licensing"
    pages = [
        changelist(App),
        f"{changelist(App)}?q={canary_app.api_key}",
        change(canary_app),
        reverse(f"admin:{app_label}_app_history", args=[canary_app.pk]),
        reverse(f"admin:{app_label}_app_delete", args=[canary_app.pk]),
        reverse(f"admin:{app_label}_app_add"),
    ]
    for url in pages:
        response = operator.get(url)
        assert response.status_code == 200, url
        content = response.content.decode()
        assert CANARY_SECRET not in content, url
        assert 'name="api_secret"' not in content, url
    assert canary_app.api_key in operator.get(change(canary_app)).content.decode()


def assert_no_cookie_carries(response, secret: str) -> None:
    """No cookie is set with the secret; no messages cookie either, since it may hold it compressed."""
    assert "messages" not in response.cookies
    assert all(secret not in morsel.OutputString() for morsel in response.cookies.values())
    assert all(secret not in morsel.OutputString() for morsel in response.client.cookies.values())


def test_creating_an_app_shows_its_secret_once(operator, staff_user, user):
    response = operator.post(
        reverse("admin:licensing_app_add"),
        {
            "name": "Shop",
            "alias_id": "shop",
            "description": "",
            "owner": user.pk,
            "status": "enabled",
            "source": 0,
            "actual_source": 0,
            "plat_release_auth": 0,
            "audit_policy": 0,
            "rate_limit_per_minute": 0,
        },
    )

    assert response.status_code == 200
    [secret] = SHOWN_ONCE.findall(response.content.decode())
    assert_no_cookie_carries(response, secret)
    app = App.objects.get(alias_id="shop")
    assert app.api_secret == secret
    assert app.owner == user
    assert app.api_key
    row = AuditLog.objects.get(action="app.create", target_id=str(app.pk))
    assert row.actor == staff_user
    for url in (changelist(App), change(app)):
        assert secret not in operator.get(url).content.decode()


def test_rotate_action_shows_the_new_secret_once_and_audits(operator, staff_user, canary_app):
    old_key = canary_app.api_key
    before = timezone.now()

    response = operator.post(changelist(App), {"action": "rotate_credentials", "_selected_action": [canary_app.pk]})

    assert response.status_code == 200  # the secret is on this page, not carried to the next one
    [secret] = SHOWN_ONCE.findall(response.content.decode())
    assert_no_cookie_carries(response, secret)
    canary_app.refresh_from_db()
    assert canary_app.api_secret == secret != CANARY_SECRET
    assert canary_app.api_key != old_key
    assert canary_app.update_by == staff_user
    next_page = operator.get(changelist(App)).content.decode()
    assert secret not in next_page
    assert "shown only this once" not in next_page
    assert secret not in operator.get(change(canary_app)).content.decode()
    row = AuditLog.objects.get(action="app.rotate_credentials")
    assert row.actor == staff_user
    assert row.created_at >= before
    assert row.before == {"api_key": old_key}
    assert row.after == {"api_key": canary_app.api_key}


def test_enable_and_disable_app_actions(operator, staff_user, user):
    apps = [AppFactory(owner=user), AppFactory(owner=user)]

    run_action(operator, App, "disable_apps", apps)
    assert set(App.objects.values_list("status", flat=True)) == {"disabled"}
    run_action(operator, App, "enable_apps", apps[:1])

    assert App.objects.get(pk=apps[0].pk).status == "enabled"
    assert App.objects.get(pk=apps[1].pk).status == "disabled"
    actions = sorted(AuditLog.objects.filter(actor=staff_user).values_list("action", flat=True))
    assert actions == ["app.disable", "app.disable", "app.enable"]


def test_changing_status_in_the_form_is_audited(operator, staff_user, canary_app):
    form = {
        "name": "Renamed",
        "alias_id": canary_app.alias_id,
        "description": "",
        "owner": canary_app.owner_id,
        "status": "disabled",
        "source": 0,
        "actual_source": 0,
        "plat_release_auth": 0,
        "audit_policy": 0,
        "rate_limit_per_minute": 0,
    }
    response = operator.post(change(canary_app), form)

    assert response.status_code == 302
    canary_app.refresh_from_db()
    assert (canary_app.name, canary_app.status) == ("Renamed", "disabled")
    assert canary_app.api_secret == CANARY_SECRET
    assert AuditLog.objects.filter(action="app.disable", actor=staff_user).count() == 1


def test_deleting_an_app_in_the_admin_is_audited(operator, staff_user, canary_app):
    response = operator.post(reverse("admin:licensing_app_delete", args=[canary_app.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not App.objects.exists()
    assert AuditLog.objects.filter(action="app.delete", actor=staff_user).exists()


def test_license_actions_enable_and_disable_with_audit(operator, staff_user):
    licenses = [LicenseFactory(), LicenseFactory()]
    before = timezone.now()

    response = run_action(operator, License, "disable_licenses", licenses)

    assert response.status_code == 200
    assert "2 license(s) disabled." in response.content.decode()
    assert set(License.objects.values_list("status", flat=True)) == {"disabled"}
    rows = AuditLog.objects.filter(action="license.disable")
    assert {row.target_id for row in rows} == {str(license.pk) for license in licenses}
    assert all(row.actor == staff_user and row.created_at >= before for row in rows)

    run_action(operator, License, "enable_licenses", licenses)
    assert set(License.objects.values_list("status", flat=True)) == {"enabled"}
    assert AuditLog.objects.filter(action="license.enable", actor=staff_user).count() == 2


def test_license_admin_grant_status_change_and_filters(operator, staff_user, app, workflow):
    response = operator.post(
        reverse("admin:licensing_license_add"), {"app": app.pk, "group": workflow.pk, "status": "enabled"}
    )
    assert response.status_code == 302
    license = License.objects.get(app=app, group=workflow)
    assert AuditLog.objects.filter(action="license.grant", target_id=str(license.pk), actor=staff_user).exists()

    duplicate = operator.post(
        reverse("admin:licensing_license_add"), {"app": app.pk, "group": workflow.pk, "status": "enabled"}
    )
    assert duplicate.status_code == 200
    assert License.objects.count() == 1

    operator.post(change(license), {"status": "disabled"})
    license.refresh_from_db()
    assert license.status == "disabled"
    assert AuditLog.objects.filter(action="license.disable", actor=staff_user).exists()

    filtered = operator.get(f"{changelist(License)}?status__exact=enabled")
    assert filtered.context["cl"].result_count == 0
    searched = operator.get(f"{changelist(License)}?q={app.alias_id}")
    assert searched.context["cl"].result_count == 1


def test_app_source_admin_lists_and_searches(operator):
    AppSourceFactory(source_id="tenant-acme")
    AppSourceFactory(source_id="tenant-other")
    response = operator.get(f"{changelist(AppSourceFactory._meta.model)}?q=acme")
    assert response.status_code == 200
    assert response.context["cl"].result_count == 1


def test_builders_cannot_reach_the_admin(client, user, canary_app):
    client.force_login(user)
    response = client.get(change(canary_app))
    assert response.status_code == 302
    assert CANARY_SECRET not in response.content.decode()


def test_changing_who_owns_an_app_and_how_it_may_call_is_audited(operator, staff_user, canary_app, other_user):
    form = {
        "name": "Renamed",
        "alias_id": canary_app.alias_id,
        "description": "",
        "owner": other_user.pk,
        "status": canary_app.status,
        "source": 0,
        "actual_source": 0,
        "plat_release_auth": 0,
        "audit_policy": 0,
        "rate_limit_per_minute": 7,
    }
    previous_owner, previous_limit = canary_app.owner_id, canary_app.rate_limit_per_minute

    response = operator.post(change(canary_app), form)

    assert response.status_code == 302
    canary_app.refresh_from_db()
    assert (canary_app.owner, canary_app.rate_limit_per_minute, canary_app.update_by) == (other_user, 7, staff_user)
    row = AuditLog.objects.get(action="app.update", actor=staff_user)
    assert row.before == {"owner": previous_owner, "rate_limit_per_minute": previous_limit}
    assert row.after == {"owner": other_user.pk, "rate_limit_per_minute": 7}
