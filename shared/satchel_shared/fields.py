"""marshmallow fields both services validate input with."""
from __future__ import annotations

from marshmallow import ValidationError, fields


class Text(fields.String):
    """A string that is valid Unicode: JSON can carry lone surrogates, which no database (and
    no UTF-8 encoder) accepts, so they are a 400 here rather than a 500 later."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValidationError("Not valid Unicode text.") from exc
        return text
