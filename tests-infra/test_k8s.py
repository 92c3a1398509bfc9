"""k8s/: every overlay renders, validates against the Kubernetes schemas and is hardened."""
import kubernetes_validate
import pytest

from infra_testing import REPO_ROOT, image_env, image_instructions, render_overlay

KUBERNETES_VERSION = "1.30.0"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
SERVING_KINDS = {"Deployment", "StatefulSet"}
SERVICES = {"auth-service", "file-service", "gateway"}


def objects_of(objects, *kinds):
    return [o for o in objects if o["kind"] in kinds]


def pod_spec(workload):
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return workload["spec"]["template"]["spec"]


def containers_of(workload):
    spec = pod_spec(workload)
    for container in spec.get("initContainers", []) + spec["containers"]:
        yield spec, container


def label(workload, container):
    return f"{workload['kind']}/{workload['metadata']['name']}[{container['name']}]"


def test_every_object_matches_the_kubernetes_schema(rendered):
    overlay, objects = rendered
    errors = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as e:
            reason = getattr(getattr(e, "caught", None), "message", e)
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {reason}")
    assert not errors, "\n".join(errors)


def test_serving_containers_have_liveness_and_readiness_probes(rendered):
    _, objects = rendered
    missing = [
        f"{label(w, c)} {probe}"
        for w in objects_of(objects, *SERVING_KINDS)
        for _, c in containers_of(w)
        for probe in ("livenessProbe", "readinessProbe")
        if probe not in c
    ]
    assert not missing, missing


def test_service_probes_hit_healthz_and_readyz(rendered):
    _, objects = rendered
    for w in objects_of(objects, "Deployment"):
        name = w["metadata"]["name"]
        if name not in SERVICES:
            continue
        (_, c), = containers_of(w)
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        expected = "/healthz" if name == "gateway" else "/readyz"
        assert c["readinessProbe"]["httpGet"]["path"] == expected, name


def test_every_container_has_resource_requests_and_limits(rendered):
    _, objects = rendered
    missing = [
        f"{label(w, c)} {kind}.{resource}"
        for w in objects_of(objects, *WORKLOAD_KINDS)
        for _, c in containers_of(w)
        for kind in ("requests", "limits")
        for resource in ("cpu", "memory")
        if resource not in c.get("resources", {}).get(kind, {})
    ]
    assert not missing, missing


def test_every_container_is_locked_down(rendered):
    _, objects = rendered
    problems = []
    for w in objects_of(objects, *WORKLOAD_KINDS):
        for pod, c in containers_of(w):
            pod_sc, sc = pod.get("securityContext", {}), c.get("securityContext", {})
            if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
                problems.append(f"{label(w, c)}: runAsNonRoot")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{label(w, c)}: readOnlyRootFilesystem")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{label(w, c)}: allowPrivilegeEscalation")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                problems.append(f"{label(w, c)}: capabilities.drop ALL")
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
            if seccomp.get("type") != "RuntimeDefault":
                problems.append(f"{label(w, c)}: seccompProfile RuntimeDefault")
            if not any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", [])):
                problems.append(f"{label(w, c)}: read-only root but no writable /tmp")
    assert not problems, problems


def test_every_service_deployment_has_an_hpa_and_a_pdb(rendered):
    _, objects = rendered
    deployments = objects_of(objects, "Deployment")
    assert {d["metadata"]["name"] for d in deployments} >= SERVICES
    hpa_targets = {
        (h["spec"]["scaleTargetRef"]["kind"], h["spec"]["scaleTargetRef"]["name"])
        for h in objects_of(objects, "HorizontalPodAutoscaler")
        if h["apiVersion"] == "autoscaling/v2"
    }
    pdb_selectors = [p["spec"]["selector"]["matchLabels"] for p in objects_of(objects, "PodDisruptionBudget")]
    for d in deployments:
        name, pod_labels = d["metadata"]["name"], d["spec"]["template"]["metadata"]["labels"]
        assert ("Deployment", name) in hpa_targets, f"{name} has no autoscaling/v2 HPA"
        assert any(
            s.items() <= pod_labels.items() for s in pdb_selectors
        ), f"{name} has no PodDisruptionBudget"
        assert "replicas" not in d["spec"], f"{name}: replicas fights the HPA"


def referenced_names(objects, kind):
    """Names of Secrets or ConfigMaps that workloads reference."""
    ref_key, env_from_key, volume_key, name_key = {
        "Secret": ("secretKeyRef", "secretRef", "secret", "secretName"),
        "ConfigMap": ("configMapKeyRef", "configMapRef", "configMap", "name"),
    }[kind]
    names = set()
    for w in objects_of(objects, *WORKLOAD_KINDS):
        for pod, c in containers_of(w):
            names |= {e["valueFrom"][ref_key]["name"] for e in c.get("env", []) if ref_key in e.get("valueFrom", {})}
            names |= {e[env_from_key]["name"] for e in c.get("envFrom", []) if env_from_key in e}
            names |= {v[volume_key][name_key] for v in pod.get("volumes", []) if volume_key in v}
    return names


def test_every_referenced_configmap_exists(rendered):
    _, objects = rendered
    defined = {o["metadata"]["name"] for o in objects_of(objects, "ConfigMap")}
    assert referenced_names(objects, "ConfigMap") <= defined


def test_dev_defines_every_secret_except_the_job_made_signing_key():
    objects = render_overlay("dev")
    defined = {o["metadata"]["name"] for o in objects_of(objects, "Secret")} | {"satchel-jwt-keys"}
    assert referenced_names(objects, "Secret") <= defined
    assert {"mongodb", "minio"} <= {o["metadata"]["name"] for o in objects_of(objects, "StatefulSet")}


