"""The gateway image (gateway/Dockerfile, gateway/docker-entrypoint.sh) without Docker.

The entrypoint is a plain script: it is run here as the image runs it, with this machine's Debian
nginx and modules (the packages the image installs), as the image's non-root user.
"""
import hashlib
import http.server
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest
from satchel_devstack.stack import free_port

from infra_testing import (
    CONCAT_MODULES,
    ENTRYPOINT,
    GATEWAY,
    MODULES_DIR,
    REPO_ROOT,
    gateway_concat_location,
    image_env,
    image_instructions,
    image_setting,
    render_like_the_image,
    require_concat_modules,
    require_tool,
)

DOCKERFILE = GATEWAY / "Dockerfile"
PACKAGES = ("nginx", "libnginx-mod-http-echo", "libnginx-mod-http-headers-more-filter")


@pytest.fixture(scope="module")
def image():
    return image_instructions(DOCKERFILE.read_text())


def copied_into_image(image):
    """{name in the image: source path} of the COPY instructions (last argument: the target)."""
    copied = {}
    for line in image:
        if line.split(None, 1)[0].upper() == "COPY":
            *sources, target = [w for w in line.split()[1:] if not w.startswith("--")]
            for source in sources:
                name = target + pathlib.Path(source).name if target.endswith("/") else target
                copied[name] = REPO_ROOT / source
    return copied


def test_the_gateway_image_is_debian_nginx_with_the_concat_modules(image):
    assert re.fullmatch(r"FROM debian:\d+\.\d+-slim", image[0]), f"not a pinned Debian: {image[0]}"
    installs = " ".join(line for line in image if "apt-get install" in line)
    for package in PACKAGES:
        assert re.search(rf"\s{re.escape(package)}(\s|$)", installs), package
    assert "rm -rf /var/lib/apt/lists/*" in installs
    assert not re.search(r"\b(gcc|make|build-essential|-dev)\b", installs)


def test_the_image_carries_every_template_and_its_entrypoint(image):
    copied = copied_into_image(image)
    rendered = set(re.findall(r'"\$templates/([\w.-]+)"', ENTRYPOINT.read_text()))
    assert rendered == {p.name for p in GATEWAY.glob("*.template")}, rendered
    assert {f"/etc/satchel-gateway/{name}" for name in rendered} <= set(copied), copied
    assert copied["/usr/local/bin/satchel-gateway"] == ENTRYPOINT
    assert os.access(ENTRYPOINT, os.X_OK), "gateway/docker-entrypoint.sh must be executable"
    assert image_setting(image, "ENTRYPOINT") == '["satchel-gateway"]'
    assert "satchel-gateway" in image_setting(image, "HEALTHCHECK")


def test_the_gateway_runs_unprivileged_as_the_file_services_user(image, compose):
    """Same uid as the file service: its blobs are mode 0600, and a local blob volume is shared."""
    service = image_instructions((REPO_ROOT / "Dockerfile").read_text(), {"SERVICE": "file-service"})
    assert image_setting(image, "USER") == image_setting(service, "USER") == "10001:10001"
    port = image_env(image)["GATEWAY_PORT"]
    assert int(port) >= 1024 and image_setting(image, "EXPOSE") == port
    # No wget or curl in the image: compose's healthcheck must use the entrypoint's.
    assert compose["services"]["gateway"]["healthcheck"]["test"] == \
        ["CMD", "satchel-gateway", "healthcheck"]


def test_the_image_renders_what_make_run_renders(tmp_path):
    """Same templates, same values, same text as the devstack's renderer (`make run`)."""
    from satchel_devstack.stack import CONCAT_LOCATION, CONCAT_MODULES as DEVSTACK_MODULES
    from satchel_devstack.template import render

    assert CONCAT_LOCATION == gateway_concat_location()
    assert {str(m) for m in DEVSTACK_MODULES} == {str(MODULES_DIR / m) for m in CONCAT_MODULES}
    values = {
        "GATEWAY_PORT": "127.0.0.1:8080", "AUTH_UPSTREAM": "127.0.0.1:8081",
        "FILE_UPSTREAM": "127.0.0.1:8082", "CORS_ORIGIN_REGEX": r"^https://(a|b)\.example$",
        "CLIENT_MAX_BODY_SIZE": "2g", "AUTH_RATE_LIMIT": "60r/m", "AUTH_RATE_BURST": "20",
        "BLOB_ROOT": str(tmp_path / "data"),
    }
    conf = render_like_the_image(values, tmp_path / "run", GATEWAY)
    values.update({
        "NGINX_RUN_DIR": str(tmp_path / "run"), "NGINX_USER_DIRECTIVE": "",
        "NGINX_LOAD_MODULES": "".join(f"load_module {m};\n" for m in DEVSTACK_MODULES),
    })
    for template, output in (("nginx.conf.template", "nginx.conf"),
                             ("satchel.conf.template", "satchel.conf"),
                             ("satchel-concat.conf.template", "satchel.d/concat.conf")):
        expected = render((GATEWAY / template).read_text(), values)
        assert (conf.parent / output).read_text() == expected, output


