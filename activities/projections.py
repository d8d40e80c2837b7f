"""Read models built from the event log, and the queries finance, ops and the API run on them.

The projector reads ``invoice_events`` in global order (``position``) and applies each event to
the ``projected_*`` tables, a batch at a time, in the same transaction as the checkpoint: a
crash replays nothing twice and skips nothing. Appends commit in position order (a trigger in
002_projections.sql serializes them), so "everything after the checkpoint" never misses a late
commit. ``rebuild`` empties the tables and replays every event in one transaction: readers see
the old projections until the new ones are complete, and the result equals incremental catch-up.

Amounts that depend on the day (overdue, aging, DSO) are computed at read time from the
projected invoices and their dated receivable entries, so they never go stale overnight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

import asyncpg
import holidays
from pydantic import BaseModel, ConfigDict, ValidationError

from activities.ledger import read_events_after
from workflows import events as ev
from workflows import ladder, policy
from workflows.events import RecordedEvent
from workflows.models import (
    EventKind,
    Invoice,
    InvoiceState,
    LegalDecision,
    NextAction,
    StageAction,
    minor_units_per_major,
)

log = logging.getLogger(__name__)

CHECKPOINT = "projections"
NOTIFY_CHANNEL = "invoice_events"
PROJECTOR_LOCK = 4_150_003  # advisory lock id: one running projector across processes
BATCH_SIZE = 500
PROJECTION_TABLES = ("projected_invoices", "projected_invoice_stages", "projected_receivables")
CLOSED_STATES = [state.value for state in InvoiceState if state.closed]
FUNNEL_STAGES = ladder.FUNNEL_STAGES


# --- the invoice projection: one row per invoice -------------------------------------------


class InvoiceRow(BaseModel):
    """A row of ``projected_invoices``: the invoice's state after the events applied so far."""

    model_config = ConfigDict(extra="forbid")

    invoice_id: str
    customer_id: str
    currency: str
    service: str | None
    invoice: Invoice
    issue_date: date
    due_date: date
    state: InvoiceState = InvoiceState.ISSUED
    escalation: InvoiceState = InvoiceState.ISSUED
    stage_index: int = 0
    last_stage: StageAction | None = None
    amount_minor: int
    fees_minor: int = 0
    paid_minor: int = 0
    credited_minor: int = 0
    discount_minor: int = 0
    written_off_minor: int = 0
    balance_minor: int = 0
    overpaid_minor: int = 0
    disputed: bool = False
    on_payment_plan: bool = False
    paused: timedelta = timedelta(0)
    paused_since: datetime | None = None
    suspended: bool = False
    suspended_service: str | None = None
    sent_to_agency: bool = False
    factored_to: str | None = None
    legal_review_again_at: datetime | None = None
    rejected_payments: int = 0
    failed_notices: int = 0
    next_action: str | None = None
    next_action_at: datetime | None = None
    closed_at: datetime | None = None
    closed_on: date | None = None
    last_sequence: int
    updated_at: datetime

    @classmethod
    def issued(cls, invoice: Invoice, event: RecordedEvent) -> InvoiceRow:
        """A new invoice; a courtesy note already too late at issue is skipped, as the workflow does."""
        first = invoice.policy.stages[0]
        courtesy_at = policy.stage_due_at(invoice, first, timedelta(0))
        too_late = first.action == StageAction.COURTESY and courtesy_at <= event.occurred_at
        return cls(
            invoice_id=invoice.invoice_id,
            customer_id=invoice.customer_id,
            currency=invoice.currency,
            service=invoice.service,
            invoice=invoice,
            issue_date=invoice.issue_date,
            due_date=invoice.due_date,
            stage_index=1 if too_late else 0,
            amount_minor=invoice.amount_minor,
            last_sequence=event.sequence,
            updated_at=event.occurred_at,
        )

    def settle_derived(self) -> None:
        """Recompute what follows from the facts: balance, the state ops see, the next action."""
        net = (
            self.amount_minor
            + self.fees_minor
            - self.paid_minor
            - self.credited_minor
            - self.discount_minor
            - self.written_off_minor
        )
        self.balance_minor, self.overpaid_minor = max(0, net), max(0, -net)
        if self.escalation.closed:
            self.state = self.escalation
        elif self.disputed:
            self.state = InvoiceState.DISPUTED
        elif self.on_payment_plan:
            self.state = InvoiceState.PAYMENT_PLAN
        else:
            self.state = self.escalation
        upcoming = self._next_action()
        self.next_action, self.next_action_at = upcoming if upcoming else (None, None)

    def _next_action(self) -> tuple[str, datetime] | None:
        """The next stage not yet reached and when it is due (pauses and sending window included).

        None while closed, paused (dispute, payment plan) or waiting for a legal decision.
        """
        waiting = (InvoiceState.LEGAL_REVIEW, InvoiceState.LEGAL_ACTION)
        if self.escalation.closed or self.disputed or self.on_payment_plan or self.escalation in waiting:
            return None
        invoice = self.invoice
        if self.legal_review_again_at is not None:
            return StageAction.LEGAL_REVIEW.value, _in_sending_window(invoice, self.legal_review_again_at)
        stages = invoice.policy.stages
        if self.stage_index >= len(stages):
            return None
        stage = stages[self.stage_index]
        return stage.action.value, _in_sending_window(invoice, policy.stage_due_at(invoice, stage, self.paused))

    def record(self) -> list[object]:
        """Column values in ``INVOICE_COLUMNS`` order."""
        values = self.model_dump(mode="python", exclude={"invoice"})
        values["invoice"] = PARSED_INVOICES.document(self.invoice)
        return [values[column] for column in INVOICE_COLUMNS]


