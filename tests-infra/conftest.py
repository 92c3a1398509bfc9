"""Fixtures of the deployment-artefact checks; the helpers are in infra_testing.py."""
import pytest

from infra_testing import OVERLAYS, REPO_ROOT, _render_overlay, load_yaml


@pytest.fixture(scope="session")
def compose():
    return load_yaml(REPO_ROOT / "docker-compose.yml")


@pytest.fixture(scope="session", params=OVERLAYS)
def rendered(request):
    """(overlay name, list of objects) for each overlay."""
    return request.param, _render_overlay(request.param)
