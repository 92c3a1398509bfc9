import io
import time

import jwt
import mongomock
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from satchel_files import create_app
from satchel_files.config import Config
from satchel_shared.config import load_config
from satchel_shared.tokens import StaticKeySet

KID = "test-key"
CHUNK = 64 * 1024  # the smallest chunk size the config allows, so tests see multi-chunk files


class FakeClock:
    """Unix seconds that only move when a test says so."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def signing_key():
    return Ed25519PrivateKey.generate()


@pytest.fixture
def clock():
    return FakeClock(time.time())


@pytest.fixture
def config_overrides():
    """Tests override settings by redefining or updating this fixture."""
    return {}


@pytest.fixture
def config(tmp_path, config_overrides):
    settings = dict(jwks_url="http://unused.invalid/jwks", data_dir=str(tmp_path / "data"),
                    blob_url_secret="test-secret-0123456789", chunk_size_bytes=CHUNK,
                    accel_redirect=False, public_base_url="http://gateway.test:8080")
    settings.update(config_overrides)
    return load_config(Config, {}, **settings)


@pytest.fixture
def mongo():
    return mongomock.MongoClient()


@pytest.fixture
def app(config, signing_key, mongo, clock):
    jwk = jwt.algorithms.OKPAlgorithm.to_jwk(signing_key.public_key(), as_dict=True)
    key_set = StaticKeySet({KID: jwt.PyJWK({**jwk, "kid": KID, "alg": "EdDSA"})})
    return create_app(config, mongo=mongo, key_set=key_set, clock=clock)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def db(app, config):
    return app.extensions["satchel.mongo"][config.mongo_db]


@pytest.fixture
def store(app):
    return app.extensions["satchel.blob_store"]


@pytest.fixture
def maintenance(app):
    return app.extensions["satchel.maintenance"]


@pytest.fixture
def token_for(signing_key):
    def make(user_id: str, **overrides) -> dict:
        now = int(time.time())
        claims = {"iss": "satchel-auth", "aud": "satchel", "sub": user_id, "iat": now,
                  "exp": now + 600, "token_use": "access", **overrides}
        token = jwt.encode(claims, signing_key, algorithm="EdDSA", headers={"kid": KID})
        return {"Authorization": f"Bearer {token}"}
    return make


@pytest.fixture
def upload(client, token_for):
    """upload("alice", ("a.txt", b"..."), ("b.png", b"...", "image/png")) -> response."""
    def do(user: str, *files, field: str = "files", headers=None):
        parts = [(io.BytesIO(f[1]), f[0], f[2] if len(f) > 2 else "application/octet-stream")
                 for f in files]
        return client.post("/api/v1/files/upload", data={field: parts},
                           content_type="multipart/form-data",
                           headers={**token_for(user), **(headers or {})})
    return do
