from __future__ import annotations

from flask_smorest import Blueprint

from ..schemas import JwksSchema
from ..services import current_services

blp = Blueprint("jwks", __name__, url_prefix="/api/v1/auth", description="Token verification keys")

CACHE_CONTROL = "public, max-age=300"


@blp.get("/jwks.json")
@blp.response(200, JwksSchema)
def jwks():
    """Public keys (JWK set) for every signing key, active or retiring."""
    return current_services().tokens.keys.public_jwks(), 200, {"Cache-Control": CACHE_CONTROL}
