"""The /files list cursor and the /changes cursor: one codec, one spelling per position."""
import base64
import string

import pytest
from marshmallow import ValidationError

from files_testing import legacy_change_cursor
from satchel_files.repositories.listing import MAX_MS
from satchel_files.change_cursor import ChangeCursor
from satchel_files.schemas import (decode_change_cursor, decode_cursor, encode_change_cursor,
                                   encode_cursor)

USER_FILE_ID = "12345678-1234-4123-8123-123456789abc"
EPOCH = "0123456789abcdef"
LIST_CURSOR = encode_cursor(1_800_000_000_123, USER_FILE_ID)
CHANGE_CURSOR = encode_change_cursor(ChangeCursor(EPOCH, 123_456))
LEGACY_CHANGE_CURSOR = legacy_change_cursor(123_456)  # as issued before the feed had epochs


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def other_trailing_bits(cursor: str) -> str:
    """The same bytes spelled with another unused low bit in the last character."""
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    assert len(cursor) % 4, "no unused bits"
    return cursor[:-1] + alphabet[alphabet.index(cursor[-1]) ^ 1]


def spellings(cursor: str) -> list[str]:
    """Strings near an issued cursor: every one-character change, padding, cuts, inserted junk."""
    near = [cursor + "=", cursor + "==", cursor + "\n", " " + cursor, cursor.upper(),
            cursor[:10] + "!!!!" + cursor[10:], cursor[:10] + "...." + cursor[10:],
            cursor.replace("-", "+").replace("_", "/")]
    near += [cursor[:cut] for cut in range(len(cursor))]
    for index in range(len(cursor)):
        for char in string.ascii_letters + string.digits + "-_+/=":
            near.append(cursor[:index] + char + cursor[index + 1:])
    return [text for text in near if text != cursor]


def test_the_list_cursor_and_the_legacy_change_cursor_are_unchanged():
    assert LIST_CURSOR == b64(f"v1:1800000000123:{USER_FILE_ID}")
    assert LEGACY_CHANGE_CURSOR == b64("c1:123456")
    assert decode_cursor(LIST_CURSOR) == (1_800_000_000_123, USER_FILE_ID)
    assert decode_change_cursor(LEGACY_CHANGE_CURSOR) == (None, 123_456)


def test_a_change_cursor_names_the_epoch_of_the_feed():
    assert CHANGE_CURSOR == b64(f"c2:{EPOCH}:123456")
    assert decode_change_cursor(CHANGE_CURSOR) == (EPOCH, 123_456)
    assert decode_change_cursor(CHANGE_CURSOR).seq == 123_456


@pytest.mark.parametrize("decode, encode, cursor", [
    (decode_cursor, lambda position: encode_cursor(*position), LIST_CURSOR),
    (decode_change_cursor, encode_change_cursor, CHANGE_CURSOR),
    (decode_change_cursor, encode_change_cursor, LEGACY_CHANGE_CURSOR),
])
def test_every_string_a_cursor_decoder_accepts_is_the_one_the_encoder_gives(decode, encode,
                                                                              cursor):
    accepted = 0
    for text in spellings(cursor):
        try:
            position = decode(text)
        except ValidationError:
            continue
        accepted += 1
        assert encode(position) == text, (text, position)
    assert 0 < accepted < len(spellings(cursor)) / 10  # the canonical one, and next to none else


@pytest.mark.parametrize("epoch", [EPOCH, None])
def test_a_truncated_change_cursor_is_refused_or_an_earlier_one_so_no_change_is_skipped(epoch):
    for seq in (0, 7, 10, 99, 123_456, 10**12 - 1):
        cursor = encode_change_cursor(ChangeCursor(epoch, seq))
        for cut in range(len(cursor)):
            try:
                position = decode_change_cursor(cursor[:cut])
            except ValidationError:
                continue
            assert position.epoch == epoch and position.seq < seq


