"""Running a CLI command against the service's database: migrations first, errors as one line."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import typer
from temporalio.client import Client

from activities.ledger import apply_schema, create_pool
from client.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class Connections:
    """What recording a payment needs (``api.intake.PaymentContext``), opened by the command itself."""

    client: Client
    pool: asyncpg.Pool
    settings: Settings


def with_database(work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    """Apply pending migrations (as the schema's owner), run ``work`` with a pool of the service's role;
    any failure is one line on stderr, exit 1."""

    async def run() -> T:
        settings = Settings()
        await apply_schema(settings.resolved_owner_database_url())
        pool = await create_pool(settings.resolved_database_url())
        try:
            return await work(pool)
        finally:
            await pool.close()

    return _in_one_line(run)


def migrate() -> list[str]:
    """Apply pending migrations as the schema's owner (``DUNNING_DATABASE_OWNER_URL``); the names applied."""
    return _in_one_line(lambda: apply_schema(Settings().resolved_owner_database_url()))


def _in_one_line(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(main())
    except (OSError, asyncpg.CannotConnectNowError) as err:
        message = unreachable_database(Settings().resolved_database_url(), err)
    except Exception as err:  # noqa: BLE001 - every failure becomes a message, never a traceback
        message = str(err) or type(err).__name__
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(1)


def unreachable_database(url: str, err: BaseException) -> str:
    """What to do when no database answers at ``url``: start the stack, or point DATABASE_URL elsewhere."""
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err) or type(err).__name__
    if "host=" in url and "@/" in url:  # the embedded server's Unix socket
        return (
            f"cannot reach the embedded database ({reason.lower()} at {redacted_url(url)}): "
            "is the stack running? Start it with `make run` (or `dunning dev`), or set DATABASE_URL"
        )
    return f"cannot use the database at {redacted_url(url)}: {reason.lower()}; check DATABASE_URL and that the server is up"


def redacted_url(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
