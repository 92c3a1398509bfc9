"""What the deployment-artefact checks share (no Docker, no cluster needed); the fixtures are in
conftest.py. A module of its own name: `conftest` is every test directory's, so importing
from it depends on which suite pytest collected first.

Tools, each looked up on PATH (the Makefile/CI installs them):
  docker-compose   Debian package `docker-compose` (Compose v1.29; `config` needs no engine)
  kubectl          Debian package `kubernetes-client` (kubectl 1.20, embedded kustomize
                   v2.0.3); a standalone `kustomize` binary is preferred when present
  nginx, unshare   Debian packages `nginx` (nginx -t) and `util-linux`
  Python           PyPI `pyyaml`, `kubernetes-validate`
"""
import os
import functools
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
OVERLAYS = ("dev", "prod")


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def resolve_compose_value(value):
    """What compose passes for a literal, `${VAR:-default}` or `$$` (escaped `$`) value."""
    value = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", str(value))
    return value.replace("$$", "$")


def require_tool(name, package):
    path = shutil.which(name)
    if path is None:
        message = f"`{name}` not on PATH: install the Debian package `{package}`"
        if os.environ.get("CI"):  # `make test` installs it; in CI a missing tool is a failure
            pytest.fail(message)
        pytest.skip(message)
    return path


@functools.lru_cache(maxsize=None)
def _render_overlay(overlay):
    kustomize = shutil.which("kustomize")
    if kustomize:
        command = [kustomize, "build"]
    else:
        command = [require_tool("kubectl", "kubernetes-client"), "kustomize"]
    result = subprocess.run(
        command + [str(REPO_ROOT / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"kustomize build of {overlay} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_overlay(overlay):
    return _render_overlay(overlay)


# --- Dockerfiles ------------------------------------------------------------------------------

def _logical_lines(text):
    """The Dockerfile's instructions, continuation lines joined, comments and blanks left out."""
    text = re.sub(r"\\\n", " ", text)
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def dockerfile_stages(text):
    """[{'base', 'name', 'lines'}] per FROM, and the global ARG defaults (before the first FROM)."""
    stages, global_args = [], {}
    for line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append({"base": words[0], "name": name, "lines": []})
        elif stages:
            stages[-1]["lines"].append(line)
        elif keyword.upper() == "ARG":
            arg, _, default = rest.partition("=")
            global_args[arg.strip()] = default.strip()
    return stages, global_args


def image_instructions(text, build_args=None):
    """The instructions that make the built image, oldest first: the last stage and, through
    `FROM <stage>` (with `${ARG}` from build_args or the global defaults), the stages it is on.
    The first item is the external base image."""
    stages, args = dockerfile_stages(text)
    args.update(build_args or {})
    by_name = {stage["name"]: stage for stage in stages if stage["name"]}
    chain, stage = [], stages[-1]
    while True:
        chain[:0] = stage["lines"]
        base = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), ""),
                      stage["base"])
        if base not in by_name:
            return [f"FROM {base}"] + chain
        stage = by_name[base]


def image_setting(instructions, keyword):
    """The last `keyword` instruction's argument (USER, ENTRYPOINT, HEALTHCHECK, ...), or ''."""
    found = [line.split(None, 1)[1] for line in instructions
             if line.split(None, 1)[0].upper() == keyword and " " in line]
    return found[-1] if found else ""


def image_env(instructions):
    """ENV NAME=value pairs of the image (unquoted values only, as these Dockerfiles write them)."""
    env = {}
    for line in instructions:
        if line.split(None, 1)[0].upper() == "ENV":
            env.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S*)", line))
    return env


# --- the multi-chunk download path (gateway/satchel-concat.conf.template) -----------------------

def gateway_concat_location():
    text = (REPO_ROOT / "gateway" / "satchel-concat.conf.template").read_text()
    match = re.search(r"(?m)^location = (/\S+) \{", text)
    assert match, "satchel-concat.conf.template declares no `location = /...`"
    return match.group(1)


def concat_wiring_problems(file_env, file_mounts, gateway_env, gateway_mounts):
    """What keeps the file service and the gateway from agreeing on who sends local files.

    env: the containers' effective environment (image defaults included); mounts: {path in the
    container: identity of the volume}, equal identities meaning the same bytes. With S3 the
    concat path must stay off (no shared disk); with the local backend the file service's
    DATA_DIR must be the gateway's BLOB_ROOT and ACCEL_CONCAT_LOCATION the gateway's location.
    """
    location = file_env.get("ACCEL_CONCAT_LOCATION")
    if file_env.get("STORAGE_BACKEND", "local") == "s3":
        return [] if location is None else [f"ACCEL_CONCAT_LOCATION={location} with STORAGE_BACKEND=s3"]
    problems = []
    if location != gateway_concat_location():
        problems.append(f"ACCEL_CONCAT_LOCATION={location!r}, the gateway's location is "
                        f"{gateway_concat_location()}")
    data = file_mounts.get(file_env.get("DATA_DIR"))
    blobs = gateway_mounts.get(gateway_env.get("BLOB_ROOT"))
    if data is None or data != blobs:
        problems.append(f"DATA_DIR ({file_env.get('DATA_DIR')}: {data}) and the gateway's "
                        f"BLOB_ROOT ({gateway_env.get('BLOB_ROOT')}: {blobs}) are not one volume")
    return problems


# --- the gateway image (its entrypoint renders the templates; its nginx modules) -------------
GATEWAY = REPO_ROOT / "gateway"
ENTRYPOINT = GATEWAY / "docker-entrypoint.sh"
CONCAT_MODULES = ("ngx_http_echo_module.so", "ngx_http_headers_more_filter_module.so")
MODULES_DIR = pathlib.Path("/usr/lib/nginx/modules")


def require_concat_modules():
    missing = [m for m in CONCAT_MODULES if not (MODULES_DIR / m).is_file()]
    if missing:
        require_tool("/nonexistent/" + missing[0],
                     "libnginx-mod-http-echo libnginx-mod-http-headers-more-filter")


def render_like_the_image(env, run_dir, templates_dir):
    """Run the image's entrypoint in `render` mode; returns the main config's path."""
    result = subprocess.run(
        [str(ENTRYPOINT), "render"],
        env={"PATH": os.environ["PATH"], **env, "NGINX_RUN_DIR": str(run_dir),
             "SATCHEL_GATEWAY_TEMPLATES": str(templates_dir)},
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return pathlib.Path(result.stdout.strip())
