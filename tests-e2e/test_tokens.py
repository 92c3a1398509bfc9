"""Token attacks against the file service, through the gateway: each one must be a JSON 401."""
import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def jwks(base_url):
    return requests.get(f"{base_url}/.well-known/jwks.json", timeout=10).json()


@pytest.fixture
def real_claims(user):
    return jwt.decode(user["tokens"]["token"], options={"verify_signature": False})


@pytest.fixture
def signing_key(stack):
    """The stack's own private key, to mint tokens that are valid but for one flaw."""
    if stack is None:
        pytest.skip("needs the stack's signing key (not available with BASE_URL)")
    pem_files = sorted(stack.path("keys").glob("*.pem"))
    kid = pem_files[0].stem
    key = serialization.load_pem_private_key(pem_files[0].read_bytes(), password=None)
    return kid, key


def _assert_rejected(api, token):
    response = api.get("/api/v1/files", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["Content-Type"].startswith("application/json")


def test_jwks_is_public_at_both_paths(api, jwks):
    assert jwks["keys"] and all(k["kty"] == "OKP" and "d" not in k for k in jwks["keys"])
    assert api.get("/api/v1/auth/jwks.json").json() == jwks


def test_no_token(api):
    response = api.get("/api/v1/files")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_alg_none(api, real_claims, jwks):
    header = {"alg": "none", "typ": "JWT", "kid": jwks["keys"][0]["kid"]}
    _assert_rejected(api, f"{_b64(json.dumps(header).encode())}."
                          f"{_b64(json.dumps(real_claims).encode())}.")


def test_hs256_signed_with_the_public_key(api, real_claims, jwks):
    public = jwt.PyJWK(jwks["keys"][0]).key
    pem = public.public_bytes(serialization.Encoding.PEM,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": jwks["keys"][0]["kid"]}
    unsigned = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(real_claims).encode())}"
    signature = hmac.new(pem, unsigned.encode(), hashlib.sha256).digest()
    _assert_rejected(api, f"{unsigned}.{_b64(signature)}")


def test_bad_signature(api, real_claims, jwks):
    forged = jwt.encode(real_claims, Ed25519PrivateKey.generate(), algorithm="EdDSA",
                        headers={"kid": jwks["keys"][0]["kid"]})
    _assert_rejected(api, forged)


def test_tampered_payload(api, user):
    header, payload, signature = user["tokens"]["token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "someone-else"
    _assert_rejected(api, f"{header}.{_b64(json.dumps(claims).encode())}.{signature}")


def test_refresh_token_as_access_token(api, user):
    _assert_rejected(api, user["tokens"]["refresh_token"])


@pytest.mark.parametrize("overrides", [
    {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200},
    {"aud": "another-service"},
    {"iss": "https://evil.example"},
])
def test_validly_signed_but_wrong_claims(api, real_claims, signing_key, overrides):
    kid, key = signing_key
    _assert_rejected(api, jwt.encode({**real_claims, **overrides}, key, algorithm="EdDSA",
                                     headers={"kid": kid}))


def test_validly_signed_good_claims_pass(api, real_claims, signing_key):
    kid, key = signing_key  # the control for the test above: only the flaw makes it fail
    token = jwt.encode(real_claims, key, algorithm="EdDSA", headers={"kid": kid})
    assert api.get("/api/v1/files", headers={"Authorization": f"Bearer {token}"}).status_code == 200
