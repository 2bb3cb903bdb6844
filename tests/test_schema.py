import pytest
import yaml


@pytest.mark.django_db
def test_the_schema_renders_as_yaml_and_describes_the_api(api_client):
    response = api_client.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/auth/token/" in schema["paths"]


@pytest.mark.django_db
def test_the_schema_renders_as_json(api_client):
    response = api_client.get("/api/schema/?format=json")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    assert response.json()["info"]["title"] == "Weft API"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/docs/?script", "/api/redoc/"])
def test_the_api_docs_pages_answer(api_client, path):
    # Swagger UI's page loads its start-up script (which names the schema) from /api/docs/?script.
    response = api_client.get(path)
    assert response.status_code == 200
    assert b"/api/schema/" in response.content
