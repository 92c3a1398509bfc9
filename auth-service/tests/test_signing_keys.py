from __future__ import annotations

import os
import subprocess
import sys

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from satchel_auth import create_app
from satchel_auth.keys import generate_key, load_key_ring
from satchel_auth.keys.__main__ import main
from satchel_shared.config import ConfigError

JWKS = "/api/v1/auth/jwks.json"


def test_jwks_publishes_the_public_key_with_cache_headers(client, keys_dir):
    response = client.get(JWKS)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "public, max-age=300"
    (key,) = response.get_json()["keys"]
    kid = load_key_ring(keys_dir).active.kid
    assert key == {**key, "kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "use": "sig"}
    assert set(key) == {"kty", "crv", "x", "kid", "alg", "use"}  # public part only, no "d"


def test_access_tokens_verify_against_the_published_jwks(client, auth, config):
    token = auth.session()["token"]
    jwks = jwt.PyJWKSet.from_dict(client.get(JWKS).get_json())
    key = jwks[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, key.key, algorithms=["EdDSA"], audience=config.jwt_audience,
                        issuer=config.jwt_issuer)
    assert claims["token_use"] == "access"


def test_key_rotation_keeps_old_tokens_valid_and_lists_both_keys(tmp_path, make_config, mongo, clock):
    old_kid, _ = generate_key(tmp_path)
    before = create_app(make_config(JWT_KEYS_DIR=str(tmp_path)), mongo=mongo, clock=clock).test_client()
    before.post("/api/v1/auth/register", json={"email": "r@example.com", "password": "rotate me please"})
    old_token = before.post("/api/v1/auth/login", json={
        "email": "r@example.com", "password": "rotate me please"}).get_json()

    new_kid, created = generate_key(tmp_path, force=True)
    assert created and new_kid != old_kid
    after = create_app(make_config(JWT_KEYS_DIR=str(tmp_path)), mongo=mongo, clock=clock).test_client()

    assert after.get("/api/v1/auth/me",
                     headers={"Authorization": f"Bearer {old_token['token']}"}).status_code == 200
    refreshed = after.post("/api/v1/auth/refresh", json={"refresh_token": old_token["refresh_token"]})
    assert refreshed.status_code == 200
    assert jwt.get_unverified_header(refreshed.get_json()["token"])["kid"] == new_kid
    assert {key["kid"] for key in after.get(JWKS).get_json()["keys"]} == {old_kid, new_kid}


def test_the_newest_key_file_signs_unless_an_active_kid_is_configured(tmp_path):
    first, _ = generate_key(tmp_path)
    second, _ = generate_key(tmp_path, force=True)
    os.utime(tmp_path / f"{first}.pem", ns=(2**62, 2**62))  # first is now the newest file
    assert load_key_ring(tmp_path).active.kid == first
    assert load_key_ring(tmp_path, second).active.kid == second


def test_generate_is_idempotent_without_force(tmp_path):
    kid, created = generate_key(tmp_path)
    again, created_again = generate_key(tmp_path)
    assert created and not created_again and again == kid
    assert [path.name for path in tmp_path.iterdir()] == [f"{kid}.pem"]


def test_generated_key_is_a_private_file(tmp_path):
    kid, _ = generate_key(tmp_path / "new-dir")
    assert (tmp_path / "new-dir" / f"{kid}.pem").stat().st_mode & 0o077 == 0


def test_keys_cli_creates_once_and_prints_the_kid(tmp_path, capsys):
    assert main(["generate", "--dir", str(tmp_path)]) == 0
    kid = capsys.readouterr().out.strip()
    assert (tmp_path / f"{kid}.pem").is_file()
    assert main(["generate", "--dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == kid
    assert len(list(tmp_path.glob("*.pem"))) == 1
    assert main(["generate", "--dir", str(tmp_path), "--force"]) == 0
    assert capsys.readouterr().out.strip() != kid
    assert len(list(tmp_path.glob("*.pem"))) == 2


def test_keys_cli_runs_as_a_module(tmp_path):
    result = subprocess.run([sys.executable, "-m", "satchel_auth.keys", "generate", "--dir", str(tmp_path)],
                            capture_output=True, text=True, check=True)
    assert (tmp_path / f"{result.stdout.strip()}.pem").is_file()


@pytest.mark.parametrize("content", [b"not a key", b""])
def test_a_file_that_is_not_a_pem_key_fails_start_up(tmp_path, content):
    (tmp_path / "broken.pem").write_bytes(content)
    with pytest.raises(ConfigError, match="broken.pem"):
        load_key_ring(tmp_path)


def test_a_key_that_is_not_ed25519_fails_start_up(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "p256.pem").write_bytes(pem)
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        load_key_ring(tmp_path)


def test_files_without_the_pem_suffix_are_ignored(tmp_path):
    kid, _ = generate_key(tmp_path)
    (tmp_path / "README").write_text("keys live here")
    (tmp_path / "backup.pem.bak").write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    assert set(load_key_ring(tmp_path).keys) == {kid}
