"""Register, log in, refresh, log out and /me, through the gateway against the real stack."""
import uuid

from satchel_e2e import PASSWORD


def test_register_login_me_and_empty_file_list(api, new_user, login):
    email, password = new_user()
    tokens = login(email, password)
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] > 0 and tokens["refresh_token"]
    headers = {"Authorization": f"Bearer {tokens['token']}"}

    me = api.get("/api/v1/auth/me", headers=headers)
    assert me.status_code == 200
    assert me.json()["email"] == email

    files = api.get("/api/v1/files", headers=headers)
    assert files.status_code == 200
    assert files.json() == []


def test_register_returns_a_uuid(api):
    email = f"id-{uuid.uuid4().hex[:8]}@example.test"
    response = api.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201
    assert str(uuid.UUID(response.json()["id"])) == response.json()["id"]


def test_duplicate_email_in_other_case_is_409(api, new_user):
    email, _ = new_user()
    response = api.post("/api/v1/auth/register",
                        json={"email": email.upper(), "password": PASSWORD})
    assert response.status_code == 409
    assert response.json()["error"]["code"]


def test_register_validation_errors_name_the_fields(api):
    response = api.post("/api/v1/auth/register", json={"email": "not-an-email", "password": "short"})
    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert "email" in details and "password" in details


def test_common_password_is_rejected(api):
    response = api.post("/api/v1/auth/register",
                        json={"email": f"c-{uuid.uuid4().hex[:8]}@example.test",
                              "password": "password123"})
    assert response.status_code == 400
    assert "password" in response.json()["error"]["details"]


def test_password_over_72_bytes_is_a_400_at_register_and_login(api, new_user):
    long_password = "é" * 37  # 74 UTF-8 bytes, 37 characters
    response = api.post("/api/v1/auth/register",
                        json={"email": f"l-{uuid.uuid4().hex[:8]}@example.test",
                              "password": long_password})
    assert response.status_code == 400
    email, _ = new_user()
    response = api.post("/api/v1/auth/login", json={"email": email, "password": "x" * 500})
    assert 400 <= response.status_code < 500


def test_non_json_body_is_a_400_json_error(api):
    response = api.post("/api/v1/auth/register", data="email=a",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code in (400, 415)
    assert "error" in response.json()


def test_unknown_email_and_wrong_password_look_the_same(api, new_user):
    email, _ = new_user()
    wrong = api.post("/api/v1/auth/login", json={"email": email, "password": "wrong-password-1"})
    unknown = api.post("/api/v1/auth/login",
                       json={"email": f"nobody-{uuid.uuid4().hex}@example.test",
                             "password": "wrong-password-1"})
    assert wrong.status_code == unknown.status_code == 401
    strip = lambda body: {k: v for k, v in body["error"].items() if k != "request_id"}  # noqa: E731
    assert strip(wrong.json()) == strip(unknown.json())


def test_repeated_failures_lock_the_account_with_retry_after(api, new_user):
    email, password = new_user()
    statuses = [api.post("/api/v1/auth/login", json={"email": email, "password": "bad-guess-123"})
                .status_code for _ in range(6)]
    assert statuses[:5] == [401] * 5 and statuses[5] == 429
    locked = api.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert locked.status_code == 429  # even the right password waits out the lockout
    assert int(locked.headers["Retry-After"]) > 0  # one value: the service's, not also the gateway's
    assert locked.json()["error"]["code"]


def test_refresh_rotates_and_reuse_revokes_the_family(api, user):
    first = user["tokens"]["refresh_token"]
    rotated = api.post("/api/v1/auth/refresh", json={"refresh_token": first})
    assert rotated.status_code == 200
    second = rotated.json()["refresh_token"]
    assert second != first
    assert api.get("/api/v1/auth/me",
                   headers={"Authorization": f"Bearer {rotated.json()['token']}"}).status_code == 200

    replay = api.post("/api/v1/auth/refresh", json={"refresh_token": first})
    assert replay.status_code == 401
    after_theft = api.post("/api/v1/auth/refresh", json={"refresh_token": second})
    assert after_theft.status_code == 401  # the whole family is revoked


def test_logout_revokes_the_refresh_token(api, user):
    refresh = user["tokens"]["refresh_token"]
    assert api.post("/api/v1/auth/logout", json={"refresh_token": refresh}).status_code == 204
    assert api.post("/api/v1/auth/refresh", json={"refresh_token": refresh}).status_code == 401


def test_users_are_isolated(api, user, new_user, login):
    other_email, _ = new_user()
    other = login(other_email)
    me = api.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {other['token']}"})
    assert me.json()["email"] == other_email != user["email"]
