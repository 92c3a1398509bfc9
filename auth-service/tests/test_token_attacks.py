"""Every way to present a bad access token to /me ends in a 401 JSON envelope."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from satchel_auth.keys import load_key_ring

ME = "/api/v1/auth/me"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def signing_key(keys_dir):
    return load_key_ring(keys_dir).active


@pytest.fixture
def user_id(auth):
    return auth.register().get_json()["id"]


@pytest.fixture
def claims(config, user_id):
    now = int(time.time())
    return {"iss": config.jwt_issuer, "aud": config.jwt_audience, "sub": user_id, "iat": now,
            "exp": now + 600, "jti": "test", "token_use": "access"}


def sign(claims, signing_key, **headers):
    return jwt.encode(claims, signing_key.private_key, algorithm="EdDSA",
                      headers={"kid": signing_key.kid, **headers})


def test_me_with_a_valid_token_returns_the_profile(auth):
    session = auth.session("Hana@Example.com")
    response = auth.me(session["token"])
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"id", "email", "created_at"}
    assert body["email"] == "Hana@Example.com"
    assert body["created_at"].endswith("+00:00")


def test_me_shows_each_user_only_their_own_account(auth):
    alice = auth.session("alice@example.com")
    bob = auth.session("bob@example.com")
    assert auth.me(alice["token"]).get_json()["email"] == "alice@example.com"
    assert auth.me(bob["token"]).get_json()["email"] == "bob@example.com"


def test_a_token_we_signed_ourselves_in_the_tests_is_accepted(auth, claims, signing_key):
    assert auth.me(sign(claims, signing_key)).status_code == 200  # the attacks below differ by one thing


def test_me_without_a_token_is_401(client, expect_error, user_id):
    response = client.get(ME)
    expect_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer a b", "bearer",
                                    "Token abc", "Bearer not-a-jwt"])
def test_me_with_a_malformed_authorization_header_is_401(client, expect_error, header, user_id):
    expect_error(client.get(ME, headers={"Authorization": header}), 401, "unauthorized")


def test_token_signed_by_another_key_with_the_same_kid_is_401(auth, claims, signing_key, expect_error):
    token = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA",
                       headers={"kid": signing_key.kid})
    expect_error(auth.me(token), 401)


def test_token_with_alg_none_is_401(auth, claims, signing_key, expect_error):
    header = {"alg": "none", "typ": "JWT", "kid": signing_key.kid}
    token = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."
    expect_error(auth.me(token), 401)


def test_hs256_token_signed_with_the_public_key_as_secret_is_401(auth, claims, signing_key, expect_error):
    public_pem = signing_key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": signing_key.kid}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    expect_error(auth.me(f"{signing_input}.{b64url(signature)}"), 401)


def test_expired_token_is_401(auth, claims, signing_key, expect_error):
    claims.update(iat=int(time.time()) - 3600, exp=int(time.time()) - 120)
    error = expect_error(auth.me(sign(claims, signing_key)), 401)
    assert "expired" in error["message"]


@pytest.mark.parametrize("claim, value", [("aud", "someone-else"), ("iss", "https://evil.example")])
def test_token_for_another_audience_or_issuer_is_401(auth, claims, signing_key, expect_error, claim, value):
    claims[claim] = value
    expect_error(auth.me(sign(claims, signing_key)), 401)


@pytest.mark.parametrize("claim", ["iss", "aud", "sub", "iat", "exp", "token_use"])
def test_token_missing_a_required_claim_is_401(auth, claims, signing_key, expect_error, claim):
    del claims[claim]
    expect_error(auth.me(sign(claims, signing_key)), 401)


def test_token_with_an_unknown_kid_is_401(auth, claims, signing_key, expect_error):
    expect_error(auth.me(sign(claims, signing_key, kid="no-such-key")), 401)


def test_refresh_token_used_as_access_token_is_401(auth, expect_error):
    session = auth.session()
    error = expect_error(auth.me(session["refresh_token"]), 401)
    assert "access" in error["message"]


def test_tampered_payload_is_401(auth, expect_error):
    header, payload, signature = auth.session()["token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "someone-else"
    expect_error(auth.me(f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"), 401)
