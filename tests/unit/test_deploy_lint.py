"""The deployment files (Dockerfile, deploy/compose.yaml, deploy/k8s/**) checked against the code they deploy.

No container engine or cluster is available to the tests, so this reads the files: every YAML parses, the Kafka
cluster is durable (3 brokers, RF 3, min ISR 2, no unclean election, no auto-created topics), every hub process
is deployed with probes and limits, secrets are referenced and never written down, images are pinned, every
SINERGI_* name is a real setting, each process's environment passes `check_production_safety`, and the Kafka
clients in the code are configured the way the brokers' durability assumes (acks=all, no auto-commit).
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.kafka_edge import producer_config
from services.config import Settings
from services.supervisor import WORKERS

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
DOCKERFILE = REPO / "Dockerfile"

SECRET_NAME = re.compile(r"SECRET|KEY|TOKEN|PASSWORD")
# Literal values a secret-named variable may carry: empty maps that switch development defaults off.
NOT_A_SECRET = {"{}", "[]"}
# Whatever looks like key material or a development credential of services/config.py must not be in deploy/.
SECRET_LOOKING = re.compile(
    r"whsec_[A-Za-z0-9+/=]{8,}|-----BEGIN [A-Z ]*PRIVATE KEY-----|dev-token-|dev-client-secret-"
)
SINERGI_IMAGE = "sinergi"

# The processes production runs: both APIs, every worker, the webhooks service (services/supervisor.py plan()).
EXPECTED_PROCESSES = {"api bank", "api kbri", "webhooks serve", *(f"worker {w}" for w in WORKERS)}

# Test-only stand-ins for what the secret store provides; any non-development value passes the check.
SECRET_STANDINS = {
    "SINERGI_PARTICIPANT_KEY_SECRET": "test-standin-participant-key",
    "SINERGI_PII_ENCRYPTION_KEY": "dGVzdC1zdGFuZGluLXBpaS1rZXktMzItYnl0ZXMtISE=",
    "SINERGI_OFFICE_WEBHOOKS": "{}",
}


# --- loading ------------------------------------------------------------------------------------------------------
def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"} and p.is_file())


def _docs(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


def _compose() -> dict[str, Any]:
    loaded = _docs(COMPOSE)
    assert len(loaded) == 1
    doc: dict[str, Any] = loaded[0]
    return doc


def _k8s_docs() -> list[dict[str, Any]]:
    return [d for p in sorted(K8S.rglob("*.yaml")) if p.name != "kustomization.yaml" for d in _docs(p)]


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with VAR unset: what the file runs with by default."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def _env_map(env: Any) -> dict[str, str]:
    if env is None:
        return {}
    if isinstance(env, list):
        return dict(str(item).split("=", 1) for item in env)
    return {str(k): _interpolate(str(v)) for k, v in env.items()}


def _image_name(image: str) -> tuple[str, str | None]:
    """("repo/name", tag or None); a digest counts as pinned."""
    if "@sha256:" in image:
        return image.split("@", 1)[0], "digest"
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = image.rsplit(":", 1)
        return name, tag
    return image, None


def _compose_sinergi_services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    return {n: s for n, s in services.items() if _image_name(s["image"])[0] == SINERGI_IMAGE}


def _process_of(args: list[Any]) -> str | None:
    """The process an argv runs, in EXPECTED_PROCESSES' terms."""
    words = [str(a) for a in args]
    if words[:1] == ["worker"] and len(words) > 1:
        return f"worker {words[1]}"
    if words[:1] in (["api"], ["webhooks"]) and len(words) > 1:
        return f"{words[0]} {words[1]}"
    return None


def _metrics_port(args: list[Any]) -> int | None:
    words = [str(a) for a in args]
    return int(words[words.index("--metrics-port") + 1]) if "--metrics-port" in words else None


def _process_port(args: list[Any]) -> int:
    """The port the process serves its probes on: the API's port from Settings, else --metrics-port."""
    process = _process_of(args)
    defaults = Settings()
    if process == "api bank":
        return defaults.bank_api_port
    if process == "api kbri":
        return defaults.kbri_api_port
    port = _metrics_port(args)
    assert port is not None, f"{process} serves no probe port (--metrics-port missing)"
    return port


def _deployments() -> list[dict[str, Any]]:
    return [d for d in _k8s_docs() if d["kind"] == "Deployment"]