class ParsedInvoices:
    """Invoices parsed once per process, with their JSON documents, the most recently used kept.

    Validating an invoice (its e-mail address, its policy) costs more than applying an event to
    it, and every batch loads the rows it touches: a document equal to the one parsed before gives
    back the same (frozen) invoice. An entry takes about 8 KiB of the worker's memory, so few are
    kept: an invoice's events come in bursts (issued, then a stage days later), and a burst finds
    its invoice here.
    """

    def __init__(self, size: int = 2_000) -> None:
        self._size = size
        self._entries: OrderedDict[str, tuple[dict, Invoice]] = OrderedDict()

    def parse(self, document: dict) -> Invoice:
        entry = self._entries.get(document.get("invoice_id", ""))
        if entry is not None and entry[0] == document:
            self._entries.move_to_end(entry[1].invoice_id)
            return entry[1]
        invoice = Invoice.model_validate(document)
        self._keep(document, invoice)
        return invoice

    def document(self, invoice: Invoice) -> dict:
        entry = self._entries.get(invoice.invoice_id)
        if entry is not None and entry[1] is invoice:
            return entry[0]
        document = invoice.model_dump(mode="json")
        self._keep(document, invoice)
        return document

    def _keep(self, document: dict, invoice: Invoice) -> None:
        self._entries[invoice.invoice_id] = (document, invoice)
        self._entries.move_to_end(invoice.invoice_id)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)


PARSED_INVOICES = ParsedInvoices()


def _in_sending_window(invoice: Invoice, moment: datetime) -> datetime:
    """``moment`` moved to the invoice's next sending window, as the workflow moves its steps."""
    year = policy.local_date(invoice, moment).year
    days_off: frozenset[date] = frozenset()
    if invoice.country:
        days_off = _public_holidays(invoice.country, year) | _public_holidays(invoice.country, year + 1)
    return policy.next_sending_moment(invoice, moment, days_off)


@lru_cache(maxsize=256)
def _public_holidays(country: str, year: int) -> frozenset[date]:
    try:
        return frozenset(holidays.country_holidays(country, years=year, categories=(holidays.PUBLIC,)))
    except NotImplementedError:
        return frozenset()


