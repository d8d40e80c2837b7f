"""Which invoice a bank credit pays: by its ISO 11649 creditor reference, or an invoice number in its free text.

Matching names the invoice and, where the read model knows it, the invoice's customer (or, when the
remittance names several invoices of one customer, only that customer); where the payment is then
applied is ``api.statement_import``'s concern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg

from api.camt import StatementLine
from api.cash import ProjectedInvoice, projected_invoice
from workflows import creditor_reference

_RF_IN_TEXT = re.compile(r"\bRF\d{2}", re.IGNORECASE)
_REFERENCE_CHARACTERS = re.compile(r"(?: ?[A-Za-z0-9]){1,21}")  # printed in groups: single spaces allowed
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9]|[A-Za-z0-9]")


@dataclass(frozen=True)
class Match:
    """The invoice a line pays and how it was found, or why none was.

    One invoice found: ``invoice_id`` and its ``customer_id`` (None while the read model has not projected
    it). Several invoices of one customer named: ``invoice_id`` None, ``customer_id`` that customer.
    """

    invoice_id: str | None
    matched_by: str | None = None  # "creditor reference" or "invoice number"
    reason: str | None = None
    payer_reference: str = ""  # what the payer quoted, kept with an unapplied payment
    customer_id: str | None = None  # the invoice's customer, or the one customer of several invoices named
    invoice: ProjectedInvoice | None = None  # the one invoice found, as the read model has it


class InvoiceReferences:
    """Resolves creditor references and invoice numbers against the invoices the read model knows."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._by_reference: dict[str, str] | None = None

    async def match(self, line: StatementLine) -> Match:
        quoted = quoted_references(line)
        payer_reference = quoted[0] if quoted else (line.creditor_reference or line.unstructured[:140] or "(none)")
        for reference in quoted:
            if invoice_id := (await self._references()).get(reference):
                return await self._found(invoice_id, "creditor reference", reference)
        named = await self._invoices_named_in(line.unstructured)
        if len(named) == 1:
            return await self._found(named[0], "invoice number", payer_reference)
        if len(named) > 1 and (customer_id := await self._one_customer(named)):
            return Match(None, "invoice numbers", payer_reference=payer_reference, customer_id=customer_id)
        if len(named) > 1:
            reason = f"the remittance names several invoices ({', '.join(named)}): apply it by hand"
        elif quoted:
            reason = f"creditor reference {quoted[0]} is no invoice's"
        elif line.creditor_reference:
            reason = (
                f"creditor reference {line.creditor_reference!r} is no valid ISO 11649 reference,"
                " and the remittance names no invoice"
            )
        else:
            reason = "no creditor reference and no invoice number in the remittance"
        return Match(None, reason=reason, payer_reference=payer_reference)

    async def _found(self, invoice_id: str, matched_by: str, payer_reference: str) -> Match:
        invoice = await projected_invoice(self._pool, invoice_id)
        customer_id = invoice.customer_id if invoice else None
        return Match(invoice_id, matched_by, payer_reference=payer_reference, customer_id=customer_id, invoice=invoice)

    async def _one_customer(self, invoice_ids: list[str]) -> str | None:
        rows = await self._pool.fetch(
            "SELECT DISTINCT customer_id FROM projected_invoices WHERE invoice_id = ANY($1::text[])", invoice_ids
        )
        return rows[0]["customer_id"] if len(rows) == 1 else None

    async def _references(self) -> dict[str, str]:
        """Every invoice's reference, computed once per import (references are derived, not stored)."""
        if self._by_reference is None:
            ids = [row["invoice_id"] for row in await self._pool.fetch("SELECT invoice_id FROM projected_invoices")]
            self._by_reference = {creditor_reference.for_invoice(invoice_id): invoice_id for invoice_id in ids}
        return self._by_reference

    async def _invoices_named_in(self, text: str) -> list[str]:
        found = [token for token in _TOKEN.findall(text) if len(token) <= 64]
        tokens = sorted({*found, *(token.upper() for token in found)})  # "inv-2026-0042" names INV-2026-0042
        if not tokens:
            return []
        rows = await self._pool.fetch(
            "SELECT invoice_id FROM projected_invoices WHERE invoice_id = ANY($1::text[]) ORDER BY invoice_id", tokens
        )
        return [row["invoice_id"] for row in rows]


def quoted_references(line: StatementLine) -> list[str]:
    """Valid RF references: the structured one first, then any written into the free text.

    In free text a reference's end is unknown ("RF18 5390 0754 7034 thank you"): every length that
    has valid check digits is a candidate; only one that is an invoice's reference matches.
    """
    candidates = [line.creditor_reference or ""]
    for start in _RF_IN_TEXT.finditer(line.unstructured):
        following = _REFERENCE_CHARACTERS.match(line.unstructured, start.end())
        body = "".join(following.group().split()) if following else ""
        candidates += [start.group() + body[:length] for length in range(len(body), 0, -1)]
    valid = [reference for candidate in candidates if (reference := creditor_reference.normalized(candidate))]
    return list(dict.fromkeys(valid))
