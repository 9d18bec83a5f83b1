"""deploy/compose.yaml and deploy/Dockerfile, read as data: Docker is not needed (nor run).

The checks are the ones a broken deployment would fail on late: images pinned to official
releases, bind mounts that exist in the repository, every variable the mounted collector
configs require actually set on the collector, and the services pointing at each other
consistently (worker → Kafka/ClickHouse, API → collector).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read deploy/compose.yaml")

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"

# Official images only: the OpenTelemetry, Apache, ClickHouse and Grafana organisations.
OFFICIAL_NAMESPACES = ("otel/", "apache/", "clickhouse/", "grafana/")
# Overlays compose.yaml documents for USAGELOG_COLLECTOR_OVERLAY; each must start as configured.
SUPPORTED_OVERLAYS = ("monitored", "clickhouse")
TOPICS = ("usagelog.events", "usagelog.monitored", "usagelog.deadletter")
LISTENERS = (
    "USAGELOG_OTLP_GRPC_ENDPOINT",
    "USAGELOG_OTLP_HTTP_ENDPOINT",
    "USAGELOG_COLLECTOR_HEALTH_ENDPOINT",
)

Services = dict[str, dict[str, Any]]

# ${VAR}, ${VAR:-default}, ${VAR-default} as compose interpolates them ($$ is a literal $).
COMPOSE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")
# ${env:VAR} without a default: the collector expands it to "" when VAR is unset.
REQUIRED_ENV = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict) and data.get("services"), "compose.yaml has no services"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> Services:
    return dict(compose["services"])


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """Compose interpolation with the defaults written in the file (or ``env``)."""
    env = env or {}
    return COMPOSE_VAR.sub(lambda m: env.get(m.group(1), m.group(2) or ""), text).replace("$$", "$")


def environment(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(k): interpolate("" if v is None else str(v)) for k, v in raw.items()}


def command(service: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    raw = service.get("command") or []
    words = shlex.split(raw) if isinstance(raw, str) else [str(w) for w in raw]
    return [interpolate(w, env) for w in words]


def split_image(image: str) -> tuple[str, str]:
    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    return name, tag


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of the service's bind mounts, short or long syntax."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            if source.startswith((".", "/", "~")):
                mounts.append((source, rest.split(":")[0]))
        elif volume.get("type") == "bind":
            mounts.append((volume["source"], volume["target"]))
    return mounts


def repo_path(source: str) -> Path:
    return (DEPLOY / interpolate(source)).resolve()


def collector_configs(service: dict[str, Any], overlay: str) -> list[Path]:
    """The repository files behind the collector's --config flags, through its bind mounts."""
    mounts = bind_mounts(service)
    files = []
    for word in command(service, {"USAGELOG_COLLECTOR_OVERLAY": overlay}):
        if not word.startswith("--config="):
            continue
        target = word.split("=", 1)[1]
        for source, mount_target in mounts:
            if target.startswith(mount_target.rstrip("/") + "/"):
                files.append(repo_path(source) / target[len(mount_target.rstrip("/")) + 1 :])
                break
        else:
            pytest.fail(f"collector config {target} is not inside a bind mount")
    return files


def test_every_image_is_pinned_to_an_official_release(services: Services) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image or service.get("build"), f"{name}: neither image nor build"
        if service.get("build"):
            continue  # built from deploy/Dockerfile; its base image is checked below
        repository, tag = split_image(image)
        assert tag and tag != "latest" and "$" not in tag, f"{name}: {image} is not pinned"
        assert re.search(r"\d", tag), f"{name}: {image} has no version in its tag"
        assert repository.startswith(OFFICIAL_NAMESPACES), f"{name}: {image} is not an official image"


def test_dockerfile_builds_on_pinned_python_and_runs_as_non_root() -> None:
    text = DOCKERFILE.read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert bases, "no FROM"
    for base in bases:
        repository, tag = split_image(base)
        assert repository in ("python", "docker.io/library/python"), base
        assert tag and tag != "latest" and re.match(r"\d", tag), f"{base} is not pinned"
    assert re.search(r"pip install --no-cache-dir \"?\.\[ingest\]\"?", text)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the image must end as a non-root user"


def test_built_services_use_the_repository_dockerfile(services: Services) -> None:
    built = {name: s["build"] for name, s in services.items() if s.get("build")}
    assert {"worker", "api"} <= set(built)
    for name, build in built.items():
        if isinstance(build, str):
            build = {"context": build}
        context = repo_path(build["context"])
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert context == REPO, f"{name}: build context {context} is not the repository root"
        assert dockerfile.resolve() == DOCKERFILE, f"{name}: builds {dockerfile}"


def test_every_bind_mount_exists_in_the_repository(services: Services) -> None:
    seen = 0
    for name, service in services.items():
        for source, _ in bind_mounts(service):
            path = repo_path(source)
            assert path.exists(), f"{name}: bind mount {source} -> {path} does not exist"
            assert path.is_relative_to(REPO), f"{name}: bind mount {source} is outside the repository"
            seen += 1
    assert seen, "expected at least the collector config bind mount"


def test_named_volumes_are_declared(compose: dict[str, Any], services: Services) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume.partition(":")[0] if isinstance(volume, str) else volume.get("source", "")
            kind = "bind" if isinstance(volume, str) and source.startswith((".", "/", "~")) else None
            if isinstance(volume, dict):
                kind = volume.get("type")
            if kind not in ("bind", "tmpfs") and source:
                assert source in declared, f"{name}: volume {source} is not declared"


