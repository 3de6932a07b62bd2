"""docker-compose.yml, .env.example and deploy/prometheus.yml checked against the app."""

from __future__ import annotations

import re

import yaml
from deployfiles import (
    DEPLOY,
    ROOT,
    Dockerfile,
    env_names_in,
    interpolate_defaults,
    settings_fields,
    validate_settings,
)

from service.settings import Settings

ENV_EXAMPLE = ROOT / ".env.example"
SETTINGS_PORT = Settings.model_fields["port"].default


def gru_services(compose: dict) -> dict[str, dict]:
    return {n: s for n, s in compose["services"].items() if s.get("image", "").startswith("gru-")}


def published(service: dict) -> list[tuple[int, int]]:
    """(host, container) port pairs of the short `"host:container"` syntax."""
    pairs = []
    for spec in service["ports"]:
        host, _, container = str(spec).rpartition(":")
        pairs.append((int(host), int(container)))
    return pairs


def seconds(duration: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", duration)
    assert m, duration
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


def test_plain_up_runs_only_the_cpu_target(compose: dict, dockerfile: Dockerfile):
    default = {n for n, s in compose["services"].items() if not s.get("profiles")}
    assert default == {"serve"}
    serve = compose["services"]["serve"]
    assert serve["build"]["target"] == "cpu" and serve["build"]["context"] == "."
    assert serve["image"].endswith(":cpu")
    assert "cpu" in dockerfile.by_name


def test_ports_match_the_settings_port(compose: dict, dockerfile: Dockerfile):
    hosts = []
    for name, service in gru_services(compose).items():
        pairs = published(service)
        assert [c for _, c in pairs] == [SETTINGS_PORT], name
        assert service["environment"]["GRU_SERVE_PORT"] == str(SETTINGS_PORT), name
        assert service["environment"]["GRU_SERVE_HOST"] == "0.0.0.0", name
        target = service["build"]["target"]
        assert dockerfile.image(target).expose == [str(SETTINGS_PORT)]
        hosts += [h for h, _ in pairs]
    assert len(hosts) == len(set(hosts)), "two services publish the same host port"


def test_healthcheck_is_the_image_healthcheck(compose: dict, dockerfile: Dockerfile):
    for name, service in gru_services(compose).items():
        check = service["healthcheck"]
        image = dockerfile.image(service["build"]["target"])
        assert check["test"][0] == "CMD", name
        assert check["test"][1:] == image.healthcheck_cmd, name
        assert "/healthz" in check["test"][-1]
        for key in ("interval", "timeout", "start_period"):
            want = image.healthcheck_options[key.replace("_", "-")]
            assert seconds(check[key]) == seconds(want), (name, key)
        assert check["retries"] == int(image.healthcheck_options["retries"])


def test_command_is_the_image_cmd(compose: dict, dockerfile: Dockerfile):
    for name, service in gru_services(compose).items():
        image = dockerfile.image(service["build"]["target"])
        assert service.get("command", image.cmd) == image.cmd == ["gru-serve", "serve"], name


def test_env_names_exist_in_settings(compose: dict):
    text = (ROOT / "docker-compose.yml").read_text() + ENV_EXAMPLE.read_text()
    names = env_names_in(text)
    assert "GRU_SERVE_TOKEN_SECRET" in names
    assert names <= settings_fields(), names - settings_fields()
    for name, service in gru_services(compose).items():
        env = {k: interpolate_defaults(str(v)) for k, v in service["environment"].items()}
        assert set(env) <= settings_fields(), name
        validate_settings(env)  # every value is one the service accepts


def test_token_secret_comes_from_the_env_file(compose: dict):
    for name, service in gru_services(compose).items():
        assert "GRU_SERVE_TOKEN_SECRET" not in service["environment"], name
        assert {"path": ".env", "required": False} in service["env_file"], name
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert example["GRU_SERVE_TOKEN_SECRET"] == "", "the example must not ship a secret"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_models_are_mounted_read_only(compose: dict):
    for name, service in gru_services(compose).items():
        assert "./models:/models:ro" in service["volumes"], name
        default = interpolate_defaults(service["environment"]["GRU_SERVE_MODEL_PATH"])
        assert default == "/app/artifacts/gru.onnx", name  # the bundled artifact
    assert "GRU_SERVE_MODEL_PATH=/models/" in ENV_EXAMPLE.read_text()


def test_stop_grace_outlasts_the_shutdown_grace(compose: dict):
    for name, service in gru_services(compose).items():
        assert service["stop_signal"] == "SIGTERM"
        grace = float(service["environment"]["GRU_SERVE_SHUTDOWN_GRACE_S"])
        assert seconds(service["stop_grace_period"]) > grace, name


def test_gpu_profile_reserves_an_nvidia_gpu(compose: dict):
    gpu = compose["services"]["serve-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["target"] == "gpu" and gpu["image"].endswith(":gpu")
    assert gpu["environment"]["GRU_SERVE_DEVICE"] == "cuda"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert "deploy" not in compose["services"]["serve"]


def test_monitoring_profile_scrapes_metrics(compose: dict):
    prom = compose["services"]["prometheus"]
    assert prom["profiles"] == ["monitoring"]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", prom["image"])
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prom["volumes"]
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert sorted(t.split(":")[0] for t in targets) == sorted(gru_services(compose))
    assert {int(t.split(":")[1]) for t in targets} == {SETTINGS_PORT}
