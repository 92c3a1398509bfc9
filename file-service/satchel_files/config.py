from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from satchel_shared.config import ConfigError, setting


@dataclass(frozen=True, kw_only=True)
class Config:
    mongo_uri: str = setting("MONGO_URI", "mongodb://127.0.0.1:27017", secret=True)
    mongo_db: str = setting("MONGO_DB", "satchel_files")
    log_level: str = setting("LOG_LEVEL", "INFO")
    trusted_proxy_count: int = setting("TRUSTED_PROXY_COUNT", 0,
                                       help="Reverse proxies in front (1 behind the gateway).")
    jwks_url: str = setting("JWKS_URL", help="The auth service's JWKS document.")
    jwks_cache_seconds: int = setting("JWKS_CACHE_SECONDS", 300)
    jwt_issuer: str = setting("JWT_ISSUER", "satchel-auth")
    jwt_audience: str = setting("JWT_AUDIENCE", "satchel")
    storage_backend: str = setting("STORAGE_BACKEND", "local", help="local or s3")
    data_dir: str = setting("DATA_DIR", "var/data", help="Root of the local blob backend.")
    blob_url_secret: Optional[str] = setting("BLOB_URL_SECRET", None, secret=True,
                                             help="HMAC key (>= 16 bytes) for signed blob and content URLs.")
    public_base_url: str = setting("PUBLIC_BASE_URL", "http://127.0.0.1:8080")
    s3_bucket: Optional[str] = setting("S3_BUCKET", None)
    s3_endpoint_url: Optional[str] = setting("S3_ENDPOINT_URL", None)
    s3_public_endpoint_url: Optional[str] = setting(
        "S3_PUBLIC_ENDPOINT_URL", None,
        help="Endpoint clients reach S3 by, when it differs from S3_ENDPOINT_URL (signs URLs).")
    s3_region: str = setting("S3_REGION", "us-east-1")
    aws_access_key_id: Optional[str] = setting("AWS_ACCESS_KEY_ID", None, secret=True)
    aws_secret_access_key: Optional[str] = setting("AWS_SECRET_ACCESS_KEY", None, secret=True)
    chunk_size_bytes: int = setting("CHUNK_SIZE_BYTES", 8 * 1024 * 1024)
    max_upload_bytes: int = setting("MAX_UPLOAD_BYTES", 2 * 1024 ** 3,
                                    help="Largest file, and largest upload request, in bytes.")
    user_quota_bytes: int = setting("USER_QUOTA_BYTES", 10 * 1024 ** 3,
                                    help="Sum of size_bytes of one user's files.")
    download_url_ttl_seconds: int = setting("DOWNLOAD_URL_TTL_SECONDS", 900)
    accel_redirect: Optional[bool] = setting(
        "ACCEL_REDIRECT", None,
        help="Let nginx send local single-chunk files (X-Accel-Redirect); default: on for local.")
    accel_redirect_prefix: str = setting("ACCEL_REDIRECT_PREFIX", "/_satchel_blobs",
                                         help="nginx internal location aliased to DATA_DIR/files.")
    gc_grace_seconds: int = setting(
        "GC_GRACE_SECONDS", 3600,
        help="Age before unreferenced blobs, leftovers and dead requests' intents are removed.")

    @property
    def is_accel_redirect(self) -> bool:
        if self.accel_redirect is None:
            return self.storage_backend == "local"
        return self.accel_redirect and self.storage_backend == "local"

    def validate(self) -> None:
        problems = []
        if self.storage_backend not in ("local", "s3"):
            problems.append("STORAGE_BACKEND must be 'local' or 's3'")
        if not self.blob_url_secret:
            problems.append("BLOB_URL_SECRET is required (it also signs content download URLs)")
        elif len(self.blob_url_secret.encode("utf-8")) < 16:
            problems.append("BLOB_URL_SECRET must be at least 16 bytes")
        if self.storage_backend == "s3" and not self.s3_bucket:
            problems.append("S3_BUCKET is required with STORAGE_BACKEND=s3")
        if not 64 * 1024 <= self.chunk_size_bytes <= 64 * 1024 ** 2:
            problems.append("CHUNK_SIZE_BYTES must be between 64 KiB and 64 MiB")
        if self.max_upload_bytes <= 0:
            problems.append("MAX_UPLOAD_BYTES must be positive")
        if self.user_quota_bytes <= 0:
            problems.append("USER_QUOTA_BYTES must be positive")
        if not 1 <= self.download_url_ttl_seconds <= 7 * 24 * 3600:
            problems.append("DOWNLOAD_URL_TTL_SECONDS must be between 1 and 604800")
        if self.gc_grace_seconds < 60:
            problems.append("GC_GRACE_SECONDS must be at least 60")
        if not self.accel_redirect_prefix.startswith("/"):
            problems.append("ACCEL_REDIRECT_PREFIX must start with /")
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))
