"""Which channels each customer's notices go out on, from a TOML file read once at worker start.

```toml
[customers."CUST-1"]
channels = ["email", "webhook"]
webhook_url = "https://crm.example.com/hooks/dunning"
webhook_secret_env = "DUNNING_WEBHOOK_SECRET_CUST_1"   # the env var holding the secret
```

Customers not listed get e-mail only. The file names the environment variable that holds a
webhook's secret, never the secret itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from client.settings_files import SettingsFileError, load_toml
from workflows.models import Identifier

SecretResolver = Callable[[str], str | None]


class Channel(StrEnum):
    EMAIL = "email"
    WEBHOOK = "webhook"


class ChannelsFileError(SettingsFileError):
    """The channels file is missing, not TOML, or not valid; the message says where and why."""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class CustomerChannels(BaseModel):
    """One customer's channels, and the webhook's address and secret's env var when it has one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: list[Channel] = Field(min_length=1)
    webhook_url: HttpUrl | None = None
    webhook_secret_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_secret_in_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and "webhook_secret" in data:
            raise ValueError("never put the webhook secret in this file: name its env var in webhook_secret_env")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> CustomerChannels:
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("each channel may appear only once")
        has_webhook = Channel.WEBHOOK in self.channels
        if has_webhook != (self.webhook_url is not None) or has_webhook != (self.webhook_secret_env is not None):
            raise ValueError(
                "webhook_url and webhook_secret_env are required with the webhook channel, and only with it"
            )
        if self.webhook_url and self.webhook_url.scheme != "https" and not _loopback(self.webhook_url.host or ""):
            raise ValueError("webhook_url must use https (plain http only to a loopback host)")
        return self


EMAIL_ONLY = CustomerChannels(channels=[Channel.EMAIL])


class ChannelsConfig(BaseModel):
    """Channels per customer id; anyone not listed gets e-mail only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customers: dict[Identifier, CustomerChannels] = Field(default_factory=dict)

    def for_customer(self, customer_id: str) -> CustomerChannels:
        """The customer's channels (e-mail only when not listed)."""
        return self.customers.get(customer_id, EMAIL_ONLY)

    def missing_secrets(self, resolve: SecretResolver) -> list[str]:
        """Env vars named by a webhook customer that ``resolve`` finds no secret for."""
        names = {c.webhook_secret_env for c in self.customers.values() if c.webhook_secret_env}
        return sorted(name for name in names if not resolve(name))


def load_channels(path: Path | None) -> ChannelsConfig:
    """Read and validate the channels file; no file means e-mail for everyone."""
    if path is None:
        return ChannelsConfig()
    return load_toml(path, "channels file", ChannelsConfig.model_validate, ChannelsFileError)
