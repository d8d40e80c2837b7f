"""Bearer tokens to roles: ``integration`` creates invoices and records payments; ``metrics`` may only
scrape ``GET /metrics``; ``ops`` may do everything.

Tokens come from ``DUNNING_API_TOKENS`` (``{"<token>": "ops" | "integration" | "metrics"}``). A missing or
unknown token is 401 with ``WWW-Authenticate: Bearer``; a known token whose role may not do the request is 403.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from enum import StrEnum

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.problems import Kind, Problem

REALM = "dunning"


class Role(StrEnum):
    INTEGRATION = "integration"
    OPS = "ops"
    METRICS = "metrics"


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A token from DUNNING_API_TOKENS; its role (integration, ops or metrics) decides what it may do.",
)


def role_of(token: str, tokens: dict[str, str]) -> Role | None:
    """The role of ``token``; every configured token is compared, in constant time, whatever matches."""
    found: str | None = None
    offered = token.encode()
    for known, role in tokens.items():
        if hmac.compare_digest(offered, known.encode()):
            found = role
    return Role(found) if found else None


def require(*allowed: Role) -> Callable[..., Awaitable[Role]]:
    """A dependency that lets the request through only with a token of one of the ``allowed`` roles."""

    async def authorize(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Role:
        if credentials is None:
            raise Problem(
                Kind.UNAUTHORIZED,
                "send a bearer token: Authorization: Bearer <token>",
                headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'},
            )
        role = role_of(credentials.credentials, request.app.state.settings.api_tokens)
        if role is None:
            raise Problem(
                Kind.UNAUTHORIZED,
                "the bearer token is not valid",
                headers={"WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_token"'},
            )
        if role not in allowed:
            needed = " or ".join(r.value for r in allowed)
            raise Problem(
                Kind.FORBIDDEN,
                f"this request needs the {needed} role; the token has the {role.value} role",
                headers={"WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope"'},
            )
        return role

    return authorize


any_role = Depends(require(Role.INTEGRATION, Role.OPS))
"""Invoices and payments: integrations and ops."""
ops_only = Depends(require(Role.OPS))
"""Everything else: ops."""
metrics_scraper = Depends(require(Role.METRICS, Role.OPS))
"""``GET /metrics`` (payment totals, amounts overdue): a scraper's token, or ops."""
