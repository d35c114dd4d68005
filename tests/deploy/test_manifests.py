"""The Kubernetes manifests in deploy/: every kustomization renders with `kubectl kustomize`, every
object validates offline against the Kubernetes schemas (kubernetes-validate bundles them), and the
things that decide whether the service runs well are as intended: probes on our routes and port, a
grace period longer than the drain, GPUs where they belong, an autoscaler on metrics the adapter
serves, shared volumes mounted where the settings point."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kv
from starlette.routing import Route

from avatar.config import PROJECT_ROOT, Settings, load_settings
from avatar.server.routes import ROUTES

DEPLOY = PROJECT_ROOT / "deploy"
BUILDS = ["overlays/gpu", "overlays/cpu", "prometheus-adapter", "jobs/prepare-models"]
KUBERNETES_VERSIONS = ["1.29.0", kv.latest_version()]  # the oldest release we support, the newest bundled
CUSTOM_RESOURCES = {("monitoring.coreos.com/v1", "ServiceMonitor")}  # no schema offline; checked below
QUEUE_METRICS = {"avatar_queue_waiting", "avatar_queue_running"}  # exported by avatar/server/metrics.py


@cache
def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip(
            "kubectl is not installed (make system-deps installs it where the apt sources carry it): the manifests "
            "cannot be rendered here"
        )
    return found


@cache
def render(target: str) -> tuple[dict[str, Any], ...]:
    """``kubectl kustomize`` of ``target`` (a folder under deploy/, or an absolute path)."""
    path = Path(target) if Path(target).is_absolute() else DEPLOY / target
    done = subprocess.run(
        [kubectl(), "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"kubectl kustomize {target} failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def one(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    """The object of ``kind`` named ``name`` (generated ConfigMaps and Secrets carry a hash suffix)."""
    pattern = re.compile(rf"{re.escape(name)}(-[a-z0-9]{{10}})?")
    found = [d for d in docs if d["kind"] == kind and pattern.fullmatch(d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def server(docs: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The avatar Deployment and its server container."""
    deployment = one(docs, "Deployment", "avatar")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return deployment, next(c for c in containers if c["name"] == "avatar")


def settings_of(docs: tuple[dict[str, Any], ...]) -> dict[str, str]:
    return dict(one(docs, "ConfigMap", "avatar-config")["data"])


def _objects() -> Iterator[tuple[str, dict[str, Any]]]:
    for target in BUILDS:
        for doc in render(target):
            yield target, doc


@pytest.mark.parametrize("target", BUILDS)
def test_renders(target: str) -> None:
    assert render(target), f"{target} rendered nothing"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("target", BUILDS)
def test_every_object_validates_against_the_kubernetes_schemas(target: str, version: str) -> None:
    checked = 0
    for doc in render(target):
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_RESOURCES:
            continue
        try:
            kv.validate(doc, version, strict=True)  # strict: unknown fields are errors too
        except kv.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{target}: {doc['kind']}/{doc['metadata']['name']} invalid at {where}: {exc.message}")
        except kv.SchemaNotFoundError as exc:
            pytest.fail(f"{target}: {exc.message}")
        checked += 1
    assert checked >= 1


@pytest.mark.parametrize("overlay", ["overlays/gpu", "overlays/cpu"])
def test_probes_point_at_our_routes_and_port(overlay: str) -> None:
    docs = render(overlay)
    _, container = server(docs)
    routes = {r.path for r in ROUTES if isinstance(r, Route) and "GET" in (r.methods or set())}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(settings_of(docs)["AVATAR_PORT"])
    expected = {"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path and path in routes, (probe, get)
        assert get["port"] == "http"
    # Room to load the models before liveness counts: at least a minute, more on a GPU.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= (600 if "gpu" in overlay else 120)


@pytest.mark.parametrize("overlay", ["overlays/gpu", "overlays/cpu"])
def test_grace_period_outlasts_the_drain(overlay: str) -> None:
    docs = render(overlay)
    deployment, container = server(docs)
    drain = float(settings_of(docs)["AVATAR_SHUTDOWN_GRACE_SECONDS"])
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > pause + drain + 10, (grace, pause, drain)  # and a little for releasing the models


def test_gpu_requested_by_the_gpu_overlay_only() -> None:
    _, gpu = server(render("overlays/gpu"))
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["resources"]["requests"]["nvidia.com/gpu"] == 1
    for doc in render("overlays/cpu"):
        assert "nvidia.com/gpu" not in yaml.safe_dump(doc), f"{doc['kind']}/{doc['metadata']['name']} asks for a GPU"


def test_settings_are_known_and_valid() -> None:
    known = {f"AVATAR_{name.upper()}" for name in Settings.__dataclass_fields__}
    for overlay in ("overlays/gpu", "overlays/cpu"):
        values = settings_of(render(overlay))
        assert set(values) <= known, set(values) - known
        load_settings(values)  # raises ConfigError naming a bad value


@pytest.mark.parametrize("overlay", ["overlays/gpu", "overlays/cpu"])
def test_state_is_shared_where_the_settings_point(overlay: str) -> None:
    docs = render(overlay)
    deployment, container = server(docs)
    settings = settings_of(docs)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    # Results on the shared ReadWriteMany claim, under the mount.
    data = next(m for path, m in mounts.items() if settings["AVATAR_OUTPUT_DIR"].startswith(path + "/"))
    claim = volumes[data["name"]]["persistentVolumeClaim"]["claimName"]
    assert one(docs, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]
    # Models read-only where AVATAR_MODELS_DIR says.
    models = mounts[settings["AVATAR_MODELS_DIR"]]
    assert models["readOnly"] is True
    # Sessions in Redis: the URL comes from a Secret that exists in the same build.
    redis_env = next(e for e in container["env"] if e["name"] == "AVATAR_REDIS_URL")
    ref = redis_env["valueFrom"]["secretKeyRef"]
    secret = one(docs, "Secret", ref["name"])
    assert ref["key"] in secret["data"]
    assert one(docs, "Service", "avatar-redis")["spec"]["ports"][0]["port"] == 6379
    # Every namespaced object in the avatar namespace.
    namespaced = [d for d in docs if d["kind"] != "Namespace"]
    assert {d["metadata"].get("namespace") for d in namespaced} == {"avatar"}


def test_cpu_overlay_prepares_models_into_scratch_space() -> None:
    docs = render("overlays/cpu")
    deployment, _ = server(docs)
    spec = deployment["spec"]["template"]["spec"]
    models = next(v for v in spec["volumes"] if v["name"] == "models")
    assert "emptyDir" in models and "persistentVolumeClaim" not in models
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == "avatar-models"]
    init = next(c for c in spec["initContainers"] if c["name"] == "prepare-models")
    assert init["command"] == ["avatar", "models", "prepare"]


