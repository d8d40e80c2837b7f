"""The equipment registry: the allow-list of what the service may cut, loaded from a TOML file.

Workflows and API callers name equipment only by id; the endpoint, options and the reference to
the credentials come from this file, never from a request, so no caller can point the service at
an address of its choosing. The file holds references to secrets (an environment variable or a
file), never the secrets themselves; they are read at each use.

    [[equipment]]
    id = "bmc-srv-cluj-01"
    customer_id = "RO-40512378"
    kind = "redfish"
    endpoint = "https://10.20.0.11"
    username = "dunning"
    credentials = { env = "DUNNING_BMC_SRV_CLUJ_01_PASSWORD" }
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, HttpUrl, ValidationError, model_validator

from activities.equipment.adapter import EquipmentMisconfigured
from activities.tls import normalise_fingerprint
from client.settings_files import SettingsFileError, load_toml
from workflows.models import EQUIPMENT_ACTIVITY_TIMEOUT, Identifier, Strict


class RegistryError(SettingsFileError):
    """The registry file is missing, is not TOML, or does not validate."""


class EquipmentRefused(Exception):
    """The equipment id is not in the registry, or belongs to another customer."""


class CredentialRef(Strict):
    """Where a secret is kept: exactly one of an environment variable or a file."""

    env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    file: Path | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> CredentialRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("credentials are either { env = \"VARIABLE\" } or { file = \"/path\" }")
        return self

    def read(self) -> str:
        """The secret now (files lose their trailing newline); ``EquipmentMisconfigured`` if absent."""
        if self.env is not None:
            secret = os.environ.get(self.env, "")
        else:
            assert self.file is not None  # the validator requires one of env and file
            try:
                secret = self.file.read_text().rstrip("\r\n")
            except OSError as exc:
                raise EquipmentMisconfigured(f"cannot read the secret in {self}: {exc.strerror}") from None
        if not secret:
            raise EquipmentMisconfigured(f"the secret in {self} is not set")
        return secret

    def __str__(self) -> str:
        return f"environment variable {self.env}" if self.env is not None else f"file {self.file}"


def _no_userinfo_query_or_fragment(url: HttpUrl) -> HttpUrl:
    if url.username or url.password:
        raise ValueError("put no credentials in the endpoint: use `credentials`")
    if url.query or url.fragment:
        raise ValueError("the endpoint takes no query or fragment")
    return url


def _base_url(url: HttpUrl) -> HttpUrl:
    if url.path not in (None, "", "/"):
        raise ValueError("a Redfish endpoint is the BMC's base address, e.g. https://10.20.0.11")
    return url


def _udp_endpoint(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    try:
        port = parts.port
    except ValueError:
        raise ValueError("bad port") from None
    if parts.scheme != "udp" or not parts.hostname or parts.path not in ("", "/") or parts.username:
        raise ValueError("an SNMP endpoint looks like udp://10.20.0.2:161")
    if port == 0:
        raise ValueError("bad port")
    return endpoint


HttpEndpoint = Annotated[HttpUrl, AfterValidator(_no_userinfo_query_or_fragment)]
Seconds = Annotated[float, Field(gt=0, le=3600)]
HostName = Annotated[str, Field(pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")]
# requests an action makes besides its two waits (service root, session, systems, system, ActionInfo,
# state, the resets, a fallback, a read past each wait, the final read, logout), each allowed the
# whole request timeout
REQUESTS_BESIDES_WAITS = 12


class EquipmentEntry(Strict):
    """What every piece of equipment has: who owns it and where its secret is."""

    id: Identifier
    customer_id: Identifier
    description: str = Field(default="", max_length=200)
    credentials: CredentialRef


class RedfishEquipment(EquipmentEntry):
    """A server BMC (iDRAC, iLO, OpenBMC, Supermicro): power off to suspend, power on to restore.

    ``power_off`` says what the operator accepts to power the server off: ``graceful_only``
    (GracefulShutdown, never a button press or a cut), ``push_power_button`` (GracefulShutdown, or
    where the BMC does not offer it a press of the power button: the OS shuts down as on the front
    panel), ``force_off_after`` (the gentlest of those the BMC takes, then ForceOff after
    ``graceful_timeout_s``; the default).
    """

    kind: Literal["redfish"]
    endpoint: Annotated[HttpEndpoint, AfterValidator(_base_url)]
    username: str = Field(min_length=1, max_length=200)
    auth: Literal["session", "basic"] = "session"
    system_path: str | None = Field(
        default=None,
        pattern=r"^/redfish/v1/Systems/[^/?#]+/?$",
        description="e.g. /redfish/v1/Systems/1; unset: the BMC's only system",
    )
    power_off: Literal["force_off_after", "push_power_button", "graceful_only"] = "force_off_after"
    graceful_timeout_s: float = Field(
        default=120,
        ge=0,
        le=3600,
        description="wait this long for GracefulShutdown (or the button), then ForceOff; 0: ForceOff at once",
    )
    power_timeout_s: Seconds = Field(default=60, description="wait this long for ForceOff or On to show")
    poll_interval_s: Seconds = 1.0
    request_timeout_s: Seconds = 10.0
    ca_file: Path | None = Field(default=None, description="CA bundle that signed the BMC's certificate")
    verify_tls: bool = True
    tls_server_name: HostName | None = Field(
        default=None, description="the name the BMC's certificate carries, when the endpoint is its IP address"
    )
    tls_fingerprint_sha256: Annotated[str, AfterValidator(normalise_fingerprint)] | None = Field(
        default=None, description="trust exactly this certificate (its SHA-256 fingerprint), e.g. a factory one"
    )
    host_aliases: list[HostName] = Field(
        default_factory=list,
        max_length=8,
        description="other names of this BMC that its links may carry (an iLO's FQDN in a session Location)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> RedfishEquipment:
        if not self.verify_tls and (self.tls_server_name or self.tls_fingerprint_sha256 or self.ca_file):
            raise ValueError("ca_file, tls_server_name and tls_fingerprint_sha256 need verify_tls = true")
        if self.graceful_timeout_s == 0 and self.power_off != "force_off_after":
            raise ValueError(
                f'graceful_timeout_s = 0 means ForceOff at once, which power_off = "{self.power_off}" forbids'
            )
        budget = EQUIPMENT_ACTIVITY_TIMEOUT.total_seconds()
        if self.longest_action_s > budget:
            raise ValueError(
                f"graceful_timeout_s + power_timeout_s + {REQUESTS_BESIDES_WAITS} x request_timeout_s"
                f" = {self.longest_action_s:g} s does not fit in the {budget:g} s an equipment activity may run,"
                " so ForceOff or its read-back would never be reached; shorten them"
            )
        return self

    @property
    def longest_action_s(self) -> float:
        """The longest a suspend or restore may take: both waits and every request at its timeout."""
        waits = self.graceful_timeout_s + (self.power_timeout_s if self.power_off == "force_off_after" else 0)
        return max(waits, self.power_timeout_s) + REQUESTS_BESIDES_WAITS * self.request_timeout_s


SnmpAuthProtocol = Literal["md5", "sha", "sha224", "sha256", "sha384", "sha512"]
SnmpPrivProtocol = Literal["none", "des", "3des", "aes128", "aes192", "aes256"]
AesKeyExtension = Literal["blumenthal", "reeder"]
LONG_AES = ("aes192", "aes256")


class SnmpEquipment(EquipmentEntry):
    """Ports of a router or switch: IF-MIB ifAdminStatus down to suspend, up to restore.

    ``credentials`` is the community (v2c) or the USM authentication key (v3);
    ``priv_credentials`` the USM privacy key (v3 unless ``priv_protocol = "none"``).
    ``aes_key_extension`` says how an AES-192/256 key is lengthened from the passphrase, which
    agents do differently: "blumenthal" (draft-blumenthal-aes-usm-04: net-snmp's AES-192/AES-256,
    most vendors) or "reeder" (draft-reeder-snmpv3-usm-3desede: Cisco and others; net-snmp's
    AES192C/AES256C where built in).
    """

    kind: Literal["snmp"]
    endpoint: Annotated[str, AfterValidator(_udp_endpoint)]
    ports: list[Annotated[int, Field(ge=1, le=2_147_483_647)]] = Field(min_length=1, max_length=64)
    version: Literal["2c", "3"] = "3"
    user: str | None = Field(default=None, min_length=1, max_length=32)
    auth_protocol: SnmpAuthProtocol = "sha256"
    priv_protocol: SnmpPrivProtocol = "aes128"
    priv_credentials: CredentialRef | None = None
    aes_key_extension: AesKeyExtension = Field(
        default="blumenthal", description="AES-192/256 only: 'blumenthal' (net-snmp, most agents) or 'reeder' (Cisco)"
    )
    context_name: str = Field(default="", max_length=32)
    request_timeout_s: Seconds = 2.0
    retries: int = Field(default=2, ge=0, le=10)

    @model_validator(mode="after")
    def _consistent(self) -> SnmpEquipment:
        if len(set(self.ports)) != len(self.ports):
            raise ValueError("each port (ifIndex) may appear only once")
        if "aes_key_extension" in self.model_fields_set and (self.version != "3" or self.priv_protocol not in LONG_AES):
            raise ValueError('`aes_key_extension` applies only to SNMPv3 with priv_protocol "aes192" or "aes256"')
        if self.version == "3":
            if self.user is None:
                raise ValueError("SNMPv3 needs `user`")
            if (self.priv_protocol == "none") != (self.priv_credentials is None):
                raise ValueError("`priv_credentials` is required with a privacy protocol, and only then")
        elif self.user is not None or self.priv_credentials is not None:
            raise ValueError("`user` and `priv_credentials` are SNMPv3 settings; v2c uses only the community")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.endpoint).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.endpoint).port or 161


class WebhookEquipment(EquipmentEntry):
    """A customer's controller (RouterOS REST, a firewall manager, ...) told by a signed HTTP call.

    ``credentials`` is the shared HMAC secret.
    """

    kind: Literal["webhook"]
    endpoint: HttpEndpoint
    request_timeout_s: Seconds = 10.0
    ca_file: Path | None = None
    verify_tls: bool = True


Equipment = Annotated[RedfishEquipment | SnmpEquipment | WebhookEquipment, Field(discriminator="kind")]


class RegistryFile(Strict):
    """The TOML document: a list of ``[[equipment]]`` tables."""

    equipment: list[Equipment] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> RegistryFile:
        ids = [e.id for e in self.equipment]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"equipment ids must be unique: {', '.join(duplicates)} appear more than once")
        return self


class Registry:
    """The equipment the service may act on, by id."""

    def __init__(self, equipment: Iterable[Equipment] = ()) -> None:
        self._by_id = {e.id: e for e in RegistryFile(equipment=list(equipment)).equipment}

    @classmethod
    def load(cls, path: Path) -> Registry:
        """Read and validate the registry file; ``RegistryError`` says what is wrong and where."""
        parsed = load_toml(path, "equipment registry", RegistryFile.model_validate, RegistryError, _problems)
        return cls(parsed.equipment)

    def resolve(self, equipment_id: str, customer_id: str) -> Equipment:
        """The equipment with this id if it belongs to this customer; ``EquipmentRefused`` otherwise."""
        equipment = self._by_id.get(equipment_id)
        if equipment is None:
            raise EquipmentRefused(f"equipment {equipment_id!r} is not in the registry")
        if equipment.customer_id != customer_id:
            raise EquipmentRefused(f"equipment {equipment_id!r} does not belong to customer {customer_id!r}")
        return equipment

    @property
    def ids(self) -> list[str]:
        """Every registered id, sorted."""
        return sorted(self._by_id)


def _problems(err: ValidationError, document: dict[str, Any]) -> str:
    """Each problem named by the entry it is in, e.g. ``equipment[1] (sw-cluj-core-port-12).ports: ...``."""
    return "; ".join(f"{_where(error['loc'], document)}: {error['msg']}" for error in err.errors(include_url=False))


def _where(loc: tuple, document: dict) -> str:
    """``equipment[1] (sw-cluj-core-port-12).ports`` from a pydantic error location."""
    if len(loc) >= 2 and loc[0] == "equipment" and isinstance(loc[1], int):
        entries = document.get("equipment") or []
        entry = entries[loc[1]] if loc[1] < len(entries) and isinstance(entries[loc[1]], dict) else {}
        label = f"equipment[{loc[1]}]" + (f" ({entry['id']})" if isinstance(entry.get("id"), str) else "")
        rest = [str(part) for part in loc[2:] if part not in ("redfish", "snmp", "webhook")]
        return ".".join([label, *rest])
    return ".".join(str(part) for part in loc) or "(top level)"
