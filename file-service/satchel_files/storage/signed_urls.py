"""URLs signed by the file service for blob bytes served by the gateway (local and memory backends).

A URL is `{base_url}{path}?{params}&signature=<hex>` where `signature` is HMAC-SHA256 (hex) with the
configured secret over `canonical_string(method, path, params)`. `params` always holds `expires`
(unix seconds) and may hold `response-content-disposition`, `response-content-type` (GET) or
`size_bytes` (staging PUT). Every query parameter except `signature` is covered, so adding,
removing or changing any of them breaks the signature.

Verifying lives here too: `SignedBlobUrls.verify` for any signed URL, and
`SignedBlobUrls.verify_blob_request` for the gateway's check (nginx auth_request) of a request
for blob bytes, which raises `BlobUrlRefused` naming the rule the request broke.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import unicodedata
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from .base import (blob_relative_path, validate_size_bytes, validate_ttl,
                   validate_upload_key)

SIGNATURE_VERSION = "satchel-url-v1"
SIGNATURE_PARAM = "signature"
EXPIRES_PARAM = "expires"
SIZE_PARAM = "size_bytes"
DISPOSITION_PARAM = "response-content-disposition"
CONTENT_TYPE_PARAM = "response-content-type"

_RESPONSE_HEADERS = {
    DISPOSITION_PARAM: "Content-Disposition",
    CONTENT_TYPE_PARAM: "Content-Type",
}
_EXPIRES = re.compile(r"[0-9]{1,12}")
_HEADER_VALUE = re.compile(r"[\x20-\x7e]+")
_FALLBACK_UNSAFE = re.compile(r"[^A-Za-z0-9 !#$&'()+,\-.;=@\[\]^_`{}~]")  # no quote, backslash, %


class BlobUrlRefused(Exception):
    """A gateway request for blob bytes that must be refused; `reason` names the rule it broke:
    method, path, query, unsigned, expired, signature or size."""

    def __init__(self, reason: str, message: str = "The blob URL is invalid or has expired."):
        super().__init__(message)
        self.reason = reason
        self.message = message


def blob_url_path(blob_hash: str) -> str:
    """The gateway path of a blob, e.g. `/blobs/files/ab/ab12...`."""
    return f"/blobs/files/{blob_relative_path(blob_hash)}"


def staging_url_path(upload_key: str) -> str:
    """The gateway path a client PUTs one chunk to, e.g. `/blobs/staging/<upload_key>`."""
    validate_upload_key(upload_key)
    return f"/blobs/staging/{upload_key}"


def canonical_string(method: str, path: str, params: Mapping[str, str]) -> str:
    """What a signature covers: version, method, path and all params but `signature`, sorted.

    Every piece is percent-encoded, so no value can forge a line break or a separator.
    """
    query = "&".join(
        f"{quote(key, safe='')}={quote(value, safe='')}"
        for key, value in sorted(params.items())
        if key != SIGNATURE_PARAM
    )
    return "\n".join([SIGNATURE_VERSION, method.upper(), quote(path, safe="/"), query])


def sign(secret: bytes, method: str, path: str, params: Mapping[str, str]) -> str:
    message = canonical_string(method, path, params).encode("utf-8")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def content_disposition(filename: str) -> str:
    """RFC 6266 `attachment` with an ASCII fallback and the exact UTF-8 name in `filename*`."""
    decomposed = unicodedata.normalize("NFKD", filename)
    unaccented = "".join(c for c in decomposed if not unicodedata.combining(c))
    fallback = _FALLBACK_UNSAFE.sub("_", unaccented).strip() or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def validate_content_type(content_type: str) -> str:
    if not isinstance(content_type, str) or not _HEADER_VALUE.fullmatch(content_type):
        raise ValueError(f"invalid content type: {content_type!r}")
    return content_type


def response_headers(query: Mapping[str, str]) -> dict[str, str]:
    """Headers a verified GET URL asks the gateway to send (e.g. via auth_request_set)."""
    return {
        header: query[param]
        for param, header in _RESPONSE_HEADERS.items()
        if param in query and _HEADER_VALUE.fullmatch(query[param])
    }


_SIGNED_METHOD = {"GET": "GET", "HEAD": "GET", "PUT": "PUT"}
_REQUEST_PATH = {"GET": blob_url_path, "PUT": staging_url_path}


def _is_blob_request_path(signed_method: str, path: str) -> bool:
    """A blob path for GET, a staging path for PUT, spelled exactly as the signer writes it."""
    try:
        return _REQUEST_PATH[signed_method](path.rpartition("/")[2]) == path
    except ValueError:
        return False


class SignedBlobUrls:
    """Signs and verifies the gateway URLs of blobs and staging uploads with one secret."""

    def __init__(self, base_url: str, secret: bytes, *, clock=time.time):
        if not isinstance(secret, bytes) or len(secret) < 16:
            raise ValueError("the URL signing secret must be at least 16 bytes")
        self._base_url = base_url.rstrip("/")
        self._secret = secret
        self._clock = clock

    def presign_get(
        self,
        blob_hash: str,
        *,
        expires_seconds: int,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> str:
        params = {}
        if filename is not None:
            params[DISPOSITION_PARAM] = content_disposition(filename)
        if content_type is not None:
            params[CONTENT_TYPE_PARAM] = validate_content_type(content_type)
        return self._signed_url("GET", blob_url_path(blob_hash), params, expires_seconds)

    def presign_put_staging(self, upload_key: str, *, size_bytes: int, expires_seconds: int) -> str:
        params = {SIZE_PARAM: str(validate_size_bytes(size_bytes))}
        return self._signed_url("PUT", staging_url_path(upload_key), params, expires_seconds)

    def verify(
        self, method: str, path: str, query: Mapping[str, str], now: float | None = None
    ) -> bool:
        """True only for an unexpired URL signed for exactly this method, path and query."""
        return self._refusal(method, path, query, now) is None

    def verify_blob_request(self, method: str, uri: str, content_length: str | None) -> dict[str, str]:
        """Check a request for blob bytes as the gateway received it (method, raw request URI,
        Content-Length); return the response headers its URL asks for, or raise BlobUrlRefused.

        Allowed: GET or HEAD (checked as the GET it was signed for) of a blob path, and PUT of
        a staging path with Content-Length equal to the signed `size_bytes`; each query
        parameter once, signed for exactly this method and path, unexpired.
        """
        signed_method = _SIGNED_METHOD.get(method.upper())
        if signed_method is None:
            raise BlobUrlRefused("method")
        parts = urlsplit(uri)
        if not _is_blob_request_path(signed_method, parts.path):
            raise BlobUrlRefused("path")
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        query = dict(pairs)
        if len(query) != len(pairs):
            raise BlobUrlRefused("query")
        reason = self._refusal(signed_method, parts.path, query, None)
        if reason is not None:
            raise BlobUrlRefused(reason)
        if signed_method == "PUT":
            if content_length is None or content_length != query.get(SIZE_PARAM):
                raise BlobUrlRefused("size", "The upload size differs from the signed size.")
            return {}
        return response_headers(query)

    def _refusal(self, method: str, path: str, query: Mapping[str, str],
                 now: float | None) -> str | None:
        """Why the URL is not signed for this method, path and query, or has expired (None: ok)."""
        signature = query.get(SIGNATURE_PARAM)
        expires = query.get(EXPIRES_PARAM)
        if not isinstance(signature, str) or not isinstance(expires, str) \
                or not _EXPIRES.fullmatch(expires):
            return "unsigned"
        if int(expires) < (self._clock() if now is None else now):
            return "expired"
        expected = sign(self._secret, method, path, query)
        if not hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8")):
            return "signature"
        return None

    def presign(self, method: str, path: str, params: Mapping[str, str], expires_seconds: int) -> str:
        """A signed URL for any gateway path (e.g. the file service's own content endpoint)."""
        if EXPIRES_PARAM in params or SIGNATURE_PARAM in params:
            raise ValueError("expires and signature are set by the signer")
        return self._signed_url(method, path, dict(params), expires_seconds)

    def _signed_url(self, method: str, path: str, params: dict[str, str], ttl: int) -> str:
        expires = int(self._clock()) + validate_ttl(ttl)
        params = {EXPIRES_PARAM: str(expires), **params}
        params[SIGNATURE_PARAM] = sign(self._secret, method, path, params)
        return f"{self._base_url}{path}?{urlencode(params, quote_via=quote)}"


class SignsOwnUrls:
    """For stores whose URLs this module signs (local, memory): `self._urls` does the work."""

    _urls: SignedBlobUrls

    def presign_get(self, blob_hash: str, *, expires_seconds: int, filename: str | None = None,
                    content_type: str | None = None) -> str:
        return self._urls.presign_get(blob_hash, expires_seconds=expires_seconds,
                                      filename=filename, content_type=content_type)

    def presign_put_staging(self, upload_key: str, *, size_bytes: int, expires_seconds: int) -> str:
        return self._urls.presign_put_staging(upload_key, size_bytes=size_bytes,
                                              expires_seconds=expires_seconds)

    def verify_blob_request(self, method: str, uri: str, content_length: str | None) -> dict[str, str]:
        """See SignedBlobUrls.verify_blob_request: the gateway's check of a blob URL."""
        return self._urls.verify_blob_request(method, uri, content_length)
