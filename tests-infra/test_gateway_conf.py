"""gateway/satchel.conf.template: rendered as the gateway container renders it, then `nginx -t`.

The gateway image's entrypoint (gateway/docker-entrypoint.sh) renders gateway/*.template into
NGINX_RUN_DIR, substituting `${NAME}` from the environment (as `make run` does) and leaving
nginx's own `$host`, ... alone; the tests run that very script. Point SATCHEL_GATEWAY_TEMPLATE at
another satchel.conf.template to try a draft.
"""
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from infra_testing import (
    CONCAT_MODULES,
    GATEWAY,
    MODULES_DIR,
    REPO_ROOT,
    gateway_concat_location,
    image_env,
    image_instructions,
    render_like_the_image,
    require_concat_modules,
    require_tool,
    resolve_compose_value,
)

TEMPLATE = pathlib.Path(os.environ.get("SATCHEL_GATEWAY_TEMPLATE", GATEWAY / "satchel.conf.template"))
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
# Set by the entrypoint itself (the main config's run directory, user and modules).
ENTRYPOINT_VARIABLES = {"NGINX_RUN_DIR", "NGINX_USER_DIRECTIVE", "NGINX_LOAD_MODULES"}


def gateway_templates():
    """The templates the image carries, with the draft (if any) as satchel.conf.template."""
    templates = {path.name: path for path in GATEWAY.glob("*.template")}
    templates["satchel.conf.template"] = TEMPLATE
    return templates


def image_defaults():
    return image_env(image_instructions((GATEWAY / "Dockerfile").read_text()))


@pytest.fixture(scope="module")
def template():
    if not TEMPLATE.exists():
        pytest.fail(f"{TEMPLATE} is missing: the gateway images and tests need it")
    return TEMPLATE.read_text()


def template_variables(text):
    """Upper-case names: environment variables by convention (nginx's own are lower-case)."""
    return {a or b for a, b in ENV_REFERENCE.findall(text) if (a or b).isupper()}


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


def test_the_image_defaults_every_variable_the_templates_use():
    used = set().union(*(template_variables(path.read_text()) for path in gateway_templates().values()))
    assert used - ENTRYPOINT_VARIABLES <= set(image_defaults()), used - set(image_defaults())
    assert ENTRYPOINT_VARIABLES <= used


def test_rendered_for_compose_passes_nginx_config_test(compose, tmp_path):
    """The image's config as compose runs it (the concat location and both modules included)."""
    nginx = shutil.which("nginx") or require_tool("/usr/sbin/nginx", "nginx")
    unshare = require_tool("unshare", "util-linux")
    require_concat_modules()
    if os.geteuid() != 0:
        pytest.skip("needs root: /etc/hosts is replaced in a private mount namespace")
    templates = tmp_path / "templates"
    templates.mkdir()
    for name, path in gateway_templates().items():
        shutil.copy(path, templates / name)
    env = {**image_defaults(), **compose_gateway_env(compose), "BLOB_ROOT": str(tmp_path / "blobs")}
    (tmp_path / "blobs").mkdir()
    assert env["AUTH_UPSTREAM"] == "auth-service:8081" and env["FILE_UPSTREAM"] == "file-service:8082"
    conf = render_like_the_image(env, tmp_path / "run", templates)

    rendered = "\n".join(p.read_text() for p in sorted(conf.parent.rglob("*.conf")))
    leftover = {name for name in template_variables(rendered) if name.isupper()}
    assert not leftover, f"not substituted: {leftover}"
    for module in CONCAT_MODULES:
        assert f"load_module {MODULES_DIR / module};" in conf.read_text()
    concat = (conf.parent / "satchel.d" / "concat.conf").read_text()
    assert f"location = {gateway_concat_location()} {{" in concat
    # nginx resolves upstream host names while testing the config: give it compose's names.
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost auth-service file-service mongodb minio\n")
    result = subprocess.run(
        [unshare, "--mount", "sh", "-c",
         'mount --bind "$1" /etc/hosts && exec "$2" -t -p "$3" -c "$3/nginx.conf" -e stderr',
         "sh", str(hosts), nginx, str(conf.parent)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, f"nginx -t failed:\n{result.stderr}\n--- rendered ---\n{rendered}"


def test_services_keep_idle_connections_longer_than_the_gateway_reuses_them():
    """Otherwise a service closes a pooled connection just as nginx reuses it: a POST gets 502
    (seen in the e2e suite as 'Connection reset by peer while reading response header').
    The images and the devstack both start the services through satchel_shared.serve
    (test_compose checks the images' entrypoint)."""
    from satchel_shared.serve import KEEP_ALIVE_SECONDS, Serving, gunicorn_argv

    text = (REPO_ROOT / "gateway" / "satchel.conf.template").read_text()
    upstreams = re.findall(r"^upstream \w+ \{(.*?)^\}", text, re.S | re.M)
    assert upstreams
    for block in upstreams:
        timeout = re.search(r"keepalive_timeout (\d+)s;", block)
        assert timeout, f"upstream without an explicit keepalive_timeout:\n{block}"
        assert KEEP_ALIVE_SECONDS > int(timeout.group(1))
    for service in ("auth-service", "file-service"):
        argv = gunicorn_argv(service, Serving())
        assert argv[argv.index("--keep-alive") + 1] == str(KEEP_ALIVE_SECONDS)
