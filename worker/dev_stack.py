"""``dunning dev``: the whole service on one machine, with embedded servers under ``settings.data_dir``."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from api.codec_server import serve_codec
from api.server import serve_api
from client.codec import codec_from_settings
from client.settings import Settings
from worker.embedded import MailSink, provision_database, start_postgres, start_temporal_dev_server
from worker.worker import run_worker


async def run_dev_stack(settings: Settings) -> None:
    """Start the Temporal dev server, Postgres (unless ``database_url`` is set) and a mail sink, then run
    the worker, the HTTP API and (when payloads are encrypted) the codec server until cancelled.
    The embedded Postgres gets an owner role, which applies the migrations, and the service's role,
    which the worker and the API use (see ``provision_database``).
    Everything started here is stopped again, in reverse order, however it ends.
    """
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    grpc_port = int(settings.temporal_address.rsplit(":", 1)[1])
    codec = codec_from_settings(settings.codec_keys)
    with ExitStack() as started:
        # Temporal first: if its port is taken (say, by another `dunning dev`), nothing else gets touched.
        temporal = start_temporal_dev_server(
            data_dir, grpc_port, settings.temporal_ui_port, settings.temporal_namespace,
            codec_endpoint=settings.browser_codec_endpoint() if codec else None,
        )
        started.callback(temporal.stop)

        if not settings.database_url:
            postgres = start_postgres(settings.embedded_pgdata)
            started.callback(postgres.stop)
            urls = await provision_database(postgres.url)
            settings = settings.model_copy(update={"database_url": urls.service, "database_owner_url": urls.owner})
        database_url = settings.resolved_database_url()

        mail = MailSink(settings.smtp_host, settings.smtp_port, data_dir / "mail")
        mail.start()
        started.callback(mail.stop)

        summary = Table.grid(padding=(0, 2))
        summary.add_column(style="bold")
        summary.add_column(overflow="fold")
        summary.add_row("Temporal UI", f"http://localhost:{settings.temporal_ui_port}")
        summary.add_row("Temporal gRPC", f"{settings.temporal_address} (namespace {settings.temporal_namespace})")
        summary.add_row("HTTP API", f"http://{settings.api_host}:{settings.api_port}/docs")
        summary.add_row("Payload codec", settings.browser_codec_endpoint() if codec else "off (set DUNNING_CODEC_KEYS)")
        summary.add_row("Postgres", database_url)
        summary.add_row("Mail sent", f"{mail.folder} (SMTP {settings.smtp_host}:{settings.smtp_port})")
        Console().print(Panel(summary, title="dunning dev", subtitle="Ctrl-C to stop", expand=False))

        stop = asyncio.Event()
        async with asyncio.TaskGroup() as services:
            services.create_task(run_worker(settings), name="worker")
            services.create_task(serve_api(settings, stop), name="api")
            if codec:
                token = settings.codec_token.get_secret_value() if settings.codec_token else None
                services.create_task(
                    serve_codec(settings.codec_host, settings.codec_port, codec, settings.codec_allowed_origins, stop, token=token),
                    name="codec-server",
                )
