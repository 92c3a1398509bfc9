import io
import time
from urllib.parse import urlsplit

import jwt
import mongomock
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from satchel_files import create_app
from satchel_files.config import Config
from satchel_shared.config import load_config
from satchel_shared.tokens import StaticKeySet

from files_testing import CHUNK, KID, FakeClock, declare, pieces_of


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
def feed(app):
    """The change feed service."""
    return app.extensions["satchel.changes"]


@pytest.fixture
def refcounts(app):
    return app.extensions["satchel.files"].refcounts


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


@pytest.fixture
def chunked(client, token_for, store):
    """register / put (what the client's PUT to upload_url does) / report / get."""
    class Chunked:
        def register(self, user, body):
            return client.post("/api/v1/files", json=body, headers=token_for(user))

        def put(self, chunk_entry, data):
            key = urlsplit(chunk_entry["upload_url"]).path.rsplit("/", 1)[1]
            path = store.staging_path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        def report(self, user, user_file_id, indexes):
            return client.patch(f"/api/v1/files/{user_file_id}", headers=token_for(user),
                                json={"chunks": [{"index": i, "status": "uploaded"}
                                                 for i in indexes]})

        def get(self, user, user_file_id):
            return client.get(f"/api/v1/files/{user_file_id}", headers=token_for(user))

        def upload(self, user, data, filename="big.bin"):
            """The whole flow; returns the final PATCH (or POST) JSON."""
            registered = self.register(user, declare(data, filename))
            assert registered.status_code == 201, registered.get_json()
            body = registered.get_json()
            pending = [c for c in body["chunks"] if c["status"] != "verified"]
            if not pending:
                return body
            parts = pieces_of(data)
            for entry in pending:
                self.put(entry, parts[entry["index"]])
            response = self.report(user, body["user_file_id"], [c["index"] for c in pending])
            assert response.status_code == 200, response.get_json()
            return response.get_json()

    return Chunked()
