"""What the routes need: the Temporal client, the Postgres pool and the settings, opened by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from fastapi import Request
from temporalio.client import Client

from activities.equipment.registry import Registry
from activities.standing import StandingSettings
from client.policies import PolicyBook
from client.settings import Settings


@dataclass(frozen=True)
class ApiContext:
    """The resources the app opened at start-up, the customers file's standing terms and the named policies."""

    client: Client
    pool: asyncpg.Pool
    settings: Settings
    standing: StandingSettings
    registry: Registry
    policies: PolicyBook


def api_context(request: Request) -> ApiContext:
    """FastAPI dependency: the running app's :class:`ApiContext`."""
    return request.app.state.context
