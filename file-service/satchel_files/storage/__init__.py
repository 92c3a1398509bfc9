"""Blob storage: one interface (`BlobStore`), three backends (local disk, S3, in-memory fake)."""

from .base import (
    BlobHashMismatch,
    BlobInfo,
    BlobNotFound,
    BlobStore,
    StagingInfo,
    StorageError,
    StorageUnavailable,
    blob_relative_path,
    validate_blob_hash,
    validate_upload_key,
)
from .local import LocalBlobStore
from .memory import MemoryBlobStore
from .s3 import S3BlobStore, build_s3_client
from .signed_urls import canonical_string, content_disposition, response_headers

__all__ = [
    "BlobHashMismatch",
    "BlobInfo",
    "BlobNotFound",
    "BlobStore",
    "LocalBlobStore",
    "MemoryBlobStore",
    "S3BlobStore",
    "StagingInfo",
    "StorageError",
    "StorageUnavailable",
    "blob_relative_path",
    "build_s3_client",
    "canonical_string",
    "content_disposition",
    "response_headers",
    "validate_blob_hash",
    "validate_upload_key",
]
