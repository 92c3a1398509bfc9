from __future__ import annotations

import jwt
import pytest

LOGIN = "/api/v1/auth/login"


def test_login_returns_an_access_token_and_a_refresh_token(auth, config):
    user_id = auth.register().get_json()["id"]
    response = auth.login()
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == config.access_token_ttl_seconds
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["sub"] == user_id
    assert claims["token_use"] == "access"
    assert claims["iss"] == config.jwt_issuer and claims["aud"] == config.jwt_audience
    assert claims["exp"] - claims["iat"] == config.access_token_ttl_seconds
    assert claims["jti"]
    assert jwt.get_unverified_header(body["token"])["alg"] == "EdDSA"


def test_login_email_is_case_insensitive(auth):
    auth.register("Erin@Example.com")
    assert auth.login("erin@EXAMPLE.com").status_code == 200


def test_unknown_email_and_wrong_password_get_the_same_401_body(auth, expect_error):
    auth.register()
    wrong_password = auth.login(password="not the password at all")
    unknown_email = auth.login(email="nobody@example.com")
    first = expect_error(wrong_password, 401, "invalid_credentials")
    second = expect_error(unknown_email, 401, "invalid_credentials")
    first.pop("request_id"), second.pop("request_id")
    assert first == second


def test_unknown_email_still_costs_a_bcrypt_check(app, auth, monkeypatch):
    import bcrypt

    checks = []
    real_checkpw = bcrypt.checkpw
    monkeypatch.setattr(bcrypt, "checkpw", lambda *args: checks.append(1) or real_checkpw(*args))
    auth.login(email="nobody@example.com")
    assert checks == [1]


def test_login_with_an_over_long_password_is_400_not_500(auth, expect_error):
    auth.register()
    error = expect_error(auth.login(password="é" * 37), 400, "validation_error")
    assert "password" in error["details"]


def test_login_still_validates_its_schema(client, expect_error):
    response = client.post(LOGIN, json={"email": "a@example.com", "password": "x", "extra": 1})
    assert "extra" in expect_error(response, 400, "validation_error")["details"]
    expect_error(client.post(LOGIN, data="nope", content_type="text/plain"), 400)


def test_login_does_not_apply_registration_strength_rules(auth, app):
    app.extensions["satchel_auth"].accounts.register("old@example.com", "short")  # pre-policy user
    assert auth.login("old@example.com", "short").status_code == 200


def _fail(auth, times, email="alice@example.com", address="10.0.0.1"):
    return [auth.login(email, "wrong password!", address=address).status_code for _ in range(times)]


def test_account_is_locked_after_max_failures_with_retry_after(auth, config, expect_error):
    auth.register()
    assert _fail(auth, config.login_max_failures) == [401] * config.login_max_failures
    response = auth.login(password="wrong password!")
    expect_error(response, 429, "too_many_requests")
    assert 0 < int(response.headers["Retry-After"]) <= config.login_lockout_seconds


def test_locked_account_stays_locked_even_with_the_right_password(auth, config, expect_error):
    auth.register()
    _fail(auth, config.login_max_failures)
    response = auth.login()  # right password
    expect_error(response, 429)
    assert int(response.headers["Retry-After"]) > 0


def test_lockout_is_per_account_not_for_everyone(auth, config):
    auth.register()
    auth.register("frank@example.com")
    _fail(auth, config.login_max_failures)
    assert auth.login("frank@example.com", address="10.0.0.1").status_code == 200


def test_lockout_counts_unknown_emails_too(auth, config, expect_error):
    _fail(auth, config.login_max_failures, email="ghost@example.com")
    expect_error(auth.login("ghost@example.com"), 429)


def test_lockout_expires_after_the_lockout_period(auth, config, clock):
    auth.register()
    _fail(auth, config.login_max_failures)
    clock.advance(config.login_lockout_seconds - 1)
    assert auth.login().status_code == 429
    clock.advance(2)
    assert auth.login().status_code == 200


def test_failures_older_than_the_window_are_forgotten(auth, config, clock):
    auth.register()
    _fail(auth, config.login_max_failures - 1)
    clock.advance(config.login_lockout_seconds + 1)
    _fail(auth, config.login_max_failures - 1)
    assert auth.login().status_code == 200


