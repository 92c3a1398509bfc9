"""gateway/satchel.conf.template: rendered as the gateway container renders it, then `nginx -t`.

The template is an http-context snippet for the nginx image's /etc/nginx/templates mechanism:
the entrypoint substitutes `$VAR`/`${VAR}` for every *defined* environment variable and leaves
the rest (nginx's own `$host`, ...) alone. Point SATCHEL_GATEWAY_TEMPLATE at another file to
try a draft.
"""
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from conftest import REPO_ROOT, require_tool, resolve_compose_value

TEMPLATE = pathlib.Path(
    os.environ.get("SATCHEL_GATEWAY_TEMPLATE", REPO_ROOT / "gateway" / "satchel.conf.template")
)
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
# The nginx-unprivileged image's nginx.conf, with its paths moved under the test's tmp dir.
MAIN_CONF = """\
worker_processes 1;
pid {tmp}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {tmp}/client_temp;
    proxy_temp_path       {tmp}/proxy_temp_path;
    fastcgi_temp_path     {tmp}/fastcgi_temp;
    uwsgi_temp_path       {tmp}/uwsgi_temp;
    scgi_temp_path        {tmp}/scgi_temp;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    log_format main '$remote_addr - $remote_user [$time_local] "$request" '
                    '$status $body_bytes_sent "$http_referer" '
                    '"$http_user_agent" "$http_x_forwarded_for"';
    access_log {tmp}/access.log main;
    sendfile on;
    keepalive_timeout 65;
    include {tmp}/conf.d/*.conf;
}}
"""


@pytest.fixture(scope="module")
def template():
    if not TEMPLATE.exists():
        pytest.fail(f"{TEMPLATE} is missing: the gateway images and tests need it")
    return TEMPLATE.read_text()


def template_variables(text):
    """Upper-case names: environment variables by convention (nginx's own are lower-case)."""
    return {a or b for a, b in ENV_REFERENCE.findall(text) if (a or b).isupper()}


def envsubst(text, env):
    return ENV_REFERENCE.sub(lambda m: env.get(m.group(1) or m.group(2), m.group(0)), text)


def compose_gateway_env(compose):
    return {k: resolve_compose_value(v) for k, v in compose["services"]["gateway"]["environment"].items()}


def k8s_gateway_env_names():
    for doc in load_yaml_all(REPO_ROOT / "k8s" / "base" / "gateway.yaml"):
        if doc["kind"] == "Deployment":
            return {e["name"] for e in doc["spec"]["template"]["spec"]["containers"][0]["env"]}


def load_yaml_all(path):
    import yaml

    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def test_compose_and_k8s_set_every_variable_the_template_uses(template, compose):
    used = template_variables(template)
    assert used, "template substitutes no variables?"
    assert used <= set(compose_gateway_env(compose)), used - set(compose_gateway_env(compose))
    assert used <= k8s_gateway_env_names(), used - k8s_gateway_env_names()


def test_the_image_defaults_every_variable_the_template_uses(template):
    dockerfile = (REPO_ROOT / "gateway/Dockerfile").read_text()
    defaults = set(re.findall(r"(?m)^(?:ENV)?\s+([A-Z_][A-Z0-9_]*)=", dockerfile))
    assert template_variables(template) <= defaults


def test_rendered_for_compose_passes_nginx_config_test(template, compose, tmp_path):
    nginx = shutil.which("nginx") or require_tool("/usr/sbin/nginx", "nginx")
    unshare = require_tool("unshare", "util-linux")
    if os.geteuid() != 0:
        pytest.skip("needs root: /etc/hosts is replaced in a private mount namespace")
    env = compose_gateway_env(compose)
    env["BLOB_ROOT"] = str(tmp_path / "blobs")
    (tmp_path / "blobs").mkdir()
    rendered = envsubst(template, env)
    assert env["AUTH_UPSTREAM"] == "auth-service:8081" and env["FILE_UPSTREAM"] == "file-service:8082"
    leftover = template_variables(rendered)
    assert not leftover, f"not substituted: {leftover}"

    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "satchel.conf").write_text(rendered)
    (tmp_path / "nginx.conf").write_text(MAIN_CONF.format(tmp=tmp_path))
    # nginx resolves upstream host names while testing the config: give it compose's names.
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost auth-service file-service mongodb minio\n")
    result = subprocess.run(
        [unshare, "--mount", "sh", "-c",
         'mount --bind "$1" /etc/hosts && exec "$2" -t -p "$3" -c "$3/nginx.conf" -e stderr',
         "sh", str(hosts), nginx, str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, f"nginx -t failed:\n{result.stderr}\n--- rendered ---\n{rendered}"


def test_services_keep_idle_connections_longer_than_the_gateway_reuses_them():
    """Otherwise a service closes a pooled connection just as nginx reuses it: a POST gets 502
    (seen in the e2e suite as 'Connection reset by peer while reading response header')."""
    from satchel_devstack.stack import GUNICORN_KEEP_ALIVE_SECONDS

    text = (REPO_ROOT / "gateway" / "satchel.conf.template").read_text()
    upstreams = re.findall(r"^upstream \w+ \{(.*?)^\}", text, re.S | re.M)
    assert upstreams
    for block in upstreams:
        timeout = re.search(r"keepalive_timeout (\d+)s;", block)
        assert timeout, f"upstream without an explicit keepalive_timeout:\n{block}"
        nginx_seconds = int(timeout.group(1))
        assert GUNICORN_KEEP_ALIVE_SECONDS > nginx_seconds
        for dockerfile in ("auth-service/Dockerfile", "file-service/Dockerfile"):
            keep_alive = re.search(r"--keep-alive (\d+)", (REPO_ROOT / dockerfile).read_text())
            assert keep_alive and int(keep_alive.group(1)) > nginx_seconds, dockerfile
