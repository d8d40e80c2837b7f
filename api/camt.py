"""Reading ISO 20022 bank-to-customer documents: ``camt.053`` statements and ``camt.054`` notifications.

Only what payment matching needs is read, by element name whatever the message version (.02 to .13
share these paths). The XML is parsed by ``defusedxml`` with DTDs refused, so an entity expansion
("billion laughs") or an external entity (XXE) is an error, never resolved, never fetched.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from workflows.models import ISO_CURRENCIES, minor_units_per_major

_DOCUMENTS = {"BkToCstmrStmt": ("camt.053", "Stmt"), "BkToCstmrDbtCdtNtfctn": ("camt.054", "Ntfctn")}
_NOT_PROVIDED = "NOTPROVIDED"


class StatementError(ValueError):
    """The document is not a readable camt.053/054 (the message says why); nothing was imported."""


class Direction(StrEnum):
    CREDIT = "CRDT"
    DEBIT = "DBIT"


@dataclass(frozen=True)
class StatementLine:
    """One transaction of a statement: an entry, or one of a batch entry's transaction details."""

    line: int  # 1-based position in the document, for people reading the summary
    statement_id: str
    entry_ref: str | None
    key: str  # the document's own ids that name this transaction (see ``_key``)
    direction: Direction
    booked: bool
    amount_minor: int
    currency: str
    value_date: date | None
    creditor_reference: str | None  # RmtInf/Strd/CdtrRefInf/Ref, as the payer gave it
    unstructured: str  # RmtInf/Ustrd lines, joined by spaces
    debtor: str | None

    @property
    def payment_id(self) -> str:
        """A payment id derived from the transaction's own ids: the same line imported again gets the same id."""
        return "camt-" + hashlib.sha256(self.key.encode()).hexdigest()[:32]

    @property
    def received_at(self) -> datetime | None:
        return (
            datetime(self.value_date.year, self.value_date.month, self.value_date.day, tzinfo=timezone.utc)
            if self.value_date
            else None
        )


@dataclass(frozen=True)
class Statement:
    kind: str  # "camt.053" or "camt.054"
    message_id: str
    lines: list[StatementLine]


