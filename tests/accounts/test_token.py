import pytest
from knox.models import AuthToken

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


def test_token_for_good_credentials_authenticates_later_calls(api_client):
    user = UserFactory(username="ada")

    response = api_client.post("/api/v1/auth/token/", {"username": "ada", "password": PASSWORD}, format="json")

    assert response.status_code == 200
    token = response.json()["token"]
    me = api_client.get("/api/v1/auth/me/", HTTP_AUTHORIZATION=f"Token {token}")
    assert me.status_code == 200
    assert me.json()["username"] == user.username


def test_token_is_stored_hashed(api_client):
    UserFactory(username="ada")

    token = api_client.post("/api/v1/auth/token/", {"username": "ada", "password": PASSWORD}, format="json").json()[
        "token"
    ]

    stored = AuthToken.objects.get()
    assert token not in (stored.digest, stored.token_key)


def test_wrong_password_is_400_naming_the_field(api_client):
    UserFactory(username="ada")

    response = api_client.post("/api/v1/auth/token/", {"username": "ada", "password": "nope"}, format="json")

    assert response.status_code == 400
    assert "password" in response.json()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": "x"}, "username"),
        ({"username": "ada"}, "password"),
        ({"username": "a" * 151, "password": "x"}, "username"),
    ],
)
def test_missing_or_too_long_fields_are_400(api_client, body, field):
    response = api_client.post("/api/v1/auth/token/", body, format="json")

    assert response.status_code == 400
    assert field in response.json()


def test_unknown_fields_are_refused(api_client):
    UserFactory(username="ada")

    response = api_client.post(
        "/api/v1/auth/token/", {"username": "ada", "password": PASSWORD, "admin": True}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"admin": ["Unknown field."]}


def test_bad_token_is_401(api_client):
    response = api_client.get("/api/v1/auth/me/", HTTP_AUTHORIZATION="Token not-a-token")

    assert response.status_code == 401