INVOICE_COLUMNS = list(InvoiceRow.model_fields)
UPSERT_INVOICE = (
    f"INSERT INTO projected_invoices ({', '.join(INVOICE_COLUMNS)})"
    f" VALUES ({', '.join(f'${n}' for n in range(1, len(INVOICE_COLUMNS) + 1))})"
    " ON CONFLICT (invoice_id) DO UPDATE SET "
    + ", ".join(f"{column} = EXCLUDED.{column}" for column in INVOICE_COLUMNS[1:])
)


class BatchWrites:
    """What one batch of events changes: invoice rows, stages reached, receivable entries."""

    def __init__(self, invoices: dict[str, InvoiceRow]) -> None:
        self.invoices = invoices
        self.changed: set[str] = set()
        self.stages: list[tuple[str, str, datetime]] = []
        self.receivables: list[tuple[int, str, date, int, str]] = []

    def stage(self, row: InvoiceRow, stage: StageAction, event: RecordedEvent) -> None:
        self.stages.append((row.invoice_id, stage.value, event.occurred_at))

    def receivable(self, row: InvoiceRow, event: RecordedEvent, amount_minor: int, on: date | None = None) -> None:
        """A change of what the client owes, dated in the client's time zone."""
        effective_on = on or policy.local_date(row.invoice, event.occurred_at)
        self.receivables.append((event.position, row.invoice_id, effective_on, amount_minor, event.kind.value))


def apply_event(writes: BatchWrites, event: RecordedEvent) -> None:
    """Apply one event to the rows of this batch (events already applied are ignored)."""
    try:
        payload = event.payload()
    except ValidationError as err:
        log.error("skipping malformed event %s#%s (%s): %s", event.invoice_id, event.sequence, event.kind.value, err)
        return
    row = writes.invoices.get(event.invoice_id)
    if isinstance(payload, ev.InvoiceIssued):
        if row is None:
            row = writes.invoices[event.invoice_id] = InvoiceRow.issued(payload.invoice, event)
            writes.receivable(row, event, row.amount_minor, on=row.issue_date)
            writes.changed.add(row.invoice_id)
            row.settle_derived()
        return
    if row is None:
        log.error(
            "skipping event %s#%s (%s): the invoice was never issued", event.invoice_id, event.sequence, event.kind.value
        )
        return
    if event.sequence <= row.last_sequence:
        return
    _apply_fact(row, writes, event, payload)
    row.last_sequence, row.updated_at = event.sequence, event.occurred_at
    row.settle_derived()
    writes.changed.add(row.invoice_id)


