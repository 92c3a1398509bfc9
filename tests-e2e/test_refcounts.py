"""Ref counts under concurrency, against the real stack (nx-27017, two gunicorn workers)."""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from satchel_e2e import CHUNK_SIZE, upload


def assert_clean(report: dict) -> None:
    assert report["clean"] is True and report["problems"] == [], report


def fsck(stack) -> dict:
    result = subprocess.run([sys.executable, "-m", "satchel_files.cli", "fsck", "--json"],
                            env={**stack.service_env(), "MONGO_DB": "satchel_files"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert (result.returncode == 0) == report["clean"]
    return report


@pytest.fixture
def users(new_user, login):
    def make(count):
        with ThreadPoolExecutor(8) as pool:
            emails = list(pool.map(lambda _: new_user()[0], range(count)))
            return [{"Authorization": f"Bearer {login(email)['token']}"} for email in emails]
    return make


def test_many_users_uploading_and_deleting_the_same_bytes_end_with_exact_counts(
        api, stack, users):
    if stack is None:
        pytest.skip("needs the stack's database for fsck")
    data = os.urandom(3 * CHUNK_SIZE + 123)  # three full chunks and a tail
    people = users(12)

    def upload_twice_delete_once(headers):
        first = upload(api, headers, ("same.bin", data))
        second = upload(api, headers, ("same-again.bin", data))
        assert first.status_code == second.status_code == 201, (first.text, second.text)
        deleted = api.delete(f"/api/v1/files/{first.json()[0]['user_file_id']}", headers=headers)
        assert deleted.status_code == 204
        return second.json()[0]

    with ThreadPoolExecutor(12) as pool:
        kept = list(pool.map(upload_twice_delete_once, people))

    assert len({entry["file_object_id"] for entry in kept}) == 1
    listed = api.get("/api/v1/files", headers=people[0]).json()
    assert [f["ref_count"] for f in listed] == [len(people)]

    report = fsck(stack)
    assert_clean(report)
    assert report["checked"].get("blobs", 0) >= 4, report["checked"]  # it really looked

    # everyone deletes: the file object goes, and its chunks drop to zero references
    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(
            lambda pair: api.delete(f"/api/v1/files/{pair[1]['user_file_id']}",
                                    headers=pair[0]).status_code, zip(people, kept)))
    assert statuses == [204] * len(people)
    assert_clean(fsck(stack))


def test_deletes_racing_reuploads_never_leave_a_dangling_reference(api, stack, users):
    if stack is None:
        pytest.skip("needs the stack's database for fsck")
    data = os.urandom(2 * CHUNK_SIZE)
    people = users(6)

    def churn(headers):
        for _ in range(4):
            entry = upload(api, headers, ("churn.bin", data))
            assert entry.status_code == 201, entry.text
            file_id = entry.json()[0]["user_file_id"]
            content = api.get(f"/api/v1/files/{file_id}/content", headers=headers)
            assert content.content == data  # never a reference to missing bytes
            assert api.delete(f"/api/v1/files/{file_id}", headers=headers).status_code == 204

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(churn, people))
    assert_clean(fsck(stack))
