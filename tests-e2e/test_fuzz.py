"""Property-based fuzzing of both services' OpenAPI documents, through the gateway.

Whatever schemathesis generates (valid or not), the answer must never be a 5xx: bad input is a
4xx and changes nothing. Bounded: a fixed number of examples per operation and a fixed seed, so a
failure reproduces.
"""
import subprocess
import sys
from pathlib import Path

import pytest

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.mark.parametrize("spec", ["/api/v1/auth/openapi.json", "/api/v1/openapi.json"])
def test_no_generated_request_gets_a_server_error(base_url, user, api, spec, tmp_path):
    # one file to aim at, so the /files/{id} operations meet real ids as well as junk
    api.post("/api/v1/files/upload", headers=user["headers"],
             files=[("files", ("fuzz.txt", b"fuzz target", "text/plain"))])
    result = subprocess.run(
        [str(SCHEMATHESIS), "run", base_url + spec, "--url", base_url,
         "-H", f"Authorization: {user['headers']['Authorization']}",
         "--checks", "not_a_server_error", "--phases", "examples,fuzzing",
         "--max-examples", "30", "--seed", "20261120", "--suppress-health-check", "all",
         "--request-timeout", "20", "--no-color"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)  # its cache stays out of the repo
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout  # it really generated and sent requests
