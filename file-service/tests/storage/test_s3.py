"""The S3 backend's own promises: readiness check, pre-signed URLs, key layout, client settings."""

import hashlib
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import pytest
from botocore.config import Config

from satchel_files.storage import (
    BlobNotFound,
    S3BlobStore,
    StorageError,
    StorageUnavailable,
    build_s3_client,
)

HELLO = b"hello world"
HELLO_HASH = hashlib.sha256(HELLO).hexdigest()
UPLOAD_KEY = "upload_0123456789-abcdef"


def query_of(url):
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


@pytest.fixture
def s3_store(s3_client, s3_bucket):
    return S3BlobStore(s3_client, s3_bucket)


def test_check_passes_when_the_bucket_exists(s3_store):
    s3_store.check()


def test_check_raises_storage_unavailable_for_a_missing_bucket(s3_client):
    store = S3BlobStore(s3_client, "no-such-bucket")

    with pytest.raises(StorageUnavailable, match="'no-such-bucket' does not exist"):
        store.check()


def test_check_raises_storage_unavailable_when_s3_is_unreachable(s3_bucket):
    client = boto3.session.Session().client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=1),
    )

    with pytest.raises(StorageUnavailable, match="unreachable"):
        S3BlobStore(client, s3_bucket).check()


def test_a_write_to_a_missing_bucket_raises_a_storage_error(s3_client):
    store = S3BlobStore(s3_client, "no-such-bucket")

    with pytest.raises(StorageError):
        store.put(HELLO_HASH, HELLO)


def test_presign_get_asks_s3_for_an_attachment_disposition_and_the_content_type(s3_store):
    url = s3_store.presign_get(
        HELLO_HASH, expires_seconds=600, filename="report €.pdf", content_type="application/pdf"
    )

    query = query_of(url)
    assert urlsplit(url).path.endswith(f"/files/{HELLO_HASH[:2]}/{HELLO_HASH}")
    assert query["response-content-type"] == "application/pdf"
    disposition = query["response-content-disposition"]
    assert disposition.startswith('attachment; filename="report _.pdf"; ')
    assert unquote(disposition.split("filename*=UTF-8''", 1)[1]) == "report €.pdf"
    assert query["X-Amz-Expires"] == "600"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"


def test_presign_get_without_a_filename_leaves_the_response_headers_alone(s3_store):
    query = query_of(s3_store.presign_get(HELLO_HASH, expires_seconds=60))

    assert "response-content-disposition" not in query
    assert "response-content-type" not in query


def test_presign_put_staging_signs_the_content_length(s3_store):
    url = s3_store.presign_put_staging(UPLOAD_KEY, size_bytes=11, expires_seconds=300)

    query = query_of(url)
    assert urlsplit(url).path.endswith(f"/staging/{UPLOAD_KEY}")
    assert "content-length" in query["X-Amz-SignedHeaders"].split(";")
    assert query["X-Amz-Expires"] == "300"


def test_a_prefix_keeps_blobs_and_staging_under_it_and_ignores_the_rest(s3_client, s3_bucket):
    store = S3BlobStore(s3_client, s3_bucket, prefix="/tenant-a/")
    outside = S3BlobStore(s3_client, s3_bucket)
    outside.put(hashlib.sha256(b"outside").hexdigest(), b"outside")
    s3_client.put_object(Bucket=s3_bucket, Key=f"tenant-a/staging/{UPLOAD_KEY}", Body=HELLO)

    store.promote_staging(UPLOAD_KEY, HELLO_HASH)

    keys = sorted(obj["Key"] for obj in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert f"tenant-a/files/{HELLO_HASH[:2]}/{HELLO_HASH}" in keys
    assert [info.hash for info in store.iter_blobs()] == [HELLO_HASH]
    assert f"/tenant-a/files/{HELLO_HASH[:2]}/" in store.presign_get(HELLO_HASH, expires_seconds=60)


def test_blobs_are_stored_at_files_shard_hash(s3_store, s3_client, s3_bucket):
    s3_store.put(HELLO_HASH, HELLO)

    keys = [obj["Key"] for obj in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == [f"files/{HELLO_HASH[:2]}/{HELLO_HASH}"]


def test_open_of_a_missing_blob_with_a_range_raises_blob_not_found(s3_store):
    with pytest.raises(BlobNotFound):
        s3_store.open(HELLO_HASH, 3, 7)
    with pytest.raises(BlobNotFound):
        s3_store.open(HELLO_HASH, 100)


def test_build_s3_client_for_a_custom_endpoint_uses_path_style_and_sigv4():
    client = build_s3_client("http://minio:9000", "us-east-1", "minio", "minio-secret")

    url = S3BlobStore(client, "satchel").presign_get(HELLO_HASH, expires_seconds=60)

    assert url.startswith(f"http://minio:9000/satchel/files/{HELLO_HASH[:2]}/{HELLO_HASH}?")
    assert query_of(url)["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert client.meta.config.retries["mode"] == "standard"


def test_urls_are_signed_by_the_presign_client_when_one_is_given(s3_client, s3_bucket):
    public = build_s3_client("http://localhost:9000", "us-east-1", "minio", "minio-secret")
    store = S3BlobStore(s3_client, s3_bucket, presign_client=public)

    get_url = store.presign_get(HELLO_HASH, expires_seconds=60)
    put_url = store.presign_put_staging(UPLOAD_KEY, size_bytes=1, expires_seconds=60)

    assert get_url.startswith(f"http://localhost:9000/{s3_bucket}/files/")
    assert put_url.startswith(f"http://localhost:9000/{s3_bucket}/staging/")
