"""Parameters the routes share: identifiers in the path, and offset pagination (a :class:`Page` plus a ``Link`` header)."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Path, Query, Request, Response
from pydantic import BaseModel, Field

from api import examples

T = TypeVar("T")
MAX_LIMIT = 500
MAX_OFFSET = 1_000_000_000
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # workflows.models.Identifier

InvoiceId = Annotated[
    str, Path(min_length=1, max_length=64, pattern=ID_PATTERN, description="invoice id", examples=[examples.INVOICE_ID])
]
CustomerId = Annotated[
    str, Path(min_length=1, max_length=64, pattern=ID_PATTERN, description="customer id", examples=[examples.CUSTOMER_ID])
]
PaymentId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN, description="payment id", examples=["PSP-7781"])]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")]


class Page(BaseModel, Generic[T]):
    """One page of a list; ``total`` counts every matching item, on all pages."""

    items: list[T]
    limit: int = Field(description="page size asked for")
    offset: int = Field(description="items skipped before this page")
    total: int = Field(description="matching items on all pages")


def page(request: Request, response: Response, items: list[T], limit: int, offset: int, total: int) -> Page[T]:
    """The page, with the ``Link`` header (RFC 8288: ``first``, ``prev``, ``next``) set on ``response``."""
    links = {"first": 0}
    if offset > 0:
        links["prev"] = max(0, min(offset - limit, total - limit))
    if offset + limit < total:
        links["next"] = offset + limit
    response.headers["Link"] = ", ".join(
        f'<{request.url.include_query_params(limit=limit, offset=at)}>; rel="{rel}"' for rel, at in links.items()
    )
    return Page(items=items, limit=limit, offset=offset, total=total)