def test_success_resets_the_account_failure_count(auth, config):
    auth.register()
    _fail(auth, config.login_max_failures - 1)
    assert auth.login().status_code == 200
    assert _fail(auth, config.login_max_failures - 1) == [401] * (config.login_max_failures - 1)
    assert auth.login().status_code == 200


def test_one_address_is_limited_across_different_accounts(auth, make_config, mongo, clock,
                                                          expect_error):
    from satchel_auth import create_app

    app = create_app(make_config(LOGIN_MAX_FAILURES_PER_IP="6"), mongo=mongo, clock=clock)
    auth.client = app.test_client()
    auth.register("victim@example.com")
    statuses = [auth.login(f"user{n}@example.com", "guess-guess", address="203.0.113.9").status_code
                for n in range(6)]
    assert statuses == [401] * 6
    response = auth.login("victim@example.com", address="203.0.113.9")  # right password, locked address
    expect_error(response, 429)
    assert "Retry-After" in response.headers
    assert auth.login("victim@example.com", address="198.51.100.7").status_code == 200


def test_success_does_not_reset_the_address_counter(auth, make_config, mongo, clock):
    from satchel_auth import create_app

    app = create_app(make_config(LOGIN_MAX_FAILURES_PER_IP="3"), mongo=mongo, clock=clock)
    auth.client = app.test_client()
    auth.register("me@example.com")
    for n in range(3):
        auth.login(f"target{n}@example.com", "guess-guess", address="203.0.113.9")
        if n < 2:
            assert auth.login("me@example.com", address="203.0.113.9").status_code == 200
    assert auth.login("me@example.com", address="203.0.113.9").status_code == 429


def test_client_address_comes_from_x_forwarded_for_only_behind_a_trusted_proxy(
        auth, make_config, mongo, clock):
    from satchel_auth import create_app

    def fail_three_times_behind_proxy(app, forwarded_for):
        client = app.test_client()
        for _ in range(3):
            client.post(LOGIN, json={"email": "x@example.com", "password": "guess-guess"},
                        headers={"X-Forwarded-For": forwarded_for},
                        environ_base={"REMOTE_ADDR": "10.9.9.9"})
        return mongo[config.mongo_db]["login_failures"].find_one({"_id": f"ip:{forwarded_for}"})

    config = make_config(TRUSTED_PROXY_COUNT="1", LOGIN_MAX_FAILURES_PER_IP="3")
    assert fail_three_times_behind_proxy(create_app(config, mongo=mongo, clock=clock),
                                         "192.0.2.1")["failures"] == 3
    untrusting = create_app(make_config(), mongo=mongo, clock=clock)
    assert fail_three_times_behind_proxy(untrusting, "192.0.2.2") is None


def test_failure_counters_expire_through_a_ttl_index(app, mongo, config):
    indexes = mongo[config.mongo_db]["login_failures"].index_information()
    assert indexes["expires_at_ttl"]["expireAfterSeconds"] == 0


@pytest.mark.parametrize("leftover_failures", [1, 100])
def test_an_expired_counter_not_yet_deleted_by_the_ttl_monitor_starts_over(
        auth, config, clock, mongo, leftover_failures):
    auth.register()
    failures = mongo[config.mongo_db]["login_failures"]
    failures.insert_one({"_id": "account:alice@example.com", "failures": leftover_failures,
                         "expires_at": clock() - __import__("datetime").timedelta(seconds=1)})
    assert auth.login(password="wrong password!").status_code == 401
    assert failures.find_one({"_id": "account:alice@example.com"})["failures"] == 1
    assert auth.login().status_code == 200


def test_an_expired_lock_not_yet_deleted_by_the_ttl_monitor_does_not_block(auth, config, clock, mongo):
    auth.register()
    _fail(auth, config.login_max_failures)
    clock.advance(config.login_lockout_seconds + 1)  # mongomock's TTL runs on real time: both docs stay
    assert mongo[config.mongo_db]["login_failures"].find_one({"_id": "lock:account:alice@example.com"})
    assert auth.login().status_code == 200
    _fail(auth, config.login_max_failures)  # and a new lock can replace the stale one
    assert auth.login().status_code == 429
