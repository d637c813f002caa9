"""The Helm chart, rendered offline across the values files in deploy/helm/herald/ci/ (`make helm-lint`).

Each case is linted (helm lint --strict semantics), its values checked against values.schema.json, every
manifest of a built-in kind validated with kubernetes-validate's strict schemas for two Kubernetes versions,
and the properties an operator relies on asserted on the rendered YAML.
"""

from __future__ import annotations

import base64
import urllib.parse
from functools import cache
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from tests.deploy.helm import (
    CHART_DIR,
    CI_VALUES,
    RELEASE,
    chart,
    container,
    find,
    load_values,
    merge,
    one,
    render,
    render_text,
)

FULL = f"{RELEASE}-herald"
# The oldest Kubernetes the chart claims (Chart.yaml kubeVersion is >=1.27) and the build machines' kubectl.
K8S_VERSIONS = ("1.27.0", "1.32.0")
# Custom resources: kubernetes-validate has no schema for them; their fields are asserted below instead.
CRD_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PodMonitor"}
SECRET_SETTINGS = (
    "HERALD_DATABASE_URL",
    "HERALD_REDIS_URL",
    "HERALD_ENCRYPTION_KEYS",
    "HERALD_BOOTSTRAP_ADMIN_KEY",
)
DEPLOYMENTS = ("api", "worker", "beat")


def case_id(path: Path) -> str:
    return path.stem


@cache
def rendered(name: str) -> list[dict[str, Any]]:
    return render(load_values(CHART_DIR / "ci" / f"{name}.yaml"))


@pytest.fixture(params=CI_VALUES, ids=case_id)
def case(request: pytest.FixtureRequest) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    path: Path = request.param
    return load_values(path), rendered(path.stem)


def fullname(values: dict[str, Any]) -> str:
    return str(values.get("fullnameOverride") or FULL)


def deployments(docs: list[dict[str, Any]], values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c: one(docs, "Deployment", f"{fullname(values)}-{c}") for c in DEPLOYMENTS}


def test_matrix_is_not_empty() -> None:
    assert len(CI_VALUES) >= 3, "deploy/helm/herald/ci/ should hold several values files"


@pytest.mark.parametrize("values_file", CI_VALUES, ids=case_id)
def test_lint_is_clean(values_file: Path) -> None:
    report = helm_python.lint(CHART_DIR, load_values(values_file), strict=True, namespace="herald-ci")
    assert report["errors"] == []
    # Severity 1 is "info" (e.g. "icon is recommended"); warnings and errors fail.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values_file", CI_VALUES, ids=case_id)
def test_values_files_match_the_schema(values_file: Path) -> None:
    chart().validate_schema(chart().merge_values(load_values(values_file)))


@pytest.mark.parametrize(
    ("bad", "complaint"),
    [
        ({"config": {"HERALD_DATABASE_URL": "postgresql://u:p@h/db"}}, "HERALD_DATABASE_URL"),
        ({"config": {"HERALD_ENCRYPTION_KEYS": "k1:abc"}}, "HERALD_ENCRYPTION_KEYS"),
        ({"config": {"HERALD_QUEUE_NAME": "other"}}, "HERALD_QUEUE_NAME"),
        ({"config": {"not_herald": "x"}}, "not_herald"),
        ({"sendTimeoutSeconds": 45}, "sendTimeoutSeconds"),
        ({"worker": {"replicas": "three"}}, "replicas"),
        ({"keda": {"minReplicaCount": 0}}, "minReplicaCount"),
        ({"keda": {"redis": {"address": "redis://r:6379/0"}}}, "address"),
        ({"wokrer": {"replicas": 3}}, "wokrer"),
    ],
)
def test_schema_refuses_bad_values(bad: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm_python.HelmValuesError) as err:
        chart().validate_schema(chart().merge_values(bad))
    message = str(err.value)
    # The propertyNames check names the key; the others name the path.
    assert complaint in message or "propertyName" in message, message


def secret_settings() -> list[str]:
    """Every setting whose value is a secret: SecretStr fields, and the URLs that carry passwords."""
    from shared.config import Settings

    names = ["HERALD_DATABASE_URL", "HERALD_REDIS_URL"]
    for name, field in Settings.model_fields.items():
        if "SecretStr" in str(field.annotation):
            names.append(f"HERALD_{name.upper()}")
    return names


