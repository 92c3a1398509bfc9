"""Blobs as objects in an S3 bucket (AWS S3, MinIO or anything S3-compatible).

Keys: `<prefix>files/<hash[:2]>/<hash>` (blobs), `<prefix>staging/<upload_key>` (direct uploads).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timezone

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .base import (
    READ_PIECE_BYTES,
    BlobHashMismatch,
    BlobInfo,
    BlobNotFound,
    BlobStore,
    KeptBytes,
    StagingInfo,
    StorageError,
    StorageUnavailable,
    ensure_hash_matches,
    blob_relative_path,
    is_blob_hash,
    is_upload_key,
    sha256_of_pieces,
    validate_range,
    validate_size_bytes,
    validate_ttl,
    validate_upload_key,
)
from .signed_urls import content_disposition, validate_content_type

_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


def build_s3_client(
    endpoint_url: str | None,
    region: str | None,
    access_key: str | None,
    secret_key: str | None,
):
    """An S3 client with SigV4, standard retries and, for a custom endpoint (MinIO), path-style
    addressing and checksums only where required (many S3-compatible stores reject the rest).

    Without keys, boto3's default credential chain applies (environment, IRSA, instance role).
    """
    options = {
        "signature_version": "s3v4",
        "retries": {"max_attempts": 5, "mode": "standard"},
        "connect_timeout": 5,
        "read_timeout": 60,
    }
    if endpoint_url:
        options["s3"] = {"addressing_style": "path"}
        options["request_checksum_calculation"] = "when_required"
        options["response_checksum_validation"] = "when_required"
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url or None,
        region_name=region or None,
        aws_access_key_id=access_key or None,
        aws_secret_access_key=secret_key or None,
        config=Config(**options),
    )


class S3BlobStore(BlobStore):
    def __init__(self, client, bucket: str, *, prefix: str = "", presign_client=None):
        """`presign_client` signs URLs when clients reach the store by another endpoint than we do
        (e.g. `http://minio:9000` inside compose, `http://localhost:9000` for the client)."""
        self._client = client
        self._presign_client = presign_client or client
        self.bucket = bucket
        self._prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""

    def blob_key(self, blob_hash: str) -> str:
        return f"{self._prefix}files/{blob_relative_path(blob_hash)}"

    def staging_key(self, upload_key: str) -> str:
        return f"{self._prefix}staging/{validate_upload_key(upload_key)}"

    # blobs

    def put(self, blob_hash: str, data: bytes, *, verified: bool = False) -> None:
        key = self.blob_key(blob_hash)
        ensure_hash_matches(blob_hash, data, verified=verified)
        # A racing put of the same hash writes the same verified bytes, so check-then-put is safe.
        if self._object_size(key) is not None:
            return
        with _translate_errors():
            self._client.put_object(Bucket=self.bucket, Key=key, Body=bytes(data))

    def size(self, blob_hash: str) -> int | None:
        return self._object_size(self.blob_key(blob_hash))

    def open(self, blob_hash: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        key = self.blob_key(blob_hash)
        validate_range(start, end)
        if end is not None and end == start:
            if self._object_size(key) is None:
                raise BlobNotFound(f"no blob {blob_hash}")
            return iter(())
        byte_range = None
        if start or end is not None:
            byte_range = f"bytes={start}-" + ("" if end is None else str(end - 1))
        body = self._get_body(key, byte_range)
        return iter(()) if body is None else _stream_body(body)

    def delete(self, blob_hash: str) -> None:
        with _translate_errors():
            self._client.delete_object(Bucket=self.bucket, Key=self.blob_key(blob_hash))

    def iter_blobs(self) -> Iterator[BlobInfo]:
        for key, obj in self._list(f"{self._prefix}files/"):
            shard, _, name = key.partition("/")
            if is_blob_hash(name) and shard == name[:2]:
                yield BlobInfo(name, obj["Size"], obj["LastModified"].astimezone(timezone.utc))

    # pre-signed URLs

    def presign_get(
        self,
        blob_hash: str,
        *,
        expires_seconds: int,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> str:
        params = {"Bucket": self.bucket, "Key": self.blob_key(blob_hash)}
        if filename is not None:
            params["ResponseContentDisposition"] = content_disposition(filename)
        if content_type is not None:
            params["ResponseContentType"] = validate_content_type(content_type)
        return self._presign("get_object", params, expires_seconds)

    def presign_put_staging(self, upload_key: str, *, size_bytes: int, expires_seconds: int) -> str:
        """Content-Length is a signed header: S3 rejects a PUT of any other size."""
        params = {
            "Bucket": self.bucket,
            "Key": self.staging_key(upload_key),
            "ContentLength": validate_size_bytes(size_bytes),
        }
        return self._presign("put_object", params, expires_seconds)

    # staging

    def open_staging(self, upload_key: str) -> Iterator[bytes]:
        return _stream_body(self._get_body(self.staging_key(upload_key), None))

    def staging_size(self, upload_key: str) -> int | None:
        return self._object_size(self.staging_key(upload_key))

    def promote_staging(self, upload_key: str, blob_hash: str, *,
                        keep_bytes: bool = False) -> KeptBytes | None:
        staging = self.staging_key(upload_key)
        target = self.blob_key(blob_hash)
        with _translate_errors():
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=staging)
            except ClientError as exc:
                if _is_missing(exc):
                    raise BlobNotFound(f"no staging object {upload_key}") from None
                raise
            pieces: list[bytes] = []
            actual = sha256_of_pieces(response["Body"].iter_chunks(READ_PIECE_BYTES),
                                      pieces.append if keep_bytes else None)
            if actual != blob_hash:
                self._client.delete_object(Bucket=self.bucket, Key=staging)
                raise BlobHashMismatch(f"staged bytes hash to {actual}, not {blob_hash}")
            if self._object_size(target) is None:
                # If-Match: copy only the very object we hashed, not one re-PUT since.
                self._client.copy_object(
                    Bucket=self.bucket,
                    Key=target,
                    CopySource={"Bucket": self.bucket, "Key": staging},
                    CopySourceIfMatch=response["ETag"],
                )
        return KeptBytes(pieces) if keep_bytes else None

    def delete_staging(self, upload_key: str) -> None:
        with _translate_errors():
            self._client.delete_object(Bucket=self.bucket, Key=self.staging_key(upload_key))

    def iter_staging(self) -> Iterator[StagingInfo]:
        for name, obj in self._list(f"{self._prefix}staging/"):
            if is_upload_key(name):
                yield StagingInfo(name, obj["Size"], obj["LastModified"].astimezone(timezone.utc))

    def location(self, blob_hash: str | None = None) -> str:
        key = self.blob_key(blob_hash) if blob_hash else f"{self._prefix}files/"
        return f"s3://{self.bucket}/{key}"

    def check(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            reason = "does not exist" if code in _MISSING_CODES else f"is not usable ({code})"
            raise StorageUnavailable(f"S3 bucket {self.bucket!r} {reason}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"S3 bucket {self.bucket!r} is unreachable: {exc}") from exc

    # helpers

    def _presign(self, operation: str, params: dict, expires_seconds: int) -> str:
        with _translate_errors():
            return self._presign_client.generate_presigned_url(
                operation, Params=params, ExpiresIn=validate_ttl(expires_seconds)
            )

    def _object_size(self, key: str) -> int | None:
        with _translate_errors():
            try:
                return self._client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
            except ClientError as exc:
                if _is_missing(exc):
                    return None
                raise

    def _get_body(self, key: str, byte_range: str | None):
        """The streaming body of `key` (or of `byte_range` of it); None for a range past the end."""
        kwargs = {"Bucket": self.bucket, "Key": key}
        if byte_range:
            kwargs["Range"] = byte_range
        with _translate_errors():
            try:
                return self._client.get_object(**kwargs)["Body"]
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code == "InvalidRange" and self._object_size(key) is not None:
                    return None  # start at or beyond the end, or an empty object
                if _is_missing(exc) or code == "InvalidRange":
                    raise BlobNotFound(f"no object {key}") from None
                raise

    def _list(self, prefix: str) -> Iterator[tuple[str, dict]]:
        """(key relative to `prefix`, listing entry) for every object under `prefix`."""
        paginator = self._client.get_paginator("list_objects_v2")
        with _translate_errors():
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", ()):
                    yield obj["Key"][len(prefix):], obj


def _stream_body(body) -> Iterator[bytes]:
    with contextlib.closing(body), _translate_errors():
        yield from body.iter_chunks(READ_PIECE_BYTES)


def _is_missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in _MISSING_CODES


@contextlib.contextmanager
def _translate_errors() -> Iterator[None]:
    """Botocore failures become StorageError/StorageUnavailable; our own errors pass through."""
    try:
        yield
    except StorageError:
        raise
    except ClientError as exc:
        raise StorageError(f"S3 request failed: {exc}") from exc
    except BotoCoreError as exc:
        raise StorageUnavailable(f"S3 is unreachable: {exc}") from exc
