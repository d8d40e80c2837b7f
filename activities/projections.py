"""Read models copied from the event log, and the queries finance, ops and the API run on them.

The workflow decides; its events record the decisions: each batch it appends ends with the
invoice's snapshot (state, every component of what is owed, the next action, the dated changes
to the receivable, the story told since). The projector copies those facts with set-based SQL,
never re-deriving a state, an amount or a date: the invoice row is the latest snapshot, the
stages reached come from ``stage_reached`` events, the receivable entries and the story from
the snapshots. Events written before snapshots existed (``format`` 1) are upcast once
(``workflows.upcast``) and then read the same way.

Catch-up copies everything after the checkpoint, a range at a time, in the same transaction as
the checkpoint: a crash copies nothing twice and skips nothing. Appends commit in position order
(a trigger in 002_projections.sql serializes them), so "everything after the checkpoint" never
misses a late commit. ``rebuild`` empties the tables and copies the whole log in one transaction
with the same statements: readers see the old projections until the new ones are complete.

An event the copy cannot apply (a value Postgres refuses, an upcaster that raises) is poison, not
a reason to stop: the range is halved until the event is alone, it goes to
``projection_quarantine`` with its error, and every statement skips it from then on
(docs/operations.md). ``retry_quarantined`` projects the invoices concerned again after a fix.

Amounts that depend on the day (days overdue, aging, DSO) are computed at read time from the
copied invoices and their dated receivable entries, so they never go stale overnight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

import asyncpg
import holidays
from pydantic import BaseModel, ConfigDict, Field

from activities.ledger import EVENT_COLUMNS, Connection
from workflows import ladder
from workflows.events import RecordedEvent
from workflows.models import ActionTaken, InvoiceState, InvoiceStatus, NextAction, StageAction, minor_units_per_major
from workflows.upcast import upcast

log = logging.getLogger(__name__)

CHECKPOINT = "projections"
NOTIFY_CHANNEL = "invoice_events"
PROJECTOR_LOCK = 4_150_003  # advisory lock id: one running projector across processes
BATCH_SIZE = 5_000
PROJECTION_TABLES = ("projected_invoices", "projected_invoice_stages", "projected_receivables", "projected_invoice_story")
CLOSED_STATES = [state.value for state in InvoiceState if state.closed]
FUNNEL_STAGES = ladder.FUNNEL_STAGES
STORY_LINES_SHOWN = 200


# --- copying the snapshots: one statement per table, over a range of positions ----------------

# Every statement skips the quarantined events; ``{only}`` narrows it to some invoices (a retry).
NOT_QUARANTINED = "NOT EXISTS (SELECT 1 FROM projection_quarantine q WHERE q.position = e.position)"
ONLY_INVOICES = "AND e.invoice_id = ANY($3::text[])"
IN_RANGE = f"e.position > $1 AND e.position <= $2 {{only}} AND {NOT_QUARANTINED}"

SNAPSHOTS_IN_RANGE = f"""
WITH batch AS (
    SELECT invoice_id, sequence, snapshot FROM invoice_events e WHERE snapshot IS NOT NULL AND {IN_RANGE}
    UNION ALL
    SELECT invoice_id, sequence, snapshot FROM upcast_snapshots e WHERE {IN_RANGE}
)"""

SNAPSHOT_COLUMNS = {
    "customer_id": "text",
    "currency": "text",
    "service": "text",
    "time_zone": "text",
    "issue_date": "date",
    "due_date": "date",
    "state": "text",
    "escalation": "text",
    "last_stage": "text",
    "amount_minor": "bigint",
    "fees_minor": "bigint",
    "paid_minor": "bigint",
    "credited_minor": "bigint",
    "discount_minor": "bigint",
    "written_off_minor": "bigint",
    "balance_minor": "bigint",
    "overpaid_minor": "bigint",
    "discount_available_minor": "bigint",
    "disputed": "boolean",
    "on_payment_plan": "boolean",
    "suspended": "boolean",
    "suspended_service": "text",
    "sent_to_agency": "boolean",
    "factored_to": "text",
    "legal_review_again_at": "timestamptz",
    "legal_summary": "jsonb",
    "rejected_payments": "integer",
    "failed_notices": "integer",
    "closed_at": "timestamptz",
    "closed_on": "date",
    "last_sequence": "integer",
    "late_charges_stopped": "text",
    "escalation_stopped": "boolean",
    "cut_announced_for": "timestamptz",
    "recovered_minor": "bigint",
    "interest_minor": "bigint",
    "interest_accruing_minor": "bigint",
}
# columns a snapshot written before them lacks: copied as their default
SNAPSHOT_DEFAULTS = {
    "escalation_stopped": "false",
    "recovered_minor": "0",
    "interest_minor": "0",
    "interest_accruing_minor": "0",
}
COPIED = {
    **{column: f"coalesce(s.{column}, {SNAPSHOT_DEFAULTS[column]})" if column in SNAPSHOT_DEFAULTS else f"s.{column}"
       for column in SNAPSHOT_COLUMNS},
    "equipment_held": "ARRAY(SELECT jsonb_array_elements_text(s.equipment_held))",
    "next_action": "s.next_action->>'what'",
    "next_action_kind": "s.next_action->>'kind'",
    "next_action_at": "(s.next_action->>'at')::timestamptz",
    "updated_at": "s.taken_at",
}
RECORD_TYPE = ", ".join(
    f"{name} {kind}"
    for name, kind in {**SNAPSHOT_COLUMNS, "equipment_held": "jsonb", "next_action": "jsonb", "taken_at": "timestamptz"}.items()
)
COPY_INVOICES = f"""{SNAPSHOTS_IN_RANGE}, latest AS (
    SELECT DISTINCT ON (invoice_id) invoice_id, snapshot FROM batch ORDER BY invoice_id, sequence DESC
)
INSERT INTO projected_invoices (invoice_id, {", ".join(COPIED)})
SELECT l.invoice_id, {", ".join(COPIED.values())}
FROM latest l, jsonb_to_record(l.snapshot) AS s({RECORD_TYPE})
ON CONFLICT (invoice_id) DO UPDATE SET {", ".join(f"{column} = EXCLUDED.{column}" for column in COPIED)}
WHERE projected_invoices.last_sequence < EXCLUDED.last_sequence
"""
COPY_STAGES = f"""
INSERT INTO projected_invoice_stages (invoice_id, stage, reached_at)
SELECT DISTINCT ON (invoice_id, stage) invoice_id, stage, occurred_at FROM (
    SELECT invoice_id, CASE kind WHEN 'stage_reached' THEN data->>'stage' ELSE 'legal_review' END AS stage,
           occurred_at, position
    FROM invoice_events e
    WHERE kind IN ('stage_reached', 'legal_review_opened') AND {IN_RANGE}
) reached
ORDER BY invoice_id, stage, position
ON CONFLICT (invoice_id, stage) DO NOTHING
"""
COPY_RECEIVABLES = f"""{SNAPSHOTS_IN_RANGE}
INSERT INTO projected_receivables (invoice_id, sequence, effective_on, amount_minor, reason)
SELECT b.invoice_id, r.sequence, r.effective_on, r.amount_minor, r.reason
FROM batch b, jsonb_to_recordset(b.snapshot->'receivables') AS r(sequence integer, effective_on date, amount_minor bigint, reason text)
ON CONFLICT (invoice_id, sequence) DO NOTHING
"""
COPY_STORY = f"""{SNAPSHOTS_IN_RANGE}
INSERT INTO projected_invoice_story (invoice_id, sequence, line, at, what)
SELECT b.invoice_id, b.sequence, t.n, (t.line->>'at')::timestamptz, t.line->>'what'
FROM batch b, jsonb_array_elements(b.snapshot->'story') WITH ORDINALITY AS t(line, n)
ON CONFLICT (invoice_id, sequence, line) DO NOTHING
"""
COPY_STEPS = (
    ("invoices", COPY_INVOICES),
    ("stages reached", COPY_STAGES),
    ("receivable entries", COPY_RECEIVABLES),
    ("story lines", COPY_STORY),
)
TO_UPCAST = f"""
SELECT e.invoice_id, array_agg(e.sequence ORDER BY e.sequence) AS sequences, max(e.position) AS position
FROM invoice_events e
WHERE e.format = 1 AND {IN_RANGE}
  AND NOT EXISTS (SELECT 1 FROM upcast_snapshots u WHERE u.invoice_id = e.invoice_id AND u.sequence >= e.sequence)
