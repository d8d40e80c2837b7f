"""A payment id names one payment per customer across all its invoices: the claim taken before recording it.

``payment_claims`` holds, per customer and payment id, the target it was recorded for: an invoice
(``invoice:<id>``) or the customer's payment path (``customer``). The same id for another target is
refused (409) before anything is recorded, so concurrent posts of one payment to two invoices credit it
once (the primary key decides). A claim whose recording was refused is removed again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from api.problems import Kind, Problem
from workflows.models import format_money

CUSTOMER_TARGET = "customer"


def invoice_target(invoice_id: str) -> str:
    return f"invoice:{invoice_id}"


async def target(pool: asyncpg.Pool, customer_id: str, payment_id: str) -> str | None:
    """The target the customer's payment id is claimed for, if any."""
    return await pool.fetchval(
        "SELECT target FROM payment_claims WHERE customer_id = $1 AND payment_id = $2", customer_id, payment_id
    )


class Claim:
    """A claim held while recording: ``release`` gives it up (the payment was kept, not recorded)."""

    def __init__(self, pool: asyncpg.Pool, customer_id: str, payment_id: str, inserted: bool) -> None:
        self._pool, self._key, self.inserted = pool, (customer_id, payment_id), inserted

    async def release(self) -> None:
        if self.inserted:
            await self._pool.execute("DELETE FROM payment_claims WHERE customer_id = $1 AND payment_id = $2", *self._key)
            self.inserted = False


@asynccontextmanager
async def claimed(
    pool: asyncpg.Pool, customer_id: str, payment_id: str, target: str, amount_minor: int, currency: str
) -> AsyncIterator[Claim]:
    """Hold the customer's payment id for ``target`` while recording; 409 if another target holds it.

    A claim this call made is released if the recording was refused (a corrected post may follow), and kept
    when its outcome is unknown (no answer: the payment may have been recorded).
    """
    inserted = await pool.fetchval(
        "INSERT INTO payment_claims (customer_id, payment_id, target, amount_minor, currency) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT DO NOTHING RETURNING true",
        customer_id,
        payment_id,
        target,
        amount_minor,
        currency,
    )
    if not inserted:
        row = await pool.fetchrow(
            "SELECT target, amount_minor, currency, claimed_at FROM payment_claims WHERE customer_id = $1 AND payment_id = $2",
            customer_id,
            payment_id,
        )
        if row is not None and row["target"] != target:
            raise Problem(Kind.PAYMENT_CONFLICT, _conflict(customer_id, payment_id, dict(row)))
    claim = Claim(pool, customer_id, payment_id, bool(inserted))
    try:
        yield claim
    except Problem as problem:
        if refused(problem):
            await claim.release()
        raise


def refused(problem: Problem) -> bool:
    """Whether the problem says the payment was not recorded (not: no answer, so perhaps recorded)."""
    return problem.kind != Kind.UNAVAILABLE


def _conflict(customer_id: str, payment_id: str, row: dict) -> str:
    target = row["target"]
    where = "the customer's payment path" if target == CUSTOMER_TARGET else target.replace(":", " ")
    return (
        f"payment {payment_id} of customer {customer_id} was already received for {where}"
        f" ({format_money(row['amount_minor'], row['currency'])}, {row['claimed_at']:%Y-%m-%d %H:%M} UTC);"
        " a payment id names one payment per customer"
    )
