"""docker-compose.yml, .env.example, .dockerignore and the Dockerfiles it builds."""
import re
import subprocess

import pytest

from conftest import REPO_ROOT, require_tool

ROOT_USERS = {"", "root", "0"}


def one_shot_services(compose):
    return {
        name
        for service in compose["services"].values()
        for name, dependency in (service.get("depends_on") or {}).items()
        if isinstance(dependency, dict)
        and dependency.get("condition") == "service_completed_successfully"
    }


@pytest.mark.parametrize("env_file", [None, ".env.example"])
def test_compose_file_is_valid(env_file):
    docker_compose = require_tool("docker-compose", "docker-compose")
    command = [docker_compose]
    if env_file:
        command += ["--env-file", env_file]
    result = subprocess.run(
        command + ["config", "-q"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_every_long_running_service_has_a_healthcheck(compose):
    one_shots = one_shot_services(compose)
    missing = [
        name
        for name, service in compose["services"].items()
        if name not in one_shots
        and (not service.get("healthcheck") or service["healthcheck"].get("disable"))
    ]
    assert not missing, f"services without a healthcheck: {missing}"


def test_every_dependency_waits_for_health_or_completion(compose):
    one_shots = one_shot_services(compose)
    problems = []
    for name, service in compose["services"].items():
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):
            problems.append(f"{name}: depends_on without conditions")
            continue
        for dependency, spec in depends_on.items():
            expected = (
                "service_completed_successfully" if dependency in one_shots else "service_healthy"
            )
            if (spec or {}).get("condition") != expected:
                problems.append(f"{name} -> {dependency}: condition should be {expected}")
    assert not problems, problems


def test_the_stack_starts_in_dependency_order(compose):
    services = compose["services"]
    assert set(services["gateway"]["depends_on"]) >= {"auth-service", "file-service"}
    assert "mongodb" in services["auth-service"]["depends_on"]
    assert "auth-keys" in services["auth-service"]["depends_on"]
    assert "minio-init" in services["file-service"]["depends_on"]
    assert services["file-service"]["environment"]["STORAGE_BACKEND"] == "s3"


def test_mongodb_runs_as_a_replica_set_that_initiates_itself(compose):
    mongodb = compose["services"]["mongodb"]
    assert mongodb["image"].startswith("mongo:7")
    assert "--replSet" in mongodb["command"]
    assert "rs.initiate" in " ".join(mongodb["healthcheck"]["test"])
    for name in ("auth-service", "file-service"):
        assert "replicaSet=rs0" in compose["services"][name]["environment"]["MONGO_URI"]


def final_stage_user(dockerfile_text):
    final_stage = re.split(r"(?im)^FROM\s", dockerfile_text)[-1]
    users = re.findall(r"(?im)^USER\s+(\S+)", final_stage)
    return users[-1] if users else ""


def test_no_image_is_built_to_run_as_root(compose):
    built = {
        name: service["build"]
        for name, service in compose["services"].items()
        if "build" in service
    }
    assert built, "compose builds no image?"
    for name, build in built.items():
        dockerfile = REPO_ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
        user = final_stage_user(dockerfile.read_text())
        assert user.split(":")[0] not in ROOT_USERS, f"{name}: {dockerfile} runs as {user!r}"
        assert service_user_is_not_overridden(compose["services"][name]), name


def service_user_is_not_overridden(service):
    return str(service.get("user", "nonroot")).split(":")[0] not in ROOT_USERS


@pytest.mark.parametrize("service_dir", ["auth-service", "file-service"])
def test_service_dockerfile_installs_dependencies_before_the_source(service_dir):
    text = (REPO_ROOT / service_dir / "Dockerfile").read_text()
    dependencies = text.index("pip install -c constraints.txt -r requirements.txt")
    assert dependencies < text.index(f"COPY {service_dir}/ "), "source copied before deps"
    assert dependencies < text.index("COPY shared/ ")
    assert re.search(r"(?ms)^HEALTHCHECK\b.*?urllib\.request.*?/healthz", text)
    assert re.search(r"(?m)^ENTRYPOINT .*exec gunicorn ", text)
    assert len(re.findall(r"(?im)^FROM\s", text)) >= 2, "not a multi-stage build"


def test_named_volumes_are_declared_and_used(compose):
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in compose["services"].items():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source")
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} uses undeclared volume {source}"
                used.add(source)
    assert declared, "no named volumes"
    assert declared == used, f"declared but unused: {declared - used}"
    for stateful in ("mongodb", "minio", "auth-service"):
        assert compose["services"][stateful].get("volumes"), f"{stateful} keeps no volume"


def test_signing_keys_live_in_a_volume_not_an_image(compose):
    keys_dir = compose["services"]["auth-service"]["environment"]["JWT_KEYS_DIR"]
    mounts = [v.split(":")[1] for v in compose["services"]["auth-service"]["volumes"]]
    assert keys_dir in mounts
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert "**/*.pem" in ignored


def test_dockerignore_excludes_local_state():
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    for pattern in (".venv", "var/", ".git", "**/.pytest_cache", "**/__pycache__"):
        assert pattern in ignored, pattern


def test_env_example_lists_every_variable_compose_reads():
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    read = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    listed = set(
        re.findall(r"(?m)^([A-Za-z_][A-Za-z0-9_]*)=", (REPO_ROOT / ".env.example").read_text())
    )
    assert read == listed, f"missing from .env.example: {read - listed}; unused: {listed - read}"


def test_file_service_gets_every_setting_it_requires(compose):
    """The file service refuses to start without these (see its Config.validate)."""
    environment = compose["services"]["file-service"]["environment"]
    for name in ("JWKS_URL", "BLOB_URL_SECRET", "S3_BUCKET", "MONGO_URI"):
        assert name in environment, name
