"""Every query a request sends to nx-27017 (the embedded server of `make run`) is served from an
index, not from a scan of the whole collection.

nx-27017 stores each collection as one SQLite table and keeps an equality on a field sargable
only when a single-field index on that field exists (repositories/listing.py has the details).
A missing one turns a per-user query into a scan of every user's documents: its cost grows with
the deployment, not with the account, so neither mongomock nor a benchmark comparing two
accounts of one deployment sees it. (Found this way: every write's change number and every page
of /changes scanned all changes, 70-145 ms at 100,000 of them.)

Here both apps run in this process against a real nx-27017. A pymongo listener records every
command they send while a client does what a sync client does, and each distinct query is
EXPLAINed: the plan must SEARCH an index. Writes are checked through a find with the same
filter (nx does not explain writes). Exempt: gc and fsck, which read whole collections by
design, and aggregations (nx cannot explain them; the one there is, a user's total size, is
per-owner and was measured instead: 4 ms at 1,000 files beside 100,000 files of others).
"""
from __future__ import annotations

import io
import json
import os
import time
import traceback
from pathlib import Path
from urllib.parse import urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pymongo import MongoClient, monitoring

from satchel_auth import create_app as create_auth_app
from satchel_auth.config import AuthConfig
from satchel_auth.keys import generate_key
from satchel_devstack.stack import HOST, Stack
from satchel_files import create_app as create_file_app
from satchel_files.config import Config as FileConfig
from satchel_shared.config import load_config
from satchel_shared.tokens import StaticKeySet

from satchel_e2e import PASSWORD, sha256, stack_config

CHUNK = 64 * 1024
KID = "plans"
# Reads and writes are checked; these commands carry no filter worth a plan.
_FILTERS = {"find": lambda c: [c.get("filter") or {}],
            "count": lambda c: [c.get("query") or {}],
            "distinct": lambda c: [c.get("query") or {}],
            "update": lambda c: [u["q"] for u in c["updates"]],
            "delete": lambda c: [d["q"] for d in c["deletes"]],
            "findAndModify": lambda c: [c.get("query") or {}]}
# Whole-collection reads by design (services/maintenance.py: gc and fsck, and what they call).
_EXEMPT_MODULES = ("maintenance.py",)
# Known scans, each with its reason, to be fixed: the test fails once one is gone.
_KNOWN_SCANS: dict[str, str] = {}


@pytest.fixture(scope="module")
def nx(tmp_path_factory):
    """nx-27017 alone, started as the devstack starts it (what a restore runs, too)."""
    stack = Stack(stack_config(tmp_path_factory.mktemp("nx") / "var"))
    for directory in ("mongo", "log", "run"):
        stack.path(directory).mkdir(parents=True)
    try:
        stack.start_database(timeout_seconds=30)
        yield f"mongodb://{HOST}:{stack.config.mongo_port}"
    finally:
        stack.stop()


class Recorder(monitoring.CommandListener):
    """Each command the apps send, with the innermost Satchel frames that sent it."""

    def __init__(self):
        self.commands: list[tuple[str, str, str, dict]] = []

    def started(self, event):
        if event.command_name not in _FILTERS:
            return
        frames = [frame for frame in traceback.extract_stack()
                  if "/satchel_files/" in frame.filename or "/satchel_auth/" in frame.filename]
        if any(frame.filename.endswith(_EXEMPT_MODULES) for frame in frames):
            return
        origin = " < ".join(f"{Path(f.filename).stem}.{f.name}" for f in frames[-2:][::-1])
        self.commands.append((origin, event.database_name, event.command_name,
                              dict(event.command)))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


@pytest.fixture(scope="module")
def recorded(nx, tmp_path_factory):
    """Run a sync client's day against both apps; the commands they sent."""
    recorder = Recorder()
    client = MongoClient(nx, event_listeners=[recorder], tz_aware=True)
    keys = tmp_path_factory.mktemp("keys")
    generate_key(keys)
    auth = create_auth_app(load_config(AuthConfig, {
        "JWT_KEYS_DIR": str(keys), "BCRYPT_ROUNDS": "4", "MONGO_URI": nx}), mongo=client)
    signing = Ed25519PrivateKey.generate()
    jwk = jwt.algorithms.OKPAlgorithm.to_jwk(signing.public_key(), as_dict=True)
    files = create_file_app(
        load_config(FileConfig, {}, jwks_url="http://unused.invalid/jwks", mongo_uri=nx,
                    data_dir=str(tmp_path_factory.mktemp("data")),
                    blob_url_secret="plans-secret-0123456789", chunk_size_bytes=CHUNK,
                    accel_redirect=False, public_base_url="http://gateway.test"),
        mongo=client,
        key_set=StaticKeySet({KID: jwt.PyJWK({**jwk, "kid": KID, "alg": "EdDSA"})}))
    _auth_day(auth.test_client())
    _files_day(files, signing)
    client.close()
    return recorder.commands


def _auth_day(api):
    email = "plans@example.test"
    assert api.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD}
                    ).status_code == 201
    assert api.post("/api/v1/auth/login", json={"email": email, "password": "wrong password!"}
                    ).status_code == 401
    tokens = api.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD}).get_json()
    assert api.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['token']}"}
                   ).status_code == 200
    refreshed = api.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200
    assert api.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
                    ).status_code == 401  # reuse: the login's tokens are revoked
    assert api.post("/api/v1/auth/logout",
                    json={"refresh_token": refreshed.get_json()["refresh_token"]}).status_code == 204


