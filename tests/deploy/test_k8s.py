"""The Kubernetes base in deploy/k8s: rendered as kustomize would, each object valid against the
Kubernetes JSON schemas (kubernetes-validate ships them: no cluster, no network), and wired as the
service needs: probes, resources, the mappings ConfigMap where SYNC_MAPPINGS_DIR points (hot reload
on a ConfigMap update), the migration Job before the other roles, two schedulers, PDBs and an HPA.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from sync_worker.canonical import StageKey
from sync_worker.mappings import MappingsHolder, load_mappings
from sync_worker.settings import Settings, describe_settings

from .kustomize import render

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "deploy" / "k8s"
KUBERNETES = "1.30"  # the oldest release the base is meant for; its schemas ship in kubernetes-validate
HEALTHCHECK = "/opt/sync-worker/healthcheck.py"
OBJECTS = render(BASE)


def one(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in OBJECTS if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, [(o["kind"], o["metadata"]["name"]) for o in OBJECTS])
    return found[0]


def pod_of(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def workloads() -> list[dict[str, Any]]:
    return [o for o in OBJECTS if o["kind"] in {"Deployment", "Job"}]


def deployment(role: str) -> dict[str, Any]:
    return one("Deployment", f"sync-worker-{role}")


@pytest.mark.parametrize("obj", OBJECTS, ids=lambda o: f"{o['kind']}/{o['metadata']['name']}")
def test_every_object_is_valid_against_the_kubernetes_schemas(obj: dict[str, Any]) -> None:
    # strict: no field the schema does not know (a typo is an error, not ignored)
    assert kubernetes_validate.validate(obj, KUBERNETES, strict=True) == KUBERNETES


def test_an_invalid_object_is_refused_by_the_same_check() -> None:
    broken = {**deployment("worker"), "spec": {**deployment("worker")["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_the_base_has_every_role_and_its_companions() -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in OBJECTS)
    assert kinds == [
        ("ConfigMap", "sync-worker-config"),
        ("ConfigMap", "sync-worker-mappings"),
        ("Deployment", "sync-worker-receiver"),
        ("Deployment", "sync-worker-scheduler"),
        ("Deployment", "sync-worker-worker"),
        ("HorizontalPodAutoscaler", "sync-worker-receiver"),
        ("Job", "sync-worker-migrate"),
        ("PodDisruptionBudget", "sync-worker-receiver"),
        ("PodDisruptionBudget", "sync-worker-scheduler"),
        ("PodDisruptionBudget", "sync-worker-worker"),
        ("Secret", "sync-worker-credentials"),
        ("Service", "sync-worker-receiver"),
    ]


def test_each_role_runs_its_cli_command() -> None:
    def args(obj: dict[str, Any]) -> list[str]:
        return list(pod_of(obj)["containers"][0]["args"])

    assert args(one("Job", "sync-worker-migrate")) == ["db", "upgrade"]
    assert args(deployment("receiver"))[0] == "serve" and "--no-migrate" in args(deployment("receiver"))
    assert args(deployment("worker"))[0] == "worker"
    assert args(deployment("scheduler")) == ["scheduler"]
    images = {
        c["image"]
        for o in workloads()
        for c in [*pod_of(o)["containers"], *pod_of(o).get("initContainers", [])]
    }
    assert images == {"sync-worker:0.1.0"}  # the images transformer applied everywhere


def test_the_scheduler_has_two_replicas_and_only_one_leads_through_the_lease() -> None:
    assert deployment("scheduler")["spec"]["replicas"] == 2
    probes = pod_of(deployment("scheduler"))["containers"][0]
    assert probes["readinessProbe"]["exec"]["command"][-2:] == ["scheduler", "--deps"]


def test_receiver_probes_use_healthz_and_readyz_on_the_service_port() -> None:
    container = pod_of(deployment("receiver"))["containers"][0]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {"name": "http", "containerPort": 8000, "protocol": "TCP"} in container["ports"]
    assert "8000" in container["args"]
    service = one("Service", "sync-worker-receiver")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"] == deployment("receiver")["spec"]["template"]["metadata"]["labels"]


def test_the_receiver_scales_on_cpu() -> None:
    hpa = one("HorizontalPodAutoscaler", "sync-worker-receiver")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "sync-worker-receiver",
    }
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


@pytest.mark.parametrize("role", ["receiver", "worker", "scheduler"])
def test_each_deployment_has_a_disruption_budget_selecting_its_pods(role: str) -> None:
    budget = one("PodDisruptionBudget", f"sync-worker-{role}")
    labels = deployment(role)["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"] == labels
    assert deployment(role)["spec"]["selector"]["matchLabels"] == labels
    assert "minAvailable" in budget["spec"] or "maxUnavailable" in budget["spec"]


def test_every_container_has_requests_and_limits_and_runs_unprivileged() -> None:
    for obj in workloads():
        pod = pod_of(obj)
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in [*pod["containers"], *pod.get("initContainers", [])]:
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, (
                    obj["metadata"]["name"],
                    bound,
                )
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_worker_and_scheduler_probes_run_the_healthcheck_the_image_ships() -> None:
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert f"deploy/healthcheck.py {HEALTHCHECK}" in dockerfile
    for role in ("worker", "scheduler"):
        container = pod_of(deployment(role))["containers"][0]
        assert container["livenessProbe"]["exec"]["command"] == ["python", HEALTHCHECK, role]
        assert container["readinessProbe"]["exec"]["command"] == ["python", HEALTHCHECK, role, "--deps"]


def test_the_migration_job_runs_before_the_other_roles() -> None:
    for role in ("receiver", "worker", "scheduler"):
        init = pod_of(deployment(role))["initContainers"]
        assert [c["command"][:3] for c in init] == [["python", HEALTHCHECK, "migrated"]]
        assert "--wait" in init[0]["command"]


def test_every_pod_reads_the_config_and_the_secret() -> None:
    for obj in workloads():
        pod = pod_of(obj)
        for container in [*pod["containers"], *pod.get("initContainers", [])]:
            assert container["envFrom"] == [
                {"configMapRef": {"name": "sync-worker-config"}},
                {"secretRef": {"name": "sync-worker-credentials"}},
            ]


def test_config_and_secret_name_only_real_settings_and_keep_secrets_out_of_the_config() -> None:
    known = set(describe_settings(Settings(_env_file=None)))
    config = one("ConfigMap", "sync-worker-config")["data"]
    secret = one("Secret", "sync-worker-credentials")["stringData"]
    assert set(config) <= known and set(secret) <= known
    assert all(value for value in secret.values())  # an empty variable would not mean "unset"
    assert "SYNC_DATABASE_URL" in secret and "SYNC_DATABASE_URL" not in config
    assert config["SYNC_PUBLIC_URL"].startswith("https://")
    Settings(_env_file=None, **{k.removeprefix("SYNC_").lower(): v for k, v in {**config, **secret}.items()})


def test_the_mappings_configmap_is_mounted_where_sync_mappings_dir_points() -> None:
    path = one("ConfigMap", "sync-worker-config")["data"]["SYNC_MAPPINGS_DIR"]
    for role in ("receiver", "worker", "scheduler"):
        pod = pod_of(deployment(role))
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == path]
        assert len(mounts) == 1 and mounts[0]["readOnly"] is True
        assert "subPath" not in mounts[0]  # a subPath mount never sees a ConfigMap update
        assert volumes[mounts[0]["name"]]["configMap"] == {"name": "sync-worker-mappings"}


def test_the_mappings_configmap_holds_the_shipped_defaults_and_loads(tmp_path: Path) -> None:
    data = one("ConfigMap", "sync-worker-mappings")["data"]
    shipped = {p.name: p.read_text(encoding="utf-8") for p in (REPO / "mappings").glob("*.yaml")}
    assert data == shipped
    for name, text in data.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert (
        load_mappings(tmp_path).to_canonical(
            "pipedrive", pipeline=None, stage=None, stage_name="Demo Scheduled"
        )
        == StageKey.MEETING
    )


def _kubelet_write(volume: Path, files: dict[str, str], generation: int) -> None:
    """What the kubelet's atomic writer does on a ConfigMap update: the files go into a new
    timestamped directory, the ``..data`` symlink is swapped to it in one rename, and each key is a
    symlink through ``..data`` (https://kubernetes.io/docs/concepts/configuration/configmap/#mounted-configmaps-are-updated-automatically)."""
    stamp = volume / f"..2026_12_03_00_00_{generation:02d}.000000000"
    stamp.mkdir()
    for name, text in files.items():
        (stamp / name).write_text(text, encoding="utf-8")
    old = (volume / "..data").resolve() if (volume / "..data").exists() else None
    (volume / "..data_tmp").symlink_to(stamp.name)
    os.replace(volume / "..data_tmp", volume / "..data")
    for name in files:
        if not (volume / name).is_symlink():
            (volume / name).symlink_to(Path("..data") / name)
    if old is not None:
        for child in old.iterdir():
            child.unlink()
        old.rmdir()


def test_a_configmap_update_is_reloaded_without_a_restart(tmp_path: Path) -> None:
    data = dict(one("ConfigMap", "sync-worker-mappings")["data"])
    volume = tmp_path / "mappings"
    volume.mkdir()
    _kubelet_write(volume, data, 1)
    holder = MappingsHolder(volume, interval=0.05, logger=logging.getLogger("test.k8s"))
    holder.start()

    def demo_scheduled() -> object:
        return holder.current.to_canonical(
            "pipedrive", pipeline=None, stage=None, stage_name="Demo Scheduled"
        )

    try:
        assert demo_scheduled() == StageKey.MEETING
        # When the ConfigMap is updated (an admin remaps a stage) and the kubelet swaps the files
        old = "      - name: Demo Scheduled\n        canonical: meeting"
        assert data["pipedrive.yaml"].count(old) == 1
        data["pipedrive.yaml"] = data["pipedrive.yaml"].replace(
            old, "      - name: Demo Scheduled\n        canonical: qualified"
        )
        _kubelet_write(volume, data, 2)
        # Then the running holder serves the new mapping
        deadline = time.monotonic() + 10
        while demo_scheduled() != StageKey.QUALIFIED and time.monotonic() < deadline:
            time.sleep(0.02)
        assert demo_scheduled() == StageKey.QUALIFIED
    finally:
        holder.stop()
