"""Where a sync client is in the change feed: the value both the feed (services/changes.py)
and the cursor's text form (schemas.py) speak of, so neither imports the other for it."""
from __future__ import annotations

import re
import secrets
from typing import NamedTuple

_EPOCH_ID = re.compile(r"[0-9a-f]{16}")


class ChangeCursor(NamedTuple):
    """After change `seq` of the feed's epoch `epoch` (None: a `c1` cursor, issued before
    epochs existed, which only the first epoch takes)."""

    epoch: str | None
    seq: int


def new_epoch_id() -> str:
    return secrets.token_hex(8)


def is_epoch_id(text: str) -> bool:
    """Whether `text` could be an id new_epoch_id made: 16 lowercase hex digits."""
    return _EPOCH_ID.fullmatch(text) is not None
