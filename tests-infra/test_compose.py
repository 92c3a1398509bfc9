"""docker-compose.yml, .env.example, .dockerignore and the Dockerfiles it builds."""
import re
import subprocess

import pytest
import yaml
from satchel_shared import serve

from infra_testing import (
    REPO_ROOT,
    concat_wiring_problems,
    dockerfile_stages,
    gateway_concat_location,
    image_env,
    image_instructions,
    image_setting,
    require_tool,
    resolve_compose_value,
)

ROOT_USERS = {"", "root", "0"}
SERVICES = ("auth-service", "file-service")
# Build tools that must never reach a final image.
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|make|build-essential|python3?-dev|libc6?-dev|pip install)\b")


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


def built_image(service):
    """(Dockerfile path, the built image's instructions) of a compose service with `build`."""
    build = service["build"]
    dockerfile = REPO_ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
    return dockerfile, image_instructions(dockerfile.read_text(), build.get("args"))


def test_no_image_is_built_to_run_as_root(compose):
    built = {name: service for name, service in compose["services"].items() if "build" in service}
    assert built, "compose builds no image?"
    for name, service in built.items():
        dockerfile, instructions = built_image(service)
        user = image_setting(instructions, "USER")
        assert user.split(":")[0] not in ROOT_USERS, f"{name}: {dockerfile} runs as {user!r}"
        assert service_user_is_not_overridden(compose["services"][name]), name


def service_user_is_not_overridden(service):
    return str(service.get("user", "nonroot")).split(":")[0] not in ROOT_USERS


def test_one_dockerfile_builds_both_service_images(compose):
    """The root Dockerfile, its SERVICE build argument naming the image (satchel/<SERVICE>)."""
    assert not (REPO_ROOT / "auth-service" / "Dockerfile").exists()
    assert not (REPO_ROOT / "file-service" / "Dockerfile").exists()
    built = {}
    for name, service in compose["services"].items():
        dockerfile, _ = built_image(service) if "build" in service else (None, None)
        if dockerfile == REPO_ROOT / "Dockerfile":
            argument = service["build"]["args"]["SERVICE"]
            assert service["image"].startswith(f"satchel/{argument}:"), name
            built[name] = argument
    assert set(built.values()) == set(SERVICES), built
    stages, _ = dockerfile_stages((REPO_ROOT / "Dockerfile").read_text())
    assert set(SERVICES) <= {stage["name"] for stage in stages}
    assert stages[-1]["base"] == "${SERVICE}", "the image must be the stage SERVICE names"


@pytest.mark.parametrize("service", SERVICES)
def test_service_image_installs_dependencies_before_the_source(service):
    text = (REPO_ROOT / "Dockerfile").read_text()
    dependencies = text.index("pip install -c constraints.txt -r requirements.txt")
    assert dependencies < text.index("COPY ${SERVICE}/ "), "source copied before deps"
    assert dependencies < text.index("COPY shared/ ")
    assert "constraints.txt" in text[text.index("COPY ${SERVICE}/ "):].split("\n", 2)[1]
    assert len(dockerfile_stages(text)[0]) >= 2, "not a multi-stage build"

    image = image_instructions(text, {"SERVICE": service})
    package = {"auth-service": "satchel_auth", "file-service": "satchel_files"}[service]
    # gunicorn and its health check as satchel_shared.serve runs them for this service
    assert image_setting(image, "ENTRYPOINT") == '["python", "-m", "satchel_shared.serve"]'
    assert image_setting(image, "HEALTHCHECK").endswith(
        'CMD ["python", "-m", "satchel_shared.serve", "--check"]'), service
    assert image_env(image)["SATCHEL_SERVICE"] == service
    assert serve.SERVICES[service] == f"{package}.wsgi:app"
    assert image_setting(image, "USER").split(":")[0] not in ROOT_USERS
    assert re.fullmatch(r"FROM python:3\.\d+[\w.-]*-slim-\w+", image[0]), image[0]
    leftovers = [line for line in image if BUILD_TOOLS.search(line)]
    assert not leftovers, f"the {service} image itself installs: {leftovers}"
    assert "COPY --from=build /opt/venv /opt/venv" in image


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