def parse(document: bytes) -> Statement:
    """The transactions of a camt.053 or camt.054 document, in document order. Raises :class:`StatementError`."""
    try:
        root = fromstring(document, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as refused:
        raise StatementError(
            f"refused: the XML declares a DTD or entities ({type(refused).__name__}); camt files have none"
        ) from None
    except ParseError as err:
        raise StatementError(f"not well-formed XML: {err}") from None
    if _name(root) != "Document" or not len(root) or _name(root[0]) not in _DOCUMENTS:
        raise StatementError(
            "not an ISO 20022 camt.053 or camt.054 document (expected Document/BkToCstmrStmt or BkToCstmrDbtCdtNtfctn)"
        )
    kind, report = _DOCUMENTS[_name(root[0])]
    message_id = _text(root[0], "GrpHdr", "MsgId") or ""
    lines: list[StatementLine] = []
    for statement in _children(root[0], report):
        statement_id = _required(statement, "Id")
        account = _text(statement, "Acct", "Id", "IBAN") or _text(statement, "Acct", "Id", "Othr", "Id") or ""
        for entry in _children(statement, "Ntry"):
            lines.extend(_entry_lines(entry, statement_id, account, start=len(lines) + 1))
    return Statement(kind=kind, message_id=message_id, lines=lines)


def _entry_lines(entry: Element, statement_id: str, account: str, start: int) -> list[StatementLine]:
    entry_ref = _text(entry, "NtryRef")
    entry_amount, entry_currency = _amount(entry, "Amt")
    direction = _direction(_required(entry, "CdtDbtInd"))
    status = _text(entry, "Sts", "Cd") or _text(entry, "Sts") or ""
    value_date = _date(_text(entry, "ValDt", "Dt") or _text(entry, "ValDt", "DtTm") or _text(entry, "BookgDt", "Dt"))
    details = [tx for detail in _children(entry, "NtryDtls") for tx in _children(detail, "TxDtls")]
    if len(details) <= 1:
        transactions = [(details[0] if details else None, entry_amount, entry_currency)]
    else:  # a batch booking: each transaction has its own amount and remittance
        transactions = [(tx, *_transaction_amount(tx, entry_currency)) for tx in details]
    lines = []
    for n, (tx, amount, currency) in enumerate(transactions):
        lines.append(
            StatementLine(
                line=start + n,
                statement_id=statement_id,
                entry_ref=entry_ref,
                key=_key(entry, tx, statement_id, account, n if len(transactions) > 1 else None),
                direction=_direction(own) if tx is not None and (own := _text(tx, "CdtDbtInd")) else direction,
                booked=status == "BOOK",
                amount_minor=amount,
                currency=currency,
                value_date=value_date,
                creditor_reference=_text(tx, "RmtInf", "Strd", "CdtrRefInf", "Ref") if tx is not None else None,
                unstructured=" ".join(u.text.strip() for u in _all(tx, "RmtInf", "Ustrd") if u.text)
                if tx is not None
                else "",
                debtor=(_text(tx, "RltdPties", "Dbtr", "Pty", "Nm") or _text(tx, "RltdPties", "Dbtr", "Nm"))
                if tx is not None
                else None,
            )
        )
    return lines


def _key(entry: Element, tx: Element | None, statement_id: str, account: str, batch_index: int | None) -> str:
    """The ids that name a transaction, most durable first.

    The bank's own reference (``AcctSvcrRef``, of the transaction or else the entry) is unique on the
    account, so the same credit in a camt.054 notification and in the day's camt.053 is one payment.
    Without it: the entry's ``NtryRef`` within its statement, then the payer's ``EndToEndId``.
    """
    tx_ref = _text(tx, "Refs", "AcctSvcrRef") if tx is not None else None
    if tx_ref:
        return f"acct:{account}|svcr:{tx_ref}"
    entry_ref = _text(entry, "AcctSvcrRef")
    suffix = f"|tx:{batch_index}" if batch_index is not None else ""
    if entry_ref:
        return f"acct:{account}|svcr:{entry_ref}{suffix}"
    ntry_ref = _text(entry, "NtryRef")
    if ntry_ref:
        return f"stmt:{statement_id}|ntry:{ntry_ref}{suffix}"
    end_to_end = _text(tx, "Refs", "EndToEndId") if tx is not None else None
    if end_to_end and end_to_end != _NOT_PROVIDED:
        return f"stmt:{statement_id}|e2e:{end_to_end}"
    raise StatementError(
        f"an entry of statement {statement_id} has none of AcctSvcrRef, NtryRef, EndToEndId:"
        " it cannot be imported once only"
    )


def _transaction_amount(tx: Element, entry_currency: str) -> tuple[int, str]:
    for path in (("Amt",), ("AmtDtls", "TxAmt", "Amt"), ("AmtDtls", "InstdAmt", "Amt")):
        if _find(tx, *path) is not None:
            return _amount(tx, *path)
    raise StatementError("a transaction of a batch entry has no amount (TxDtls/Amt or AmtDtls)")


def _amount(parent: Element, *path: str) -> tuple[int, str]:
    element = _find(parent, *path)
    if element is None or not element.text:
        raise StatementError(f"an entry has no {'/'.join(path)}")
    currency = element.get("Ccy", "")
    if currency not in ISO_CURRENCIES:
        raise StatementError(f"amount {element.text.strip()} has no known ISO 4217 currency (Ccy={currency!r})")
    try:
        amount = Decimal(element.text.strip())
    except InvalidOperation:
        raise StatementError(f"{element.text.strip()!r} is not an amount") from None
    minor = amount * minor_units_per_major(currency)
    if amount <= 0 or minor != minor.to_integral_value():
        raise StatementError(f"{element.text.strip()} {currency} is not a positive amount in {currency}'s minor units")
    return int(minor), currency


def _direction(text: str) -> Direction:
    try:
        return Direction(text)
    except ValueError:
        raise StatementError(f"CdtDbtInd must be CRDT or DBIT, not {text!r}") from None


def _date(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise StatementError(f"{text!r} is not an ISO date") from None


# --- namespace-free element access ----------------------------------------------------------------


def _name(element: Element) -> str:
    return element.tag.rpartition("}")[2]


def _children(parent: Element, name: str) -> list[Element]:
    return [child for child in parent if _name(child) == name]


def _find(parent: Element | None, *path: str) -> Element | None:
    for name in path:
        if parent is None:
            return None
        parent = next(iter(_children(parent, name)), None)
    return parent


def _all(parent: Element | None, *path: str) -> list[Element]:
    holder = _find(parent, *path[:-1])
    return _children(holder, path[-1]) if holder is not None else []


def _text(parent: Element | None, *path: str) -> str | None:
    element = _find(parent, *path)
    return element.text.strip() if element is not None and element.text and element.text.strip() else None


def _required(parent: Element, name: str) -> str:
    text = _text(parent, name)
    if text is None:
        raise StatementError(f"a {_name(parent)} has no {name}")
    return text