def _apply_fact(row: InvoiceRow, writes: BatchWrites, event: RecordedEvent, payload: ev.Payload) -> None:
    kind, at = event.kind, event.occurred_at
    if isinstance(payload, ev.StageReached):
        stage = payload.stage
        row.escalation = policy.STATE_AFTER_STAGE.get(stage, row.escalation)
        row.stage_index = _stage_index(row.invoice, stage, default=row.stage_index - 1) + 1
        row.last_stage = stage
        writes.stage(row, stage, event)
    elif isinstance(payload, ev.LateFeeCharged):
        row.fees_minor += payload.amount_minor
        writes.receivable(row, event, payload.amount_minor)
    elif isinstance(payload, ev.PaymentRecorded):
        row.paid_minor += payload.amount_minor
        writes.receivable(row, event, -payload.amount_minor, on=policy.local_date(row.invoice, payload.received_at))
    elif isinstance(payload, ev.PaymentRejected):
        row.rejected_payments += 1
    elif kind == EventKind.DISCOUNT_APPLIED:
        assert isinstance(payload, ev.AmountApplied)
        row.discount_minor += payload.amount_minor
        writes.receivable(row, event, -payload.amount_minor)
    elif isinstance(payload, ev.DisputeOpened):
        row.disputed, row.paused_since = True, at
    elif isinstance(payload, ev.DisputeResolved):
        _resume(row, at)
        row.disputed = False
        row.credited_minor += payload.credit_minor
        if payload.credit_minor:
            writes.receivable(row, event, -payload.credit_minor)
    elif isinstance(payload, ev.PaymentPlanAgreed):
        row.on_payment_plan, row.paused_since = True, at
    elif isinstance(payload, ev.InstalmentMissed):
        _resume(row, at)
        row.on_payment_plan = False
    elif isinstance(payload, ev.ServiceChanged):
        row.suspended = kind == EventKind.SERVICE_SUSPENDED
        row.suspended_service = (payload.service or row.service) if row.suspended else None
    elif isinstance(payload, ev.AgencyHandedOver):
        row.sent_to_agency = True
    elif isinstance(payload, ev.InvoiceFactored):
        row.factored_to = payload.factor
        writes.receivable(row, event, -payload.balance_minor)
    elif isinstance(payload, ev.LegalReviewOpened):
        row.escalation, row.legal_review_again_at = InvoiceState.LEGAL_REVIEW, None
        writes.stage(row, StageAction.LEGAL_REVIEW, event)
    elif isinstance(payload, ev.LegalDecisionTaken):
        _decide(row, writes, event, payload)
    elif isinstance(payload, ev.InvoiceClosed):
        row.escalation, row.disputed, row.on_payment_plan = payload.state, False, False
        row.closed_at, row.closed_on = at, policy.local_date(row.invoice, at)
    elif isinstance(payload, ev.NoticeFailed):
        row.failed_notices += 1
    # invoice_resent, notice_sent, overpayment_credited and equipment events change no projected column


def _stage_index(invoice: Invoice, stage: StageAction, default: int) -> int:
    for index, candidate in enumerate(invoice.policy.stages):
        if candidate.action == stage:
            return index
    return default


def _resume(row: InvoiceRow, at: datetime) -> None:
    """A pause ends: the escalation clock shifts by its length."""
    if row.paused_since is not None:
        row.paused += at - row.paused_since
    row.paused_since = None


def _decide(row: InvoiceRow, writes: BatchWrites, event: RecordedEvent, payload: ev.LegalDecisionTaken) -> None:
    written_off = 0
    if payload.decision == LegalDecision.SUE:
        row.escalation = InvoiceState.LEGAL_ACTION
    elif payload.decision == LegalDecision.SETTLE:
        written_off = payload.balance_minor - (payload.settle_amount_minor or 0)
        row.escalation = InvoiceState.LEGAL_ACTION
    elif payload.decision == LegalDecision.WRITE_OFF:
        written_off = payload.balance_minor  # invoice_closed follows
    else:
        row.escalation = InvoiceState.AGENCY
        row.legal_review_again_at = event.occurred_at + row.invoice.policy.legal_review_again_after
    if written_off:
        row.written_off_minor += written_off
        writes.receivable(row, event, -written_off)


# --- the projector ---------------------------------------------------------------------------


async def _load_invoices(conn: asyncpg.Connection, invoice_ids: list[str]) -> dict[str, InvoiceRow]:
    rows = await conn.fetch(
        f"SELECT {', '.join(INVOICE_COLUMNS)} FROM projected_invoices WHERE invoice_id = ANY($1)", invoice_ids
    )
    return {row["invoice_id"]: _invoice_row(row) for row in rows}


def _invoice_row(record: asyncpg.Record) -> InvoiceRow:
    values = dict(record)
    values["invoice"] = PARSED_INVOICES.parse(values["invoice"])
    return InvoiceRow.model_validate(values)