def _sinergi_pods() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(owner name, pod spec, sinergi container) for every Deployment and Job running the hub image."""
    for doc in _k8s_docs():
        if doc["kind"] not in {"Deployment", "Job"}:
            continue
        pod = doc["spec"]["template"]["spec"]
        for container in pod["containers"]:
            if _image_name(container["image"])[0] == SINERGI_IMAGE:
                yield doc["metadata"]["name"], pod, container


def _configmap(name: str) -> dict[str, str]:
    maps = [d for d in _k8s_docs() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name]
    assert len(maps) == 1, f"ConfigMap {name} is not defined exactly once"
    return {k: str(v) for k, v in maps[0]["data"].items()}


def _dockerfile_final_stage() -> list[str]:
    lines = _dockerfile_instructions()
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[last_from:]


def _dockerfile_instructions() -> list[str]:
    """Instructions with continuation lines joined and comments dropped."""
    joined, current = [], ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        current = f"{current} {line.rstrip(chr(92)).strip()}" if current else line.rstrip(chr(92)).strip()
        if not line.endswith("\\"):
            joined.append(current)
            current = ""
    return joined


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in _dockerfile_final_stage():
        if line.upper().startswith("ENV "):
            for name, value in re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", line[4:]):
                env[name] = value
    return env


# --- every file parses --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_under_deploy_parses(path: Path) -> None:
    assert _docs(path), f"{path} holds no document"


def test_no_secret_looking_text_anywhere_under_deploy() -> None:
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        hits = SECRET_LOOKING.findall(path.read_text(encoding="utf-8", errors="replace"))
        assert not hits, f"{path.relative_to(REPO)} holds secret-looking text: {hits}"


# --- Kafka durability ---------------------------------------------------------------------------------------------
def test_compose_runs_three_kraft_brokers_with_durable_defaults() -> None:
    services = _compose()["services"]
    brokers = {
        n: _env_map(s.get("environment"))
        for n, s in services.items()
        if _image_name(s["image"])[0] in {"apache/kafka", "bitnami/kafka"}
    }
    assert len(brokers) == 3, f"expected 3 brokers, found {sorted(brokers)}"
    node_ids = {env["KAFKA_NODE_ID"] for env in brokers.values()}
    assert len(node_ids) == 3
    for name, env in brokers.items():
        assert "controller" in env["KAFKA_PROCESS_ROLES"], f"{name}: not KRaft"
        assert len(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == 3, name
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3", name
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2", name
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false", name
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", name
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3", name
        assert name in env["KAFKA_ADVERTISED_LISTENERS"], f"{name} advertises another host"
        assert services[name].get("volumes"), f"{name} keeps its log on the container layer"


def test_strimzi_cluster_has_three_brokers_with_durable_defaults() -> None:
    docs = _k8s_docs()
    kafkas = [d for d in docs if d["kind"] == "Kafka"]
    assert len(kafkas) == 1
    kafka = kafkas[0]
    pools = [
        d
        for d in docs
        if d["kind"] == "KafkaNodePool" and d["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    ]
    assert sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"]) == 3
    assert sum(p["spec"]["replicas"] for p in pools if "controller" in p["spec"]["roles"]) in {3, 5}
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
    config = kafka["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3
    assert config["min.insync.replicas"] == 2
    assert config["unclean.leader.election.enable"] is False
    assert config["auto.create.topics.enable"] is False
    assert config["offsets.topic.replication.factor"] == 3
    # The hub's bootstrap address is this cluster's bootstrap Service.
    bootstrap = _configmap("sinergi-config")["SINERGI_KAFKA_BOOTSTRAP"]
    assert bootstrap.startswith(f"{kafka['metadata']['name']}-kafka-bootstrap.")


def test_topics_are_created_with_replication_factor_three() -> None:
    compose_env = _env_map(_compose()["services"]["topics"]["environment"])
    assert compose_env["SINERGI_KAFKA_REPLICATION_FACTOR"] == "3"
    assert _configmap("sinergi-config")["SINERGI_KAFKA_REPLICATION_FACTOR"] == "3"


# --- compose: processes, probes, limits -------------------------------------------------------------------------
def test_compose_covers_every_process_once() -> None:
    processes = [_process_of(s["command"]) for s in _compose_sinergi_services().values()]
    deployed = [p for p in processes if p is not None]
    assert sorted(deployed) == sorted(EXPECTED_PROCESSES)


def test_compose_sinergi_services_have_health_checks_and_limits() -> None:
    for name, service in _compose_sinergi_services().items():
        limits = service["deploy"]["resources"]["limits"]
        assert limits.get("cpus") and limits.get("memory"), f"{name}: no resource limits"
        if _process_of(service["command"]) is None:
            assert service["command"] == ["topics", "create"], f"{name}: neither a process nor the topics job"
            assert str(service["restart"]).startswith("on-failure"), "the topics job must not run forever"
            continue
        check = service["healthcheck"]
        assert not check.get("disable"), f"{name}: health check disabled"
        test = " ".join(check["test"])
        port = _process_port(service["command"])
        assert f"127.0.0.1:{port}/readyz" in test, f"{name}: health check does not probe /readyz on {port}"
        assert service["restart"] == "unless-stopped", name
        assert service.get("read_only") is True, f"{name}: writable root filesystem"


def test_compose_orders_start_up() -> None:
    services = _compose()["services"]
    for name, service in _compose_sinergi_services().items():
        if name == "topics":
            continue
        depends = service["depends_on"]
        assert depends["topics"]["condition"] == "service_completed_successfully", name
        assert depends["schema-registry"]["condition"] == "service_healthy", name
    assert services["topics"]["command"] == ["topics", "create"]


def test_compose_monitoring_mounts_the_prometheus_and_grafana_directories() -> None:
    services = _compose()["services"]
    prometheus = [str(v).split(":")[0] for v in services["prometheus"]["volumes"]]
    grafana = [str(v).split(":")[0] for v in services["grafana"]["volumes"]]
    assert "./prometheus" in prometheus
    assert {"./grafana/provisioning", "./grafana/dashboards"} <= set(grafana)
    for relative in ("./prometheus", "./grafana/provisioning", "./grafana/dashboards"):
        assert (DEPLOY / relative).is_dir(), f"deploy/{relative[2:]} is mounted but does not exist"


# --- secrets ------------------------------------------------------------------------------------------------------
def _check_secret_named(name: str, value: str, secret_dirs: tuple[str, ...], where: str) -> None:
    if not SECRET_NAME.search(name) or value in NOT_A_SECRET:
        return
    if name.endswith("_FILE") and value.startswith(secret_dirs):
        return
    raise AssertionError(f"{where}: {name} carries a literal value; use a secret reference or a mounted file")


def test_compose_secrets_come_from_files_never_from_values() -> None:
    doc = _compose()
    for secret in doc["secrets"].values():
        assert set(secret) == {"file"}, "compose secrets come from operator files only"
        assert secret["file"].startswith("./secrets/")
    for name, service in doc["services"].items():
        for key, value in _env_map(service.get("environment")).items():
            mounted = tuple(f"/run/secrets/{s}" for s in service.get("secrets", []))
            _check_secret_named(key, value, mounted, f"compose {name}")
        for env_file in service.get("env_file", []):
            assert str(env_file).startswith("secrets/"), f"{name}: env_file outside deploy/secrets/"


def test_k8s_secrets_are_references_only() -> None:
    docs = _k8s_docs()
    assert not [d for d in docs if d["kind"] == "Secret"], "no Secret object (with values) belongs in the repo"
    for key, value in _configmap("sinergi-config").items():
        _check_secret_named(key, value, (), "ConfigMap sinergi-config")
    for doc in docs:
        if doc["kind"] not in {"Deployment", "Job", "StatefulSet"}:
            continue
        pod = doc["spec"]["template"]["spec"]
        secret_volumes = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
        for container in pod["containers"]:
            mounts = tuple(m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] in secret_volumes)
            for env in container.get("env", []):
                if "valueFrom" in env:
                    continue
                _check_secret_named(env["name"], str(env["value"]), mounts, doc["metadata"]["name"])


def test_production_env_example_holds_placeholders_only() -> None:
    for line in (DEPLOY / "production.env.example").read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        name, value = line.split("=", 1)
        if SECRET_NAME.search(name) and value not in NOT_A_SECRET and not name.endswith("_FILE"):
            assert value.startswith("<") and value.endswith(">"), f"{name} is not a placeholder"


# --- the environment each process gets ------------------------------------------------------------------------------
def _compose_process_envs() -> Iterator[tuple[str, dict[str, str]]]:
    image_env = _dockerfile_env()
    for name, service in _compose_sinergi_services().items():
        env = {**image_env, **_env_map(service.get("environment"))}
        files = [str(f) for f in service.get("env_file", [])]
        # What deploy/README.md tells the operator to put in each env file.
        env.update({k: v for k, v in SECRET_STANDINS.items() if k != "SINERGI_OFFICE_WEBHOOKS"})
        if "secrets/webhooks.env" in files:
            env["SINERGI_OFFICE_WEBHOOKS"] = SECRET_STANDINS["SINERGI_OFFICE_WEBHOOKS"]
        yield f"compose {name}", env


def _k8s_process_envs() -> Iterator[tuple[str, dict[str, str]]]:
    image_env = _dockerfile_env()
    for owner, _pod, container in _sinergi_pods():
        env = dict(image_env)
        for source in container.get("envFrom", []):
            env.update(_configmap(source["configMapRef"]["name"]))
        for item in container.get("env", []):
            if "valueFrom" in item:
                assert "secretKeyRef" in item["valueFrom"] or "fieldRef" in item["valueFrom"], owner
                env[item["name"]] = SECRET_STANDINS[item["name"]]
            else:
                env[item["name"]] = str(item["value"])
        yield f"k8s {owner}", env


def _all_process_envs() -> list[tuple[str, dict[str, str]]]:
    return [*_compose_process_envs(), *_k8s_process_envs()]


def test_every_sinergi_variable_is_a_real_setting() -> None:
    fields = set(Settings.model_fields)
    names: set[str] = set()
    for _where, env in _all_process_envs():
        names |= {k for k in env if k.startswith("SINERGI_")}
    names |= {k for k in _configmap("sinergi-config") if k.startswith("SINERGI_")}
    names |= {k for k in _dockerfile_env() if k.startswith("SINERGI_")}
    for line in (DEPLOY / "production.env.example").read_text(encoding="utf-8").splitlines():
        if line.startswith("SINERGI_"):
            names.add(line.split("=", 1)[0])
    names |= set(re.findall(r"SINERGI_[A-Z0-9_]+", (DEPLOY / "README.md").read_text(encoding="utf-8")))
    unknown = sorted(n for n in names if n.removeprefix("SINERGI_").lower().split("__")[0] not in fields)
    assert not unknown, f"not Settings fields: {unknown}"


@pytest.mark.parametrize("where,env", _all_process_envs(), ids=lambda v: v if isinstance(v, str) else "")
def test_each_process_environment_passes_the_production_check(
    where: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    for key in [k for k in os.environ if k.startswith("SINERGI_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    settings.check_production_safety()  # raises on any development default left in place
    assert settings.environment == "production", where
    assert settings.kafka_replication_factor == 3, where
    assert settings.schema_registry_url, f"{where}: would serve the embedded registry"
    assert settings.http_host == "0.0.0.0", f"{where}: probes and scrapes could not reach a loopback bind"


def test_each_api_reads_its_partner_credentials_from_a_mounted_file() -> None:
    by_process: dict[str, list[dict[str, str]]] = {}
    for service in _compose_sinergi_services().values():
        by_process.setdefault(str(_process_of(service["command"])), []).append(_env_map(service.get("environment")))
    for _owner, _pod, container in _sinergi_pods():
        env = {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}
        by_process.setdefault(str(_process_of(container["args"])), []).append(env)
    for env in by_process["api bank"]:
        assert env.get("SINERGI_BANK_SECRETS_FILE"), "the bank API has no bank secrets file"
    for env in by_process["api kbri"]:
        assert env.get("SINERGI_OFFICE_CREDENTIALS_FILE"), "the KBRI API has no office credentials file"
    for process, envs in by_process.items():
        if process.startswith("worker"):
            for env in envs:
                assert "SINERGI_BANK_SECRETS_FILE" not in env, f"{process} holds the banks' secrets"


# --- Kubernetes: processes, probes, limits, security ------------------------------------------------------------------
def test_k8s_covers_every_process_once() -> None:
    processes = [
        _process_of(c["args"])
        for d in _deployments()
        for c in d["spec"]["template"]["spec"]["containers"]
        if _image_name(c["image"])[0] == SINERGI_IMAGE
    ]
    assert sorted(p for p in processes if p is not None) == sorted(EXPECTED_PROCESSES)
    jobs = [c["args"] for owner, _pod, c in _sinergi_pods() if owner == "sinergi-topics-create"]
    assert jobs == [["topics", "create"]]


def _port_number(container: dict[str, Any], port: Any) -> int:
    if isinstance(port, int):
        return port
    return next(int(p["containerPort"]) for p in container["ports"] if p["name"] == port)


def test_k8s_sinergi_containers_have_probes_limits_and_a_locked_down_context() -> None:
    for owner, pod, container in _sinergi_pods():
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert resources[kind].get("cpu") and resources[kind].get("memory"), f"{owner}: no {kind}"
        assert pod["securityContext"]["runAsNonRoot"] is True, owner
        assert pod["securityContext"]["runAsUser"] != 0, owner
        assert pod.get("automountServiceAccountToken") is False, owner
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, owner
        assert context["allowPrivilegeEscalation"] is False, owner
        assert context["capabilities"]["drop"] == ["ALL"], owner
        if owner == "sinergi-topics-create":
            continue
        port = _process_port(container["args"])
        ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
        assert ready["path"] == "/readyz" and live["path"] == "/healthz", owner
        assert _port_number(container, ready["port"]) == port == _port_number(container, live["port"]), owner


def test_k8s_pods_are_scraped_on_their_metrics_port() -> None:
    for doc in _deployments():
        template = doc["spec"]["template"]
        container = template["spec"]["containers"][0]
        if _image_name(container["image"])[0] != SINERGI_IMAGE:
            continue
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == _process_port(container["args"]), doc["metadata"]["name"]
        assert annotations["prometheus.io/path"] == "/metrics"


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_k8s_apis_have_a_service_and_a_disruption_budget() -> None:
    docs = _k8s_docs()
    for doc in _deployments():
        container = doc["spec"]["template"]["spec"]["containers"][0]
        if not str(_process_of(container.get("args", []))).startswith("api "):
            continue
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert _selects(doc["spec"]["selector"]["matchLabels"], labels)
        services = [d for d in docs if d["kind"] == "Service" and _selects(d["spec"]["selector"], labels)]
        assert services, f"{doc['metadata']['name']}: no Service"
        assert any(
            _port_number(container, p["targetPort"]) == _process_port(container["args"])
            for p in services[0]["spec"]["ports"]
        )
        budgets = [
            d
            for d in docs
            if d["kind"] == "PodDisruptionBudget" and _selects(d["spec"]["selector"]["matchLabels"], labels)
        ]
        assert budgets, f"{doc['metadata']['name']}: no PodDisruptionBudget"
        assert doc["spec"]["replicas"] > budgets[0]["spec"]["minAvailable"], "a drain could never proceed"


def test_kustomizations_list_exactly_the_files_beside_them() -> None:
    for kustomization in sorted(K8S.rglob("kustomization.yaml")):
        (doc,) = _docs(kustomization)
        listed = set(doc["resources"])
        present = {p.name for p in kustomization.parent.glob("*.yaml") if p.name != "kustomization.yaml"}
        assert listed == present, (
            f"{kustomization.relative_to(REPO)}: listed {sorted(listed)}, present {sorted(present)}"
        )
        for image in doc.get("images", []):
            assert image["newTag"] and image["newTag"] != "latest"


# --- images -------------------------------------------------------------------------------------------------------
def _all_images() -> Iterator[tuple[str, str]]:
    for name, service in _compose()["services"].items():
        yield f"compose {name}", service["image"]
    for doc in _k8s_docs():
        if doc["kind"] in {"Deployment", "Job", "StatefulSet"}:
            for container in doc["spec"]["template"]["spec"]["containers"]:
                yield doc["metadata"]["name"], container["image"]
    for line in _dockerfile_instructions():
        if line.upper().startswith("ARG PYTHON_IMAGE="):
            yield "Dockerfile", line.split("=", 1)[1]


def test_every_image_tag_is_pinned() -> None:
    images = list(_all_images())
    assert len(images) > 10
    for where, image in images:
        _name, tag = _image_name(image)
        assert tag is not None and tag != "latest", f"{where}: {image} is not pinned"


# --- Dockerfile -------------------------------------------------------------------------------------------------------
def test_dockerfile_is_multi_stage_non_root_and_has_no_secrets() -> None:
    lines = _dockerfile_instructions()
    froms = [line for line in lines if line.upper().startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage: the build tools stay out of the runtime image"
    assert any("python:3.11-slim" in line for line in lines if line.upper().startswith("ARG PYTHON_IMAGE="))
    final = _dockerfile_final_stage()
    users = [line.split(None, 1)[1] for line in final if line.upper().startswith("USER ")]
    assert users, "the runtime stage runs as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"} and user.isdigit(), "USER must be a numeric non-root uid (runAsNonRoot)"
    for line in lines:
        keyword = line.split(None, 1)[0].upper()
        if keyword in {"ENV", "ARG"}:
            for name in re.findall(r"([A-Z_][A-Z0-9_]*)=", line[len(keyword) :]):
                assert not SECRET_NAME.search(name), f"Dockerfile bakes {name} into the image"
        if keyword in {"COPY", "ADD"}:
            assert not re.search(r"\.env\b|secrets|\.pem\b", line), f"Dockerfile copies secret material: {line}"
    assert not SECRET_LOOKING.search(DOCKERFILE.read_text(encoding="utf-8"))
    entrypoint = next(line for line in final if line.upper().startswith("ENTRYPOINT "))
    assert entrypoint.split(None, 1)[1] == '["sinergi"]'
    # Settings resolve schemas beside the package by default; a site-packages install must name them.
    env = _dockerfile_env()
    assert env["SINERGI_SCHEMAS_DIR"] == "/app/schemas"
    assert any(line.startswith("COPY schemas /app/schemas") for line in final)


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_build_context() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()}
    assert {".git", ".venv", "var", "deploy", "**/*.env"} <= ignored


# --- Kafka clients in the code ------------------------------------------------------------------------------------
# aiokafka producers that are acks=all without idempotence, and why. A new one must be added here on purpose.
NOT_IDEMPOTENT = {
    # aiokafka's idempotent producer needs InitProducerId v0, which the embedded Tansu broker refuses; the
    # consumer side drops redeliveries by member version.
    "connectors/core/publisher.py",
    "services/core_sim.py",  # demo only
    "services/bench.py",  # the raw-aiokafka baseline of the benchmark
}


def _calls(name: str) -> Iterator[tuple[str, ast.Call]]:
    for root in ("services", "connectors"):
        for path in sorted((REPO / root).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    func = node.func
                    called = (
                        func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                    )
                    if called == name:
                        yield str(path.relative_to(REPO)), node


def _kwarg(call: ast.Call, name: str) -> Any:
    for keyword in call.keywords:
        if keyword.arg == name:
            try:
                return ast.literal_eval(keyword.value)
            except ValueError:
                return keyword.value  # an expression: the caller inspects the node
    return inspect.Parameter.empty


def test_edge_producers_are_acks_all_and_idempotent() -> None:
    config = producer_config("127.0.0.1:9092", Settings())
    assert config["acks"] == "all"
    assert config["enable.idempotence"] is True


def test_aiokafka_producers_are_acks_all() -> None:
    found = list(_calls("AIOKafkaProducer"))
    assert found
    for where, call in found:
        assert _kwarg(call, "acks") == "all", f"{where}:{call.lineno} is not acks=all"
        if where not in NOT_IDEMPOTENT:
            assert _kwarg(call, "enable_idempotence") is True, f"{where}:{call.lineno} is not idempotent"


def test_consumers_in_a_group_never_auto_commit() -> None:
    found = list(_calls("AIOKafkaConsumer"))
    assert found
    for where, call in found:
        group = _kwarg(call, "group_id")
        if group is inspect.Parameter.empty or group is None:
            continue  # no group: nothing is committed
        assert _kwarg(call, "enable_auto_commit") is False, f"{where}:{call.lineno} auto-commits"
    confluent = [(w, c, c.args[0]) for w, c in _calls("Consumer") if c.args and isinstance(c.args[0], ast.Dict)]
    assert confluent
    for where, call, literal in confluent:
        config = {ast.literal_eval(k): v for k, v in zip(literal.keys, literal.values, strict=True) if k}
        if "group.id" in config:
            assert ast.literal_eval(config["enable.auto.commit"]) is False, f"{where}:{call.lineno} auto-commits"


def test_faust_workers_produce_with_acks_all_and_commit_themselves() -> None:
    (app_call,) = [c for w, c in _calls("App") if w == "services/app.py"]
    assert _kwarg(app_call, "producer_acks") == -1  # -1 is acks=all
    assert _kwarg(app_call, "processing_guarantee") == "at_least_once"
    commit = _kwarg(app_call, "broker_commit_interval")
    assert isinstance(commit, ast.Attribute) and commit.attr == "commit_interval_s", "commit interval not from Settings"
    # Faust's worker consumer commits itself after processing (never the client's auto-commit): pinned here so a
    # Faust upgrade that changes it fails this test rather than silently losing at-least-once.
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    source = inspect.getsource(AIOKafkaConsumerThread._create_worker_consumer)
    assert "enable_auto_commit=False" in source
