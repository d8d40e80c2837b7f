"""Running a CLI command against the service's database: migrations first, errors as one line."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import typer

from activities.ledger import apply_schema, create_pool
from client.settings import Settings

T = TypeVar("T")


def with_database(work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    """Apply pending migrations, run ``work`` with a pool; any failure is one line on stderr, exit 1."""

    async def run() -> T:
        database_url = Settings().resolved_database_url()
        await apply_schema(database_url)
        pool = await create_pool(database_url)
        try:
            return await work(pool)
        finally:
            await pool.close()

    try:
        return asyncio.run(run())
    except Exception as err:  # noqa: BLE001 - every failure becomes a message, never a traceback
        typer.echo(f"error: {' '.join(str(err).split()) or type(err).__name__}", err=True)
        raise typer.Exit(1) from None
