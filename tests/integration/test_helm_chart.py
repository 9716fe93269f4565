"""The Helm chart's meaning, which schema validation cannot see.

`helm/validate.sh` (run by `.ci/run`) proves every rendering is well-formed
Kubernetes; these tests render with the real `helm template` and check that
the pieces fit: the Service reaches authgate and never the application, the
probes hit authgate's health endpoints, the rendered authgate.yaml passes
`authgate check-config` with exactly the variables and key files the chart
provides, and bad values are refused with a message that names the fix.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import yaml
from joserfc.jwk import ECKey

from authgate.app import create_app
from authgate.assertion import load_key_file
from authgate.identity import Identity
from authgate.settings import parse_settings
from tests import markdown
from tests.conftest import redis_kv, sign_in
from tests.tools import find_tool

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "authgate"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
KEYS_DIR = "/etc/authgate/keys"
ASSERTION_KEY = "/etc/authgate/assertion/assertion-key.pem"
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
Docs = list[dict[str, Any]]


def helm_template(*args: str, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_tool("helm"), "template", "rel", str(chart), "--namespace", "web", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def render(*args: str) -> Docs:
    result = helm_template(*args)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def render_ci(name: str, *args: str) -> Docs:
    return render("-f", str(CHART / "ci" / name), *args)


def refused(*args: str) -> str:
    result = helm_template(*args)
    assert result.returncode != 0, "helm template accepted values it should refuse"
    return result.stderr


def one(docs: Docs, kind: str, component: str = "authgate") -> dict[str, Any]:
    [found] = [
        d
        for d in docs
        if d["kind"] == kind
        and d["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    return found


def kinds(docs: Docs) -> list[str]:
    return sorted(d["kind"] for d in docs)


def pod(docs: Docs, component: str = "authgate") -> dict[str, Any]:
    return one(docs, "Deployment", component)["spec"]["template"]


def container(docs: Docs, name: str = "authgate") -> dict[str, Any]:
    [found] = [c for c in pod(docs)["spec"]["containers"] if c["name"] == name]
    return found


def config(docs: Docs) -> dict[str, Any]:
    return yaml.safe_load(one(docs, "ConfigMap")["data"]["authgate.yaml"])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def secret_data(docs: Docs, name: str) -> dict[str, str]:
    [secret] = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == name]
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def volume(docs: Docs, name: str) -> dict[str, Any]:
    [found] = [v for v in pod(docs)["spec"]["volumes"] if v["name"] == name]
    return found


def mounts(docs: Docs) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container(docs)["volumeMounts"]}


# ---- the rendered authgate.yaml is a valid config, with everything it refers to -------------


def _environment(docs: Docs, text: str) -> dict[str, str]:
    """What the pod's environment would hold; every ${VAR} the config uses must be in it."""
    names = set(ENV_REF.findall(text))
    env_from = [e["secretRef"]["name"] for e in container(docs).get("envFrom", [])]
    created = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    env: dict[str, str] = {}
    for name in env_from:
        if name in created:
            env.update(secret_data(docs, name))
        else:
            env.update({var: f"value-of-{var}-from-{name}" for var in names})
    missing = names - env.keys()
    assert not missing, f"the config uses {sorted(missing)} but no Secret of the chart has them"
    return env


def _key_files(docs: Docs, target: Path) -> None:
    """The keys Secret's files, where the pod would see them (or stand-ins if it pre-exists)."""
    keys = volume(docs, "keys")["secret"]["secretName"] if KEYS_DIR in mounts(docs) else None
    target.mkdir(parents=True)
    created = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    if keys in created:
        for name, content in secret_data(docs, keys).items():
            (target / name).write_text(content)


