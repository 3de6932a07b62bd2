"""Kubernetes manifests and the KServe InferenceService, checked for structure (no cluster here)."""

from __future__ import annotations

import pytest
import yaml
from deployfiles import DEPLOY, Dockerfile, env_names_in, settings_fields, validate_settings

from service.settings import Settings

API_VERSIONS = {
    "Deployment": "apps/v1",
    "Service": "v1",
    "Secret": "v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "InferenceService": "serving.kserve.io/v1beta1",
}
SETTINGS_PORT = Settings.model_fields["port"].default


def docs(manifests: dict[str, list[dict]], kind: str) -> list[dict]:
    return [d for file_docs in manifests.values() for d in file_docs if d["kind"] == kind]


def pod_containers(doc: dict) -> list[dict]:
    if doc["kind"] == "InferenceService":
        return doc["spec"]["predictor"]["containers"]
    return doc["spec"]["template"]["spec"]["containers"]


def pod_spec(doc: dict) -> dict:
    if doc["kind"] == "InferenceService":
        return doc["spec"]["predictor"]
    return doc["spec"]["template"]["spec"]


def workloads(manifests: dict[str, list[dict]]) -> list[dict]:
    return docs(manifests, "Deployment") + docs(manifests, "InferenceService")


def resolve_port(container: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    (match,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return match


def literal_env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def the_secret(manifests: dict[str, list[dict]]) -> dict:
    (secret,) = docs(manifests, "Secret")
    return secret


def test_kinds_and_api_versions(manifests: dict[str, list[dict]]):
    kinds = set()
    for file, file_docs in manifests.items():
        assert file_docs, file
        for doc in file_docs:
            assert doc["apiVersion"] == API_VERSIONS[doc["kind"]], (file, doc["kind"])
            assert doc["metadata"]["name"], file
            kinds.add(doc["kind"])
    assert kinds == set(API_VERSIONS)


def test_kustomization_lists_existing_files():
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    for resource in kustomization["resources"]:
        assert (DEPLOY / "k8s" / resource).is_file(), resource
    # The Secret is created by hand (it holds the real token secret), never applied from git.
    assert "secret.example.yaml" not in kustomization["resources"]


def test_probes_hit_healthz_and_readyz_on_the_probe_port(manifests: dict[str, list[dict]]):
    """Probes go to the probe listener (GRU_SERVE_PROBE_PORT), which answers apart from the
    clients on the served port; the served port stays the settings' default."""
    for doc in workloads(manifests):
        (container,) = pod_containers(doc)
        name = doc["metadata"]["name"]
        env = literal_env(container)
        assert env["GRU_SERVE_PORT"] == str(SETTINGS_PORT), name
        probe_port = int(env["GRU_SERVE_PROBE_PORT"])
        assert probe_port != SETTINGS_PORT, name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        if "startupProbe" in container:
            assert container["startupProbe"]["httpGet"]["path"] == "/healthz", name
        ports = [p["containerPort"] for p in container["ports"]]
        assert ports[0] == SETTINGS_PORT and set(ports) <= {SETTINGS_PORT, probe_port}, name
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if probe in container:
                port = container[probe]["httpGet"]["port"]
                assert resolve_port(container, port) == probe_port, (name, probe)


def test_metrics_are_scraped_from_the_probe_port(manifests: dict[str, list[dict]]):
    for doc in docs(manifests, "Deployment"):
        (container,) = pod_containers(doc)
        annotations = doc["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/path"] == "/metrics"
        assert annotations["prometheus.io/port"] == literal_env(container)["GRU_SERVE_PROBE_PORT"]


def test_workloads_set_resources(manifests: dict[str, list[dict]]):
    for doc in workloads(manifests):
        (container,) = pod_containers(doc)
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= container["resources"][bound].keys(), doc["metadata"]


def test_services_route_to_a_deployment_port(manifests: dict[str, list[dict]]):
    deployments = docs(manifests, "Deployment")
    services = docs(manifests, "Service")
    assert len(services) == len(deployments)
    for service in services:
        selector = service["spec"]["selector"]
        matched = [
            d
            for d in deployments
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matched) == 1, service["metadata"]["name"]
        (container,) = pod_containers(matched[0])
        for port in service["spec"]["ports"]:
            assert resolve_port(container, port["targetPort"]) == SETTINGS_PORT


def test_deployment_selectors_match_their_pods(manifests: dict[str, list[dict]]):
    for doc in docs(manifests, "Deployment"):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_hpas_scale_existing_deployments(manifests: dict[str, list[dict]]):
    deployments = {d["metadata"]["name"]: d for d in docs(manifests, "Deployment")}
    hpas = docs(manifests, "HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas} == set(deployments)
    for hpa in hpas:
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment" and ref["apiVersion"] == "apps/v1"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        # Utilization targets are relative to requests: the pods must set them.
        (container,) = pod_containers(deployments[ref["name"]])
        for metric in hpa["spec"]["metrics"]:
            assert metric["resource"]["name"] in container["resources"]["requests"]


def test_token_secret_comes_from_the_secret(manifests: dict[str, list[dict]]):
    secret = the_secret(manifests)
    keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    for doc in workloads(manifests):
        (container,) = pod_containers(doc)
        env = {e["name"]: e for e in container["env"]}
        token = env["GRU_SERVE_TOKEN_SECRET"]
        assert "value" not in token, "the token secret must not be inline"
        ref = token["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in keys
        for e in env.values():
            if "valueFrom" in e:
                ref = e["valueFrom"]["secretKeyRef"]
                assert ref["name"] == secret["metadata"]["name"] and ref["key"] in keys


def test_env_names_exist_in_settings(manifests: dict[str, list[dict]]):
    text = "".join(p.read_text() for p in sorted(DEPLOY.rglob("*.yaml")))
    names = env_names_in(text)
    assert names <= settings_fields(), names - settings_fields()
    for doc in workloads(manifests):
        (container,) = pod_containers(doc)
        assert {e["name"] for e in container["env"]} <= settings_fields()
        validate_settings(literal_env(container))


def test_gpu_variant_requests_a_gpu(manifests: dict[str, list[dict]]):
    gpu, cpu = [], []
    for doc in docs(manifests, "Deployment"):
        (container,) = pod_containers(doc)
        (gpu if "nvidia.com/gpu" in container["resources"]["limits"] else cpu).append(doc)
    assert len(gpu) == 1 and len(cpu) == 1
    (container,) = pod_containers(gpu[0])
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert container["image"].endswith(":gpu")
    assert literal_env(container)["GRU_SERVE_DEVICE"] == "cuda"
    (container,) = pod_containers(cpu[0])
    assert container["image"].endswith(":cpu")


def test_images_are_the_compose_images(manifests: dict[str, list[dict]], compose: dict):
    built = {s["image"] for s in compose["services"].values() if "build" in s}
    for doc in workloads(manifests):
        (container,) = pod_containers(doc)
        assert container["image"] in built, doc["metadata"]["name"]
        assert "command" not in container and "args" not in container  # the image CMD runs


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_pods_run_as_the_image_user(
    manifests: dict[str, list[dict]], dockerfile: Dockerfile, target: str
):
    uid = int(dockerfile.image(target).user.split(":")[0])
    for doc in workloads(manifests):
        (container,) = pod_containers(doc)
        if container["image"].endswith(f":{target}"):
            context = pod_spec(doc)["securityContext"]
            assert context["runAsNonRoot"] is True and context["runAsUser"] == uid


def test_termination_grace_covers_pre_stop_and_shutdown(manifests: dict[str, list[dict]]):
    for doc in workloads(manifests):
        (container,) = pod_containers(doc)
        grace = float(literal_env(container)["GRU_SERVE_SHUTDOWN_GRACE_S"])
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
        sleep = float(pre_stop["command"][1]) if pre_stop else 0.0
        assert pod_spec(doc)["terminationGracePeriodSeconds"] > sleep + grace


def test_inference_service_runs_the_same_image(manifests: dict[str, list[dict]]):
    (isvc,) = docs(manifests, "InferenceService")
    predictor = isvc["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert container["ports"] == [{"containerPort": SETTINGS_PORT, "protocol": "TCP"}]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    assert predictor["scaleMetric"] in container["resources"]["requests"]