async def _apply_next_batch(conn: asyncpg.Connection, batch_size: int) -> int:
    """Inside a transaction: apply the next events after the checkpoint and move it; returns how many."""
    checkpoint = await conn.fetchval("SELECT position FROM projection_checkpoint WHERE name = $1 FOR UPDATE", CHECKPOINT)
    events = await read_events_after(conn, checkpoint, batch_size)
    if not events:
        return 0
    writes = BatchWrites(await _load_invoices(conn, sorted({e.invoice_id for e in events})))
    for event in events:
        apply_event(writes, event)
    await conn.executemany(UPSERT_INVOICE, [writes.invoices[i].record() for i in sorted(writes.changed)])
    await conn.executemany(
        "INSERT INTO projected_invoice_stages (invoice_id, stage, reached_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (invoice_id, stage) DO NOTHING",
        writes.stages,
    )
    await conn.executemany(
        "INSERT INTO projected_receivables (position, invoice_id, effective_on, amount_minor, reason)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (position) DO NOTHING",
        writes.receivables,
    )
    await conn.execute(
        "UPDATE projection_checkpoint SET position = $2, updated_at = now() WHERE name = $1",
        CHECKPOINT,
        events[-1].position,
    )
    return len(events)


async def catch_up(pool: asyncpg.Pool, batch_size: int = BATCH_SIZE) -> int:
    """Apply every event after the checkpoint, one transaction per batch; returns the events applied."""
    applied = 0
    async with pool.acquire() as conn:
        while True:
            async with conn.transaction():
                count = await _apply_next_batch(conn, batch_size)
            applied += count
            if count < batch_size:
                return applied


async def rebuild(pool: asyncpg.Pool, batch_size: int = BATCH_SIZE) -> int:
    """Recompute every projection from the first event, atomically; returns the events applied."""
    applied = 0
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM projection_checkpoint WHERE name = $1 FOR UPDATE", CHECKPOINT)
        for table in PROJECTION_TABLES:
            await conn.execute(f"DELETE FROM {table}")
        await conn.execute("UPDATE projection_checkpoint SET position = 0, updated_at = now() WHERE name = $1", CHECKPOINT)
        while count := await _apply_next_batch(conn, batch_size):
            applied += count
    return applied


async def projection_row_counts(pool: asyncpg.Pool) -> dict[str, int]:
    """Rows in each projection table."""
    return {table: await pool.fetchval(f"SELECT count(*) FROM {table}") for table in PROJECTION_TABLES}


class ProjectionLag(BaseModel):
    """How far the projections trail the event log (a metric: 0 and 0.0 when caught up)."""

    events_behind: int
    seconds_behind: float


async def projection_lag(pool: asyncpg.Pool) -> ProjectionLag:
    """Events appended but not yet projected, and the age of the oldest of them."""
    row = await pool.fetchrow(
        "SELECT count(*) AS behind, extract(epoch FROM now() - min(recorded_at)) AS seconds"
        " FROM invoice_events WHERE position > (SELECT position FROM projection_checkpoint WHERE name = $1)",
        CHECKPOINT,
    )
    return ProjectionLag(events_behind=row["behind"], seconds_behind=max(0.0, float(row["seconds"] or 0)))


