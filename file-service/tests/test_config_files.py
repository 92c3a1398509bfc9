"""The file service's settings: the shared ones (satchel_shared.config) and defaults as documented."""
import pytest

from satchel_files.config import Config
from satchel_shared.config import ConfigError, load_config

REQUIRED = {"JWKS_URL": "http://auth.test/jwks.json", "BLOB_URL_SECRET": "0123456789abcdef"}


def test_the_shared_defaults_are_the_documented_ones():
    config = load_config(Config, REQUIRED)
    assert config.mongo_uri == "mongodb://127.0.0.1:27017"
    assert config.mongo_db == "satchel_files"
    assert config.log_level == "INFO"
    assert (config.jwt_issuer, config.jwt_audience) == ("satchel-auth", "satchel")
    assert config.trusted_proxy_count == 0
    assert config.file_threads == 32
    assert config.max_waiting_long_polls == 24


def test_the_shared_settings_are_read_from_the_environment():
    config = load_config(Config, {**REQUIRED, "MONGO_DB": "files2", "TRUSTED_PROXY_COUNT": "1",
                                  "JWT_ISSUER": "iss", "FILE_THREADS": "16"})
    assert (config.mongo_db, config.trusted_proxy_count) == ("files2", 1)
    assert (config.jwt_issuer, config.file_threads) == ("iss", 16)


@pytest.mark.parametrize("environ, message", [
    ({"TRUSTED_PROXY_COUNT": "-1"}, "TRUSTED_PROXY_COUNT must not be negative"),
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL must be one of"),
    ({"FILE_THREADS": "1"}, "FILE_THREADS must be at least 2"),
])
def test_a_bad_shared_setting_fails_naming_its_variable(environ, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Config, {**REQUIRED, **environ})


def test_shared_and_own_problems_are_named_at_once():
    with pytest.raises(ConfigError) as error:
        load_config(Config, {**REQUIRED, "TRUSTED_PROXY_COUNT": "-1", "STORAGE_BACKEND": "ftp"})
    assert "TRUSTED_PROXY_COUNT" in str(error.value) and "STORAGE_BACKEND" in str(error.value)