@pytest.mark.parametrize("overlay", SUPPORTED_OVERLAYS)
def test_collector_sets_every_variable_its_configs_require(services: Services, overlay: str) -> None:
    collector = services["collector"]
    files = collector_configs(collector, overlay)
    assert [f.name for f in files][:2] == ["base.yaml", "monitored.yaml"]
    assert files[-1].name == f"{overlay}.yaml"
    env = environment(collector)
    for path in files:
        assert path.is_file(), f"{path} does not exist"
        text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        for variable in sorted(set(REQUIRED_ENV.findall(text))):
            assert env.get(variable), f"{path.name} requires {variable}, which the collector does not set"


def test_collector_listens_beyond_localhost_and_keeps_its_queue_on_a_volume(
    services: Services,
) -> None:
    collector = services["collector"]
    env = environment(collector)
    for variable in LISTENERS:
        assert env[variable].startswith("0.0.0.0:"), (
            f"{variable}={env[variable]}: other containers cannot reach it"
        )
    storage = env["USAGELOG_COLLECTOR_STORAGE_DIR"]
    targets = [v.split(":")[1] for v in collector["volumes"] if isinstance(v, str)]
    assert storage in targets, "the persistent queue must survive the container"
    assert urlparse("//" + env["USAGELOG_KAFKA_BROKERS"]).hostname in services


def test_kafka_init_creates_the_three_topics_with_three_partitions(services: Services) -> None:
    script = " ".join(command(services["kafka-init"]))
    assert "--create" in script and "--partitions 3" in script
    for topic in TOPICS:
        assert topic in script


def test_workers_consume_the_events_topic_into_the_clickhouse_service(services: Services) -> None:
    worker = services["worker"]
    words = command(worker)
    line = " ".join(words)
    assert re.search(r"\busagelog ingest --from kafka://", line), line
    source = words[words.index("--from") + 1]
    parsed = urlparse(source)
    assert parsed.hostname in services and parsed.path.strip("/") == "usagelog.events"
    assert worker["deploy"]["replicas"] == 2
    collector_brokers = environment(services["collector"])["USAGELOG_KAFKA_BROKERS"]
    assert parsed.netloc == collector_brokers, "workers and collector must use the same brokers"
    clickhouse = urlparse(environment(worker)["USAGELOG_CLICKHOUSE_URL"])
    assert clickhouse.scheme == "http" and clickhouse.hostname == "clickhouse" and clickhouse.port == 8123
    assert clickhouse.hostname in services


def test_example_api_exports_otlp_to_the_collector_and_spools_on_a_volume(
    services: Services,
) -> None:
    api = services["api"]
    words = command(api)
    assert words[:4] == ["opentelemetry-instrument", "python", "-m", "usagelog.demo.app"]
    assert words[words.index("--host") + 1] == "0.0.0.0"
    env = environment(api)
    assert env["USAGELOG_EXPORTER"] == "otlp"
    endpoint = urlparse(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    grpc_port = environment(services["collector"])["USAGELOG_OTLP_GRPC_ENDPOINT"].rsplit(":", 1)[1]
    assert (endpoint.hostname, str(endpoint.port)) == ("collector", grpc_port)
    named = [v.split(":")[0] for v in api.get("volumes") or [] if isinstance(v, str)]
    targets = [v.split(":")[1] for v in api.get("volumes") or [] if isinstance(v, str)]
    assert env["USAGELOG_SPOOL_DIR"] in targets and named, "the spool must be on a named volume"


def test_dependencies_name_existing_services_with_valid_conditions(services: Services) -> None:
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {target: {"condition": "service_started"} for target in depends}
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert spec.get("condition", "service_started") in conditions
            if spec.get("condition") == "service_healthy":
                assert services[target].get("healthcheck"), f"{name} waits for {target}'s missing healthcheck"


def test_grafana_mounts_the_provisioning_and_sets_every_variable_it_reads(services: Services) -> None:
    """Grafana gets grafana/provisioning and grafana/dashboards from the checkout, the ClickHouse
    plugin, and every ${VAR} those files read (a missing one would provision an empty value)."""
    grafana = services["grafana"]
    assert "profiles" not in grafana, "Grafana is part of the pipeline, not an extra"
    mounts = {}
    for volume in grafana.get("volumes") or []:
        source, target = volume.split(":")[:2]
        mounts[target] = source
    root = DEPLOY
    provisioning = (root / mounts["/etc/grafana/provisioning"]).resolve()
    assert provisioning == (root.parent / "grafana" / "provisioning").resolve()
    dashboards = (root / mounts["/var/lib/grafana/dashboards/usagelog"]).resolve()
    assert sorted(p.name for p in dashboards.glob("*.json")), "no dashboards mounted"
    provider = yaml.safe_load((provisioning / "dashboards" / "usagelog.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/usagelog"
    env = grafana.get("environment") or {}
    assert env["GF_PLUGINS_PREINSTALL_SYNC"].startswith("grafana-clickhouse-datasource@")
    wanted = set()
    for path in provisioning.rglob("*.yaml"):
        wanted |= set(re.findall(r"\$\{([A-Z0-9_]+)\}", path.read_text()))
    missing = sorted(wanted - set(env))
    assert not missing, f"Grafana's provisioning reads variables compose does not set: {missing}"
