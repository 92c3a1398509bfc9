import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask, g, jsonify

from satchel_shared.errors import register_error_handlers
from satchel_shared.logging import init_request_id
from satchel_shared.tokens import (StaticKeySet, TokenVerifier, install_verifier,
                                   require_auth)

ISSUER = "satchel-auth"
AUDIENCE = "satchel"


class Signer:
    """Makes tokens the way the auth service does, with knobs to break each part."""

    def __init__(self, kid="k1"):
        self.kid = kid
        self.private_key = Ed25519PrivateKey.generate()

    def public_jwk(self):
        jwk = jwt.algorithms.OKPAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": "EdDSA", "use": "sig"}

    def claims(self, **overrides):
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "iat": now,
                  "exp": now + 900, "token_use": "access", "jti": "j1"}
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, kid=None, key=None, **overrides):
        return jwt.encode(self.claims(**overrides), key or self.private_key, algorithm="EdDSA",
                          headers={"kid": kid or self.kid})


@pytest.fixture
def signer():
    return Signer()


@pytest.fixture
def verifier(signer):
    return TokenVerifier(StaticKeySet({signer.kid: jwt.PyJWK(signer.public_jwk())}),
                         issuer=ISSUER, audience=AUDIENCE)


@pytest.fixture
def app(verifier):
    app = Flask("shared-test")
    init_request_id(app)
    register_error_handlers(app)
    install_verifier(app, verifier)

    @app.get("/whoami")
    @require_auth
    def whoami():
        return jsonify({"user_id": g.user_id})

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    return app


@pytest.fixture
def client(app):
    return app.test_client()
