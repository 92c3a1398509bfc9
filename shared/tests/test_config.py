import re
from dataclasses import dataclass
from typing import Optional

import pytest

from satchel_shared.config import (ConfigError, FileThreads, ServiceConfig, describe, load_config,
                                   setting)


@dataclass(frozen=True, kw_only=True)
class Sample:
    uri: str = setting("SAMPLE_URI", secret=True)
    workers: int = setting("SAMPLE_WORKERS", 2)
    debug: bool = setting("SAMPLE_DEBUG", False)
    origins: tuple[str, ...] = setting("SAMPLE_ORIGINS", ())
    bucket: Optional[str] = setting("SAMPLE_BUCKET", None)


def test_values_are_parsed_by_type():
    config = load_config(Sample, {"SAMPLE_URI": "mongodb://x", "SAMPLE_WORKERS": "4",
                                  "SAMPLE_DEBUG": "yes", "SAMPLE_ORIGINS": "a, b,,c"})
    assert (config.workers, config.debug, config.origins) == (4, True, ("a", "b", "c"))
    assert config.bucket is None


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as error:
        load_config(Sample, {"SAMPLE_WORKERS": "many", "SAMPLE_DEBUG": "perhaps"})
    message = str(error.value)
    assert "SAMPLE_URI is required" in message
    assert "SAMPLE_WORKERS" in message and "SAMPLE_DEBUG" in message


def test_empty_optional_means_none():
    assert load_config(Sample, {"SAMPLE_URI": "u", "SAMPLE_BUCKET": ""}).bucket is None


def test_describe_masks_secrets():
    described = describe(load_config(Sample, {"SAMPLE_URI": "mongodb://user:pw@host"}))
    assert described["SAMPLE_URI"] == "***"
    assert described["SAMPLE_WORKERS"] == 2


def test_overrides_win_and_unknown_overrides_fail():
    assert load_config(Sample, {}, uri="x").uri == "x"
    with pytest.raises(TypeError):
        load_config(Sample, {}, uri="x", nonsense=1)


def test_a_parse_error_says_what_was_expected():
    with pytest.raises(ConfigError, match="SAMPLE_WORKERS: expected a whole number, got 'many'"):
        load_config(Sample, {"SAMPLE_URI": "u", "SAMPLE_WORKERS": "many"})


def test_a_union_with_none_is_optional_too():
    @dataclass(frozen=True, kw_only=True)
    class Modern:
        region: str | None = setting("SAMPLE_REGION", None)

    assert load_config(Modern, {"SAMPLE_REGION": ""}).region is None
    assert load_config(Modern, {"SAMPLE_REGION": "eu"}).region == "eu"


# --- the settings every service shares -------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class SampleService(ServiceConfig):
    mongo_db: str = setting("MONGO_DB", "satchel_sample")
    tries: int = setting("SAMPLE_TRIES", 3)

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.tries < 1:
            problems.append("SAMPLE_TRIES must be at least 1")
        return problems


@dataclass(frozen=True, kw_only=True)
class SampleThreaded(FileThreads, SampleService):
    pass


def test_service_defaults_are_the_documented_ones():
    config = load_config(SampleService, {})
    assert config.mongo_uri == "mongodb://127.0.0.1:27017"
    assert config.mongo_db == "satchel_sample"
    assert config.log_level == "INFO"
    assert (config.jwt_issuer, config.jwt_audience) == ("satchel-auth", "satchel")
    assert config.trusted_proxy_count == 0


def test_service_settings_come_from_the_environment():
    config = load_config(SampleService, {
        "MONGO_URI": "mongodb://db:27017", "MONGO_DB": "other", "LOG_LEVEL": "debug",
        "JWT_ISSUER": "issuer", "JWT_AUDIENCE": "audience", "TRUSTED_PROXY_COUNT": "1"})
    assert (config.mongo_uri, config.mongo_db, config.log_level) == (
        "mongodb://db:27017", "other", "debug")
    assert (config.jwt_issuer, config.jwt_audience, config.trusted_proxy_count) == (
        "issuer", "audience", 1)


def test_a_service_that_gives_no_database_requires_mongo_db():
    with pytest.raises(ConfigError, match="MONGO_DB is required"):
        load_config(ServiceConfig, {})
    assert load_config(ServiceConfig, {"MONGO_DB": "d"}).mongo_db == "d"


def test_the_mongo_uri_is_a_secret():
    described = describe(load_config(SampleService, {"MONGO_URI": "mongodb://u:hunter2@db"}))
    assert described["MONGO_URI"] == "***"
    assert described["MONGO_DB"] == "satchel_sample"


@pytest.mark.parametrize("environ, message", [
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'loud'"),
    ({"LOG_LEVEL": ""}, "LOG_LEVEL must be one of"),
    ({"LOG_LEVEL": "notset"}, "LOG_LEVEL must be one of"),  # logging knows it; the README not
    ({"TRUSTED_PROXY_COUNT": "-1"}, "TRUSTED_PROXY_COUNT must not be negative"),
    ({"TRUSTED_PROXY_COUNT": "one"}, "TRUSTED_PROXY_COUNT: expected a whole number, got 'one'"),
    ({"FILE_THREADS": "1"}, "FILE_THREADS must be at least 2"),
    ({"FILE_THREADS": "lots"}, "FILE_THREADS: expected a whole number, got 'lots'"),
])
def test_each_bad_shared_value_fails_naming_its_variable(environ, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(SampleThreaded, environ)


@pytest.mark.parametrize("level", ["DEBUG", "info", "Warning", "ERROR", "critical"])
def test_log_levels_are_accepted_in_any_case(level):
    assert load_config(SampleService, {"LOG_LEVEL": level}).log_level == level


def test_file_threads_defaults_to_32_and_is_read_from_the_environment():
    assert load_config(SampleThreaded, {}).file_threads == 32
    assert load_config(SampleThreaded, {"FILE_THREADS": "2"}).file_threads == 2


def test_the_checks_of_every_class_in_the_hierarchy_are_reported_at_once():
    with pytest.raises(ConfigError) as error:
        load_config(SampleThreaded, {"LOG_LEVEL": "loud", "TRUSTED_PROXY_COUNT": "-1",
                                     "FILE_THREADS": "1", "SAMPLE_TRIES": "0"})
    message = str(error.value)
    for env in ("LOG_LEVEL", "TRUSTED_PROXY_COUNT", "FILE_THREADS", "SAMPLE_TRIES"):
        assert env in message
