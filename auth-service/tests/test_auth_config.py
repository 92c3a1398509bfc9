from __future__ import annotations

import pytest

from satchel_auth import create_app
from satchel_auth.config import AuthConfig
from satchel_shared.config import ConfigError, load_config


def test_defaults_match_the_documented_values(keys_dir):
    config = load_config(AuthConfig, {"JWT_KEYS_DIR": str(keys_dir)})
    assert config.mongo_uri == "mongodb://127.0.0.1:27017"
    assert config.mongo_db == "satchel_auth"
    assert (config.jwt_issuer, config.jwt_audience) == ("satchel-auth", "satchel")
    assert config.trusted_proxy_count == 0
    assert config.jwt_active_kid is None
    assert (config.access_token_ttl_seconds, config.refresh_token_ttl_seconds) == (900, 2592000)
    assert config.bcrypt_rounds == 12
    assert (config.login_max_failures, config.login_lockout_seconds,
            config.login_max_failures_per_ip) == (5, 300, 20)


def test_keys_dir_is_required():
    with pytest.raises(ConfigError, match="JWT_KEYS_DIR is required"):
        load_config(AuthConfig, {})


def test_a_missing_keys_dir_fails_with_a_hint(tmp_path):
    with pytest.raises(ConfigError, match="not a directory.*generate"):
        load_config(AuthConfig, {"JWT_KEYS_DIR": str(tmp_path / "nope")})


def test_an_empty_keys_dir_fails_at_start_up(tmp_path, mongo):
    config = load_config(AuthConfig, {"JWT_KEYS_DIR": str(tmp_path), "BCRYPT_ROUNDS": "4"})
    with pytest.raises(ConfigError, match="holds no"):
        create_app(config, mongo=mongo)


def test_an_unknown_active_kid_fails_at_start_up(make_config, mongo):
    with pytest.raises(ConfigError, match="JWT_ACTIVE_KID 'nope'"):
        create_app(make_config(JWT_ACTIVE_KID="nope"), mongo=mongo)


def test_an_empty_active_kid_means_the_newest_key(make_config):
    assert make_config(JWT_ACTIVE_KID="").jwt_active_kid is None


@pytest.mark.parametrize("rounds", ["3", "17", "-1"])
def test_bcrypt_rounds_outside_4_to_16_fail(make_config, rounds):
    with pytest.raises(ConfigError, match="BCRYPT_ROUNDS must be between 4 and 16"):
        make_config(BCRYPT_ROUNDS=rounds)


@pytest.mark.parametrize("env", ["ACCESS_TOKEN_TTL_SECONDS", "REFRESH_TOKEN_TTL_SECONDS", "LOGIN_MAX_FAILURES",
                                 "LOGIN_LOCKOUT_SECONDS", "LOGIN_MAX_FAILURES_PER_IP"])
def test_limits_and_lifetimes_must_be_positive(make_config, env):
    with pytest.raises(ConfigError, match=env):
        make_config(**{env: "0"})


def test_a_non_integer_setting_names_the_variable(make_config):
    with pytest.raises(ConfigError, match="LOGIN_MAX_FAILURES"):
        make_config(LOGIN_MAX_FAILURES="five")


def test_the_mongo_uri_is_masked_in_the_start_up_log(make_config):
    from satchel_shared.config import describe

    described = describe(make_config(MONGO_URI="mongodb://admin:hunter2@db:27017"))
    assert "hunter2" not in str(described)