GROUP BY e.invoice_id
"""
EVENTS_TO_FOLD = f"""
SELECT {", ".join(f"e.{column.strip()}" for column in EVENT_COLUMNS.split(","))} FROM invoice_events e
WHERE e.invoice_id = $1 AND e.sequence <= $2 AND {NOT_QUARANTINED} ORDER BY e.sequence
"""
POSITIONS_IN_RANGE = f"SELECT e.position FROM invoice_events e WHERE {IN_RANGE} ORDER BY e.position"

Progress = Callable[[str], None]


class _Range:
    """Positions ``(after, upto]`` of the log, of every invoice or only of ``invoices``."""

    def __init__(self, after: int, upto: int, invoices: list[str] | None = None) -> None:
        self.after, self.upto, self.invoices = after, upto, invoices

    def statement(self, template: str) -> str:
        return template.format(only=ONLY_INVOICES if self.invoices is not None else "")

    def arguments(self) -> tuple[object, ...]:
        return (self.after, self.upto) if self.invoices is None else (self.after, self.upto, self.invoices)

    def part(self, after: int, upto: int) -> _Range:
        return _Range(after, upto, self.invoices)


async def _upcast_range(conn: Connection, scope: _Range) -> int:
    """Upcast the events before v5 in the range not yet upcast (``workflows.upcast``); returns how many invoices.

    The fold leaves out quarantined events: the invoice shows what the rest of its events say.
    """
    pending = await conn.fetch(scope.statement(TO_UPCAST), *scope.arguments())
    for row in pending:
        last = max(row["sequences"])
        events = [RecordedEvent(**dict(e)) for e in await conn.fetch(EVENTS_TO_FOLD, row["invoice_id"], last)]
        snapshot = upcast(events, set(row["sequences"]), _public_holidays)
        if snapshot is None:
            log.error("cannot upcast invoice %s: it was never issued", row["invoice_id"])
            continue
        position = next(e.position for e in events if e.sequence == last)
        await conn.execute(
            "INSERT INTO upcast_snapshots (invoice_id, sequence, position, snapshot) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (invoice_id, sequence) DO NOTHING",
            row["invoice_id"],
            last,
            position,
            snapshot.model_dump(mode="json"),
        )
    return len(pending)


@lru_cache(maxsize=256)
def _public_holidays(country: str, year: int) -> frozenset[date]:
    try:
        return frozenset(holidays.country_holidays(country, years=year, categories=(holidays.PUBLIC,)))
    except NotImplementedError:
        return frozenset()


async def _copy_range(conn: Connection, scope: _Range, progress: Progress | None = None) -> None:
    """Inside a transaction: copy every fact of the range, but the quarantined events, into the read models."""
    upcast_count = await _upcast_range(conn, scope)
    if progress and upcast_count:
        progress(f"upcast {upcast_count} invoice(s) written before snapshots")
    for name, statement in COPY_STEPS:
        status = await conn.execute(scope.statement(statement), *scope.arguments())
        if progress:
            progress(f"{name}: {status.split()[-1]} row(s)")


# --- poison: an event the projector cannot apply goes to projection_quarantine ----------------

MAX_QUARANTINED_AT_ONCE = 100  # more in one copy is a bug in the projector, not poison in the log
ERROR_CHARS = 2_000


class TooMuchPoison(RuntimeError):
    """So many events of one copy failed that the projector, not the events, must be wrong: nothing is quarantined."""


def _is_poison(err: Exception) -> bool:
    """Whether ``err`` comes from what an event says, not from the database being away or the projector's SQL.

    Postgres refusing a value (class 22) or a constraint (class 23) and the upcaster raising
    (``OverflowError``, ``ValueError``, a validation error) are; a lost connection, a lock, a
    privilege or a statement the server cannot run are not: those are retried, never quarantined.
    """
    if isinstance(err, asyncpg.DataError | asyncpg.IntegrityConstraintViolationError):
        return True
    if isinstance(err, asyncpg.PostgresError | OSError | TooMuchPoison):
        return False
    if isinstance(err, asyncpg.InterfaceError):
        return isinstance(err, ValueError)  # an argument asyncpg cannot encode
    return True


class _Quarantine:
    """The events one copy quarantines; ``earlier`` are their rows from before a retry (attempts carry on)."""

    def __init__(self, earlier: dict[int, asyncpg.Record] | None = None) -> None:
        self.earlier = earlier or {}
        self.positions: list[int] = []

    async def add(self, conn: Connection, position: int, err: Exception) -> None:
        if len(self.positions) >= MAX_QUARANTINED_AT_ONCE:
            raise TooMuchPoison(f"more than {MAX_QUARANTINED_AT_ONCE} events cannot be applied; the last: {err!r}")
        before = self.earlier.get(position)
        error = f"{type(err).__name__}: {' '.join(str(err).split())}"[:ERROR_CHARS]
        row = await conn.fetchrow(
            "INSERT INTO projection_quarantine (position, invoice_id, sequence, kind, error, attempts, quarantined_at)"
            " SELECT position, invoice_id, sequence, kind, $2, $3, coalesce($4, now()) FROM invoice_events"
            " WHERE position = $1 RETURNING invoice_id, sequence, kind",
            position,
            error,
            before["attempts"] + 1 if before else 1,
            before["quarantined_at"] if before else None,
        )
        assert row is not None  # the event being applied is in the log
        log.error(
            "projection: event %s#%s (%s) at position %s cannot be applied, quarantined: %s",
            row["invoice_id"], row["sequence"], row["kind"], position, error,
        )
        self.positions.append(position)


async def _copy_around_poison(
    conn: Connection, scope: _Range, quarantine: _Quarantine, progress: Progress | None = None
) -> None:
    """Inside a transaction: copy the range; if an event in it cannot be applied, halve the range until
    each such event is alone, quarantine it and copy the rest."""
    try:
        async with conn.transaction():  # a savepoint: a failed attempt leaves nothing behind
            await _copy_range(conn, scope, progress)
        return
    except Exception as err:  # noqa: BLE001 - sorted by _is_poison; the rest is raised again
        if not _is_poison(err):
            raise
        failure = err
    positions = [row["position"] for row in await conn.fetch(scope.statement(POSITIONS_IN_RANGE), *scope.arguments())]
    if len(positions) == 1:
        await quarantine.add(conn, positions[0], failure)
        return
    if not positions:
        raise failure
    if progress:
        progress(f"an event in positions {scope.after + 1}-{scope.upto} cannot be applied: isolating it")
    middle = positions[len(positions) // 2 - 1]
    await _copy_around_poison(conn, scope.part(scope.after, middle), quarantine)
    await _copy_around_poison(conn, scope.part(middle, scope.upto), quarantine)


async def _apply_next_batch(conn: Connection, batch_size: int) -> int:
    """Inside a transaction: copy up to ``batch_size`` events after the checkpoint and move it; returns how many."""
    checkpoint = await conn.fetchval("SELECT position FROM projection_checkpoint WHERE name = $1 FOR UPDATE", CHECKPOINT)
    batch = await conn.fetchrow(
        "SELECT max(position), count(*) FROM"
        " (SELECT position FROM invoice_events WHERE position > $1 ORDER BY position LIMIT $2) next_events",
        checkpoint,
        batch_size,
    )
    assert batch is not None  # an aggregate has a row
    upto, count = batch
    if not count:
        return 0
    await _copy_around_poison(conn, _Range(checkpoint, upto), _Quarantine())
    await conn.execute(
        "UPDATE projection_checkpoint SET position = $2, updated_at = now() WHERE name = $1", CHECKPOINT, upto
    )
    return count


async def catch_up(pool: asyncpg.Pool, batch_size: int = BATCH_SIZE) -> int:
    """Copy every event after the checkpoint, one transaction per batch; returns the events passed
    (copied or, if they cannot be applied, quarantined)."""
    applied = 0
    async with pool.acquire() as conn:
        while True:
            async with conn.transaction():
                count = await _apply_next_batch(conn, batch_size)
            applied += count
            if count < batch_size:
                return applied


async def rebuild(pool: asyncpg.Pool, progress: Progress | None = None) -> int:
    """Recompute every projection from the first event, atomically, set-based; returns the events copied.

    Quarantined events are skipped (``progress`` says how many); an event that cannot be applied
    now joins them. ``progress`` is told each step as it ends (upcasting, then each table with its rows).
    """
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM projection_checkpoint WHERE name = $1 FOR UPDATE", CHECKPOINT)
        for table in PROJECTION_TABLES:  # not TRUNCATE: readers keep the old rows until the commit
            await conn.execute(f"DELETE FROM {table}")
        log_end = await conn.fetchrow("SELECT coalesce(max(position), 0), count(*) FROM invoice_events")
        assert log_end is not None  # an aggregate has a row
        upto, count = log_end
        skipped = await conn.fetchval("SELECT count(*) FROM projection_quarantine")
        if progress and skipped:
            progress(f"skipping {skipped} quarantined event(s) (dunning projections quarantine list)")
        quarantine = _Quarantine()
        await _copy_around_poison(conn, _Range(0, upto), quarantine, progress)
        if progress and quarantine.positions:
            progress(f"quarantined {len(quarantine.positions)} more event(s) that cannot be applied")
        await conn.execute(
            "UPDATE projection_checkpoint SET position = $2, updated_at = now() WHERE name = $1", CHECKPOINT, upto
        )
    return count - skipped - len(quarantine.positions)


class QuarantinedEvent(BaseModel):
    """An event the projector could not apply: the read models leave it out until a retry applies it."""

    position: int
    invoice_id: str
    sequence: int
    kind: str
    error: str
    attempts: int
    quarantined_at: datetime
    last_tried_at: datetime


async def quarantined_events(pool: asyncpg.Pool | Connection) -> list[QuarantinedEvent]:
    """Every quarantined event, in log order."""
    rows = await pool.fetch("SELECT * FROM projection_quarantine ORDER BY position")
    return [QuarantinedEvent(**dict(row)) for row in rows]


class NotQuarantined(LookupError):
    """The position asked for is not in quarantine."""


class RetryOutcome(BaseModel):
    """What a retry did: the positions now projected, and the events still quarantined."""

    released: list[int]
    still_quarantined: list[QuarantinedEvent]


async def retry_quarantined(pool: asyncpg.Pool, position: int | None = None) -> RetryOutcome:
    """Try the quarantined events again (or only the one at ``position``), after a fix to the projector.

    Each invoice concerned is projected again from its first event, in one transaction with the
    projector held off: an event that still cannot be applied stays quarantined (one more attempt).
    """
    async with pool.acquire() as conn, conn.transaction():
        checkpoint = await conn.fetchval(
            "SELECT position FROM projection_checkpoint WHERE name = $1 FOR UPDATE", CHECKPOINT
        )
        retried = await conn.fetch(
            "DELETE FROM projection_quarantine WHERE $1::bigint IS NULL OR position = $1 RETURNING *", position
        )
        if position is not None and not retried:
            raise NotQuarantined(f"the event at position {position} is not quarantined")
        invoices = sorted({row["invoice_id"] for row in retried})
        quarantine = _Quarantine({row["position"]: row for row in retried})
        if invoices:
            for table in (*PROJECTION_TABLES, "upcast_snapshots"):
                await conn.execute(f"DELETE FROM {table} WHERE invoice_id = ANY($1::text[])", invoices)
            await _copy_around_poison(conn, _Range(0, checkpoint, invoices), quarantine)
        still = [event for event in await quarantined_events(conn) if event.position in quarantine.positions]
    released = sorted(set(quarantine.earlier) - set(quarantine.positions))
    return RetryOutcome(released=released, still_quarantined=still)


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
    assert row is not None  # an aggregate has a row
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
    """One invoice as finance and ops see it, as its workflow last decided; money in minor units of ``currency``."""

    invoice_id: str
    customer_id: str
    currency: str
    service: str | None
    time_zone: str
    state: InvoiceState
    escalation: InvoiceState
    issue_date: date
    due_date: date
    days_overdue: int
    amount_minor: int
    fees_minor: int
    paid_minor: int
    credited_minor: int
    discount_minor: int
    written_off_minor: int
    balance_minor: int
    overpaid_minor: int
    discount_available_minor: int
    disputed: bool
    on_payment_plan: bool
    suspended: bool
    equipment_held: list[str]
    sent_to_agency: bool
    factored_to: str | None
    stages_reached: list[StageAction]
    next_action: NextAction | None
    rejected_payments: int
    failed_notices: int
    closed_at: datetime | None
    late_charges_stopped: str | None
    escalation_stopped: bool
    cut_announced_for: datetime | None
    recovered_minor: int
    interest_minor: int = Field(description="statutory interest posted, in the balance")
    interest_accruing_minor: int = Field(description="interest accrued since the last posting as of updated_at")
    updated_at: datetime
    quarantined_events: int = Field(
        description="events of this invoice the projector could not apply: when not 0 the row leaves them out"
        " (dunning projections quarantine list)"
    )


INVOICE_VIEW_QUERY = """
SELECT i.*,
       greatest(0, (now() AT TIME ZONE i.time_zone)::date - i.due_date) AS days_overdue,
       (SELECT count(*) FROM projection_quarantine q WHERE q.invoice_id = i.invoice_id) AS quarantined_events,
       ARRAY(SELECT s.stage FROM projected_invoice_stages s
             WHERE s.invoice_id = i.invoice_id ORDER BY s.reached_at, s.stage) AS stages_reached
