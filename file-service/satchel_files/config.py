"""The file service's settings, read once from the environment (see satchel_shared.config)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from satchel_shared.config import FileThreads, ServiceConfig, setting


@dataclass(frozen=True, kw_only=True)
class Config(FileThreads, ServiceConfig):
    mongo_db: str = setting("MONGO_DB", "satchel_files")
    jwks_url: str = setting("JWKS_URL", help="The auth service's JWKS document.")
    jwks_cache_seconds: int = setting("JWKS_CACHE_SECONDS", 300)
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
    upload_buffer_bytes: int = setting(
        "UPLOAD_BUFFER_BYTES", 256 * 1024 ** 2,
        help="Memory one worker process may hold in chunk buffers for uploads in progress.")
    download_url_ttl_seconds: int = setting("DOWNLOAD_URL_TTL_SECONDS", 900)
    upload_url_ttl_seconds: int = setting(
        "UPLOAD_URL_TTL_SECONDS", 900, help="Lifetime of a chunk's pre-signed PUT URL (<= 7 days).")
    upload_ttl_seconds: int = setting(
        "UPLOAD_TTL_SECONDS", 86400,
        help="A chunked upload untouched this long expires; gc collects its bytes.")
    accel_redirect: Optional[bool] = setting(
        "ACCEL_REDIRECT", None,
        help="Let nginx send local single-chunk files (X-Accel-Redirect); default: on for local.")
    accel_redirect_prefix: str = setting("ACCEL_REDIRECT_PREFIX", "/_satchel_blobs",
                                         help="nginx internal location aliased to DATA_DIR/files.")
    accel_concat_location: Optional[str] = setting(
        "ACCEL_CONCAT_LOCATION", None,
        help="nginx internal location that sends local multi-chunk files "
             "(gateway/satchel-concat.conf.template); unset: they stream through the service.")
    gc_grace_seconds: int = setting(
        "GC_GRACE_SECONDS", 3600,
        help="Age before unreferenced blobs, leftovers and dead requests' intents are removed.")
    changes_max_waiting: Optional[int] = setting(
        "CHANGES_MAX_WAITING", None,
        help="Long-polls one worker holds at once (default FILE_THREADS - 8, at least 1); "
             "beyond it, /changes answers at once.")
    change_pending_lease_seconds: int = setting(
        "CHANGE_PENDING_LEASE_SECONDS", 30,
        help="How long the feed waits for a change in flight before delivering it as uncertain.")
    change_retention_seconds: int = setting("CHANGE_RETENTION_SECONDS", 30 * 24 * 3600,
                                            help="How long gc keeps changes (and deletions).")

    @property
    def max_waiting_long_polls(self) -> int:
        if self.changes_max_waiting is not None:
            return self.changes_max_waiting
        return max(self.file_threads - 8, 1)

    @property
    def is_accel_redirect(self) -> bool:
        if self.accel_redirect is None:
            return self.storage_backend == "local"
        return self.accel_redirect and self.storage_backend == "local"

    def problems(self) -> list[str]:
        problems = super().problems()
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
        if self.upload_buffer_bytes < 2 * self.chunk_size_bytes:
            problems.append("UPLOAD_BUFFER_BYTES must hold at least two chunks")
        if not 1 <= self.download_url_ttl_seconds <= 7 * 24 * 3600:
            problems.append("DOWNLOAD_URL_TTL_SECONDS must be between 1 and 604800")
        if not 1 <= self.upload_url_ttl_seconds <= 7 * 24 * 3600:
            problems.append("UPLOAD_URL_TTL_SECONDS must be between 1 and 604800")
        if self.upload_ttl_seconds < 60:
            problems.append("UPLOAD_TTL_SECONDS must be at least 60")
        if self.gc_grace_seconds < 60:
            problems.append("GC_GRACE_SECONDS must be at least 60")
        if self.changes_max_waiting is not None and not \
                1 <= self.changes_max_waiting < self.file_threads:
            problems.append("CHANGES_MAX_WAITING must be at least 1 and below FILE_THREADS")
        if not 5 <= self.change_pending_lease_seconds <= 3600:
            problems.append("CHANGE_PENDING_LEASE_SECONDS must be between 5 and 3600")
        if self.change_retention_seconds < 3600:
            problems.append("CHANGE_RETENTION_SECONDS must be at least 3600")
        if self.accel_concat_location is not None and \
                not self.accel_concat_location.startswith("/"):
            problems.append("ACCEL_CONCAT_LOCATION must start with /")
        if not self.accel_redirect_prefix.startswith("/"):
            problems.append("ACCEL_REDIRECT_PREFIX must start with /")
        return problems
