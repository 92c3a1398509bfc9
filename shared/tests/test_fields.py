import pytest
from marshmallow import Schema, ValidationError

from satchel_shared.fields import Text


class Named(Schema):
    name = Text(required=True)


@pytest.mark.parametrize("name", ["plain", "résumé.pdf", "日本語", "emoji 🙂"])
def test_any_valid_unicode_is_accepted(name):
    assert Named().load({"name": name}) == {"name": name}


@pytest.mark.parametrize("name", ["\ud800", "a\udc00b", "\udfff.bin"])
def test_lone_surrogates_are_a_validation_error(name):
    with pytest.raises(ValidationError) as error:
        Named().load({"name": name})
    assert error.value.messages == {"name": ["Not valid Unicode text."]}
