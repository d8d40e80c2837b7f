"""``dunning dev``: the whole service on one machine, with embedded servers under ``settings.data_dir``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from datetime import timedelta

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from api.codec_server import serve_codec
from api.server import serve_api
from client.codec import codec_from_settings
from client.ports import check_ports_free
from client.settings import Settings
from client.temporal import connect
from worker.embedded import MailSink, provision_database, start_postgres, start_temporal_dev_server
from worker.narrator import narrate
from worker.worker import run_worker

log = logging.getLogger(__name__)


async def run_dev_stack(
    settings: Settings, demo_unit: timedelta | None = None, say: Callable[[str], None] | None = None
) -> None:
    """Start the Temporal dev server, Postgres (unless ``database_url`` is set) and a mail sink, then run
    the worker, the HTTP API and (when payloads are encrypted) the codec server until cancelled.
    The embedded Postgres gets an owner role, which applies the migrations, and the service's role,
    which the worker and the API use (see ``provision_database``).

    Prints the banner once the worker and the API are up, then a line (``say``) for each event the
    service appends. With ``demo_unit``, also starts the demo's equipment peers and registry and its
    customer's invoices, one ladder rung per ``demo_unit`` (see ``worker.demo``).
    Everything started here is stopped again, in reverse order, however it ends.
    """
    say = say or _print_line
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    grpc_port = int(settings.temporal_address.rsplit(":", 1)[1])
    codec = codec_from_settings(settings.codec_keys)
    needed = {
        grpc_port: "DUNNING_TEMPORAL_ADDRESS",
        settings.temporal_ui_port: "DUNNING_TEMPORAL_UI_PORT",
        settings.api_port: "DUNNING_API_PORT",
        settings.smtp_port: "DUNNING_SMTP_PORT",
    }
    if codec:
        needed[settings.codec_port] = "DUNNING_CODEC_PORT"
    check_ports_free(needed)  # before anything starts, so a second `dunning dev` touches nothing
    with ExitStack() as started:
        site = None
        if demo_unit is not None:
            from worker.demo import demo_gathering, demo_site

            site = await asyncio.to_thread(started.enter_context, demo_site(data_dir / "demo"))
            settings = settings.model_copy(update={"equipment_file": site.registry_file})
            if "notice_digest_gathering_s" not in settings.model_fields_set:  # a digest within the rung, not minutes after
                settings = settings.model_copy(update={"notice_digest_gathering_s": demo_gathering(demo_unit).total_seconds()})

        temporal = await asyncio.to_thread(
            start_temporal_dev_server,
            data_dir, grpc_port, settings.temporal_ui_port, settings.temporal_namespace,
            codec_endpoint=settings.browser_codec_endpoint() if codec else None,
        )
        started.callback(temporal.stop)

        if not settings.database_url:
            postgres = await asyncio.to_thread(start_postgres, settings.embedded_pgdata)
            started.callback(postgres.stop)
            urls = await provision_database(postgres.url)
            settings = settings.model_copy(update={"database_url": urls.service, "database_owner_url": urls.owner})
        database_url = settings.resolved_database_url()

        mail = MailSink(settings.smtp_host, settings.smtp_port, data_dir / "mail")
        mail.start()
        started.callback(mail.stop)

        stop = asyncio.Event()
        worker_ready, api_ready = asyncio.Event(), asyncio.Event()
        async with asyncio.TaskGroup() as services:
            services.create_task(run_worker(settings, on_ready=worker_ready.set), name="worker")
            services.create_task(serve_api(settings, stop, on_started=lambda _: api_ready.set()), name="api")
            if codec:
                token = settings.codec_token.get_secret_value() if settings.codec_token else None
                services.create_task(
                    serve_codec(settings.codec_host, settings.codec_port, codec, settings.codec_allowed_origins, stop, token=token),
                    name="codec-server",
                )
            await worker_ready.wait()
            await api_ready.wait()
            services.create_task(narrate(database_url, say, stop), name="narrator")
            say(_banner(settings, database_url, mail, codec is not None, site is not None))
            if site is not None and demo_unit is not None:
                from worker.demo import tell_the_story

                client = await connect(settings)
                story = tell_the_story(client, settings.task_queue, site, mail.folder, say, demo_unit)
                services.create_task(_not_fatal(story, "the demo"), name="demo")


async def _not_fatal(work: Awaitable[None], what: str) -> None:
    """Run ``work``; if it fails, log why and let the rest of the stack run on."""
    try:
        await work
    except Exception:  # noqa: BLE001 - the service outlives its demo
        log.exception("%s stopped", what)


def _print_line(line: str) -> None:
    print(line, flush=True)


def _banner(settings: Settings, database_url: str, mail: MailSink, codec: bool, demo: bool) -> str:
    """Where everything is, as a panel rendered for this terminal."""
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column(overflow="fold")
    summary.add_row("Temporal UI", f"http://localhost:{settings.temporal_ui_port}")
    summary.add_row("Temporal gRPC", f"{settings.temporal_address} (namespace {settings.temporal_namespace})")
    summary.add_row("HTTP API", f"http://{settings.api_host}:{settings.api_port}/docs")
    summary.add_row("Payload codec", settings.browser_codec_endpoint() if codec else "off (set DUNNING_CODEC_KEYS)")
    summary.add_row("Postgres", database_url)
    summary.add_row("Mail sent", f"{mail.folder} (SMTP {settings.smtp_host}:{settings.smtp_port})")
    if demo:
        summary.add_row("Equipment", f"{settings.equipment_file} (Redfish emulator and SNMP simulator on loopback)")
    console = Console()
    with console.capture() as banner:
        console.print(Panel(summary, title="dunning dev: ready", subtitle="Ctrl-C to stop", expand=False))
    return banner.get().rstrip("\n")
