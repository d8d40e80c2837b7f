"""Temporal's own client configuration (``TEMPORAL_*`` variables, ``temporal.toml`` profiles) reaches the
service's settings, below the service's own ``DUNNING_*`` settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trustme
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.testing import WorkflowEnvironment

from client.settings import Settings
from client.temporal import connect, tls_config


@pytest.fixture(autouse=True)
def only_these_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No DUNNING_ or TEMPORAL_ variable of the machine's, and no temporal.toml of the user's."""
    for name in list(os.environ):
        if name.startswith(("DUNNING_", "TEMPORAL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "absent.toml"))


def test_without_any_temporal_configuration_the_defaults_hold():
    settings = Settings()
    assert (settings.temporal_address, settings.temporal_namespace, settings.temporal_tls) == ("localhost:7233", "default", False)


def test_temporal_variables_are_read_and_dunning_settings_win(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TEMPORAL_ADDRESS", "temporal.example:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "billing")
    monkeypatch.setenv("TEMPORAL_API_KEY", "key-from-cli")
    settings = Settings()
    assert (settings.temporal_address, settings.temporal_namespace) == ("temporal.example:7233", "billing")
    assert settings.temporal_api_key is not None and settings.temporal_api_key.get_secret_value() == "key-from-cli"
    assert tls_config(settings) is True  # an API key always goes over TLS

    monkeypatch.setenv("DUNNING_TEMPORAL_ADDRESS", "ours:7233")
    monkeypatch.setenv("DUNNING_TEMPORAL_NAMESPACE", "dunning")
    assert (Settings().temporal_address, Settings().temporal_namespace) == ("ours:7233", "dunning")


def test_a_cli_profile_with_mtls_files_gives_the_tls_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    ca = trustme.CA()
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client.key"
    ca.cert_pem.write_to_path(str(ca_file))
    issued = ca.issue_cert("dunning-worker")
    issued.cert_chain_pems[0].write_to_path(str(cert_file))
    issued.private_key_pem.write_to_path(str(key_file))
    config = tmp_path / "temporal.toml"
    config.write_text(
        f"""
[profile.default]
address = "localhost:7233"

[profile.prod]
address = "prod.tmprl.example:7233"
namespace = "billing.acct"
[profile.prod.tls]
server_name = "prod.tmprl.example"
server_ca_cert_path = "{ca_file}"
client_cert_path = "{cert_file}"
client_key_path = "{key_file}"
"""
    )
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(config))
    monkeypatch.setenv("TEMPORAL_PROFILE", "prod")
    settings = Settings()
    assert (settings.temporal_address, settings.temporal_namespace) == ("prod.tmprl.example:7233", "billing.acct")
    assert (settings.temporal_tls_ca_file, settings.temporal_tls_cert_file, settings.temporal_tls_key_file) == (ca_file, cert_file, key_file)
    tls = tls_config(settings)
    assert not isinstance(tls, bool)
    assert tls.domain == "prod.tmprl.example"
    assert tls.client_cert == cert_file.read_bytes() and tls.server_root_ca_cert == ca_file.read_bytes()


def test_inline_certificates_are_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_DATA", "-----BEGIN CERTIFICATE-----")
    with pytest.raises(ValueError, match="give it as a file"):
        Settings()


async def test_the_service_connects_where_temporal_address_points(monkeypatch: pytest.MonkeyPatch, dev_env: WorkflowEnvironment):
    """A real connection: the dev server found through TEMPORAL_ADDRESS alone."""
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    monkeypatch.setenv("TEMPORAL_NAMESPACE", dev_env.client.namespace)
    client = await connect(Settings())
    assert client.service_client.config.target_host == dev_env.client.service_client.config.target_host
    info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
    assert info.server_version