def test_prod_commits_no_secrets_and_reads_them_from_the_cluster():
    objects = render_overlay("prod")
    assert not objects_of(objects, "Secret"), "prod must not carry Secret objects"
    assert referenced_names(objects, "Secret") == {"satchel-mongo", "satchel-s3", "satchel-jwt-keys",
                                                   "satchel-url-signing"}
    assert not objects_of(objects, "StatefulSet"), "prod uses external MongoDB and S3"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_images_carry_explicit_tags(overlay):
    for w in objects_of(render_overlay(overlay), *WORKLOAD_KINDS):
        for _, c in containers_of(w):
            repository, _, tag = c["image"].rpartition(":")
            assert repository and "/" not in tag and tag not in ("", "latest"), c["image"]


@pytest.mark.parametrize("kind, name, required", [
    ("Deployment", "file-service", ("JWKS_URL", "BLOB_URL_SECRET", "MONGO_URI")),
    # the admin CLI checks no tokens: it needs no JWKS_URL (satchel_files/cli.py)
    ("CronJob", "satchel-maintenance", ("BLOB_URL_SECRET", "MONGO_URI"))])
def test_file_service_gets_every_setting_it_requires(rendered, kind, name, required):
    """The file service (and its CLI) refuses to start without these (its Config.validate)."""
    _overlay, objects = rendered
    [workload] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    container = pod_spec(workload)["containers"][0]
    names = {e["name"]: e for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        names[f"envFrom:{source.get('configMapRef', source.get('secretRef', {})).get('name')}"] = {}
    for setting in required:
        assert setting in names, (setting, sorted(names))
    assert any(n.startswith("envFrom:satchel-config") for n in names), sorted(names)  # + hash
    assert container_env(objects, workload, image_defaults=False)["MONGO_DB"] == "satchel_files"


SERVING_ONLY = {"FILE_PORT", "FILE_WORKERS", "FILE_THREADS", "UPLOAD_BUFFER_BYTES", "JWKS_URL"}


def test_the_maintenance_job_runs_with_the_file_services_settings(rendered):
    """gc and fsck must see what the service sees (a longer GC_GRACE_SECONDS above all);
    only the settings of serving requests may differ."""
    _overlay, objects = rendered
    [cron] = [o for o in objects_of(objects, "CronJob")
              if o["metadata"]["name"] == "satchel-maintenance"]
    service = container_env(objects, deployment(objects, "file-service"), image_defaults=False)
    job = container_env(objects, cron, image_defaults=False)
    assert {k: v for k, v in service.items() if k not in SERVING_ONLY} == job
    assert job["GC_GRACE_SECONDS"] == "3600"


def test_maintenance_runs_gc_then_fsck_daily_and_fails_on_findings(rendered):
    _overlay, objects = rendered
    [cron] = [o for o in objects_of(objects, "CronJob")
              if o["metadata"]["name"] == "satchel-maintenance"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 0
    command = " ".join(pod_spec(cron)["containers"][0]["command"])
    assert "satchel_files.cli gc && " in command and command.endswith("satchel_files.cli fsck")


IMAGE_DEFAULTS = {
    "file-service": lambda: image_env(image_instructions(
        (REPO_ROOT / "Dockerfile").read_text(), {"SERVICE": "file-service"})),
    "gateway": lambda: image_env(image_instructions((REPO_ROOT / "gateway" / "Dockerfile").read_text())),
}


def deployment(objects, name):
    [found] = [o for o in objects_of(objects, "Deployment") if o["metadata"]["name"] == name]
    return found


def container_env(objects, workload, *, image_defaults=True):
    """The container's environment: image defaults, ConfigMaps (envFrom), then env; values from
    Secrets are stood in for by their reference."""
    config_maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects_of(objects, "ConfigMap")}
    (_, container), = containers_of(workload)
    env = IMAGE_DEFAULTS[workload["metadata"]["name"]]() if image_defaults else {}
    for source in container.get("envFrom", []):
        env.update(config_maps.get(source.get("configMapRef", {}).get("name"), {}))
    for item in container.get("env", []):
        ref = item.get("valueFrom", {})
        if "configMapKeyRef" in ref:
            env[item["name"]] = config_maps[ref["configMapKeyRef"]["name"]][ref["configMapKeyRef"]["key"]]
        else:
            env[item["name"]] = item.get("value", f"<{ref}>")
    return env


def test_the_concat_path_agrees_with_the_blob_backend(rendered):
    """S3 in both overlays: the file service must not hand nginx chunks it cannot read (it
    would with ACCEL_CONCAT_LOCATION: nginx reads them from a volume only the local backend
    fills; test_compose checks that wiring where it exists)."""
    _, objects = rendered
    file_env = container_env(objects, deployment(objects, "file-service"))
    assert file_env["STORAGE_BACKEND"] == "s3" and "ACCEL_CONCAT_LOCATION" not in file_env


def test_the_gateway_runs_as_the_file_services_user(rendered):
    """What a shared local blob volume needs (the service's blobs are mode 0600)."""
    _, objects = rendered
    contexts = [deployment(objects, name)["spec"]["template"]["spec"]["securityContext"]
                for name in ("file-service", "gateway")]
    assert [(c["runAsUser"], c["runAsGroup"]) for c in contexts] == [(10001, 10001)] * 2
