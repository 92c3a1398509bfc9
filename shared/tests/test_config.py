from dataclasses import dataclass
from typing import Optional

import pytest

from satchel_shared.config import ConfigError, describe, load_config, setting


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
