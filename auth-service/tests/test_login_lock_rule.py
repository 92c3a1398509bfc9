"""The account-lock rule lives in LoginThrottle (the service); the repository only stores."""
from __future__ import annotations

from datetime import timedelta

import pytest

from satchel_auth.repositories import LoginFailureRepository
from satchel_auth.services import LoginThrottle
from satchel_shared.errors import ApiError

WINDOW_SECONDS = 300


@pytest.fixture
def failures(mongo):
    return LoginFailureRepository(mongo["auth_test"])


@pytest.fixture
def throttle(failures, clock):
    return LoginThrottle(failures, clock=clock, max_per_account=3, max_per_address=5,
                         lockout_seconds=WINDOW_SECONDS)


def retry_after(throttle, email="alice@example.com", address="198.51.100.1") -> int | None:
    """Seconds until the account or address may try again; None when not locked."""
    try:
        throttle.check(email, address)
    except ApiError as refused:
        assert refused.status == 429
        return refused.details["retry_after_seconds"]
    return None


def test_the_repository_counts_but_never_locks_by_itself(failures, clock):
    until = clock() + timedelta(seconds=WINDOW_SECONDS)
    counts = [failures.count_failure("account:a", now=clock(), expires_at=until)
              for _ in range(10)]
    assert counts == list(range(1, 11))
    assert failures.find_lock("account:a", clock()) is None


def test_an_account_locks_at_its_limit_and_not_before(throttle):
    for _ in range(2):
        throttle.record_failure("alice@example.com", "198.51.100.1")
    assert retry_after(throttle) is None
    throttle.record_failure("alice@example.com", "198.51.100.1")
    assert retry_after(throttle) == WINDOW_SECONDS


def test_an_address_locks_at_its_own_limit_across_accounts(throttle):
    for index in range(4):
        throttle.record_failure(f"user{index}@example.com", "198.51.100.1")
    assert retry_after(throttle, "someone@example.com") is None
    throttle.record_failure("user4@example.com", "198.51.100.1")
    assert retry_after(throttle, "someone@example.com") == WINDOW_SECONDS
    assert retry_after(throttle, "someone@example.com", "198.51.100.2") is None


def test_failures_count_within_a_window_from_the_first(throttle, clock):
    throttle.record_failure("alice@example.com", "198.51.100.1")
    throttle.record_failure("alice@example.com", "198.51.100.1")
    clock.advance(WINDOW_SECONDS + 1)  # both forgotten: a new counter starts
    throttle.record_failure("alice@example.com", "198.51.100.1")
    assert retry_after(throttle) is None


def test_the_lock_lasts_one_window_from_the_failure_that_reached_the_limit(throttle, clock):
    throttle.record_failure("alice@example.com", "198.51.100.1")
    clock.advance(200)
    throttle.record_failure("alice@example.com", "198.51.100.1")
    clock.advance(50)
    throttle.record_failure("alice@example.com", "198.51.100.1")  # the third, at 250 s
    clock.advance(WINDOW_SECONDS - 1)
    assert retry_after(throttle) == 1
    clock.advance(2)
    assert retry_after(throttle) is None
