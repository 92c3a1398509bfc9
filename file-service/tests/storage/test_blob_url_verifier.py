"""SignedBlobUrls.verify_blob_request: the gateway's check of a blob URL, one test per refusal."""

import hashlib
from urllib.parse import parse_qsl, urlsplit

import pytest

from files_testing import FakeClock
from satchel_files.storage.signed_urls import (BlobUrlRefused, SignedBlobUrls, blob_url_path,
                                              content_disposition)

SECRET = b"test-url-secret-0123456789abcdef"
BLOB_HASH = hashlib.sha256(b"hello world").hexdigest()
OTHER_HASH = hashlib.sha256(b"other").hexdigest()
UPLOAD_KEY = "upload_0123456789-abcdef"
START = 1_800_000_000


@pytest.fixture
def clock():
    return FakeClock(float(START))


@pytest.fixture
def urls(clock):
    return SignedBlobUrls("http://gateway.test:8080", SECRET, clock=clock)


def request_uri(url: str) -> str:
    """What nginx sends as X-Original-URI: the path and query as the client sent them."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


@pytest.fixture
def get_uri(urls):
    return request_uri(urls.presign_get(BLOB_HASH, expires_seconds=300, filename="report €.pdf",
                                        content_type="application/pdf"))


@pytest.fixture
def put_uri(urls):
    return request_uri(urls.presign_put_staging(UPLOAD_KEY, size_bytes=11, expires_seconds=300))


def signature_of(uri: str) -> str:
    return dict(parse_qsl(urlsplit(uri).query))["signature"]


def refusal(urls, method, uri, content_length=None) -> str:
    with pytest.raises(BlobUrlRefused) as refused:
        urls.verify_blob_request(method, uri, content_length)
    return refused.value.reason


# accepted


def test_a_signed_get_is_accepted_with_the_headers_it_asks_for(urls, get_uri):
    assert urls.verify_blob_request("GET", get_uri, None) == {
        "Content-Disposition": content_disposition("report €.pdf"),
        "Content-Type": "application/pdf",
    }


def test_head_is_checked_as_the_get_it_was_signed_for(urls, get_uri):
    assert urls.verify_blob_request("head", get_uri, None)["Content-Type"] == "application/pdf"


def test_a_signed_put_of_the_signed_size_is_accepted_with_no_headers(urls, put_uri):
    assert urls.verify_blob_request("PUT", put_uri, "11") == {}


def test_a_url_is_good_until_the_second_it_expires(urls, get_uri, clock):
    clock.now = START + 300
    assert urls.verify_blob_request("GET", get_uri, None)


# refused: one reason each


@pytest.mark.parametrize("method", ["", "POST", "DELETE", "OPTIONS", "PATCH"])
def test_a_method_the_gateway_never_signs_is_refused(urls, get_uri, method):
    assert refusal(urls, method, get_uri) == "method"


def test_a_get_url_used_for_a_put_is_refused_by_its_path(urls, get_uri):
    assert refusal(urls, "PUT", get_uri, "11") == "path"


def test_a_put_url_used_for_a_get_is_refused_by_its_path(urls, put_uri):
    assert refusal(urls, "GET", put_uri) == "path"


@pytest.mark.parametrize("path", [
    "",
    "/",
    f"/blobs/files/{OTHER_HASH[:2]}/{BLOB_HASH}",         # prefix of another hash
    f"/blobs/files/{BLOB_HASH[:2]}/{BLOB_HASH.upper()}",
    f"/blobs/files/{BLOB_HASH[:2]}/{BLOB_HASH}/",
    f"/blobs/files/{BLOB_HASH[:2]}/../{BLOB_HASH}",
    f"//blobs/files/{BLOB_HASH[:2]}/{BLOB_HASH}",
    f"/blobs/files/{BLOB_HASH[:2]}/%2e%2e/{BLOB_HASH}",
    f"/api/v1/files/{BLOB_HASH}",
    f"/blobs/staging/{UPLOAD_KEY}",
])
def test_a_get_of_anything_but_a_blob_path_is_refused(urls, get_uri, path):
    query = get_uri.partition("?")[2]
    assert refusal(urls, "GET", f"{path}?{query}") == "path"


def test_a_signature_for_a_path_that_is_not_a_blob_is_refused_even_if_genuine(urls):
    uri = request_uri(urls.presign("GET", "/api/v1/files/x/content", {}, 300))
    assert refusal(urls, "GET", uri) == "path"


def test_a_repeated_query_parameter_is_refused(urls, get_uri):
    expires = get_uri.split("expires=")[1].split("&")[0]
    assert refusal(urls, "GET", f"{get_uri}&expires={expires}") == "query"


@pytest.mark.parametrize("strip", ["signature", "expires"])
def test_a_url_without_its_signature_or_expiry_is_refused(urls, get_uri, strip):
    path, query = get_uri.split("?")
    kept = "&".join(pair for pair in query.split("&") if not pair.startswith(strip + "="))
    assert refusal(urls, "GET", f"{path}?{kept}") == "unsigned"


@pytest.mark.parametrize("expires", ["", "soon", "-1", "1e10", "%EF%BC%91", "1" * 13])
def test_a_malformed_expiry_is_refused(urls, get_uri, expires):
    path, query = get_uri.split("?")
    pairs = [f"expires={expires}" if pair.startswith("expires=") else pair
             for pair in query.split("&")]
    assert refusal(urls, "GET", f"{path}?{'&'.join(pairs)}") == "unsigned"


def test_an_expired_url_is_refused(urls, get_uri, clock):
    clock.now = START + 301
    assert refusal(urls, "GET", get_uri) == "expired"


def test_a_url_with_its_expiry_moved_later_is_refused(urls, get_uri):
    later = get_uri.replace(f"expires={START + 300}", f"expires={START + 3600}")
    assert later != get_uri
    assert refusal(urls, "GET", later) == "signature"


def test_a_url_for_another_blob_with_the_same_signature_is_refused(urls, get_uri):
    other = get_uri.replace(f"{BLOB_HASH[:2]}/{BLOB_HASH}", f"{OTHER_HASH[:2]}/{OTHER_HASH}")
    assert refusal(urls, "GET", other) == "signature"


@pytest.mark.parametrize("change", [
    lambda uri: uri.replace("response-content-type=application%2Fpdf",
                            "response-content-type=text%2Fhtml"),
    lambda uri: uri + "&extra=1",
    lambda uri: uri.replace("&response-content-type=application%2Fpdf", ""),
    lambda uri: uri.replace("signature=", "signature=0"),
    lambda uri: uri.replace(signature_of(uri), signature_of(uri).upper()),
], ids=["retyped", "param-added", "param-removed", "signature-altered", "signature-shouted"])
def test_an_altered_url_is_refused(urls, get_uri, change):
    altered = change(get_uri)
    assert altered != get_uri
    assert refusal(urls, "GET", altered) == "signature"


def test_a_url_signed_with_another_secret_is_refused(get_uri, clock):
    other = SignedBlobUrls("http://gateway.test:8080", b"another-secret-0123456789", clock=clock)
    assert refusal(other, "GET", get_uri) == "signature"


def test_a_put_url_with_its_signed_size_changed_is_refused(urls, put_uri):
    assert refusal(urls, "PUT", put_uri.replace("size_bytes=11", "size_bytes=12"), "12") \
        == "signature"


@pytest.mark.parametrize("content_length", [None, "", "10", "12", "011", " 11"])
def test_a_put_of_another_size_than_signed_is_refused(urls, put_uri, content_length):
    assert refusal(urls, "PUT", put_uri, content_length) == "size"


def test_a_put_url_signed_without_a_size_is_refused(urls):
    uri = request_uri(urls.presign("PUT", f"/blobs/staging/{UPLOAD_KEY}", {}, 300))
    assert refusal(urls, "PUT", uri, None) == "size"


def test_the_boolean_verify_agrees_with_the_gateway_check(urls, get_uri, clock):
    parts = urlsplit(get_uri)
    path, params = parts.path, dict(parse_qsl(parts.query))
    assert urls.verify("GET", path, params)
    clock.now = START + 301
    assert not urls.verify("GET", path, params)


def test_a_signed_header_value_that_could_split_the_response_is_not_passed_on(urls):
    """Only the signer writes these values, but the gateway copies them into response headers:
    a line break or control character is dropped, whatever signed it."""
    uri = request_uri(urls.presign("GET", blob_url_path(BLOB_HASH), {
        "response-content-type": "text/plain\r\nSet-Cookie: x=y",
        "response-content-disposition": "attachment"}, expires_seconds=300))
    headers = urls.verify_blob_request("GET", uri, None)
    assert headers == {"Content-Disposition": "attachment"}


def test_with_a_backend_that_signs_its_own_urls_the_gateway_check_refuses_with_403(
        config, mongo, s3_client, s3_bucket):
    """S3 signs its URLs itself; a request the gateway asks about is never one of ours. 403,
    not 404: nginx's auth_request takes any other answer as its own failure (a 500)."""
    from satchel_files import create_app
    from satchel_files.storage import S3BlobStore
    app = create_app(config, mongo=mongo, blob_store=S3BlobStore(s3_client, s3_bucket))
    response = app.test_client().get("/internal/blobs/verify", headers={
        "X-Original-Method": "PUT", "X-Original-URI": f"/blobs/staging/{UPLOAD_KEY}?expires=1",
        "X-Original-Content-Length": "5"})
    assert response.status_code == 403 and response.get_json()["error"]["code"] == "forbidden"
