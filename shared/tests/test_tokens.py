import base64
import hashlib
import hmac
import json
import time

import pytest
import requests
from cryptography.hazmat.primitives import serialization

from satchel_shared.tokens import (InvalidToken, KeysUnavailable, RemoteKeySet, bearer_token)

from .conftest import Signer


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_made(header: dict, claims: dict, signature: bytes = b"") -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(signature)}"


def test_valid_access_token_yields_its_claims(verifier, signer):
    assert verifier.verify(signer.token())["sub"] == "user-1"


@pytest.mark.parametrize("overrides, reason", [
    ({"exp": int(time.time()) - 120}, "expired"),
    ({"aud": "someone-else"}, "rejected"),
    ({"iss": "evil-issuer"}, "rejected"),
    ({"token_use": "refresh"}, "not an access token"),
    ({"token_use": None}, "rejected"),
    ({"sub": None}, "rejected"),
    ({"iat": None}, "rejected"),
])
def test_tokens_with_bad_claims_are_rejected(verifier, signer, overrides, reason):
    with pytest.raises(InvalidToken, match=reason):
        verifier.verify(signer.token(**overrides))


def test_token_signed_by_another_key_with_a_known_kid_is_rejected(verifier, signer):
    impostor = Signer(kid=signer.kid)
    with pytest.raises(InvalidToken):
        verifier.verify(impostor.token())


def test_unknown_kid_is_rejected(verifier, signer):
    with pytest.raises(InvalidToken, match="unknown key"):
        verifier.verify(signer.token(kid="nope"))


def test_alg_none_is_rejected(verifier, signer):
    token = _hand_made({"alg": "none", "kid": signer.kid, "typ": "JWT"}, signer.claims())
    with pytest.raises(InvalidToken, match="algorithm"):
        verifier.verify(token)


def test_hs256_signed_with_the_public_key_is_rejected(verifier, signer):
    public_pem = signer.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "kid": signer.kid, "typ": "JWT"}
    unsigned = _hand_made(header, signer.claims()).rsplit(".", 1)[0]
    signature = hmac.new(public_pem, unsigned.encode(), hashlib.sha256).digest()
    with pytest.raises(InvalidToken, match="algorithm"):
        verifier.verify(f"{unsigned}.{_b64(signature)}")


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "....", "eyJhbGciOiJFZERTQSJ9.e30."])
def test_garbage_is_rejected_not_crashed_on(verifier, garbage):
    with pytest.raises(InvalidToken):
        verifier.verify(garbage)


@pytest.mark.parametrize("header, expected", [
    ("Bearer abc.def.ghi", "abc.def.ghi"),
    ("bearer   abc", "abc"),
    ("Bearer", None),
    ("Bearer ", None),
    ("Basic dXNlcjpwdw==", None),
    ("Bearer a b", None),
    ("", None),
    (None, None),
])
def test_bearer_header_parsing(header, expected):
    assert bearer_token(header) == expected


class FakeSession:
    def __init__(self, documents):
        self.documents = list(documents)
        self.calls = 0

    def get(self, url, timeout):
        self.calls += 1
        document = self.documents[min(self.calls, len(self.documents)) - 1]
        if isinstance(document, Exception):
            raise document

        class Response:
            def raise_for_status(self):
                pass

            def json(self):
                return document

        return Response()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_remote_key_set_is_cached_and_refetched_once_on_an_unknown_kid():
    old, new = Signer("old"), Signer("new")
    session = FakeSession([{"keys": [old.public_jwk()]},
                           {"keys": [old.public_jwk(), new.public_jwk()]}])
    clock = Clock()
    keys = RemoteKeySet("http://auth/jwks", session=session, clock=clock, min_refetch_seconds=10)
    assert keys.key_for("old") is not None
    assert keys.key_for("old") is not None
    assert session.calls == 1  # cached
    clock.now += 11
    assert keys.key_for("new") is not None  # rotation picked up by one refetch
    assert session.calls == 2


def test_remote_key_set_throttles_refetches_for_made_up_kids():
    signer = Signer("k1")
    session = FakeSession([{"keys": [signer.public_jwk()]}])
    clock = Clock()
    keys = RemoteKeySet("http://auth/jwks", session=session, clock=clock, min_refetch_seconds=10)
    keys.key_for("k1")
    for attempt in range(50):
        assert keys.key_for(f"made-up-{attempt}") is None
    assert session.calls == 1


def test_remote_key_set_reports_an_unreachable_auth_service():
    session = FakeSession([requests.ConnectionError("refused")])
    keys = RemoteKeySet("http://auth/jwks", session=session)
    with pytest.raises(KeysUnavailable):
        keys.key_for("k1")


def test_remote_key_set_refreshes_after_its_ttl():
    signer = Signer("k1")
    session = FakeSession([{"keys": [signer.public_jwk()]}, {"keys": []}])
    clock = Clock()
    keys = RemoteKeySet("http://auth/jwks", session=session, clock=clock, ttl_seconds=300)
    assert keys.key_for("k1") is not None
    clock.now += 301
    assert keys.key_for("k1") is None  # the key was withdrawn


def test_a_token_that_cannot_be_checked_for_want_of_keys_is_a_503_not_a_401(client, signer,
                                                                           verifier):
    """The auth service being down is not the client's fault: retry, do not log in again."""
    verifier.key_set = RemoteKeySet("http://auth/jwks",
                                    session=FakeSession([requests.ConnectionError("refused")]))
    response = client.get("/whoami", headers={"Authorization": f"Bearer {signer.token()}"})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "service_unavailable"
