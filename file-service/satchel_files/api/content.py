"""The HTTP shape of a file's bytes: ETag, Range, If-None-Match, attachment, X-Accel-Redirect."""
from __future__ import annotations

from flask import Response, request

from satchel_shared.errors import ApiError

from ..services.files import Content, FileService
from ..storage import BlobNotFound, blob_relative_path, content_disposition


# Chunks one concatenating redirect may name: its header (~66 bytes a chunk) must fit the
# gateway's 256 KiB proxy buffer with room to spare; larger files stream through the service.
MAX_CONCAT_CHUNKS = 1024


def content_response(files: FileService, content: Content, accel_prefix: str | None,
                     concat_location: str | None = None) -> Response:
    etag = content.etag
    headers = {
        "ETag": f'"{etag}"',
        "Cache-Control": "private, no-cache",
        "Content-Type": content.mime_type,
        "Content-Disposition": content_disposition(content.filename),
        "X-Content-Type-Options": "nosniff",
        "Accept-Ranges": "bytes",
    }
    if request.if_none_match and request.if_none_match.contains_weak(etag):
        return Response(status=304, headers={"ETag": headers["ETag"],
                                             "Cache-Control": headers["Cache-Control"]})
    if accel_prefix and content.single_blob:
        blob = content.single_blob
        headers["X-Accel-Redirect"] = f"{accel_prefix}/{blob_relative_path(blob)}"
        return Response(status=200, headers=headers)
    if accel_prefix and concat_location and _nginx_may_concatenate(content, etag):
        if not files.chunks_stored(content.chunks):
            # nginx could not report a missing one (it would have sent part of the body),
            # and streaming it here would break off the same way: say so before any byte
            raise BlobNotFound(f"a chunk of {content.user_file_id} is missing")
        chunks = ",".join(blob_relative_path(blob) for blob, _ in content.chunks)
        headers["X-Accel-Redirect"] = f"{concat_location}?len={content.size_bytes}&chunks={chunks}"
        return Response(status=200, headers=headers)

    size = content.size_bytes
    start, stop, status = 0, size, 200
    byte_range = request.range if _range_applies(etag) else None
    if byte_range is not None and len(byte_range.ranges) == 1:
        bounds = byte_range.range_for_length(size)
        if bounds is None:
            raise ApiError(416, "range_not_satisfiable",
                           f"The range is outside the file's {size} bytes.",
                           headers={"Content-Range": f"bytes */{size}"})
        start, stop = bounds
        status = 206
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    headers["Content-Length"] = str(stop - start)
    body = files.open_content(content, start, stop)
    return Response(body, status=status, headers=headers, direct_passthrough=True)


def _nginx_may_concatenate(content: Content, etag: str) -> bool:
    """A whole-file GET of a multi-chunk file; ranges and HEAD stay with the service."""
    if request.method != "GET" or not 1 < len(content.chunks) <= MAX_CONCAT_CHUNKS:
        return False
    return request.range is None or not _range_applies(etag)


def _range_applies(etag: str) -> bool:
    """RFC 9110 If-Range: serve the range only if the client's copy is still current."""
    if_range = request.if_range
    if not request.headers.get("If-Range"):
        return True
    return if_range.etag == etag and not request.headers["If-Range"].strip().startswith("W/")