def _files_day(app, signing):
    api = app.test_client()
    store = app.extensions["satchel.blob_store"]

    def headers(user):
        now = int(time.time())
        token = jwt.encode({"iss": "satchel-auth", "aud": "satchel", "sub": user, "iat": now,
                            "exp": now + 600, "token_use": "access"},
                           signing, algorithm="EdDSA", headers={"kid": KID})
        return {"Authorization": f"Bearer {token}"}

    def upload(user, name, data):
        response = api.post("/api/v1/files/upload", headers=headers(user),
                            data={"files": [(io.BytesIO(data), name)]},
                            content_type="multipart/form-data")
        assert response.status_code == 201, response.get_json()
        return response.get_json()[0]

    def chunked(user, name, data, report=True):
        pieces = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
        body = {"filename": name, "size_bytes": len(data), "hash": sha256(data),
                "mime_type": "application/octet-stream",
                "chunks": [{"index": i, "hash": sha256(p), "size_bytes": len(p)}
                           for i, p in enumerate(pieces)]}
        registered = api.post("/api/v1/files", json=body, headers=headers(user)).get_json()
        if not report:
            return registered
        for chunk in registered["chunks"]:
            if chunk["status"] == "verified":
                continue
            staging = store.staging_path(urlsplit(chunk["upload_url"]).path.rsplit("/", 1)[1])
            staging.parent.mkdir(parents=True, exist_ok=True)
            staging.write_bytes(pieces[chunk["index"]])
            response = api.patch(f"/api/v1/files/{registered['user_file_id']}",
                                 headers=headers(user),
                                 json={"chunks": [{"index": chunk["index"], "status": "uploaded"}]})
            assert response.status_code == 200, response.get_json()
        return registered

    alice = headers("alice")
    latest = api.get("/api/v1/changes/latest", headers=alice).get_json()["cursor"]
    first = upload("alice", "a.bin", os.urandom(3 * CHUNK))
    upload("alice", "b.txt", b"hello")
    upload("bob", "a.bin", os.urandom(100))
    page = api.get("/api/v1/files?limit=1", headers=alice)
    next_page = page.headers["Link"].split(">")[0].split("/api/v1/files")[1]
    assert api.get(f"/api/v1/files{next_page}", headers=alice).status_code == 200
    file_id = first["user_file_id"]
    assert api.get(f"/api/v1/files/{file_id}", headers=alice).status_code == 200
    assert api.get(f"/api/v1/files/{file_id}/content", headers=alice).status_code == 200
    assert api.put(f"/api/v1/files/{file_id}", headers=alice, data={"filename": "c.bin"},
                   content_type="multipart/form-data").status_code == 200
    assert api.put(f"/api/v1/files/{file_id}", headers=alice,
                   data={"file": (io.BytesIO(os.urandom(300)), "c.bin")},
                   content_type="multipart/form-data").status_code == 200
    assert api.get(f"/api/v1/changes?cursor={latest}", headers=alice).status_code == 200
    since = int(time.time() * 1000) - 60_000
    assert api.get(f"/api/v1/changes?since={since}", headers=alice).status_code == 200
    data = os.urandom(3 * CHUNK + 5)
    done = chunked("alice", "big.bin", data)
    assert api.get(f"/api/v1/files/{done['user_file_id']}", headers=alice).status_code == 200
    chunked("alice", "again.bin", data)  # held already: nothing to send
    chunked("bob", "theirs.bin", data)  # someone else's: sent again
    abandoned = chunked("alice", "gone.bin", os.urandom(CHUNK + 1), report=False)
    assert api.get(f"/api/v1/files/{abandoned['user_file_id']}", headers=alice).status_code == 200
    assert api.delete(f"/api/v1/files/{abandoned['user_file_id']}", headers=alice).status_code == 204
    assert api.delete(f"/api/v1/files/{file_id}", headers=alice).status_code == 204
    maintenance = app.extensions["satchel.maintenance"]
    assert maintenance.fsck().is_clean  # exempt, but must not fail
    maintenance.gc()


def _shape(query):
    """A query with its values left out: fields and operators ({status: X} is not
    {status: {$in: [...]}}, which nx-27017 plans differently)."""
    if isinstance(query, dict):
        return {key: _shape(value) for key, value in query.items()}
    if isinstance(query, list):
        return [_shape(value) for value in query[:1]]
    return None


def _plan(client, database, command_name, command, query):
    collection = command[command_name]
    explained = client[database].command("explain", {"find": collection, "filter": query})
    return [step.get("detail", "") for step in explained["queryPlanner"]["winningPlan"]]


def test_every_query_a_request_sends_searches_an_index(nx, recorded):
    client = MongoClient(nx)
    checked, scans, known_seen = {}, [], set()
    for origin, database, name, command in recorded:
        for query in _FILTERS[name](command):
            shape = (origin, name, json.dumps(_shape(query), sort_keys=True))
            if shape in checked:
                continue
            plan = _plan(client, database, name, command, query)
            checked[shape] = plan
            is_scan = not plan or not plan[0].startswith("SEARCH")
            if is_scan and origin not in _KNOWN_SCANS:
                scans.append(f"{origin}: {name} {command[name]} {query} -> {plan}")
            if is_scan:
                known_seen.add(origin)
    client.close()
    assert known_seen == set(_KNOWN_SCANS), "a known scan is gone or was not exercised: update _KNOWN_SCANS"
    assert len(checked) >= 40, "the day above should send at least 40 distinct queries"
    assert not scans, "queries that scan a whole collection on nx-27017:\n" + "\n".join(scans)
