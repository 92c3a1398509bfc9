from __future__ import annotations

from flask import current_app, g
from flask_smorest import Blueprint

from satchel_shared.tokens import require_auth

from ..schemas import ChangesPageSchema, ChangesQuery, LatestCursorSchema, encode_change_cursor
from ..services.changes import ChangeFeed, ChangePage

blueprint = Blueprint("changes", __name__, url_prefix="/api/v1/changes",
                      description="What changed in a user's files, for sync clients")

_BEARER = [{"bearerAuth": []}]


def _changes() -> ChangeFeed:
    return current_app.extensions["satchel.changes"]


def _body(page: ChangePage) -> dict:
    return {"changes": page.changes, "file_ids": page.file_ids,
            "cursor": encode_change_cursor(page.cursor), "has_more": page.has_more}


@blueprint.get("")
@require_auth
@blueprint.arguments(ChangesQuery, location="query")
@blueprint.response(200, ChangesPageSchema)
@blueprint.doc(security=_BEARER)
def list_changes(query):
    """Changes after `cursor` (or since a time), oldest first; `wait` long-polls for the next.

    Fetch `GET /api/v1/files/{id}` for each of `file_ids` (404: it was deleted). A 410 `reset`
    means the cursor is older than the changes kept, or from before a restore: list the files
    again. With `Retry-After`, the server was too busy to hold the long-poll: wait that long
    before asking again."""
    cursor = query["cursor"]
    if cursor is None:
        cursor = _changes().cursor_for_since(g.user_id, query["since"])
    page = _changes().wait_for_page(g.user_id, cursor, query["limit"], query["wait"])
    return _body(page), {"Retry-After": "1"} if page.is_wait_refused else {}


@blueprint.get("/latest")
@require_auth
@blueprint.response(200, LatestCursorSchema)
@blueprint.doc(security=_BEARER)
def latest_cursor():
    """A cursor for now, with no changes: list the files, then follow it."""
    return {"cursor": encode_change_cursor(_changes().latest(g.user_id))}
