"""Running a CLI command against the service's database: migrations first, errors as one line."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import asyncpg
import typer

from activities.ledger import apply_schema, create_pool
from client.settings import Settings

T = TypeVar("T")


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
    except Exception as err:  # noqa: BLE001 - every failure becomes a message, never a traceback
        typer.echo(f"error: {' '.join(str(err).split()) or type(err).__name__}", err=True)
        raise typer.Exit(1) from None
