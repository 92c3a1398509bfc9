"""The devstack's settings: read through satchel_shared.config, as README's `make run` table says."""
from pathlib import Path

import pytest

from satchel_devstack.cli import main
from satchel_devstack.stack import StackConfig
from satchel_shared.config import ConfigError, describe
from satchel_shared.serve import Serving


# README's `make run` table, SATCHEL_VAR aside (its default is relative to the checkout).
DOCUMENTED_DEFAULTS = {
    "GATEWAY_PORT": 8080, "AUTH_PORT": 8081, "FILE_PORT": 8082, "MONGO_PORT": 27017,
    "AUTH_WORKERS": 2, "FILE_WORKERS": 2, "FILE_THREADS": 32, "AUTH_RATE_LIMIT": "60r/m",
    "AUTH_RATE_BURST": 20, "CORS_ORIGIN_REGEX": "^$", "CLIENT_MAX_BODY_SIZE": "2g",
}
OTHER_VALUES = {
    "GATEWAY_PORT": 9080, "AUTH_PORT": 9081, "FILE_PORT": 9082, "MONGO_PORT": 28017,
    "AUTH_WORKERS": 3, "FILE_WORKERS": 4, "FILE_THREADS": 16, "AUTH_RATE_LIMIT": "10r/s",
    "AUTH_RATE_BURST": 5, "CORS_ORIGIN_REGEX": "^https://a$", "CLIENT_MAX_BODY_SIZE": "1g",
}


def settings_of(config: StackConfig) -> dict:
    described = describe(config)
    return {env: described[env] for env in DOCUMENTED_DEFAULTS}


def test_defaults_are_the_documented_ones(tmp_path):
    config = StackConfig.from_env(tmp_path, {})
    assert settings_of(config) == DOCUMENTED_DEFAULTS
    assert config.var_dir == (tmp_path / "var").resolve()


def test_every_setting_is_read_from_the_environment(tmp_path):
    environ = {env: str(value) for env, value in OTHER_VALUES.items()}
    config = StackConfig.from_env(tmp_path, {**environ, "SATCHEL_VAR": str(tmp_path / "state")})
    assert settings_of(config) == OTHER_VALUES
    assert config.var_dir == (tmp_path / "state").resolve()


def test_the_services_ports_workers_and_threads_are_the_images_own_declarations():
    """The devstack starts them through satchel_shared.serve, which reads these itself."""
    assert issubclass(StackConfig, Serving)


@pytest.mark.parametrize("environ, message", [
    ({"GATEWAY_PORT": "abc"}, "GATEWAY_PORT: expected a whole number, got 'abc'"),
    ({"MONGO_PORT": "70000"}, "MONGO_PORT must be between 1 and 65535, got 70000"),
    ({"AUTH_RATE_BURST": "-1"}, "AUTH_RATE_BURST must not be negative, got -1"),
    ({"AUTH_RATE_LIMIT": "60/m"}, "AUTH_RATE_LIMIT must be requests per second or minute"),
    ({"AUTH_RATE_LIMIT": "0r/s"}, "AUTH_RATE_LIMIT must be requests per second or minute"),
])
def test_a_bad_value_of_its_own_fails_naming_its_variable(tmp_path, environ, message):
    """The services' settings it inherits are checked by satchel_shared's own tests."""
    with pytest.raises(ConfigError, match=message):
        StackConfig.from_env(tmp_path, environ)


def test_the_cli_refuses_a_bad_value_before_starting_anything(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SATCHEL_VAR", str(tmp_path / "var"))
    monkeypatch.setenv("FILE_THREADS", "1")
    assert main(["run", "--root", str(tmp_path)]) == 1
    assert "FILE_THREADS must be at least 2" in capsys.readouterr().err
    assert not Path(tmp_path / "var").exists()
