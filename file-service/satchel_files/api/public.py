from __future__ import annotations

from flask import current_app
from flask_smorest import Blueprint

from ..schemas import PublicConfigSchema

blueprint = Blueprint("config", __name__, url_prefix="/api/v1", description="Service settings")


@blueprint.get("/config")
@blueprint.response(200, PublicConfigSchema)
def public_config():
    """What a client needs to know before uploading (no token needed)."""
    config = current_app.config["SATCHEL"]
    return {
        "chunk_size_bytes": config.chunk_size_bytes,
        "max_upload_bytes": config.max_upload_bytes,
        "user_quota_bytes": config.user_quota_bytes,
        "download_url_ttl_seconds": config.download_url_ttl_seconds,
        "hash_algorithm": "sha256",
    }