def _assertion_key(docs: Docs, target: Path) -> None:
    """The assertion key where the pod would see it: the chart's own, or a stand-in."""
    if "/etc/authgate/assertion" not in mounts(docs):
        return
    target.mkdir(parents=True)
    name = volume(docs, "assertion-key")["secret"]["secretName"]
    created = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    if name in created:
        pem = secret_data(docs, name)["assertion-key.pem"]
    else:
        pem = ECKey.generate_key("P-256", private=True).as_pem(private=True).decode()
    (target / "assertion-key.pem").write_text(pem)


def pod_config(docs: Docs, target: Path) -> tuple[Path, dict[str, str]]:
    """The rendered authgate.yaml as the pod would read it, and the environment it would have."""
    text = one(docs, "ConfigMap")["data"]["authgate.yaml"]
    env = {**os.environ, **_environment(docs, text)}
    env.pop("AUTHGATE_MASTER_KEY", None)
    _key_files(docs, target / "keys")
    _assertion_key(docs, target / "assertion")
    config_file = target / "authgate.yaml"
    text = text.replace(KEYS_DIR, str(target / "keys"))
    config_file.write_text(text.replace(str(Path(ASSERTION_KEY).parent), str(target / "assertion")))
    return config_file, env


def assert_check_config_passes(docs: Docs, target: Path) -> None:
    config_file, env = pod_config(docs, target)
    result = subprocess.run(
        [sys.executable, "-m", "authgate", "check-config", str(config_file)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


@pytest.mark.parametrize("values", CI_VALUES, ids=[v.stem for v in CI_VALUES])
def test_rendered_config_passes_check_config(values: Path, tmp_path: Path) -> None:
    docs = render("-f", str(values))
    assert_check_config_passes(docs, tmp_path)
    assert config(docs)["session"]["store"] == "redis"
    assert config(docs)["listen"] == "0.0.0.0:4180"


@pytest.mark.parametrize("values", CI_VALUES, ids=[v.stem for v in CI_VALUES])
def test_config_and_keys_are_mounted_where_the_image_reads_them(values: Path) -> None:
    docs = render("-f", str(values))
    authgate = container(docs)
    assert authgate["args"] == ["run", "--config", "/etc/authgate/authgate.yaml"]
    config_mount = mounts(docs)["/etc/authgate/authgate.yaml"]
    assert (config_mount["subPath"], config_mount["readOnly"]) == ("authgate.yaml", True)
    assert volume(docs, "config")["configMap"]["name"] == one(docs, "ConfigMap")["metadata"]["name"]
    if KEYS_DIR in one(docs, "ConfigMap")["data"]["authgate.yaml"]:
        assert mounts(docs)[KEYS_DIR]["readOnly"] is True
        assert volume(docs, "keys")["secret"]["defaultMode"] == 0o440


# ---- modes --------------------------------------------------------------------------------


def test_sidecar_service_reaches_authgate_and_never_the_app() -> None:
    docs = render_ci("sidecar-values.yaml")
    service = one(docs, "Service")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    assert selects(service["spec"]["selector"], pod(docs)["metadata"]["labels"])
    authgate, app = container(docs), container(docs, "legacy")
    assert {p["name"]: p["containerPort"] for p in authgate["ports"]} == {"http": 4180}
    assert "ports" not in app, "the application's port must not be declared or exposed"
    assert config(docs)["upstream"]["url"] == "http://127.0.0.1:8080"
    policy = one(docs, "NetworkPolicy")
    assert selects(policy["spec"]["podSelector"]["matchLabels"], pod(docs)["metadata"]["labels"])
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == ["http"]
    assert app["image"] == "registry.example.com/legacy-app:2.4.1"
    assert one(docs, "Deployment")["spec"]["replicas"] == 3


def test_sidecar_ignores_an_upstream_url_in_the_values() -> None:
    docs = render_ci("sidecar-values.yaml", "--set", "config.upstream.url=http://elsewhere:80")
    assert config(docs)["upstream"]["url"] == "http://127.0.0.1:8080"


def test_standalone_has_no_app_container_and_proxies_to_the_configured_upstream() -> None:
    docs = render_ci("standalone-values.yaml")
    assert [c["name"] for c in pod(docs)["spec"]["containers"]] == ["authgate"]
    assert config(docs)["upstream"]["url"] == "http://portal.apps.svc.cluster.local:8080"
    assert one(docs, "Service")["spec"]["ports"][0]["targetPort"] == "http"


@pytest.mark.parametrize("prefix", ["/_authgate", "/sso/gate"])
def test_probes_hit_authgate_health_endpoints(prefix: str) -> None:
    docs = render_ci("standalone-values.yaml", "--set", f"config.prefix={prefix}")
    authgate = container(docs)
    assert authgate["readinessProbe"]["httpGet"] == {"path": f"{prefix}/readyz", "port": "http"}
    assert authgate["livenessProbe"]["httpGet"] == {"path": f"{prefix}/healthz", "port": "http"}
    assert config(docs)["prefix"] == prefix


def test_security_context_is_locked_down() -> None:
    docs = render_ci("in-chart-redis-values.yaml")
    for component in ("authgate", "redis"):
        spec = pod(docs, component)["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for each in spec["containers"]:
            ctx = each["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert container(docs)["securityContext"]["runAsUser"] == 10001
    assert volume(docs, "tmp")["emptyDir"]["sizeLimit"] == "64Mi"
    assert mounts(docs)["/tmp"]["name"] == "tmp"


def test_in_chart_redis_hpa_pdb_and_service_monitor_fit_together() -> None:
    docs = render_ci("in-chart-redis-values.yaml")
    redis_service = one(docs, "Service", "redis")
    url = config(docs)["session"]["redis"]["url"]
    port = redis_service["spec"]["ports"][0]["port"]
    assert url == f"redis://{redis_service['metadata']['name']}:{port}/0"
    redis_labels = pod(docs, "redis")["metadata"]["labels"]
    authgate_labels = pod(docs)["metadata"]["labels"]
    assert selects(redis_service["spec"]["selector"], redis_labels)
    assert not selects(redis_service["spec"]["selector"], authgate_labels)
    assert not selects(one(docs, "Service")["spec"]["selector"], redis_labels)
    redis_policy = one(docs, "NetworkPolicy", "redis")
    [allowed] = redis_policy["spec"]["ingress"][0]["from"]
    assert selects(allowed["podSelector"]["matchLabels"], authgate_labels)
    assert not selects(allowed["podSelector"]["matchLabels"], redis_labels)

    deployment = one(docs, "Deployment")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    pdb = one(docs, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"], authgate_labels)
    assert not selects(pdb["spec"]["selector"]["matchLabels"], redis_labels)

    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert not selects(
        monitor["spec"]["selector"]["matchLabels"], redis_service["metadata"]["labels"]
    )
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert {p["name"]: p["containerPort"] for p in container(docs)["ports"]}["metrics"] == 9090
    assert config(docs)["metrics"] == {"enabled": True, "listen": "0.0.0.0:9090"}


def test_existing_secrets_are_referenced_not_created() -> None:
    docs = render_ci("sentinel-values.yaml")
    assert "Secret" not in kinds(docs)
    assert "NetworkPolicy" not in kinds(docs)
    assert container(docs)["envFrom"] == [{"secretRef": {"name": "intranet-authgate-env"}}]
    assert volume(docs, "keys")["secret"]["secretName"] == "intranet-authgate-keys"
    assertion_key = volume(docs, "assertion-key")["secret"]["secretName"]
    assert assertion_key == "intranet-authgate-assertion-key"
    assert config(docs)["headers"]["assertion"]["key_file"] == ASSERTION_KEY
    sentinel = config(docs)["session"]["redis"]["sentinel"]
    assert sentinel["master"] == "authgate"
    assert len(sentinel["nodes"]) == 3
    assert sentinel["password"] == "${REDIS_PASSWORD}"
    assert sentinel["sentinel_password"] == "${REDIS_SENTINEL_PASSWORD}"


def test_the_assertion_key_is_one_p256_key_every_replica_mounts(tmp_path: Path) -> None:
    """Replicas sign with the key of the Secret, not one kept in Redis that a restart can lose."""
    docs = render_ci("sidecar-values.yaml", "--set", "replicaCount=3")
    [secret] = [d for d in docs if d["kind"] == "Secret" and "assertion" in d["metadata"]["name"]]
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert mounts(docs)["/etc/authgate/assertion"]["readOnly"] is True
    assert config(docs)["headers"]["assertion"]["key_file"] == ASSERTION_KEY
    pem = tmp_path / "assertion-key.pem"
    pem.write_text(secret_data(docs, secret["metadata"]["name"])["assertion-key.pem"])
    ring = load_key_file(pem)
    assert ring.current.curve_name == "P-256" and ring.current.is_private


def test_no_assertion_key_secret_when_it_is_turned_off() -> None:
    docs = render_ci("sidecar-values.yaml", "--set", "assertionKey.create=false")
    assert not [d for d in docs if "assertion" in d["metadata"]["name"]]
    assert "/etc/authgate/assertion" not in mounts(docs)
    assert "key_file" not in config(docs).get("headers", {}).get("assertion", {})


def test_config_or_secret_change_rolls_the_pods() -> None:
    before = pod(render_ci("sidecar-values.yaml"))["metadata"]["annotations"]
    changed = render_ci("sidecar-values.yaml", "--set", "config.session.lifetime=4h")
    rotated = render_ci("sidecar-values.yaml", "--set", "secretEnv.values.REDIS_PASSWORD=new")
    assert pod(changed)["metadata"]["annotations"]["checksum/config"] != before["checksum/config"]
    assert pod(rotated)["metadata"]["annotations"]["checksum/secret"] != before["checksum/secret"]


def _notes(values: str, tmp_path: Path) -> str:
    """NOTES.txt rendered through a throw-away copy of the chart (helm template skips it)."""
    copy = tmp_path / "authgate"
    shutil.copytree(CHART, copy)
    notes = (copy / "templates" / "NOTES.txt").read_text()
    (copy / "templates" / "_notes_check.tpl").write_text(
        '{{- define "notes.check" -}}\n' + notes + "\n{{- end -}}\n"
    )
    (copy / "templates" / "notes-check.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ include "notes.check" . | quote }}\n'
    )
    result = helm_template(
        "-f", str(CHART / "ci" / values), "--show-only", "templates/notes-check.yaml", chart=copy
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["data"]["notes"]


def test_notes_explain_the_nginx_ingress_annotations(tmp_path: Path) -> None:
    notes = _notes("standalone-values.yaml", tmp_path)
    service = "http://rel-authgate.web.svc.cluster.local:80"
    assert f'nginx.ingress.kubernetes.io/auth-url: "{service}/_authgate/auth"' in notes
    assert (
        'nginx.ingress.kubernetes.io/auth-signin: "https://$host/_authgate/login'
        '?rd=$escaped_request_uri"'
    ) in notes
    assert "nginx.ingress.kubernetes.io/auth-response-headers:" in notes
    assert "10.42.0.0/16" in notes
    sidecar = _notes("sidecar-values.yaml", tmp_path / "sidecar")
    assert "127.0.0.1:8080" in sidecar and "auth-url" not in sidecar


# ---- values that must be refused ----------------------------------------------------------


def test_values_are_refused_with_a_message_naming_the_fix() -> None:
    sidecar = str(CHART / "ci" / "sidecar-values.yaml")
    standalone = str(CHART / "ci" / "standalone-values.yaml")
    no_url = refused("--set", "redis.enabled=true", "--set", "config.upstream.url=http://app:80")
    assert "config.public_url: set the browser-facing URL" in no_url
    assert "/config/public_url" in refused("--set", "config.public_url=app.example.com")
    assert "/app/image/repository" in refused("-f", sidecar, "--set", "app.image.repository=")
    assert "/mode" in refused("-f", sidecar, "--set", "mode=daemonset")
    assert "set exactly one of redis.url" in refused("-f", standalone, "--set", "redis.url=")
    both = refused("-f", standalone, "--set", "redis.enabled=true")
    assert "found redis.enabled, redis.url" in both
    assert "/redis/url" in refused("-f", standalone, "--set", "redis.url=http://redis:6379")
    no_upstream = refused("-f", standalone, "--set", "config.upstream.url=")
    assert "config.upstream.url: standalone mode needs" in no_upstream
    assert "/securityContext/runAsNonRoot" in refused(
        "-f", standalone, "--set", "securityContext.runAsNonRoot=false"
    )
    assert "/config/listen" in refused("-f", standalone, "--set", "config.listen=0.0.0.0:80")
    assert "/app/name" in refused("-f", sidecar, "--set", "app.name=authgate")
    typo = refused("-f", standalone, "--set", "replicaCont=3")
    assert "additional properties 'replicaCont' not allowed" in typo
    pdb = refused(
        "-f", standalone, "--set", "podDisruptionBudget.enabled=true",
        "--set", "podDisruptionBudget.maxUnavailable=1",
    )  # fmt: skip
    assert "set minAvailable or maxUnavailable, not both" in pdb
    sentinel = refused(
        "-f", standalone, "--set", "redis.url=", "--set", "redis.sentinel.master=mymaster"
    )
    assert "redis.sentinel.nodes" in sentinel


# ---- the offline kubeconform really validates ---------------------------------------------


def kubeconform(manifest: str) -> subprocess.CompletedProcess[str]:
    find_tool("kubeconform")
    env = {**os.environ, "PYTHON": sys.executable, "KUBE_VERSIONS": "1.33.0"}
    env["PATH"] = os.pathsep.join([str(Path(find_tool("kubeconform")).parent), env["PATH"]])
    return subprocess.run(
        ["bash", str(ROOT / "helm" / "kubeconform.sh")],
        input=manifest,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_kubeconform_accepts_a_rendering_and_rejects_hostile_manifests() -> None:
    good = helm_template("-f", str(CHART / "ci" / "in-chart-redis-values.yaml")).stdout
    passed = kubeconform(good)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "Valid: 13, Invalid: 0, Errors: 0, Skipped: 0" in passed.stdout

    typo = good.replace("readOnlyRootFilesystem:", "readOnlyRootFileSystem:", 1)
    failed = kubeconform(typo)
    assert failed.returncode != 0
    assert "additional properties 'readOnlyRootFileSystem' not allowed" in failed.stdout

    wrong_type = good.replace("replicas: 1", "replicas: one", 1)
    assert "replicas: one" in wrong_type
    assert kubeconform(wrong_type).returncode != 0

    monitor = good.replace("path: /metrics", "path: /metrics\n      bogusField: 1", 1)
    failed_monitor = kubeconform(monitor)
    assert failed_monitor.returncode != 0
    assert "ServiceMonitor" in failed_monitor.stdout and "bogusField" in failed_monitor.stdout

    unknown_kind = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n"
    assert kubeconform(unknown_kind).returncode != 0
    assert kubeconform("").returncode != 0, "nothing validated must not pass"


# ---- the chart's defaults and its README ---------------------------------------------------

README = CHART / "README.md"
README_BLOCKS = markdown.blocks(README)
README_FILES = {b.file_name: b.text for b in README_BLOCKS if b.file_name}
INSTALLS = [
    command
    for block in README_BLOCKS
    if block.lang == "sh"
    for command in markdown.commands(block)
    if command.startswith("helm install")
]
# Stand-ins for the variables the README's commands read from the reader's shell.
SHELL_ENV = {"OIDC_CLIENT_SECRET": "oidc-secret-from-the-shell", "REDIS_PASSWORD": "redis-pw"}


def test_defaults_lint_clean_and_refuse_to_render_naming_every_missing_value() -> None:
    lint = subprocess.run(
        [find_tool("helm"), "lint", "--strict", str(CHART)], capture_output=True, text=True
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    problems = refused()
    for missing in ("config.public_url:", "config.upstream.url:", "redis: set exactly one of"):
        assert missing in problems
    sidecar = refused("--set", "mode=sidecar", "--set", "app.image.repository=app")
    assert "config.upstream.url" not in sidecar and "config.public_url:" in sidecar


def test_readme_shows_the_refusal_of_the_defaults_as_helm_prints_it() -> None:
    [block] = [b for b in README_BLOCKS if b.lang == "console" and "helm template" in b.text]
    [command] = markdown.commands(block)
    argv = shlex.split(command)
    argv[argv.index("./helm/authgate")] = str(CHART)
    result = subprocess.run([find_tool("helm"), *argv[1:]], capture_output=True, text=True)
    assert result.returncode != 0
    shown = [line for line in block.text.splitlines()[1:] if line.strip()]
    printed = {line.strip() for line in result.stderr.splitlines()}
    assert [line for line in shown if line.strip() not in printed] == []


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_readme_values_table_lists_every_value_with_its_default() -> None:
    table = dict(re.findall(r"^\| `([^`]+)` \| `([^`]*)` \|", README.read_text(), re.MULTILINE))
    values = _flatten(yaml.safe_load((CHART / "values.yaml").read_text()))
    expected = {key: json.dumps(default) for key, default in values.items()}
    missing = [f"| `{k}` | `{v}` | ... |" for k, v in expected.items() if table.get(k) != v]
    assert missing == [], "add or correct these rows of the values table in helm/authgate/README.md"
    assert sorted(table.keys() - expected.keys()) == [], "rows for values that no longer exist"


def _render_install(command: str, tmp_path: Path) -> tuple[list[str], Docs]:
    """The README's `helm install` as `helm template`, in a folder holding its values files."""
    for name, text in README_FILES.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "helm").symlink_to(ROOT / "helm")
    argv = shlex.split(os.path.expandvars(command))
    assert argv[:2] == ["helm", "install"]
    result = subprocess.run(
        [find_tool("helm"), "template", *argv[2:]], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    return argv, [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.mark.parametrize("command", INSTALLS, ids=range(len(INSTALLS)))
def test_readme_install_commands_render_valid_manifests_and_config(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SHELL_ENV.items():
        monkeypatch.setenv(name, value)
    _, docs = _render_install(command, tmp_path)
    assert_check_config_passes(docs, tmp_path / "pod")
    passed = kubeconform(yaml.safe_dump_all(docs))
    assert passed.returncode == 0, passed.stdout + passed.stderr


def _standalone_install() -> str:
    [command] = [c for c in INSTALLS if "standalone-values.yaml" in c and "redis-" not in c]
    return command


@pytest.mark.parametrize("fragment", sorted(n for n in README_FILES if n.startswith("redis-")))
def test_readme_redis_options_each_render_one_topology(
    fragment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each Redis file as the README says to use it: a second `-f` to the standalone install."""
    for name, value in SHELL_ENV.items():
        monkeypatch.setenv(name, value)
    _, docs = _render_install(f"{_standalone_install()} -f {fragment}", tmp_path)
    assert_check_config_passes(docs, tmp_path / "pod")
    topology = config(docs)["session"]["redis"]
    chosen = yaml.safe_load(README_FILES[fragment])["redis"]
    redis_services = [
        d for d in docs if d["kind"] == "Service" and "redis" in d["metadata"]["name"]
    ]
    assert bool(redis_services) == bool(chosen.get("enabled"))
    assert ("sentinel" in topology) == bool(chosen.get("sentinel"))
    assert topology.get("url", "").startswith(("rediss://", "redis://")) != ("sentinel" in topology)


def test_readme_ingress_is_valid_and_routes_to_the_installed_release(tmp_path: Path) -> None:
    ingresses = [d for d in yaml.safe_load_all(README_FILES["ingress.yaml"]) if d]
    passed = kubeconform(README_FILES["ingress.yaml"])
    assert passed.returncode == 0, passed.stdout + passed.stderr
    argv, docs = _render_install(_standalone_install(), tmp_path)
    namespace = argv[argv.index("--namespace") + 1]
    service = one(docs, "Service")
    cfg = config(docs)
    host = cfg["public_url"].removeprefix("https://")
    protected, own = ingresses
    assert {protected["metadata"]["namespace"], own["metadata"]["namespace"]} == {namespace}
    annotations = protected["metadata"]["annotations"]
    port = service["spec"]["ports"][0]["port"]
    svc = f"http://{service['metadata']['name']}.{namespace}.svc.cluster.local:{port}"
    assert annotations["nginx.ingress.kubernetes.io/auth-url"] == f"{svc}{cfg['prefix']}/auth"
    signin = annotations["nginx.ingress.kubernetes.io/auth-signin"]
    assert signin == f"https://$host{cfg['prefix']}/login?rd=$escaped_request_uri"
    assert "auth-url" not in str(own["metadata"].get("annotations", {}))
    [rule] = own["spec"]["rules"]
    [path] = rule["http"]["paths"]
    assert (rule["host"], path["path"], path["pathType"]) == (host, cfg["prefix"], "Prefix")
    backend = path["backend"]["service"]
    assert (backend["name"], backend["port"]["number"]) == (service["metadata"]["name"], port)
    assert [r["host"] for r in protected["spec"]["rules"]] == [host]


async def test_readme_ingress_annotations_match_what_authgate_answers(
    aiohttp_client: Callable[..., Any],
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ingress-nginx's three questions, asked of authgate running the README's config."""
    for name, value in SHELL_ENV.items():
        monkeypatch.setenv(name, value)
    _, docs = _render_install(_standalone_install(), tmp_path)
    config_file, env = pod_config(docs, tmp_path / "pod")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    raw = yaml.safe_load(config_file.read_text())
    raw["session"]["redis"] = {"url": redis_url}
    client = await aiohttp_client(create_app(parse_settings(raw), redis_kv(redis_url)))
    [protected, _] = [d for d in yaml.safe_load_all(README_FILES["ingress.yaml"]) if d]
    annotations = protected["metadata"]["annotations"]
    auth_path = urlsplit(annotations["nginx.ingress.kubernetes.io/auth-url"]).path

    denied = await client.get(auth_path, allow_redirects=False)
    assert denied.status == 401
    signin = annotations["nginx.ingress.kubernetes.io/auth-signin"]
    signin = signin.replace("$host", "portal.example.com").replace(
        "$escaped_request_uri", quote("/reports?year=2026", safe="")
    )
    page = await client.get(urlsplit(signin)._replace(scheme="", netloc="").geturl(),
                            allow_redirects=False)  # fmt: skip
    assert page.status == 302
    assert "rd=%2Freports%3Fyear%3D2026" in page.headers["Location"]

    identity = Identity(connection="okta", subject="00u1", email="ann@example.com",
                        email_verified=True, name="Ann", groups=("Staff",))  # fmt: skip
    await sign_in(client, identity)
    allowed = await client.get(auth_path, allow_redirects=False)
    assert allowed.status == 200
    # The correlation id is authgate's own answer header, not an identity to copy upstream.
    sent = {h for h in allowed.headers if h.startswith("X-") and h != "X-Request-ID"}
    named = annotations["nginx.ingress.kubernetes.io/auth-response-headers"].split(",")
    assert sorted(named) == sorted(sent)