# --- who sends multi-chunk local files: nginx (ACCEL_CONCAT_LOCATION) or the file service -------

def container_env(service):
    """The environment a compose service's container gets: image defaults, then compose's."""
    env = image_env(built_image(service)[1]) if "build" in service else {}
    env.update({k: resolve_compose_value(v) for k, v in (service.get("environment") or {}).items()})
    return env


def container_mounts(service):
    """{path in the container: volume}, for named volumes and bind mounts."""
    mounts = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source"), volume["target"]
        mounts[target] = f"volume:{source}"
    return mounts


def concat_wiring(compose):
    file_service, gateway = compose["services"]["file-service"], compose["services"]["gateway"]
    return concat_wiring_problems(container_env(file_service), container_mounts(file_service),
                                  container_env(gateway), container_mounts(gateway))


def test_compose_keeps_the_concat_path_off_with_s3(compose):
    """MinIO: no disk the gateway could read chunks from, so the file service streams them."""
    assert compose["services"]["file-service"]["environment"]["STORAGE_BACKEND"] == "s3"
    assert "ACCEL_CONCAT_LOCATION" not in compose["services"]["file-service"]["environment"]
    assert not concat_wiring(compose)


def documented_local_blob_override():
    """The docker-compose.override.yml that docs/deploy.md gives for the local blob backend."""
    blocks = re.findall(r"```yaml\n(.*?)```", (REPO_ROOT / "docs" / "deploy.md").read_text(), re.S)
    found = [block for block in blocks if "ACCEL_CONCAT_LOCATION" in block]
    assert len(found) == 1, "docs/deploy.md should give one compose override that sets it"
    return found[0]


def test_the_documented_local_blob_override_lets_nginx_send_multi_chunk_files(tmp_path):
    docker_compose = require_tool("docker-compose", "docker-compose")
    override = tmp_path / "docker-compose.override.yml"
    override.write_text(documented_local_blob_override())
    result = subprocess.run(
        [docker_compose, "-f", "docker-compose.yml", "-f", str(override), "config"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    merged = yaml.safe_load(result.stdout)
    environment = merged["services"]["file-service"]["environment"]
    assert environment["STORAGE_BACKEND"] == "local"
    assert environment["ACCEL_CONCAT_LOCATION"] == gateway_concat_location()
    assert not concat_wiring(merged)


@pytest.mark.parametrize("change, problem", [
    ({"STORAGE_BACKEND": "s3", "ACCEL_CONCAT_LOCATION": "/_satchel_concat"}, "with STORAGE_BACKEND=s3"),
    ({"STORAGE_BACKEND": "local", "ACCEL_CONCAT_LOCATION": "/elsewhere"}, "the gateway's location"),
    ({"STORAGE_BACKEND": "local", "DATA_DIR": "/not/mounted"}, "are not one volume"),
])
def test_the_wiring_check_finds_what_breaks_the_concat_path(change, problem):
    """The check above, on the documented override spoilt one way at a time."""
    override = yaml.safe_load(documented_local_blob_override())
    file_env = {**override["services"]["file-service"]["environment"], **change}
    problems = concat_wiring_problems(
        file_env, container_mounts(override["services"]["file-service"]),
        {"BLOB_ROOT": "/var/lib/satchel/blobs"}, container_mounts(override["services"]["gateway"]))
    assert any(problem in p for p in problems), problems


def test_the_services_are_healthy_when_ready_as_the_image_itself_asks(compose):
    """Dependents (depends_on: service_healthy) must wait for /readyz (the database up), asked
    by the image's own `satchel_shared.serve --ready`, not a copy of the port in a one-liner."""
    for name in ("auth-service", "file-service"):
        assert compose["services"][name]["healthcheck"]["test"] == [
            "CMD", "python", "-m", "satchel_shared.serve", "--ready"], name
