"""The equipment registry: loading and validating the TOML file, refusing ids, reading secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from activities.equipment.adapter import EquipmentMisconfigured
from activities.equipment.registry import (
    CredentialRef,
    EquipmentRefused,
    RedfishEquipment,
    Registry,
    RegistryError,
    SnmpEquipment,
)
from workflows.models import EquipmentRequest, Invoice

EXAMPLES = Path(__file__).parent.parent / "examples"

BMC = """
[[equipment]]
id = "bmc-1"
customer_id = "CUST-1"
kind = "redfish"
endpoint = "https://10.0.0.5"
username = "dunning"
credentials = { env = "BMC_1_PASSWORD" }
"""


def load(tmp_path: Path, text: str) -> Registry:
    path = tmp_path / "equipment.toml"
    path.write_text(text)
    return Registry.load(path)


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(RegistryError) as caught:
        load(tmp_path, text)
    return str(caught.value)


def test_the_example_registry_matches_the_example_invoice():
    registry = Registry.load(EXAMPLES / "equipment.toml")
    invoice = Invoice.model_validate_json((EXAMPLES / "invoice.json").read_text())
    for equipment_id in invoice.terms.equipment_ids:
        assert registry.resolve(equipment_id, invoice.customer_id).customer_id == invoice.customer_id
    assert isinstance(registry.resolve("bmc-srv-cluj-01", "RO-40512378"), RedfishEquipment)
    switch = registry.resolve("sw-cluj-core-port-12", "RO-40512378")
    assert isinstance(switch, SnmpEquipment)
    assert (switch.host, switch.port, switch.ports) == ("10.20.0.2", 161, [12])


def test_unknown_ids_and_other_customers_equipment_are_refused(tmp_path):
    registry = load(tmp_path, BMC)
    assert registry.resolve("bmc-1", "CUST-1").id == "bmc-1"
    with pytest.raises(EquipmentRefused, match="'bmc-9' is not in the registry"):
        registry.resolve("bmc-9", "CUST-1")
    with pytest.raises(EquipmentRefused, match="'bmc-1' does not belong to customer 'CUST-2'"):
        registry.resolve("bmc-1", "CUST-2")


def test_an_empty_registry_refuses_everything():
    with pytest.raises(EquipmentRefused):
        Registry().resolve("bmc-1", "CUST-1")


def test_a_missing_file_and_bad_toml_say_so(tmp_path):
    with pytest.raises(RegistryError, match="cannot read the equipment registry .*nope.toml"):
        Registry.load(tmp_path / "nope.toml")
    assert "is not valid TOML" in load_error(tmp_path, "[[equipment]\nid = 1")


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ('kind = "ipmi"', "does not match any of the expected tags"),
        (
            'credentials = { env = "BMC_1_PASSWORD" }\npassword = "hunter2"',
            "equipment[0] (bmc-1).password: Extra inputs",
        ),
        ('credentials = { env = "A", file = "/b" }', "either { env"),
        ('credentials = { value = "hunter2" }', "credentials.value: Extra inputs"),
        ('endpoint = "https://root:calvin@10.0.0.5"', "put no credentials in the endpoint"),
        ('endpoint = "https://10.0.0.5/redfish/v1"', "the BMC's base address"),
        ('endpoint = "ftp://10.0.0.5"', "endpoint: URL scheme should be 'http' or 'https'"),
        ('graceful_timeout_s = -1', "graceful_timeout_s"),
        ('system_path = "/elsewhere"', "system_path"),
        ('graceful_timeout_s = 600', "= 780 s does not fit in the 300 s an equipment activity may run"),
        ("power_timeout_s = 61", "= 301 s does not fit in the 300 s"),
        ('request_timeout_s = 11', "= 312 s does not fit"),
        ('power_off = "graceful_only"\ngraceful_timeout_s = 0', 'which power_off = "graceful_only" forbids'),
        ('power_off = "force_off_later"', "power_off: Input should be 'force_off_after'"),
        ('tls_fingerprint_sha256 = "AB:CD"', "a SHA-256 fingerprint is 64 hex digits"),
        ('verify_tls = false\ntls_server_name = "ilo.example"', "need verify_tls = true"),
        ('host_aliases = ["ilo example"]', "host_aliases.0: String should match pattern"),
    ],
)
def test_a_bad_entry_is_refused_naming_the_entry_and_the_field(tmp_path, change, complaint):
    key = change.split(" ", 1)[0]
    text = "\n".join(line for line in BMC.splitlines() if not line.startswith(key + " ")) + "\n" + change + "\n"
    assert complaint in load_error(tmp_path, text)


def test_the_waits_must_fit_the_activity_so_force_off_is_reached(tmp_path):
    # graceful_only never waits for ForceOff, so its graceful wait may take the power wait's share
    fits = load(tmp_path, BMC + 'power_off = "graceful_only"\ngraceful_timeout_s = 180\n').resolve("bmc-1", "CUST-1")
    assert (fits.longest_action_s, fits.power_off) == (300, "graceful_only")
    assert "does not fit" in load_error(tmp_path, BMC + "graceful_timeout_s = 180\n")
    default = load(tmp_path, BMC).resolve("bmc-1", "CUST-1")
    assert (default.power_off, default.longest_action_s) == ("force_off_after", 300)


def test_tls_and_alias_settings_are_normalised(tmp_path):
    pin = ":".join(["ab"] * 32)
    text = BMC + f'tls_fingerprint_sha256 = "{pin}"\ntls_server_name = "ilo-1.example"\nhost_aliases = ["ilo-1"]\n'
    bmc = load(tmp_path, text).resolve("bmc-1", "CUST-1")
    assert (bmc.tls_fingerprint_sha256, bmc.tls_server_name, bmc.host_aliases) == ("ab" * 32, "ilo-1.example", ["ilo-1"])


def test_duplicate_ids_are_refused(tmp_path):
    assert "bmc-1 appear more than once" in load_error(tmp_path, BMC + BMC)


SWITCH = """
[[equipment]]
id = "sw-1"
customer_id = "CUST-1"
kind = "snmp"
endpoint = "{endpoint}"
ports = {ports}
{extra}
"""


@pytest.mark.parametrize(
    ("endpoint", "ports", "extra", "complaint"),
    [
        (
            "udp://10.0.0.2:161",
            "[12]",
            'version = "3"\ncredentials = { env = "K" }\npriv_protocol = "none"',
            "needs `user`",
        ),
        (
            "udp://10.0.0.2",
            "[12]",
            'user = "u"\ncredentials = { env = "K" }',
            "`priv_credentials` is required with a privacy protocol",
        ),
        ("udp://10.0.0.2", "[12]", 'version = "2c"\nuser = "u"\ncredentials = { env = "C" }', "v2c uses only"),
        ("udp://10.0.0.2", "[12, 12]", 'version = "2c"\ncredentials = { env = "C" }', "only once"),
        ("udp://10.0.0.2", "[]", 'version = "2c"\ncredentials = { env = "C" }', "ports"),
        ("10.0.0.2:161", "[12]", 'version = "2c"\ncredentials = { env = "C" }', "udp://10.20.0.2:161"),
        (
            "udp://10.0.0.2",
            "[12]",
            'user = "u"\ncredentials = { env = "K" }\npriv_credentials = { env = "P" }\naes_key_extension = "reeder"',
            '`aes_key_extension` applies only to SNMPv3 with priv_protocol "aes192" or "aes256"',
        ),
        (
            "udp://10.0.0.2",
            "[12]",
            'user = "u"\ncredentials = { env = "K" }\npriv_credentials = { env = "P" }\npriv_protocol = "aes256"\n'
            'aes_key_extension = "cisco"',
            "'blumenthal' or 'reeder'",
        ),
    ],
)
def test_snmp_entries_are_checked(tmp_path, endpoint, ports, extra, complaint):
    assert complaint in load_error(tmp_path, SWITCH.format(endpoint=endpoint, ports=ports, extra=extra))


def test_a_good_snmp_v2c_entry_loads(tmp_path):
    extra = 'version = "2c"\ncredentials = { env = "C" }'
    registry = load(tmp_path, SWITCH.format(endpoint="udp://10.0.0.2:1161", ports="[12, 13]", extra=extra))
    switch = registry.resolve("sw-1", "CUST-1")
    assert (switch.port, switch.ports, switch.version) == (1161, [12, 13], "2c")


def test_aes_256_keys_are_extended_as_net_snmp_does_unless_the_entry_says_reeder(tmp_path):
    extra = 'user = "u"\ncredentials = { env = "K" }\npriv_credentials = { env = "P" }\npriv_protocol = "aes256"'
    common = load(tmp_path, SWITCH.format(endpoint="udp://10.0.0.2", ports="[12]", extra=extra))
    assert common.resolve("sw-1", "CUST-1").aes_key_extension == "blumenthal"
    extra += '\naes_key_extension = "reeder"'
    cisco = load(tmp_path, SWITCH.format(endpoint="udp://10.0.0.2", ports="[12]", extra=extra))
    assert cisco.resolve("sw-1", "CUST-1").aes_key_extension == "reeder"


def test_secrets_are_read_at_use_from_the_environment_or_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("BMC_1_PASSWORD", "first")
    from_env = CredentialRef(env="BMC_1_PASSWORD")
    assert from_env.read() == "first"
    monkeypatch.setenv("BMC_1_PASSWORD", "rotated")
    assert from_env.read() == "rotated"
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file\n")
    assert CredentialRef(file=secret_file).read() == "from-file"


def test_a_missing_secret_is_a_configuration_error(tmp_path, monkeypatch):
    monkeypatch.delenv("BMC_1_PASSWORD", raising=False)
    with pytest.raises(EquipmentMisconfigured, match="environment variable BMC_1_PASSWORD is not set"):
        CredentialRef(env="BMC_1_PASSWORD").read()
    with pytest.raises(EquipmentMisconfigured, match="cannot read the secret in file"):
        CredentialRef(file=tmp_path / "absent").read()


@pytest.mark.parametrize(
    "bad",
    [
        {"equipment_id": "https://169.254.169.254/latest/meta-data"},
        {"equipment_id": "bmc-1", "endpoint": "https://attacker.example"},
    ],
)
def test_requests_carry_ids_only_never_an_address(bad):
    fields = {
        "idempotency_key": "k",
        "equipment_id": "bmc-1",
        "customer_id": "CUST-1",
        "invoice_id": "INV-1",
        "reason": "unpaid",
        "requested_by": "invoice-INV-1",
    }
    with pytest.raises(ValidationError):
        EquipmentRequest(**{**fields, **bad})
