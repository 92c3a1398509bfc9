"""The settings every service shares (satchel_shared.config.ServiceConfig), as the auth service reads them."""
import pytest

from satchel_shared.config import ConfigError


def test_the_shared_settings_are_read_from_the_environment(make_config):
    config = make_config(LOG_LEVEL="warning", TRUSTED_PROXY_COUNT="1", JWT_ISSUER="iss",
                         JWT_AUDIENCE="aud", MONGO_DB="auth2")
    assert (config.log_level, config.trusted_proxy_count) == ("warning", 1)
    assert (config.jwt_issuer, config.jwt_audience, config.mongo_db) == ("iss", "aud", "auth2")


@pytest.mark.parametrize("environ, message", [
    ({"TRUSTED_PROXY_COUNT": "-1"}, "TRUSTED_PROXY_COUNT must not be negative"),
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL must be one of"),
])
def test_a_bad_shared_setting_fails_naming_its_variable(make_config, environ, message):
    with pytest.raises(ConfigError, match=message):
        make_config(**environ)
