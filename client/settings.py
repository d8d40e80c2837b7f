"""Service settings, read once from the environment (prefix ``DUNNING_``, plus ``DATABASE_URL``)."""

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from temporalio.envconfig import ClientConfigProfile

from workflows.bounds import DateWindow

# The embedded server's database and login roles (``worker.embedded.provision_database`` creates them).
EMBEDDED_DATABASE = "dunning"
EMBEDDED_OWNER_ROLE = "dunning_owner"
EMBEDDED_SERVICE_ROLE = "dunning"


class Settings(BaseSettings):
    """Where the service finds Temporal, Postgres and SMTP; embedded defaults for one machine."""

    model_config = SettingsConfigDict(env_prefix="DUNNING_", extra="ignore")

    data_dir: Path = Path("data")
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = "dunning"
    temporal_ui_port: int = 8233
    temporal_metrics_bind: str | None = Field(
        default=None, description="host:port where the SDK serves its Prometheus metrics; unset: off"
    )
    temporal_api_key: SecretStr | None = Field(default=None, description="Temporal Cloud API key (implies TLS)")
    temporal_tls: bool = Field(default=False, description="TLS to the frontend with the system CAs")
    temporal_tls_ca_file: Path | None = None
    temporal_tls_cert_file: Path | None = Field(default=None, description="client certificate (mTLS)")
    temporal_tls_key_file: Path | None = None
    temporal_tls_server_name: str | None = Field(default=None, description="the name the frontend's certificate is for")
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "DUNNING_DATABASE_URL"),
        description="the service's role: a member of dunning_service, owning nothing (docs/database-roles.md)",
    )
    database_owner_url: str | None = Field(
        default=None, description="the schema owner's role, used only to apply migrations; unset: DATABASE_URL's"
    )
    worker_activity_slots: int = Field(
        default=16, ge=1, description="activities one worker runs at once"
    )
    worker_render_processes: int = Field(
        default=1, ge=1, description="low-priority processes that render notices and PDFs beside the worker"
    )
    worker_workflow_task_slots: int = Field(default=10, ge=1, description="workflow tasks one worker runs at once")
    notice_digest_gathering_s: float = Field(
        default=180, ge=0, le=3600,
        description="a customer started from now on gathers its invoices' stage notices this long before one digest goes out",
    )
    worker_cached_workflows: int = Field(
        default=500, ge=0, description="open invoices a worker keeps in memory (others replay their history first)"
    )
    worker_shutdown_grace_s: float = Field(
        default=30, ge=0, description="on SIGTERM, how long running activities may finish before they are cancelled"
    )
    smtp_host: str = "localhost"
    smtp_port: int = 8025
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_ca_file: Path | None = None
    mail_from: str = "billing@dunning.invalid"
    payee_name: str = "Dunning Demo Ltd"
    payment_instructions: str | None = Field(
        default=None, description="printed as is on every notice, whatever its language: keep it language-neutral"
    )
    payee_iban: str | None = "RO49 AAAA 1B31 0075 9384 0000"
    payment_link: str | None = None
    agency_email: str = "collections@agency.invalid"
    channels_file: Path | None = Field(default=None, description="per-customer notice channels (TOML)")
    equipment_file: Path | None = Field(default=None, description="the equipment registry (TOML)")
    equipment_dry_run: bool = False
    equipment_kill_switch: bool = Field(default=False, description="global: refuse every cut and restore")
    customers_file: Path | None = Field(default=None, description="per-customer standing settings (TOML)")
    policies_file: Path | None = Field(
        default=None, description="named dunning policies and the integration role's bounds (TOML); None: `standard` only"
    )
    interest_rates_file: Path | None = Field(
        default=None, description="reference rates for statutory interest (TOML); None: the packaged ECB rates"
    )
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_tokens: dict[str, Literal["integration", "ops", "metrics"]] = Field(
        default_factory=dict, description='JSON: {"<token>": "ops" | "integration" | "metrics"}'
    )
    codec_keys: SecretStr | None = Field(
        default=None, description='payload encryption keys "k2:<base64>,k1:<base64>", first current; unset: off'
    )
    codec_host: str = "127.0.0.1"
    codec_port: int = 8081
    codec_allowed_origins: list[str] = Field(
        default_factory=list, description="unset: the Temporal UI's own origin at temporal_ui_port"
    )
    codec_token: SecretStr | None = None
    codec_endpoint: str | None = Field(default=None, description="the codec server's address as the browser sees it")
    date_window_days: int = Field(
        default=1096, ge=1, le=36_500,
        description="issue, due and instalment dates and payment times must lie within this many days of today",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] | None = Field(
        default=None, description="unset: INFO for the services, WARNING for one-off commands"
    )
    log_format: Literal["json", "text"] | None = Field(
        default=None, description="unset: JSON lines, readable lines under `dunning dev`"
    )
    payment_webhook_secret: str | None = None
    payment_webhook_tolerance_seconds: int = Field(default=300, ge=1)
    stripe_webhook_secret: str | None = Field(default=None, description="the Stripe endpoint's signing secret (whsec_…)")
    stripe_webhook_tolerance_seconds: int = Field(default=300, ge=1)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, level: object) -> object:
        return level.upper() if isinstance(level, str) else level

    @model_validator(mode="after")
    def _ui_origins(self) -> "Settings":
        if not self.codec_allowed_origins:
            port = self.temporal_ui_port
            self.codec_allowed_origins = [f"http://localhost:{port}", f"http://127.0.0.1:{port}"]
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """``DUNNING_*`` first, then Temporal's own client configuration, then the defaults."""
        return init_settings, env_settings, dotenv_settings, TemporalProfile(settings_cls), file_secret_settings

    @property
    def embedded_pgdata(self) -> Path:
        """Data folder of the embedded PostgreSQL server."""
        return (self.data_dir / "postgres").resolve()

    def date_window(self) -> DateWindow:
        """What the API and the CLI accept now (``date_window_days`` around today)."""
        return DateWindow(now=datetime.now(timezone.utc), days=self.date_window_days)

    def browser_codec_endpoint(self) -> str:
        """Where the Temporal UI (in the browser) reaches the codec server."""
        return self.codec_endpoint or f"http://localhost:{self.codec_port}"

    def resolved_database_url(self) -> str:
        """``DATABASE_URL`` if set, else the service role's address on the embedded server (its Unix socket)."""
        if self.database_url:
            return self.database_url
        return f"postgresql://{EMBEDDED_SERVICE_ROLE}@/{EMBEDDED_DATABASE}?host={self.embedded_pgdata}"

    def resolved_owner_database_url(self) -> str:
        """Where migrations are applied: ``DUNNING_DATABASE_OWNER_URL`` if set, else ``DATABASE_URL`` if set,
        else the owner role's address on the embedded server."""
        if self.database_owner_url:
            return self.database_owner_url
        if self.database_url:
            return self.database_url
        return f"postgresql://{EMBEDDED_OWNER_ROLE}@/{EMBEDDED_DATABASE}?host={self.embedded_pgdata}"


class TemporalProfile(PydanticBaseSettingsSource):
    """The connection settings of Temporal's environment configuration (``temporalio.envconfig``): the
    ``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY`` and ``TEMPORAL_TLS*`` variables and
    the profile ``TEMPORAL_PROFILE`` (default ``default``) of ``temporal.toml``, as the Temporal CLI reads
    them: a user's existing CLI profile works. ``DUNNING_*`` settings take precedence."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        profile = ClientConfigProfile.load()
        found: dict[str, Any] = {"temporal_address": profile.address, "temporal_namespace": profile.namespace}
        if profile.api_key:
            found["temporal_api_key"] = profile.api_key
        if profile.tls is not None:
            tls = profile.tls
            found["temporal_tls"] = not tls.disabled
            found["temporal_tls_server_name"] = tls.server_name
            for name, source in (("ca", tls.server_root_ca_cert), ("cert", tls.client_cert), ("key", tls.client_private_key)):
                if source is not None and not isinstance(source, Path):
                    raise ValueError(
                        f"Temporal's client configuration gives the TLS {name} inline: give it as a file (its *_PATH setting)"
                    )
                found[f"temporal_tls_{name}_file"] = source
        return {name: value for name, value in found.items() if value is not None}
