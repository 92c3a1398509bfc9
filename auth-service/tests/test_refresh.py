from __future__ import annotations

import hashlib

import jwt

REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"


def _refresh(client, refresh_token):
    return client.post(REFRESH, json={"refresh_token": refresh_token})


def _logout(client, refresh_token):
    return client.post(LOGOUT, json={"refresh_token": refresh_token})


def test_refresh_returns_a_new_pair_in_the_login_shape(client, auth, config):
    session = auth.session()
    response = _refresh(client, session["refresh_token"])
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == config.access_token_ttl_seconds
    assert body["refresh_token"] != session["refresh_token"]
    assert auth.me(body["token"]).status_code == 200


def test_refresh_rotates_so_the_new_refresh_token_works_again(client, auth):
    token = auth.session()["refresh_token"]
    for _ in range(3):
        response = _refresh(client, token)
        assert response.status_code == 200
        token = response.get_json()["refresh_token"]


def test_refresh_tokens_are_jwts_of_the_refresh_kind_with_a_family(auth, config):
    session = auth.session()
    claims = jwt.decode(session["refresh_token"], options={"verify_signature": False})
    assert claims["token_use"] == "refresh"
    assert claims["jti"] and claims["fam"]
    assert claims["exp"] - claims["iat"] == config.refresh_token_ttl_seconds


def test_refresh_tokens_are_stored_only_as_sha256_hashes(auth, mongo, config):
    token = auth.session()["refresh_token"]
    stored = mongo[config.mongo_db]["refresh_tokens"].find_one()
    assert stored["_id"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(stored)
    indexes = mongo[config.mongo_db]["refresh_tokens"].index_information()
    assert indexes["expires_at_ttl"]["expireAfterSeconds"] == 0


def test_reusing_a_refresh_token_is_401_and_revokes_the_whole_family(client, auth, expect_error):
    first = auth.session()["refresh_token"]
    second = _refresh(client, first).get_json()["refresh_token"]
    third = _refresh(client, second).get_json()["refresh_token"]
    expect_error(_refresh(client, first), 401, "invalid_refresh_token")  # stolen copy replayed
    expect_error(_refresh(client, third), 401)  # the newest of the family stops working too
    expect_error(_refresh(client, second), 401)


def test_reuse_revokes_only_that_family_not_other_sessions(client, auth, expect_error):
    stolen = auth.session()["refresh_token"]
    other_device = auth.login().get_json()["refresh_token"]
    first = _refresh(client, stolen)
    assert first.status_code == 200
    rotated = first.get_json()["refresh_token"]
    expect_error(_refresh(client, stolen), 401, "invalid_refresh_token")  # the replay
    expect_error(_refresh(client, rotated), 401, "invalid_refresh_token")  # its family is revoked
    assert _refresh(client, other_device).status_code == 200


def test_an_expired_refresh_token_is_401(client, auth, clock, config, expect_error):
    token = auth.session()["refresh_token"]
    clock.advance(config.refresh_token_ttl_seconds + 1)  # the stored record has expired
    expect_error(_refresh(client, token), 401)


def test_an_access_token_is_not_a_refresh_token(client, auth, expect_error):
    session = auth.session()
    expect_error(_refresh(client, session["token"]), 401, "invalid_refresh_token")
    expect_error(_logout(client, session["token"]), 401)


def test_garbage_refresh_token_is_401(client, expect_error):
    expect_error(_refresh(client, "not.a.jwt"), 401, "invalid_refresh_token")


def test_refresh_validates_its_body(client, expect_error):
    expect_error(client.post(REFRESH, json={}), 400, "validation_error")
    expect_error(client.post(REFRESH, json={"refresh_token": "x", "more": 1}), 400)
    expect_error(client.post(REFRESH, json={"refresh_token": "x" * 5000}), 400)
    expect_error(client.post(REFRESH, data="x", content_type="text/plain"), 400)


def test_logout_is_204_and_the_refresh_token_no_longer_works(client, auth, expect_error):
    token = auth.session()["refresh_token"]
    response = _logout(client, token)
    assert response.status_code == 204
    assert response.get_data() == b""
    expect_error(_refresh(client, token), 401)


def test_logout_revokes_every_token_of_the_family(client, auth, expect_error):
    first = auth.session()["refresh_token"]
    second = _refresh(client, first).get_json()["refresh_token"]
    assert _logout(client, first).status_code == 204  # an older token of the session logs it out
    expect_error(_refresh(client, second), 401)


def test_logout_is_idempotent(client, auth):
    token = auth.session()["refresh_token"]
    assert _logout(client, token).status_code == 204
    assert _logout(client, token).status_code == 204


def test_logout_with_a_token_we_did_not_sign_is_401(client, expect_error):
    expect_error(_logout(client, "eyJhbGciOiJFZERTQSJ9.e30.c2ln"), 401, "invalid_refresh_token")


def test_logout_leaves_other_sessions_alone(client, auth, expect_error):
    laptop = auth.session()["refresh_token"]
    phone = auth.login().get_json()["refresh_token"]
    assert _logout(client, laptop).status_code == 204
    expect_error(_refresh(client, laptop), 401, "invalid_refresh_token")  # logged out
    assert _refresh(client, phone).status_code == 200


def test_a_rotation_racing_a_revocation_cannot_keep_the_session(app, auth):
    tokens = app.extensions["satchel_auth"].tokens
    first = auth.session()["refresh_token"]
    repository = tokens.refresh_tokens
    real_insert = repository.insert

    def insert_then_revoke(**record):  # the family is revoked right after our child is stored
        real_insert(**record)
        repository.revoke_family(record["family_id"], tokens.clock())

    repository.insert = insert_then_revoke
    try:
        response = auth.client.post(REFRESH, json={"refresh_token": first})
    finally:
        repository.insert = real_insert
    assert response.status_code == 401