@pytest.mark.parametrize("cursor", [
    b64(f"v1:0100:{USER_FILE_ID}"),              # leading zero
    b64(f"v1:+100:{USER_FILE_ID}"),
    b64(f"v1:1_000:{USER_FILE_ID}"),
    b64(f"v1:{MAX_MS + 1}:{USER_FILE_ID}"),     # beyond the listing's range (was a 500)
    b64(f"v1:{10**15 - 1}:{USER_FILE_ID}"),
    b64(f"v1:100:{USER_FILE_ID.upper()}"),
    b64(f"v1:100:{USER_FILE_ID}:x"),
    b64("v1:100"),
    LIST_CURSOR + "=",                            # re-padded
    LIST_CURSOR[:20] + "...." + LIST_CURSOR[20:],  # junk the base64 decoder would skip
    other_trailing_bits(LIST_CURSOR),             # same bytes, another spelling
    LIST_CURSOR[:-4],                             # truncated
    CHANGE_CURSOR,                                # the other kind of cursor
    "A" * 201,
])
def test_a_list_cursor_that_does_not_round_trip_is_refused(cursor):
    with pytest.raises(ValidationError, match="Not a cursor this service issued"):
        decode_cursor(cursor)


@pytest.mark.parametrize("cursor", [
    b64("c1:007"), b64("c1:-1"), b64("c1: 7"), b64(f"c1:{10**12}"), b64("c1:7:8"), b64("c1:"),
    LEGACY_CHANGE_CURSOR + "=", LEGACY_CHANGE_CURSOR + "A", LEGACY_CHANGE_CURSOR[:-1] + "=",
    b64(f"c2:{EPOCH}:007"), b64(f"c2:{EPOCH}:{10**12}"), b64(f"c2:{EPOCH}:"), b64(f"c2:{EPOCH}"),
    b64(f"c2:{EPOCH}:7:8"), b64(f"c2:{EPOCH.upper()}:7"), b64(f"c2:{EPOCH[:-1]}:7"),
    b64(f"c2:{EPOCH}0:7"), b64("c2:0:7"), b64("c2::7"), b64("c2:7"), b64(f"c1:{EPOCH}:7"),
    b64(f"c3:{EPOCH}:7"), CHANGE_CURSOR + "=", CHANGE_CURSOR[:-1] + "=",
    other_trailing_bits(CHANGE_CURSOR), LIST_CURSOR, "A" * 41, "A" * 45,
])
def test_a_change_cursor_that_does_not_round_trip_is_refused(cursor):
    with pytest.raises(ValidationError, match="Not a change cursor this service issued"):
        decode_change_cursor(cursor)


# through the API: a 400 naming `cursor`, in the one error envelope


def assert_cursor_400(response):
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "validation_error" and "cursor" in error["details"]


@pytest.mark.parametrize("cursor", [
    b64(f"v1:0100:{USER_FILE_ID}"), LIST_CURSOR + "=", LIST_CURSOR[:20] + "...." + LIST_CURSOR[20:],
    other_trailing_bits(LIST_CURSOR), LIST_CURSOR[:-4], b64(f"v1:{MAX_MS + 1}:{USER_FILE_ID}"),
    CHANGE_CURSOR, "\u00e9t\u00e9", "",
])
def test_the_file_list_refuses_a_tampered_or_foreign_cursor_with_a_400(client, token_for, cursor):
    response = client.get("/api/v1/files", query_string={"cursor": cursor},
                          headers=token_for("alice"))
    assert_cursor_400(response)


def test_the_file_list_still_follows_a_cursor_it_issued(client, token_for):
    response = client.get("/api/v1/files", query_string={"cursor": LIST_CURSOR},
                          headers=token_for("alice"))
    assert response.status_code == 200 and response.get_json() == []


@pytest.mark.parametrize("cursor", [
    b64("c1:007"), LEGACY_CHANGE_CURSOR + "=", LEGACY_CHANGE_CURSOR[:-1] + "=", LIST_CURSOR,
    "\u00e9t\u00e9", b64(f"c2:{EPOCH}:007"), b64(f"c2:{EPOCH.upper()}:7"), b64("c2:0:7"),
    CHANGE_CURSOR + "=", other_trailing_bits(CHANGE_CURSOR),
])
def test_the_change_feed_refuses_a_tampered_or_foreign_cursor_with_a_400(client, token_for,
                                                                          cursor):
    response = client.get("/api/v1/changes", query_string={"cursor": cursor},
                          headers=token_for("alice"))
    assert_cursor_400(response)
