"""Postgres records of equipment safety: every action taken or refused, the state each cut found before
changing anything, and the kill switches."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import asyncpg

from activities.equipment.adapter import StateBeforeCut
from workflows.models import EquipmentRequest, EquipmentResult

DRY_RUN_STATE = "not read (dry run)"
EVERY_CUSTOMER = "every customer"  # how the switch without a customer is named to people


class Outcome(StrEnum):
    """How a suspend or restore request ended."""

    CHANGED = "changed"
    UNCHANGED = "unchanged"
    DRY_RUN = "dry_run"
    REFUSED = "refused"
    KILL_SWITCH = "kill_switch"
    FAILED = "failed"


COMPLETED = (Outcome.CHANGED, Outcome.UNCHANGED, Outcome.DRY_RUN)


async def completed_action(pool: asyncpg.Pool, idempotency_key: str) -> EquipmentResult | None:
    """The completed action recorded under this key, if any."""
    row = await pool.fetchrow(
        "SELECT action, equipment_id, outcome, state_read_back, dry_run FROM equipment_actions"
        " WHERE idempotency_key = $1 AND outcome = ANY($2::text[])",
        idempotency_key,
        list(COMPLETED),
    )
    if row is None:
        return None
    return EquipmentResult(
        equipment_id=row["equipment_id"],
        action=row["action"],
        changed=row["outcome"] == Outcome.CHANGED,
        state=DRY_RUN_STATE if row["dry_run"] else row["state_read_back"],
        dry_run=row["dry_run"],
    )


async def record_action(
    pool: asyncpg.Pool,
    request: EquipmentRequest,
    action: str,
    outcome: Outcome,
    *,
    state: str | None = None,
    dry_run: bool = False,
    detail: str | None = None,
) -> None:
    """Append one action; a second completed action under the same key is not recorded twice."""
    await pool.execute(
        "INSERT INTO equipment_actions (idempotency_key, equipment_id, customer_id, invoice_id, action,"
        " requested_by, reason, outcome, state_read_back, dry_run, detail)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        " ON CONFLICT (idempotency_key) WHERE outcome IN ('changed', 'unchanged', 'dry_run') DO NOTHING",
        request.idempotency_key,
        request.equipment_id,
        request.customer_id,
        request.invoice_id,
        action,
        request.requested_by,
        request.reason,
        outcome.value,
        state,
        dry_run,
        detail,
    )


# the reading of this equipment's latest cut that is still in force (completed, no completed restore since)
_CUT_IN_FORCE = """
    SELECT b.state FROM equipment_states_before_cut b
    JOIN equipment_actions cut ON cut.idempotency_key = b.idempotency_key
        AND cut.action = 'suspend' AND cut.outcome IN ('changed', 'unchanged')
    WHERE b.equipment_id = $2 AND b.customer_id = $3 AND b.idempotency_key <> $1
        AND NOT EXISTS (SELECT FROM equipment_actions back WHERE back.equipment_id = b.equipment_id
            AND back.action = 'restore' AND back.outcome IN ('changed', 'unchanged') AND back.at >= cut.at)
    ORDER BY b.id DESC LIMIT 1
"""


async def remember_state_before_cut(pool: asyncpg.Pool, request: EquipmentRequest, state: StateBeforeCut) -> None:
    """Keep what a cut found before changing anything, under its idempotency key; the first reading of a
    key stays. Where an earlier cut of the equipment is still in force, what that cut found is kept
    instead (the equipment now reads as that cut left it, not as its owner had it)."""
    await pool.execute(
        "INSERT INTO equipment_states_before_cut (idempotency_key, equipment_id, customer_id, invoice_id, state)"
        f" VALUES ($1, $2, $3, $4, COALESCE(({_CUT_IN_FORCE}), $5::jsonb))"
        " ON CONFLICT (idempotency_key) DO NOTHING",
        request.idempotency_key,
        request.equipment_id,
        request.customer_id,
        request.invoice_id,
        state,
    )


async def state_before_cut(pool: asyncpg.Pool, request: EquipmentRequest) -> StateBeforeCut | None:
    """What the latest cut of this customer's equipment found before changing it; None if none was recorded."""
    return await pool.fetchval(
        "SELECT state FROM equipment_states_before_cut WHERE equipment_id = $1 AND customer_id = $2"
        " ORDER BY id DESC LIMIT 1",
        request.equipment_id,
        request.customer_id,
    )


@dataclass(frozen=True)
class KillSwitch:
    """A switch that refuses every cut and restore of one customer's equipment, or (``customer_id`` None) everyone's."""

    customer_id: str | None
    reason: str
    set_by: str
    set_at: datetime

    @property
    def scope(self) -> str:
        """Whom it stops, for people: the customer id, or ``every customer``."""
        return EVERY_CUSTOMER if self.customer_id is None else self.customer_id


async def kill_switch_for(pool: asyncpg.Pool, customer_id: str) -> KillSwitch | None:
    """The switch that stops actions on this customer's equipment now (the global one first), if any."""
    row = await pool.fetchrow(
        "SELECT customer_id, reason, set_by, set_at FROM equipment_kill_switches"
        " WHERE customer_id IS NULL OR customer_id = $1 ORDER BY customer_id NULLS FIRST LIMIT 1",
        customer_id,
    )
    return KillSwitch(**dict(row)) if row else None


async def set_kill_switch(pool: asyncpg.Pool, customer_id: str | None, reason: str, set_by: str) -> None:
    """Turn a switch on for one customer (None: every customer), or update who and why."""
    await pool.execute(
        "INSERT INTO equipment_kill_switches (customer_id, reason, set_by) VALUES ($1, $2, $3)"
        " ON CONFLICT (customer_id) DO UPDATE SET reason = EXCLUDED.reason, set_by = EXCLUDED.set_by, set_at = now()",
        customer_id,
        reason,
        set_by,
    )


async def clear_kill_switch(pool: asyncpg.Pool, customer_id: str | None) -> bool:
    """Turn a customer's switch (None: the one for every customer) off; False if it was not on."""
    deleted = await pool.execute(
        "DELETE FROM equipment_kill_switches WHERE customer_id IS NOT DISTINCT FROM $1::text", customer_id
    )
    return deleted == "DELETE 1"
