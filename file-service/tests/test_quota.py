"""The quota: a count per owner, taken in one atomic reservation, never left too low.

That racing uploads cannot pass the quota together is proven against real MongoDB semantics in
tests-e2e (test_files.py, test_chunked.py): mongomock's updates are not atomic across threads.
"""
import mongomock
import pytest
from pymongo.errors import PyMongoError

from files_testing import FakeClock
from satchel_files.repositories.usage import UsageRepository
from satchel_files.repositories.user_files import UserFileRepository
from satchel_files.services.quota import Quota
from satchel_shared.errors import ApiError

QUOTA = 1000


@pytest.fixture
def database():
    return mongomock.MongoClient()["quota_test"]


@pytest.fixture
def quota(database):
    return Quota(UserFileRepository(database), UsageRepository(database),
                 max_upload_bytes=600, user_quota_bytes=QUOTA, clock=FakeClock(1_800_000_000.0))


def add_file(database, owner, size):
    database["user_files"].insert_one({"owner_id": owner, "size_bytes": size})


def count(database, owner):
    return database["usage"].find_one({"_id": owner})["bytes"]


def test_the_first_decision_counts_the_files_the_owner_has(quota, database):
    add_file(database, "alice", 300)
    add_file(database, "alice", 200)
    add_file(database, "bob", 999)
    assert quota.usage("alice") == 500
    database["user_files"].delete_many({})  # from now on the count is what is read
    assert quota.usage("alice") == 500


def test_admitting_reserves_before_the_block_and_keeps_it(quota, database):
    add_file(database, "alice", 100)
    with quota.admitting("alice", adding_bytes=400):
        assert count(database, "alice") == 500  # taken before anything is written
    assert quota.usage("alice") == 500


def test_over_quota_is_a_413_before_the_block_and_takes_nothing(quota, database):
    add_file(database, "alice", 700)
    ran = []
    with pytest.raises(ApiError) as raised:
        with quota.admitting("alice", adding_bytes=301):
            ran.append(True)
    assert raised.value.status == 413 and raised.value.code == "quota_exceeded"
    assert raised.value.details == {"user_quota_bytes": QUOTA, "needed_bytes": 1001}
    assert ran == [] and quota.usage("alice") == 700
    with quota.admitting("alice", adding_bytes=300):  # exactly full is fine
        pass
    assert quota.usage("alice") == QUOTA


def test_the_second_of_two_requests_sees_the_first_ones_room_taken(quota):
    with quota.admitting("alice", adding_bytes=600):
        with pytest.raises(ApiError) as raised:
            with quota.admitting("alice", adding_bytes=600):
                pass
    assert raised.value.code == "quota_exceeded"
    assert quota.usage("alice") == 600


def test_a_block_that_refuses_gives_the_room_back(quota):
    with pytest.raises(ApiError):
        with quota.admitting("alice", adding_bytes=400):
            raise ApiError(409, "conflict", "changed meanwhile")
    assert quota.usage("alice") == 0


def test_a_block_that_fails_otherwise_keeps_the_room_too_high_never_too_low(quota):
    with pytest.raises(PyMongoError):  # it may have written: the count stays high for fsck
        with quota.admitting("alice", adding_bytes=400):
            raise PyMongoError("connection lost after the insert was sent")
    assert quota.usage("alice") == 400


def test_a_block_that_knows_nothing_remains_gives_it_back(quota):
    with pytest.raises(PyMongoError):
        with quota.admitting("alice", adding_bytes=400) as reservation:
            reservation.give_back()  # e.g. it deleted what it had written
            raise PyMongoError("the insert failed")
    assert quota.usage("alice") == 0


def test_released_bytes_are_room_again(quota):
    with quota.admitting("alice", adding_bytes=QUOTA):
        pass
    quota.released("alice", 250)
    with quota.admitting("alice", adding_bytes=250):
        pass
    assert quota.usage("alice") == QUOTA


def test_other_owners_have_their_own_room(quota):
    with quota.admitting("alice", adding_bytes=QUOTA):
        with quota.admitting("bob", adding_bytes=QUOTA):
            pass
    assert quota.usage("alice") == quota.usage("bob") == QUOTA


def test_a_request_over_max_upload_bytes_is_a_413(quota):
    quota.check_request_size(600)
    with pytest.raises(ApiError) as raised:
        quota.check_request_size(601)
    assert raised.value.code == "payload_too_large"
    assert raised.value.details == {"max_upload_bytes": 600}


def test_the_meter_refuses_once_the_bytes_pass_the_limit_or_the_quota(quota, database):
    add_file(database, "alice", 500)
    meter = quota.meter("alice")
    meter(300)
    meter(200)  # 1000: exactly the quota
    with pytest.raises(ApiError) as raised:
        meter(1)
    assert raised.value.code == "quota_exceeded"
    replacing = quota.meter("alice", freeing_bytes=500)  # new content for the 500-byte file
    replacing(600)  # 600 of MAX_UPLOAD_BYTES, usage 600
    with pytest.raises(ApiError) as raised:
        replacing(1)
    assert raised.value.code == "payload_too_large"
