import pytest

from satchel_files.config import Config
from satchel_shared.config import ConfigError, load_config


def test_new_user_has_no_files(client, token_for):
    response = client.get("/api/v1/files", headers=token_for("new-user"))
    assert response.status_code == 200
    assert response.get_json() == []


def test_listing_requires_a_token(client):
    response = client.get("/api/v1/files")
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"


def test_refresh_token_cannot_list_files(client, token_for):
    response = client.get("/api/v1/files", headers=token_for("u", token_use="refresh"))
    assert response.status_code == 401


@pytest.mark.parametrize("limit", ["0", "1001", "ten"])
def test_bad_limit_is_a_400_with_field_errors(client, token_for, limit):
    response = client.get(f"/api/v1/files?limit={limit}", headers=token_for("u"))
    assert response.status_code == 400
    assert "limit" in response.get_json()["error"]["details"]


def test_health_endpoints(client):
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"]["mongo"] == "ok"


def test_openapi_document_is_served_and_lists_the_files_path(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert "/api/v1/files" in spec["paths"]


@pytest.mark.parametrize("environ, problem", [
    ({"JWKS_URL": "x", "STORAGE_BACKEND": "ftp"}, "STORAGE_BACKEND"),
    ({"JWKS_URL": "x"}, "BLOB_URL_SECRET"),
    ({"JWKS_URL": "x", "STORAGE_BACKEND": "s3"}, "S3_BUCKET"),
    ({"BLOB_URL_SECRET": "s"}, "JWKS_URL"),
])
def test_config_fails_fast_with_a_clear_message(environ, problem):
    with pytest.raises(ConfigError, match=problem):
        load_config(Config, environ)