def test_the_entrypoint_names_every_missing_variable(tmp_path):
    result = subprocess.run(
        [str(ENTRYPOINT), "render"],
        env={"PATH": os.environ["PATH"], "NGINX_RUN_DIR": str(tmp_path),
             "SATCHEL_GATEWAY_TEMPLATES": str(GATEWAY), "GATEWAY_PORT": "8080"},
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0
    assert "needs FILE_UPSTREAM" in result.stderr and "needs BLOB_ROOT" in result.stderr


@pytest.mark.parametrize("variable, value", [
    ("AUTH_RATE_LIMIT", "60/m"), ("AUTH_RATE_LIMIT", "0r/s"), ("AUTH_RATE_BURST", "-1")])
def test_the_entrypoint_refuses_what_the_devstack_refuses(tmp_path, variable, value):
    """compose and Kubernetes set these for the image: a typo is named, as `make run` names
    it, instead of failing as an nginx start-up error."""
    from satchel_devstack.stack import StackConfig
    from satchel_shared.config import ConfigError

    with pytest.raises(ConfigError) as devstack:
        StackConfig.from_env(tmp_path, {variable: value})
    result = subprocess.run(
        [str(ENTRYPOINT), "render"],
        env={"PATH": os.environ["PATH"], "NGINX_RUN_DIR": str(tmp_path),
             "SATCHEL_GATEWAY_TEMPLATES": str(GATEWAY), variable: value},
        capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and not (tmp_path / "nginx.conf").exists()
    refusal = result.stderr.split("satchel-gateway: ", 1)[1].split(", got")[0]
    assert refusal.startswith(variable) and refusal in str(devstack.value)


# --- the image's nginx, started by its entrypoint as its user, sends a multi-chunk file ---------

class FakeFileService(http.server.BaseHTTPRequestHandler):
    """Answers every GET as the file service does for a checked multi-chunk local file."""
    protocol_version = "HTTP/1.1"
    accel = ""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("X-Accel-Redirect", self.accel)
        self.send_header("ETag", '"whole-file-sha256"')
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def run_as(uid):
    return [require_tool("setpriv", "util-linux"), f"--reuid={uid}", f"--regid={uid}",
            "--clear-groups"]


def test_the_image_entrypoint_runs_nginx_as_its_user_and_sends_multi_chunk_files(image):
    nginx = shutil.which("nginx") or require_tool("/usr/sbin/nginx", "nginx")
    require_concat_modules()
    if os.geteuid() != 0:
        pytest.skip("needs root: runs nginx as the image's user (setpriv)")
    uid = int(image_setting(image, "USER").split(":")[0])
    root = pathlib.Path(tempfile.mkdtemp(prefix="satchel-gateway-"))
    server = process = None
    try:
        # The image's layout: templates and entrypoint owned by root, BLOB_ROOT by the user, with
        # blobs as the file service writes them (files/<hash[:2]>/<hash>, mode 0600).
        (root / "etc").mkdir()
        for template in GATEWAY.glob("*.template"):
            shutil.copy(template, root / "etc" / template.name)
        entrypoint = root / "satchel-gateway"
        shutil.copy(ENTRYPOINT, entrypoint)
        chunks = [os.urandom(300_000), os.urandom(300_000), os.urandom(123)]
        paths = []
        for chunk in chunks:
            digest = hashlib.sha256(chunk).hexdigest()
            blob = root / "blobs" / "files" / digest[:2] / digest
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(chunk)
            blob.chmod(0o600)
            paths.append(f"{digest[:2]}/{digest}")
        for path in [root, *root.rglob("*")]:
            if path == root or root / "blobs" in path.parents or path == root / "blobs":
                os.chown(path, uid, uid)
        root.chmod(0o755)
        log = root / "nginx.log"
        log.touch()
        os.chown(log, uid, uid)  # a container's stdout belongs to its user too

        total = sum(len(c) for c in chunks)
        FakeFileService.accel = f"{gateway_concat_location()}?len={total}&chunks={','.join(paths)}"
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeFileService)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = free_port()
        env = {**image_env(image), "PATH": os.path.dirname(nginx) + ":" + os.environ["PATH"],
               "GATEWAY_PORT": f"127.0.0.1:{port}", "AUTH_UPSTREAM": "127.0.0.1:9",
               "FILE_UPSTREAM": f"127.0.0.1:{server.server_address[1]}",
               "BLOB_ROOT": str(root / "blobs"), "NGINX_RUN_DIR": str(root / "run"),
               "SATCHEL_GATEWAY_TEMPLATES": str(root / "etc")}
        with open(log, "ab") as output:
            process = subprocess.Popen(run_as(uid) + [str(entrypoint)], env=env,
                                       stdout=output, stderr=output)

        def healthy():
            return subprocess.run(run_as(uid) + [str(entrypoint), "healthcheck"], env=env,
                                  capture_output=True, timeout=10).returncode == 0
        deadline = time.monotonic() + 15
        while not healthy():
            assert process.poll() is None, f"nginx exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"never healthy:\n{log.read_text()}"
            time.sleep(0.2)
        status = pathlib.Path(f"/proc/{process.pid}/status").read_text()
        assert re.search(rf"(?m)^Uid:\s+{uid}\s", status), "nginx is not running as the image's user"

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/files/f1/content",
                                    timeout=10) as response:
            body = response.read()
            assert response.status == 200
            assert response.headers["Content-Length"] == str(total)
            assert response.headers["ETag"] == '"whole-file-sha256"'
            assert response.headers["X-Request-ID"]
        assert body == b"".join(chunks), "nginx did not send the chunks in order"
        process.terminate()  # the image's stop signal path: nginx must be gone after it
        process.wait(timeout=10)
        assert not healthy(), "the healthcheck passes with nginx stopped"
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait(timeout=10)
        if server is not None:
            server.shutdown()
        shutil.rmtree(root, ignore_errors=True)
