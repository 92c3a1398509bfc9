"""RefCounts.open_intent: the block's intent is aborted if the block raises (but for a database
error), ended once the block is done; settling an intent settled already does nothing."""

import pytest
from pymongo.errors import PyMongoError

from files_testing import blob_refs, sha
from satchel_files.services.refcounts import Intent


@pytest.fixture
def settled(refcounts, monkeypatch):
    """Every end() or abort() that settled an intent, in order, as ("end" | "abort", intent
    id): one called on an intent settled already does nothing, and is not listed."""
    calls = []
    for name in ("end", "abort"):
        real = getattr(refcounts, name)

        def spy(intent, _real=real, _name=name):
            if not intent.is_settled:
                calls.append((_name, intent.id))
            return _real(intent)
        monkeypatch.setattr(refcounts, name, spy)
    return calls



def has_intent(db, intent: Intent) -> bool:
    return db.ref_intents.find_one({"_id": intent.id}) is not None


class Boom(Exception):
    pass


def test_a_block_that_ends_ends_its_intent_and_keeps_the_references(refcounts, db, settled):
    with refcounts.open_intent() as intent:
        refcounts.acquire_blob(intent, sha(b"kept"), b"kept")
        assert has_intent(db, intent)
    assert settled == [("end", intent.id)]
    assert not has_intent(db, intent) and intent.is_settled
    assert blob_refs(db, sha(b"kept")) == 1
    assert intent.held_blob_refs == []


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_a_block_that_raises_aborts_its_intent_and_gives_the_references_back(
        refcounts, db, settled, error):
    with pytest.raises(error):
        with refcounts.open_intent() as intent:
            refcounts.acquire_blob(intent, sha(b"given back"), b"given back")
            raise error()
    assert settled == [("abort", intent.id)]
    assert not has_intent(db, intent)
    assert blob_refs(db, sha(b"given back")) == 0


def test_a_block_that_aborts_early_is_not_ended_after(refcounts, db, settled):
    with refcounts.open_intent() as intent:
        refcounts.acquire_blob(intent, sha(b"not needed"), b"not needed")
        refcounts.abort(intent)
    assert settled == [("abort", intent.id)]
    assert blob_refs(db, sha(b"not needed")) == 0


def test_a_block_that_aborts_early_then_raises_is_not_aborted_twice(refcounts, db, settled):
    with pytest.raises(Boom):
        with refcounts.open_intent() as intent:
            refcounts.acquire_blob(intent, sha(b"once"), b"once")
            refcounts.abort(intent)
            raise Boom()
    assert settled == [("abort", intent.id)]
    assert blob_refs(db, sha(b"once")) == 0


def test_a_failing_end_gives_nothing_back(refcounts, db, settled, monkeypatch):
    """After the block the references belong to documents: giving them back because the
    intent could not be deleted would leave a count too low. The intent stays (gc reaps it)."""
    def delete(intent_id):
        raise PyMongoError("the intent could not be deleted")
    monkeypatch.setattr(refcounts.intents, "delete", delete)
    with pytest.raises(PyMongoError):
        with refcounts.open_intent() as intent:
            refcounts.acquire_blob(intent, sha(b"owned"), b"owned")
    assert settled == [("end", intent.id)]
    assert has_intent(db, intent)
    assert blob_refs(db, sha(b"owned")) == 1


def test_an_intent_opened_with_a_stored_blob_counts_it_and_ends(refcounts, db, settled):
    with refcounts.open_intent_with_stored_blobs([(sha(b"stored"), 6)]) as intent:
        assert intent.held_blob_refs == [sha(b"stored")]
        assert db.ref_intents.find_one({"_id": intent.id})["blob_refs"] == [sha(b"stored")]
        assert blob_refs(db, sha(b"stored")) == 1
    assert settled == [("end", intent.id)]
    assert not has_intent(db, intent)
    assert blob_refs(db, sha(b"stored")) == 1


def test_an_intent_opened_with_a_stored_blob_is_aborted_when_the_block_raises(
        refcounts, db, settled):
    with pytest.raises(Boom):
        with refcounts.open_intent_with_stored_blobs([(sha(b"stored"), 6)]) as intent:
            raise Boom()
    assert settled == [("abort", intent.id)]
    assert not has_intent(db, intent)
    assert blob_refs(db, sha(b"stored")) == 0


def test_an_intent_whose_stored_blob_cannot_be_counted_gives_nothing_back(
        refcounts, db, settled, monkeypatch):
    """A database error: the count may have happened all the same (its reply lost), so the
    block never runs and the intent stays, listing the reference, for gc and fsck."""
    def increment_present(blob_hash):
        raise PyMongoError("down")
    monkeypatch.setattr(refcounts.blobs, "increment_present", increment_present)
    entered = []
    with pytest.raises(PyMongoError):
        with refcounts.open_intent_with_stored_blobs([(sha(b"stored"), 6)]):
            entered.append(True)
    assert entered == []
    assert settled == []
    assert db.ref_intents.find_one({})["blob_refs"] == [sha(b"stored")]


def test_a_block_whose_database_call_fails_gives_nothing_back(refcounts, db, settled):
    """The write that failed may have happened (a lost reply) and a document it wrote would
    own the references: counts too high at worst, never too low. The intent stays."""
    with pytest.raises(PyMongoError):
        with refcounts.open_intent() as intent:
            refcounts.acquire_blob(intent, sha(b"maybe owned"), b"maybe owned")
            raise PyMongoError("connection closed")
    assert settled == []
    assert has_intent(db, intent)
    assert blob_refs(db, sha(b"maybe owned")) == 1
