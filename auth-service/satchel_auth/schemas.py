"""Request validation and response shapes: the only place input is checked."""
from __future__ import annotations

import functools

from marshmallow import Schema, ValidationError, fields, validate, validates

from satchel_shared.fields import Text

PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_BYTES = 72  # bcrypt ignores what follows; we refuse rather than truncate
EMAIL_MAX_CHARS = 254
TOKEN_MAX_CHARS = 4096


@functools.cache
def common_passwords() -> frozenset[str]:
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(word.lower() for word in FREQUENCY_LISTS["passwords"])



def _password_fits_bcrypt(password: str) -> None:
    if len(password.encode("utf-8")) > PASSWORD_MAX_BYTES:
        raise ValidationError(f"Must be at most {PASSWORD_MAX_BYTES} bytes in UTF-8.")


class _Credentials(Schema):
    email = Text(required=True, validate=[validate.Email(), validate.Length(max=EMAIL_MAX_CHARS)])
    password = Text(required=True, load_only=True,
                    validate=[validate.Length(min=1), _password_fits_bcrypt])


class RegisterSchema(_Credentials):
    @validates("password")
    def _password_is_strong_enough(self, value: str, **_) -> None:
        if len(value) < PASSWORD_MIN_CHARS:
            raise ValidationError(f"Must be at least {PASSWORD_MIN_CHARS} characters.")
        if value.lower() in common_passwords():
            raise ValidationError("This password is too common; choose another.")


class LoginSchema(_Credentials):
    """No strength rules here: they may change after an account was made."""


class RefreshTokenSchema(Schema):
    refresh_token = Text(required=True, load_only=True,
                         validate=validate.Length(min=1, max=TOKEN_MAX_CHARS))


class UserIdSchema(Schema):
    id = fields.String(dump_only=True)


class TokenPairSchema(Schema):
    token = fields.String(dump_only=True, metadata={"description": "access token (JWT)"})
    refresh_token = fields.String(dump_only=True)
    token_type = fields.String(dump_only=True)
    expires_in = fields.Integer(dump_only=True, metadata={"description": "access token lifetime, seconds"})


class ProfileSchema(Schema):
    id = fields.String(dump_only=True)
    email = fields.String(dump_only=True)
    created_at = fields.AwareDateTime(dump_only=True, format="iso")


class JwksSchema(Schema):
    keys = fields.List(fields.Dict(), dump_only=True)