FROM projected_invoices i
"""


# InvoiceStatus fields that are not a column of the row as they are
READ_DIFFERENTLY = ("next_action", "actions")


def _next_action(row: asyncpg.Record) -> NextAction | None:
    at = row["next_action_at"]
    return NextAction(what=row["next_action"], at=at, kind=row["next_action_kind"]) if at else None


def _invoice_view(row: asyncpg.Record) -> InvoiceView:
    values = {name: row[name] for name in InvoiceView.model_fields if name != "next_action"}
    return InvoiceView(**values, next_action=_next_action(row))


async def invoice_view(pool: asyncpg.Pool, invoice_id: str) -> InvoiceView | None:
    """The projected invoice, or None if no event of it has been projected."""
    row = await pool.fetchrow(INVOICE_VIEW_QUERY + " WHERE i.invoice_id = $1", invoice_id)
    return _invoice_view(row) if row else None


async def invoice_status(pool: asyncpg.Pool, invoice_id: str) -> InvoiceStatus | None:
    """The invoice's status as its workflow last wrote it (the ``status`` query's answer, without asking it).

    Days overdue are counted today; the discount on offer and the next action are as of the last
    batch the workflow wrote (it writes one whenever either changes). None if not projected yet,
    or if an event of the invoice is quarantined (the row would leave it out): ask the workflow then.
    """
    row = await pool.fetchrow(INVOICE_VIEW_QUERY + " WHERE i.invoice_id = $1", invoice_id)
    if row is None or row["quarantined_events"]:
        return None
    story = await pool.fetch(
        "SELECT at, what FROM (SELECT at, what, sequence, line FROM projected_invoice_story WHERE invoice_id = $1"
        " ORDER BY sequence DESC, line DESC LIMIT $2) last ORDER BY sequence, line",
        invoice_id,
        STORY_LINES_SHOWN,
    )
    copied = {name: row[name] for name in InvoiceStatus.model_fields if name not in READ_DIFFERENTLY}
    return InvoiceStatus(
        **copied,
        next_action=_next_action(row),
        actions=[ActionTaken(at=line["at"], what=line["what"]) for line in story],
    )


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
    return [AgingRow.model_validate({k: int(v) if k != "currency" else v for k, v in row.items()}) for row in rows]


class FunnelRow(Frozen):
    """How many invoices reached a stage, and how many were then paid in full without going further."""

    stage: str
    reached: int
    paid_at_stage: int


async def collections_funnel(pool: asyncpg.Pool) -> list[FunnelRow]:
    """The collections funnel in escalation order, from ``issued`` to ``legal_review``."""
    reached: dict[str, int] = {
        stage: count for stage, count in await pool.fetch("SELECT stage, count(*) FROM projected_invoice_stages GROUP BY stage")
    }
    reached["issued"] = await pool.fetchval("SELECT count(*) FROM projected_invoices")
    paid: dict[str, int] = {
        stage: count
        for stage, count in await pool.fetch(
            "SELECT coalesce(last_stage, 'issued'), count(*) FROM projected_invoices WHERE state = $1 GROUP BY 1",
            InvoiceState.PAID.value,
        )
    }
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
    receivables: dict[str, Decimal] = {  # sums of bigints are numeric
        currency: owed
        for currency, owed in await pool.fetch(
            f"SELECT currency, sum(owed) FROM ({RECEIVABLE_AT}) owed GROUP BY currency", as_of
        )
    }
    invoiced: dict[str, Decimal] = {
        currency: amount
        for currency, amount in await pool.fetch(
            "SELECT currency, sum(amount_minor) FROM projected_invoices"
            " WHERE issue_date > $1::date - $2::int AND issue_date <= $1 GROUP BY currency",
            as_of,
            period_days,
        )
    }
    rows = []
    for currency in sorted(set(receivables) | set(invoiced)):
        owed, sold = int(receivables.get(currency, 0)), int(invoiced.get(currency, 0))
        days = (Decimal(owed) * period_days / sold).quantize(Decimal("0.1"), ROUND_HALF_UP) if sold else None
        rows.append(
            DsoRow(currency=currency, receivables_minor=owed, invoiced_minor=sold, period_days=period_days, days=days)
        )
    return rows