def test_schema_keeps_every_secret_setting_out_of_the_config_map() -> None:
    """A new SecretStr setting must be added to values.schema.json's refused names (or match its pattern)."""
    names = secret_settings()
    assert "HERALD_SLACK_CLIENT_SECRET" in names or len(names) >= 4
    for name in names:
        with pytest.raises(helm_python.HelmValuesError):
            chart().validate_schema(chart().merge_values({"config": {name: "x"}}))
    # ...while ordinary settings pass.
    chart().validate_schema(
        chart().merge_values({"config": {"HERALD_SLACK_CLIENT_ID": "1.2", "HERALD_RETRY_MAX_RETRIES": 3}})
    )


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({}, "secrets.values.databaseUrl is required"),
        (
            {"secrets": {"existingSecret": "s"}, "worker": {"terminationGracePeriodSeconds": 30}},
            "terminationGracePeriodSeconds (30) must exceed",
        ),
        ({"secrets": {"existingSecret": "s"}, "keda": {"enabled": True}}, "keda.redis.address"),
    ],
)
def test_render_refuses_unsafe_values_with_a_clear_message(values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm_python.HelmError) as err:
        render_text(values)
    assert complaint in str(err.value)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_strictly(case: tuple[dict[str, Any], list[dict[str, Any]]], version: str) -> None:
    _, docs = case
    validated = 0
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        # strict: unknown fields (a typo like `livenesProbe`) fail, not just wrong types.
        kubernetes_validate.validate(doc, version, strict=True)
        validated += 1
    assert validated >= 8


