from __future__ import annotations

from flask import g, request
from flask_smorest import Blueprint

from satchel_shared.errors import ApiError
from satchel_shared.tokens import require_auth

from ..schemas import (LoginSchema, ProfileSchema, RefreshTokenSchema, RegisterSchema,
                       TokenPairSchema, UserIdSchema)
from ..services import current_services

blp = Blueprint("auth", __name__, url_prefix="/api/v1/auth",
                description="Accounts, login and tokens")


@blp.before_request
def _body_is_json():
    """Every POST here takes a JSON object; say so plainly instead of 'field missing'."""
    if request.method == "POST" and (not request.is_json or request.get_json(silent=True) is None):
        raise ApiError(400, "invalid_json",
                       "The request body must be valid JSON sent as Content-Type: application/json.")


@blp.post("/register")
@blp.arguments(RegisterSchema)
@blp.response(201, UserIdSchema)
@blp.alt_response(409, description="An account with this email already exists")
def register(credentials):
    user_id = current_services().accounts.register(credentials["email"], credentials["password"])
    return {"id": user_id}


@blp.post("/login")
@blp.arguments(LoginSchema)
@blp.response(200, TokenPairSchema)
@blp.alt_response(401, description="Wrong email or password (one answer for both)")
@blp.alt_response(429, description="Too many failed logins; see Retry-After")
def login(credentials):
    return current_services().accounts.login(
        credentials["email"], credentials["password"], client_address=request.remote_addr or "unknown"
    )


@blp.post("/refresh")
@blp.arguments(RefreshTokenSchema)
@blp.response(200, TokenPairSchema)
@blp.alt_response(401, description="Invalid, expired, revoked or reused refresh token")
def refresh(body):
    return current_services().tokens.rotate(body["refresh_token"])


@blp.post("/logout")
@blp.arguments(RefreshTokenSchema)
@blp.response(204)
@blp.alt_response(401, description="Not a refresh token this service signed (or expired)")
def logout(body):
    """Revoke the refresh token's session (its whole family). Repeating it answers 204 again."""
    current_services().tokens.revoke(body["refresh_token"])


@blp.get("/me")
@blp.doc(security=[{"bearerAuth": []}])
@require_auth
@blp.response(200, ProfileSchema)
@blp.alt_response(401, description="Missing or invalid access token")
def me():
    return current_services().accounts.profile(g.user_id)
