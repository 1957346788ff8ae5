"""The container and orchestration files say what a drain needs (``make lint-deploy``
checks their syntax against the real schemas; this checks their meaning).

No container runtime runs here, so the image's install is held to the one thing that is
tested: it runs ``scripts/install.sh``, the script ``make`` installs the test venv with.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from callbridge.server.live import END_GRACE_S
from callbridge.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ENV_NAME = re.compile(r"^(CALLBRIDGE_|TWILIO_|DATABASE_URL$|PUBLIC_URL$|TRUSTED_PROXIES$)")


def _known_env() -> set[str]:
    return {str(f.validation_alias) for f in Settings.model_fields.values()}


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = path.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_the_image_installs_with_the_makefiles_script_and_drains_on_sigterm() -> None:
    steps = _instructions(ROOT / "Dockerfile")
    (base,) = [rest for word, rest in steps if word == "FROM"]
    assert base.startswith("python:") and "slim" in base
    runs = [rest for word, rest in steps if word == "RUN"]
    assert "bash scripts/install.sh venv /opt/callbridge" in runs
    makefile = (ROOT / "Makefile").read_text()
    assert "bash scripts/install.sh venv $(VENV) dev" in makefile
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1] not in ("0", "root")
    assert ("STOPSIGNAL", "SIGTERM") in steps
    (check,) = [rest for word, rest in steps if word == "HEALTHCHECK"]
    assert "/healthz" in check
    (cmd,) = [rest for word, rest in steps if word == "CMD"]
    assert '"serve"' in cmd


def test_compose_runs_two_instances_one_postgres_and_a_round_robin_proxy() -> None:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    instances = {name: s for name, s in services.items() if s.get("build") == "."}
    assert len(instances) == 2
    for service in instances.values():
        env = service["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://")
        assert "CALLBRIDGE_STREAM_SECRET" in env  # one secret, shared
        assert set(env) <= _known_env()
        assert service["stop_signal"] == "SIGTERM"
        grace_s = int(service["stop_grace_period"].rstrip("s"))
        assert grace_s >= float(env["CALLBRIDGE_DRAIN_TIMEOUT_S"]) + END_GRACE_S
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["proxy"]["image"].startswith("haproxy:")
    haproxy = (ROOT / "deploy" / "haproxy.cfg").read_text()
    assert "balance roundrobin" in haproxy and "option httpchk GET /readyz" in haproxy
    for name in instances:
        assert f" {name}:8080 check" in haproxy


def test_kubernetes_waits_for_the_drain() -> None:
    docs = [
        d
        for d in yaml.safe_load_all(
            (ROOT / "deploy" / "kubernetes" / "callbridge.yaml").read_text()
        )
        if d
    ]
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Deployment", "Service", "PodDisruptionBudget"}
    deployment = kinds["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert set(env) <= _known_env()
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    needed_s = int(pre_stop[1]) + float(env["CALLBRIDGE_DRAIN_TIMEOUT_S"]) + END_GRACE_S
    assert pod["terminationGracePeriodSeconds"] >= needed_s
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert kinds["Service"]["spec"]["selector"] == labels
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels


def test_every_setting_the_manifests_name_exists() -> None:
    texts = [
        (ROOT / "compose.yaml").read_text(),
        (ROOT / "deploy" / "kubernetes" / "callbridge.yaml").read_text(),
    ]
    named = {
        word
        for text in texts
        for word in re.findall(r"\b[A-Z][A-Z0-9_]{3,}\b", text)
        if ENV_NAME.match(word)
    }
    assert named, "no setting named at all?"
    assert named <= _known_env(), named - _known_env()