def test_strict_validation_catches_a_typo() -> None:
    """The validator really is strict (else the test above proves little)."""
    docs = rendered("default-values")
    deployment = one(docs, "Deployment", f"{FULL}-api")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {"periodSeconds": 3}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_every_rendered_kind_is_known(case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    _, docs = case
    builtin = {
        "ConfigMap",
        "Secret",
        "ServiceAccount",
        "Service",
        "Deployment",
        "Job",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Ingress",
    }
    assert {d["kind"] for d in docs} <= builtin | CRD_KINDS


def test_probes(case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    values, docs = case
    d = deployments(docs, values)
    api = container(d["api"], "api")
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert api["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert {p["name"]: p["containerPort"] for p in api["ports"]} == {"http": 8000}

    worker = container(d["worker"], "worker")
    max_age = str(merge(chart().values, values)["worker"]["liveness"]["maxAgeSeconds"])
    alive = ["/usr/local/bin/herald-entrypoint", "worker-alive", max_age]
    assert worker["livenessProbe"]["exec"]["command"] == alive
    assert worker["startupProbe"]["exec"]["command"] == alive
    # Generous: a liveness window shorter than a few heartbeat intervals (10 s) would restart healthy workers.
    live = worker["livenessProbe"]
    assert int(max_age) + live["periodSeconds"] * live["failureThreshold"] >= 60
    assert "celery" not in str(worker["livenessProbe"]), "no `celery inspect ping` in a probe"


def test_worker_grace_period_outlasts_the_longest_send(
    case: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    values, docs = case
    merged = merge(chart().values, values)
    send_timeout_s = merged["sendTimeoutSeconds"]
    worker = deployments(docs, values)["worker"]["spec"]["template"]["spec"]
    # A batch's sends run concurrently: send timeout + the deliver task's 5 s guard + database writes.
    assert worker["terminationGracePeriodSeconds"] > send_timeout_s + 20
    assert worker["terminationGracePeriodSeconds"] == merged["worker"]["terminationGracePeriodSeconds"]
    config = one(docs, "ConfigMap", fullname(values))["data"]
    assert float(config["HERALD_SEND_TIMEOUT_S"]) == send_timeout_s
    # The worker command is the image's entry point, so tini forwards SIGTERM to Celery's main process.
    args = container(deployments(docs, values)["worker"], "worker")["args"]
    assert args == ["worker", *merged["worker"]["extraArgs"]]
    assert "command" not in container(deployments(docs, values)["worker"], "worker")


def secret_strings(values: dict[str, Any]) -> list[str]:
    """Every secret value in a values file, plus the password inside each URL."""
    found: list[str] = []
    secrets = values.get("secrets", {})
    for value in [*(secrets.get("values") or {}).values(), *(secrets.get("extra") or {}).values()]:
        if not value:
            continue
        found.append(value)
        parts = urllib.parse.urlsplit(value)
        if parts.password:
            found.append(parts.password)
    return found


def test_no_plaintext_secrets(case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    values, docs = case
    merged = merge(chart().values, values)
    text = "\n".join(yaml.safe_dump(d) for d in docs)
    for secret in secret_strings(values):
        assert secret not in text, "a secret appears in plain text in the rendered chart"

    for cm in find(docs, "ConfigMap"):
        assert not set(cm["data"]) & set(SECRET_SETTINGS), "a secret setting is in a ConfigMap"

    secret_name = merged["secrets"]["existingSecret"] or fullname(values)
    keys = merged["secrets"]["keys"]
    key_of = {
        "HERALD_DATABASE_URL": keys["databaseUrl"],
        "HERALD_REDIS_URL": keys["redisUrl"],
        "HERALD_ENCRYPTION_KEYS": keys["encryptionKeys"],
        "HERALD_BOOTSTRAP_ADMIN_KEY": keys["bootstrapAdminKey"],
    }
    for component, deployment in deployments(docs, values).items():
        env = {e["name"]: e for e in container(deployment, component)["env"]}
        for setting in SECRET_SETTINGS:
            assert "value" not in env[setting], f"{setting} inlined in {component}"
            ref = env[setting]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == (secret_name, key_of[setting])
        extra = (
            merged["secrets"]["extraKeys"]
            if merged["secrets"]["existingSecret"]
            else merged["secrets"]["extra"]
        )
        for setting in extra:
            assert env[setting]["valueFrom"]["secretKeyRef"] == {"name": secret_name, "key": setting}

    if merged["secrets"]["existingSecret"]:
        assert find(docs, "Secret", fullname(values)) == []
    else:
        data = one(docs, "Secret", fullname(values))["data"]
        decoded = {k: base64.b64decode(v).decode() for k, v in data.items()}
        assert decoded[keys["databaseUrl"]] == merged["secrets"]["values"]["databaseUrl"]
        assert decoded[keys["encryptionKeys"]] == merged["secrets"]["values"]["encryptionKeys"]


def test_keda_scaled_object() -> None:
    values = load_values(CHART_DIR / "ci" / "full-values.yaml")
    docs = rendered("full-values")
    full = fullname(values)
    scaled = one(docs, "ScaledObject", f"{full}-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{full}-worker"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 30)
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "redis"
    # KEDA reads every trigger field as a string.
    assert trigger["metadata"] == {
        "address": "redis.internal:6380",
        "listName": "herald-prod",
        "listLength": "10",
        "activationListLength": "1",
        "databaseIndex": "2",
        "enableTLS": "true",
    }
    assert one(docs, "ConfigMap", full)["data"]["HERALD_QUEUE_NAME"] == trigger["metadata"]["listName"]
    auth = one(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "redis-auth", "key": "password"}
    ]
    # KEDA owns the replica count: a `replicas` in the Deployment would fight it on every upgrade.
    assert "replicas" not in one(docs, "Deployment", f"{full}-worker")["spec"]

    no_auth = rendered("keda-no-auth-values")
    scaled = one(no_auth, "ScaledObject", f"{FULL}-worker")
    assert "authenticationRef" not in scaled["spec"]["triggers"][0]
    assert find(no_auth, "TriggerAuthentication") == []


def test_keda_off_by_default() -> None:
    docs = rendered("default-values")
    assert find(docs, "ScaledObject") == []
    assert one(docs, "Deployment", f"{FULL}-worker")["spec"]["replicas"] == 2


def selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_pod_disruption_budgets(case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    values, docs = case
    merged = merge(chart().values, values)
    full = fullname(values)
    pdbs = {p["metadata"]["name"]: p for p in find(docs, "PodDisruptionBudget")}
    for component in ("api", "worker"):
        name = f"{full}-{component}"
        if not merged[component]["pdb"]["enabled"]:
            assert name not in pdbs
            continue
        pdb = pdbs.pop(name)
        assert pdb["spec"]["maxUnavailable"] == merged[component]["pdb"]["maxUnavailable"]
        own = one(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert selector_matches(pdb["spec"]["selector"]["matchLabels"], own)
        for other in DEPLOYMENTS:
            if other != component:
                labels = one(docs, "Deployment", f"{full}-{other}")["spec"]["template"]["metadata"]["labels"]
                assert not selector_matches(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdbs == {}, "no PDB for beat: one replica, it would only block node drains"


def test_beat_is_a_single_replica_recreated(case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    values, docs = case
    full = fullname(values)
    beat = one(docs, "Deployment", f"{full}-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert container(beat, "beat")["args"] == ["beat"]
    assert not [
        h
        for h in find(docs, "HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"]["name"].endswith("-beat")
    ]


def checksums(docs: list[dict[str, Any]], full: str = FULL) -> dict[str, dict[str, str]]:
    out = {}
    for component in DEPLOYMENTS:
        annotations = one(docs, "Deployment", f"{full}-{component}")["spec"]["template"]["metadata"][
            "annotations"
        ]
        out[component] = {k: v for k, v in annotations.items() if k.startswith("checksum/")}
    return out


def test_checksum_annotations_roll_pods_on_config_change() -> None:
    base = load_values(CHART_DIR / "ci" / "default-values.yaml")
    before = checksums(render(base))
    assert all(set(c) == {"checksum/config", "checksum/secret"} for c in before.values())

    config_changed = checksums(render(merge(base, {"config": {"HERALD_RETRY_MAX_RETRIES": "7"}})))
    secret_changed = checksums(
        render(merge(base, {"secrets": {"values": {"bootstrapAdminKey": "hk_rotated_0001"}}}))
    )
    for component in DEPLOYMENTS:
        assert config_changed[component]["checksum/config"] != before[component]["checksum/config"]
        assert config_changed[component]["checksum/secret"] == before[component]["checksum/secret"]
        assert secret_changed[component]["checksum/secret"] != before[component]["checksum/secret"]
        assert secret_changed[component]["checksum/config"] == before[component]["checksum/config"]
    # A change that touches neither (replica count) does not roll the other components' pods.
    scaled = checksums(render(merge(base, {"worker": {"replicas": 5}})))
    assert scaled == before


def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook(
    case: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    values, docs = case
    merged = merge(chart().values, values)
    full = fullname(values)
    jobs = find(docs, "Job")
    if not merged["migrations"]["enabled"]:
        assert jobs == []
        return
    (job,) = jobs
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (migrate,) = pod["containers"]
    assert migrate["args"] == ["migrate"]
    ref = migrate["env"][0]["valueFrom"]["secretKeyRef"]
    if merged["secrets"]["existingSecret"]:
        assert ref["name"] == merged["secrets"]["existingSecret"]
    else:
        # The release's own Secret does not exist yet when a pre-install hook runs: the Job's Secret is a hook
        # too, created before it (lower weight).
        hook_secret = one(docs, "Secret", ref["name"])
        assert ref["name"] != full
        hook = hook_secret["metadata"]["annotations"]
        assert hook["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert int(hook["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])
        assert ref["key"] in hook_secret["data"]


def test_services_and_monitors_point_at_real_ports() -> None:
    docs = rendered("full-values")
    full = "herald"
    service = one(docs, "Service", f"{full}-api")
    api = one(docs, "Deployment", f"{full}-api")
    assert selector_matches(service["spec"]["selector"], api["spec"]["template"]["metadata"]["labels"])
    assert service["spec"]["ports"][0]["targetPort"] == "http"

    monitor = one(docs, "ServiceMonitor", f"{full}-api")
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert selector_matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])

    pod_monitor = one(docs, "PodMonitor", f"{full}-worker")
    worker = one(docs, "Deployment", f"{full}-worker")
    ports = {p["name"]: p["containerPort"] for p in container(worker, "worker")["ports"]}
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports
    assert ports["metrics"] == int(one(docs, "ConfigMap", full)["data"]["HERALD_WORKER_METRICS_PORT"])
    assert selector_matches(
        pod_monitor["spec"]["selector"]["matchLabels"], worker["spec"]["template"]["metadata"]["labels"]
    )

    ingress = one(docs, "Ingress", f"{full}-api")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{full}-api", "port": {"number": 8000}}
    hpa = one(docs, "HorizontalPodAutoscaler", f"{full}-api")
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{full}-api"
    assert "replicas" not in api["spec"], "the HPA owns the API's replica count"


def test_pods_run_unprivileged_with_a_read_only_root(
    case: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    _, docs = case
    pods = [d["spec"]["template"]["spec"] for d in find(docs, "Deployment") + find(docs, "Job")]
    assert pods
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
