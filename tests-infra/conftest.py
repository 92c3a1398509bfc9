"""Shared helpers for the deployment-artefact checks (no Docker, no cluster needed).

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


@pytest.fixture(scope="session")
def compose():
    return load_yaml(REPO_ROOT / "docker-compose.yml")


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


@pytest.fixture(scope="session", params=OVERLAYS)
def rendered(request):
    """(overlay name, list of objects) for each overlay."""
    return request.param, _render_overlay(request.param)


def render_overlay(overlay):
    return _render_overlay(overlay)
