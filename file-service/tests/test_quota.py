"""The quota: one decision at a time per user, so racing uploads cannot both squeeze in."""
import threading
import time

import mongomock
import pytest

from files_testing import FakeClock
from satchel_files.repositories.owner_locks import OwnerLockRepository
from satchel_files.repositories.user_files import UserFileRepository
from satchel_files.services import quota as quota_module
from satchel_files.services.quota import LEASE_SECONDS, Quota
from satchel_shared.errors import ApiError

QUOTA = 1000


@pytest.fixture
def database():
    return mongomock.MongoClient()["quota_test"]


@pytest.fixture
def clock():
    return FakeClock(1_800_000_000.0)


@pytest.fixture
def quota(database, clock):
    return Quota(UserFileRepository(database), OwnerLockRepository(database),
                 max_upload_bytes=600, user_quota_bytes=QUOTA, clock=clock)


def add_file(database, owner, size):
    database["user_files"].insert_one({"owner_id": owner, "size_bytes": size})


def test_admitting_runs_the_block_when_the_bytes_fit_and_leaves_no_lease(quota, database):
    with quota.admitting("alice", adding_bytes=QUOTA):
        assert database["owner_locks"].count_documents({}) == 1
    assert database["owner_locks"].count_documents({}) == 0


def test_over_quota_is_a_413_before_the_block_and_the_lease_is_released(quota, database):
    add_file(database, "alice", 700)
    ran = []
    with pytest.raises(ApiError) as raised:
        with quota.admitting("alice", adding_bytes=301):
            ran.append(True)
    assert raised.value.status == 413 and raised.value.code == "quota_exceeded"
    assert raised.value.details == {"user_quota_bytes": QUOTA, "needed_bytes": 1001}
    assert ran == [] and database["owner_locks"].count_documents({}) == 0
    with quota.admitting("alice", adding_bytes=300):  # exactly full is fine
        pass


def test_a_request_over_max_upload_bytes_is_a_413(quota):
    quota.check_request_size(600)
    with pytest.raises(ApiError) as raised:
        quota.check_request_size(601)
    assert raised.value.code == "payload_too_large"
    assert raised.value.details == {"max_upload_bytes": 600}


def test_the_meter_refuses_once_the_bytes_pass_the_limit_or_the_quota(quota, database):
    add_file(database, "alice", 500)
    count = quota.meter("alice")
    count(300)
    count(200)  # 1000: exactly the quota
    with pytest.raises(ApiError) as raised:
        count(1)
    assert raised.value.code == "quota_exceeded"
    replacing = quota.meter("alice", freeing_bytes=500)  # new content for the 500-byte file
    replacing(600)  # 600 of MAX_UPLOAD_BYTES, usage 600
    with pytest.raises(ApiError) as raised:
        replacing(1)
    assert raised.value.code == "payload_too_large"


def test_other_owners_do_not_wait_for_each_other(quota):
    with quota.admitting("alice", adding_bytes=10):
        with quota.admitting("bob", adding_bytes=10):
            pass


def test_the_second_of_two_racing_requests_checks_after_the_first_has_written(quota, database):
    """Both would fit alone, not together: the second must see the first's file."""
    first_inside, second_waiting = threading.Event(), threading.Event()
    outcome = {}
    real_try = quota.locks.try_acquire

    def try_acquire(*args):
        taken = real_try(*args)
        if not taken:
            second_waiting.set()
        return taken

    quota.locks.try_acquire = try_acquire

    def second():
        first_inside.wait()
        try:
            with quota.admitting("alice", adding_bytes=600):
                add_file(database, "alice", 600)
            outcome["second"] = "admitted"
        except ApiError as exc:
            outcome["second"] = exc.status

    racer = threading.Thread(target=second)
    racer.start()
    with quota.admitting("alice", adding_bytes=600):
        first_inside.set()
        assert second_waiting.wait(5), "the second request never found the lease taken"
        add_file(database, "alice", 600)
    racer.join(10)
    assert outcome == {"second": 413}
    assert quota.usage("alice") == 600


def test_a_lease_whose_holder_died_is_taken_over_after_it_expires(quota, database, clock):
    OwnerLockRepository(database).try_acquire("quota:alice", "dead-holder", int(clock() * 1000),
                                              LEASE_SECONDS * 1000)
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        clock.advance(LEASE_SECONDS / 4)

    quota.sleep = sleep
    with quota.admitting("alice", adding_bytes=1):
        pass
    assert 3 <= len(sleeps) <= 5
    assert database["owner_locks"].count_documents({}) == 0


def test_a_lease_held_too_long_is_a_409_busy_with_retry_after(quota, database, clock, monkeypatch):
    OwnerLockRepository(database).try_acquire("quota:alice", "slow-holder", int(clock() * 1000),
                                              LEASE_SECONDS * 1000)
    monkeypatch.setattr(quota_module, "WAIT_SECONDS", 0.05)
    with pytest.raises(ApiError) as raised:
        with quota.admitting("alice", adding_bytes=1):
            pass
    assert raised.value.status == 409 and raised.value.code == "busy"
    assert raised.value.headers == {"Retry-After": "1"}
    assert database["owner_locks"].find_one()["holder"] == "slow-holder"  # not ours to free


def test_only_the_holder_releases_a_lease(database):
    locks = OwnerLockRepository(database)
    now = int(time.time() * 1000)
    assert locks.try_acquire("quota:alice", "a", now, 1000)
    assert not locks.try_acquire("quota:alice", "b", now, 1000)
    locks.release("quota:alice", "b")
    assert not locks.try_acquire("quota:alice", "b", now + 500, 1000)
    locks.release("quota:alice", "a")
    assert locks.try_acquire("quota:alice", "b", now + 500, 1000)
