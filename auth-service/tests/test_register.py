from __future__ import annotations

import pytest

REGISTER = "/api/v1/auth/register"


def test_register_returns_201_with_a_uuid_id(auth):
    response = auth.register()
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"id"}
    assert len(body["id"]) == 36 and body["id"].count("-") == 4


def test_register_stores_a_bcrypt_hash_never_the_password(auth, mongo, config):
    auth.register("Bob@Example.com", auth.password)
    user = mongo[config.mongo_db]["users"].find_one()
    assert user["email"] == "Bob@Example.com"
    assert user["email_normalized"] == "bob@example.com"
    assert user["password_hash"].startswith("$2b$04$")
    assert auth.password not in str(user)


@pytest.mark.parametrize("email", ["not-an-email", "", "a@", "@example.com", 42, None])
def test_register_rejects_a_bad_email(auth, email, expect_error):
    error = expect_error(auth.register(email=email), 400, "validation_error")
    assert list(error["details"]) == ["email"]


def test_register_rejects_a_password_under_8_characters(auth, expect_error):
    error = expect_error(auth.register(password="Xq7#vLp"), 400, "validation_error")
    assert "at least 8" in error["details"]["password"][0]


def test_register_accepts_a_password_of_exactly_72_utf8_bytes(auth):
    password = "é" * 35 + "Zq"  # 70 + 2 bytes
    assert len(password.encode()) == 72
    assert auth.register(password=password).status_code == 201
    assert auth.login(password=password).status_code == 200


def test_register_rejects_73_utf8_bytes_of_multibyte_characters(auth, expect_error):
    password = "é" * 36 + "Z"  # 37 characters, 73 bytes: a character count would let it through
    assert len(password.encode()) == 73
    error = expect_error(auth.register(password=password), 400, "validation_error")
    assert "72 bytes" in error["details"]["password"][0]


def test_register_rejects_a_very_long_password_without_a_500(auth, expect_error):
    expect_error(auth.register(password="x" * 10_000), 400, "validation_error")


@pytest.mark.parametrize("password", ["password123", "PASSWORD123", "Iloveyou1", "qwertyuiop"])
def test_register_rejects_a_common_password_case_insensitively(auth, password, expect_error):
    error = expect_error(auth.register(password=password), 400, "validation_error")
    assert "common" in error["details"]["password"][0]


def test_register_reports_each_bad_field(auth, expect_error):
    error = expect_error(auth.register(email="nope", password="short"), 400)
    assert set(error["details"]) == {"email", "password"}


def test_register_rejects_a_missing_field(client, expect_error):
    error = expect_error(client.post(REGISTER, json={"email": "a@example.com"}), 400)
    assert "password" in error["details"]


def test_register_rejects_unknown_fields(client, auth, expect_error):
    response = client.post(REGISTER, json={"email": "a@example.com", "password": auth.password,
                                           "is_admin": True})
    error = expect_error(response, 400, "validation_error")
    assert "is_admin" in error["details"]


def test_register_rejects_a_non_string_password(auth, expect_error):
    expect_error(auth.register(password=["a", "list"]), 400, "validation_error")


def test_register_rejects_a_lone_surrogate_instead_of_failing_to_store_it(client, expect_error):
    body = '{"email": "a@example.com", "password": "abcdefgh\\ud800xyz"}'
    response = client.post(REGISTER, data=body, content_type="application/json")
    expect_error(response, 400, "validation_error")


@pytest.mark.parametrize("data, content_type", [
    ("{not json", "application/json"),
    ("null", "application/json"),
    ("email=a@example.com&password=x", "application/x-www-form-urlencoded"),
    ('{"email": "a@example.com", "password": "long enough pass"}', "text/plain"),
    ("", None),
])
def test_register_answers_a_non_json_body_with_a_400_json_error(client, data, content_type, expect_error):
    response = client.post(REGISTER, data=data, content_type=content_type)
    assert "JSON" in expect_error(response, 400, "invalid_json")["message"]


@pytest.mark.parametrize("data", ['["a", "list"]', '"a string"', "42"])
def test_register_answers_json_that_is_not_an_object_with_a_400(client, data, expect_error):
    response = client.post(REGISTER, data=data, content_type="application/json")
    expect_error(response, 400, "validation_error")


def test_register_same_email_in_other_case_is_409(auth, expect_error):
    assert auth.register("carol@example.com").status_code == 201
    error = expect_error(auth.register("CAROL@Example.COM"), 409, "email_taken")
    assert "email" in error["details"]


def test_duplicate_email_is_refused_by_the_unique_index_not_only_a_lookup(app, auth, mongo, config):
    indexes = mongo[config.mongo_db]["users"].index_information()
    assert indexes["email_normalized_unique"]["unique"] is True
    accounts = app.extensions["satchel_auth"].accounts
    accounts.register("dave@example.com", auth.password)
    with pytest.raises(Exception) as raised:  # straight to insert: no lookup happens first
        accounts.register("DAVE@example.com", auth.password)
    assert raised.value.status == 409