class Projector:
    """Keeps the projections current: catches up whenever events are committed (LISTEN/NOTIFY).

    Several processes may run one; an advisory lock lets one project while the others stand by.
    ``poll_interval`` is the safety net for a notification lost while reconnecting.
    """

    def __init__(self, batch_size: int = BATCH_SIZE, poll_interval: float = 30.0, standby_interval: float = 5.0) -> None:
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.standby_interval = standby_interval

    async def run(self, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
        """Project until ``stop`` is set; a failure is logged and retried (the lag metric shows it)."""
        while not stop.is_set():
            try:
                await self._lead(pool, stop)
            except Exception:  # noqa: BLE001 - the projector outlives a lost connection or a bad batch
                log.exception("projector failed; retrying in %.0f s", self.standby_interval)
                await _wait_for(stop, timeout=self.standby_interval)

    async def _lead(self, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
        async with pool.acquire() as conn:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", PROJECTOR_LOCK):
                if await _wait_for(stop, timeout=self.standby_interval):
                    return
            wake = asyncio.Event()

            def on_notify(*_: object) -> None:
                wake.set()

            await conn.add_listener(NOTIFY_CHANNEL, on_notify)
            try:
                while not stop.is_set():
                    wake.clear()
                    await catch_up(pool, self.batch_size)
                    await _wait_for(stop, wake, timeout=self.poll_interval)
                    if conn.is_closed():
                        raise asyncpg.InterfaceError("the projector's listening connection closed")
            finally:
                if not conn.is_closed():
                    await conn.remove_listener(NOTIFY_CHANNEL, on_notify)
                    await conn.execute("SELECT pg_advisory_unlock($1)", PROJECTOR_LOCK)


async def _wait_for(*events: asyncio.Event, timeout: float) -> bool:
    """Wait until any of ``events`` is set or ``timeout`` passes; True if the first (stop) is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        for waiter in waiters:
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
    return events[0].is_set()


# --- reading the projections ----------------------------------------------------------------


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InvoiceView(Frozen):
    """One invoice as finance and ops see it; money in minor units of ``currency``."""

    invoice_id: str
    customer_id: str
    currency: str
    service: str | None
    state: InvoiceState
    escalation: InvoiceState
    issue_date: date
    due_date: date
    amount_minor: int
    fees_minor: int
    paid_minor: int
    credited_minor: int
    discount_minor: int
    written_off_minor: int
    balance_minor: int
    overpaid_minor: int
    disputed: bool
    on_payment_plan: bool
    suspended: bool
    sent_to_agency: bool
    factored_to: str | None
    stages_reached: list[StageAction]
    next_action: NextAction | None
    rejected_payments: int
    failed_notices: int
    closed_at: datetime | None
    updated_at: datetime


INVOICE_VIEW_QUERY = """
SELECT i.*, ARRAY(SELECT s.stage FROM projected_invoice_stages s
                  WHERE s.invoice_id = i.invoice_id ORDER BY s.reached_at, s.stage) AS stages_reached
FROM projected_invoices i
"""


def _invoice_view(row: asyncpg.Record) -> InvoiceView:
    values = {name: row[name] for name in InvoiceView.model_fields if name != "next_action"}
    at = row["next_action_at"]
    values["next_action"] = NextAction(what=row["next_action"], at=at) if at else None
    return InvoiceView(**values)


async def invoice_view(pool: asyncpg.Pool, invoice_id: str) -> InvoiceView | None:
    """The projected invoice, or None if no event of it has been projected."""
    row = await pool.fetchrow(INVOICE_VIEW_QUERY + " WHERE i.invoice_id = $1", invoice_id)
    return _invoice_view(row) if row else None


async def list_invoices(
    pool: asyncpg.Pool,
    *,
    customer_id: str | None = None,
    state: InvoiceState | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[InvoiceView]:
    """Invoices by due date, optionally of one customer and/or in one state."""
    rows = await pool.fetch(
        INVOICE_VIEW_QUERY + " WHERE ($1::text IS NULL OR i.customer_id = $1) AND ($2::text IS NULL OR i.state = $2)"
        " ORDER BY i.due_date, i.invoice_id LIMIT $3 OFFSET $4",
        customer_id,
        state.value if state else None,
        limit,
        offset,
    )
    return [_invoice_view(row) for row in rows]


class CurrencyExposure(Frozen):
    """A customer's open and overdue balances in one currency (minor units)."""

    currency: str
    open_minor: int
    overdue_minor: int


class CustomerView(Frozen):
    """A customer's receivables as of a date (technique 20: know your client)."""

    customer_id: str
    as_of: date
    amounts: list[CurrencyExposure]
    oldest_overdue_due_date: date | None
    oldest_overdue_days: int | None
    invoices_by_state: dict[InvoiceState, int]
    invoices_sent_to_agency: int

    def exposure(self, currency: str) -> CurrencyExposure:
        """The amounts in ``currency`` (zero if the customer has none)."""
        found = [a for a in self.amounts if a.currency == currency]
        return found[0] if found else CurrencyExposure(currency=currency, open_minor=0, overdue_minor=0)


async def _customer_views(pool: asyncpg.Pool, as_of: date, customer_id: str | None = None) -> list[CustomerView]:
    """Every customer with a projected invoice (or just one), ordered by id."""
    rows = await pool.fetch(
        """
        SELECT customer_id, currency, state, due_date, balance_minor, sent_to_agency
        FROM projected_invoices WHERE $1::text IS NULL OR customer_id = $1
        ORDER BY customer_id, currency
        """,
        customer_id,
    )
    grouped: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        grouped.setdefault(row["customer_id"], []).append(row)
    return [_customer_view(customer, invoices, as_of) for customer, invoices in grouped.items()]


def _customer_view(customer_id: str, invoices: list[asyncpg.Record], as_of: date) -> CustomerView:
    amounts: dict[str, dict[str, int]] = {}
    by_state: dict[InvoiceState, int] = {}
    overdue_due_dates = []
    for row in invoices:
        by_state[InvoiceState(row["state"])] = by_state.get(InvoiceState(row["state"]), 0) + 1
        if row["state"] in CLOSED_STATES:
            continue
        sums = amounts.setdefault(row["currency"], {"open_minor": 0, "overdue_minor": 0})
        sums["open_minor"] += row["balance_minor"]
        if row["due_date"] < as_of and row["balance_minor"] > 0:
            sums["overdue_minor"] += row["balance_minor"]
            overdue_due_dates.append(row["due_date"])
    oldest = min(overdue_due_dates, default=None)
    return CustomerView(
        customer_id=customer_id,
        as_of=as_of,
        amounts=[CurrencyExposure(currency=c, **sums) for c, sums in sorted(amounts.items())],
        oldest_overdue_due_date=oldest,
        oldest_overdue_days=(as_of - oldest).days if oldest else None,
        invoices_by_state=by_state,
        invoices_sent_to_agency=sum(1 for row in invoices if row["sent_to_agency"]),
    )


def _today() -> date:
    return datetime.now(timezone.utc).date()


async def customer_view(pool: asyncpg.Pool, customer_id: str, *, as_of: date | None = None) -> CustomerView | None:
    """A customer's open and overdue amounts per currency, oldest overdue invoice, invoices by state."""
    views = await _customer_views(pool, as_of or _today(), customer_id)
    return views[0] if views else None


async def rank_customers(
    pool: asyncpg.Pool, *, limit: int = 50, offset: int = 0, currency: str | None = None, as_of: date | None = None
) -> list[CustomerView]:
    """Customers who owe something, the most overdue first, then the most open (technique 20).

    With ``currency`` only that currency counts. Without it there are no exchange rates to apply:
    amounts in different currencies are added at face value in major units.
    """
    views = [v for v in await _customer_views(pool, as_of or _today()) if any(a.open_minor for a in v.amounts)]
    if currency:
        views = [v for v in views if v.exposure(currency).open_minor]

    def owed(view: CustomerView, field: str) -> Decimal:
        counted = [a for a in view.amounts if currency in (None, a.currency)]
        return sum((Decimal(getattr(a, field)) / minor_units_per_major(a.currency) for a in counted), Decimal(0))

    views.sort(key=lambda v: (-owed(v, "overdue_minor"), -owed(v, "open_minor"), v.customer_id))
    return views[offset : offset + limit]


RECEIVABLE_AT = """
SELECT i.invoice_id, i.currency, i.due_date, sum(r.amount_minor) AS owed
FROM projected_invoices i JOIN projected_receivables r USING (invoice_id)
WHERE r.effective_on <= $1
GROUP BY i.invoice_id, i.currency, i.due_date
HAVING sum(r.amount_minor) > 0
"""


class AgingRow(Frozen):
    """Accounts-receivable aging of one currency, in minor units, by days past the due date."""

    currency: str
    current: int
    d1_30: int
    d31_60: int
    d61_90: int
    d90_plus: int
    total: int


async def aging_report(pool: asyncpg.Pool, as_of: date) -> list[AgingRow]:
    """What clients owed at the end of ``as_of``, by currency and by days past due (0 is current)."""
    rows = await pool.fetch(
        f"""
        WITH owed AS ({RECEIVABLE_AT}), aged AS (SELECT currency, owed, $1 - due_date AS days FROM owed)
        SELECT currency,
               coalesce(sum(owed) FILTER (WHERE days <= 0), 0) AS current,
               coalesce(sum(owed) FILTER (WHERE days BETWEEN 1 AND 30), 0) AS d1_30,
               coalesce(sum(owed) FILTER (WHERE days BETWEEN 31 AND 60), 0) AS d31_60,
               coalesce(sum(owed) FILTER (WHERE days BETWEEN 61 AND 90), 0) AS d61_90,
               coalesce(sum(owed) FILTER (WHERE days > 90), 0) AS d90_plus,
               sum(owed) AS total
        FROM aged GROUP BY currency ORDER BY currency
        """,
        as_of,
    )
    return [AgingRow(**{k: int(v) if k != "currency" else v for k, v in row.items()}) for row in rows]


class FunnelRow(Frozen):
    """How many invoices reached a stage, and how many were then paid in full without going further."""

    stage: str
    reached: int
    paid_at_stage: int


async def collections_funnel(pool: asyncpg.Pool) -> list[FunnelRow]:
    """The collections funnel in escalation order, from ``issued`` to ``legal_review``."""
    reached = dict(await pool.fetch("SELECT stage, count(*) FROM projected_invoice_stages GROUP BY stage"))
    reached["issued"] = await pool.fetchval("SELECT count(*) FROM projected_invoices")
    paid = dict(
        await pool.fetch(
            "SELECT coalesce(last_stage, 'issued'), count(*) FROM projected_invoices WHERE state = $1 GROUP BY 1",
            InvoiceState.PAID.value,
        )
    )
    return [FunnelRow(stage=s, reached=reached.get(s, 0), paid_at_stage=paid.get(s, 0)) for s in FUNNEL_STAGES]


class DsoRow(Frozen):
    """Days sales outstanding of one currency: receivables / invoiced in the period × period days."""

    currency: str
    receivables_minor: int
    invoiced_minor: int
    period_days: int
    days: Decimal | None  # None when nothing was invoiced in the period


async def days_sales_outstanding(pool: asyncpg.Pool, as_of: date, period_days: int = 90) -> list[DsoRow]:
    """DSO per currency = receivables at the end of ``as_of`` / amount invoiced in the ``period_days``
    ending on ``as_of`` (by issue date) × ``period_days``, to one decimal."""
    receivables = dict(
        await pool.fetch(f"SELECT currency, sum(owed) FROM ({RECEIVABLE_AT}) owed GROUP BY currency", as_of)
    )
    invoiced = dict(
        await pool.fetch(
            "SELECT currency, sum(amount_minor) FROM projected_invoices"
            " WHERE issue_date > $1::date - $2::int AND issue_date <= $1 GROUP BY currency",
            as_of,
            period_days,
        )
    )
    rows = []
    for currency in sorted(set(receivables) | set(invoiced)):
        owed, sold = int(receivables.get(currency, 0)), int(invoiced.get(currency, 0))
        days = (Decimal(owed) * period_days / sold).quantize(Decimal("0.1"), ROUND_HALF_UP) if sold else None
        rows.append(
            DsoRow(currency=currency, receivables_minor=owed, invoiced_minor=sold, period_days=period_days, days=days)
        )
    return rows
