import os
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from moto import mock_aws

from satchel_files.storage import LocalBlobStore, MemoryBlobStore, S3BlobStore, build_s3_client

BUCKET = "satchel-test-blobs"
URL_SECRET = b"test-url-secret-0123456789abcdef"
PUBLIC_BASE_URL = "http://gateway.test:8080"


@dataclass
class Backend:
    """A blob store plus the ways a test reaches around it, as a client or operator would."""

    name: str
    store: object
    write_staging: Callable[[str, bytes], None]  # what a client's PUT to a staging URL does
    write_raw: Callable[[str, bytes], None] | None  # an arbitrary object at a backend-relative name


@pytest.fixture
def s3_bucket():
    return BUCKET


@pytest.fixture(scope="package")
def _mocked_s3_client():
    with mock_aws():
        yield build_s3_client(None, "us-east-1", "testing", "testing")


@pytest.fixture
def s3_client(_mocked_s3_client):
    """A client of a mocked S3 that holds one empty bucket, BUCKET (emptied again afterwards)."""
    client = _mocked_s3_client
    client.create_bucket(Bucket=BUCKET)
    yield client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", ()):
            client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    client.delete_bucket(Bucket=BUCKET)


def _local_backend(tmp_path):
    data_dir = tmp_path / "data"
    store = LocalBlobStore(data_dir, public_base_url=PUBLIC_BASE_URL, url_secret=URL_SECRET)
    store.check()

    def write_raw(name, data):
        path = data_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def write_staging(key, data):  # as the gateway's dav PUT: a new file renamed into place
        write_raw(f"staging-tmp/{key}", data)
        os.replace(data_dir / "staging-tmp" / key, data_dir / "staging" / key)

    return Backend("local", store, write_staging, write_raw)


def _s3_backend(client):
    store = S3BlobStore(client, BUCKET)

    def write_raw(name, data):
        client.put_object(Bucket=BUCKET, Key=name, Body=data)

    return Backend("s3", store, lambda key, data: write_raw(f"staging/{key}", data), write_raw)


def _memory_backend():
    store = MemoryBlobStore()
    return Backend("memory", store, store.put_staging, None)


@pytest.fixture(params=["local", "s3", "memory"])
def backend(request, tmp_path):
    if request.param == "local":
        yield _local_backend(tmp_path)
    elif request.param == "s3":
        yield _s3_backend(request.getfixturevalue("s3_client"))
    else:
        yield _memory_backend()


@pytest.fixture
def store(backend):
    return backend.store