@pytest.mark.parametrize("overlay", ["overlays/gpu", "overlays/cpu"])
def test_service_pdb_and_autoscaler_select_the_server(overlay: str) -> None:
    docs = render(overlay)
    deployment, _ = server(docs)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = one(docs, "Service", "avatar")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = one(docs, "PodDisruptionBudget", "avatar")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    hpa = one(docs, "HorizontalPodAutoscaler", "avatar")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "avatar"}
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


@pytest.mark.parametrize("overlay", ["overlays/gpu", "overlays/cpu"])
def test_autoscaler_scales_on_the_queue_metrics_the_adapter_serves(overlay: str) -> None:
    hpa = one(render(overlay), "HorizontalPodAutoscaler", "avatar")
    names = set()
    for metric in hpa["spec"]["metrics"]:
        assert metric["type"] == "Pods"  # per replica, averaged over the replicas
        names.add(metric["pods"]["metric"]["name"])
        assert metric["pods"]["target"]["type"] == "AverageValue"
    assert names == QUEUE_METRICS
    adapter = render("prometheus-adapter")
    config_map = one(adapter, "ConfigMap", "avatar-adapter-config")
    rules = yaml.safe_load(config_map["data"]["config.yaml"])["rules"]
    served = set()
    for rule in rules:
        series = re.search(r'__name__=~"([^"]+)"', rule["seriesQuery"])
        assert series, rule["seriesQuery"]
        for name in QUEUE_METRICS:
            if re.fullmatch(series.group(1), name) and re.fullmatch(rule["name"]["matches"], name):
                served.add(re.sub(rule["name"]["matches"], rule["name"]["as"].replace("${1}", r"\1"), name))
        assert {o["resource"] for o in rule["resources"]["overrides"].values()} >= {"pod", "namespace"}
    assert served == QUEUE_METRICS


def test_prometheus_adapter_wiring() -> None:
    docs = render("prometheus-adapter")
    deployment = one(docs, "Deployment", "avatar-prometheus-adapter")
    spec = deployment["spec"]["template"]["spec"]
    config_volume = next(v for v in spec["volumes"] if v["name"] == "config")
    assert config_volume["configMap"]["name"] == one(docs, "ConfigMap", "avatar-adapter-config")["metadata"]["name"]
    args = spec["containers"][0]["args"]
    assert "--config=/etc/adapter/config.yaml" in args
    api = one(docs, "APIService", "v1beta1.custom.metrics.k8s.io")["spec"]
    service = one(docs, "Service", "avatar-prometheus-adapter")
    assert api["service"] == {"name": service["metadata"]["name"], "namespace": service["metadata"]["namespace"]}
    auth_reader = one(docs, "RoleBinding", "avatar-prometheus-adapter-auth-reader")
    assert auth_reader["metadata"]["namespace"] == "kube-system"


def test_pods_are_scraped_by_annotation_or_service_monitor(tmp_path: Path) -> None:
    deployment, container = server(render("overlays/gpu"))
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]
    # The optional component for the Prometheus Operator, composed as a user's overlay would.
    overlay, component = (os.path.relpath(DEPLOY / p, tmp_path) for p in ("overlays/gpu", "components/servicemonitor"))
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: avatar\n"
        f"resources: ['{overlay}']\ncomponents: ['{component}']\n"
    )
    docs = render(str(tmp_path))
    monitor = one(docs, "ServiceMonitor", "avatar")
    service = one(docs, "Service", "avatar")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_the_models_job_fills_the_claim_the_replicas_read() -> None:
    job = one(render("jobs/prepare-models"), "Job", "avatar-prepare-models")
    spec = job["spec"]["template"]["spec"]
    claim = spec["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == "avatar-models" and one(render("overlays/gpu"), "PersistentVolumeClaim", claim)
    assert job["metadata"]["namespace"] == "avatar"
    mount = spec["containers"][0]["volumeMounts"][0]
    assert mount["mountPath"] == settings_of(render("overlays/gpu"))["AVATAR_MODELS_DIR"]
    assert not mount.get("readOnly")
