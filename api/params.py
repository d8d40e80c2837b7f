"""Parameters the routes share: identifiers in the path, and offset pagination (a :class:`Page` plus a ``Link`` header)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Path, Query, Request, Response
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


@dataclass(frozen=True)
class Paging:
    """A list route's ``limit`` and ``offset``, and what it needs to answer with a :class:`Page`."""

    request: Request
    response: Response
    limit: int
    offset: int

    def page(self, items: list[T], total: int) -> Page[T]:
        """``items`` as this page of ``total``, with the ``Link`` header (RFC 8288: ``first``, ``prev``, ``next``)."""
        limit, offset = self.limit, self.offset
        links = {"first": 0}
        if offset > 0:
            links["prev"] = max(0, min(offset - limit, total - limit))
        if offset + limit < total:
            links["next"] = offset + limit
        self.response.headers["Link"] = ", ".join(
            f'<{self.request.url.include_query_params(limit=limit, offset=at)}>; rel="{rel}"' for rel, at in links.items()
        )
        return Page(items=items, limit=limit, offset=offset, total=total)

    def window(self, every: list[T]) -> Page[T]:
        """This page of a list held whole."""
        return self.page(every[self.offset : self.offset + self.limit], len(every))


def _paging(request: Request, response: Response, limit: Limit = 50, offset: Offset = 0) -> Paging:
    return Paging(request, response, limit, offset)


Paged = Annotated[Paging, Depends(_paging)]
