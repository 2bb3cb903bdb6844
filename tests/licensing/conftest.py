import pytest

from tests.factories import AppFactory, LicenseFactory, WorkflowFactory

# Written into an app as its secret; no page or response may ever contain it.
CANARY_SECRET = "canary-app-secret-7f3a9c-never-shown"


@pytest.fixture
def app(user):
    return AppFactory(owner=user)


@pytest.fixture
def canary_app(user):
    return AppFactory(owner=user, api_secret=CANARY_SECRET)


@pytest.fixture
def workflow(user):
    return WorkflowFactory(owner=user)


@pytest.fixture
def license(app, workflow):
    return LicenseFactory(app=app, group=workflow)


@pytest.fixture
def others_app(other_user):
    return AppFactory(owner=other_user)


@pytest.fixture
def others_license(others_app, other_user):
    return LicenseFactory(app=others_app, group=WorkflowFactory(owner=other_user))
