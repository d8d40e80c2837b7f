"""Ops control of one customer (issue 19 item 5): pause every escalation of its invoices, and keep its
equipment out of automatic cuts. The requests, the message each open invoice gets, and the bookkeeping.

Pure (no Temporal calls): ``workflows.customer_ops`` checks the requests, records the decisions and tells
the invoices; ``workflows.holds`` asks ``cuts_excluded`` before cutting a piece of equipment.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from workflows.bounds import BoundedMoment
from workflows.models import FreeText, Identifier, Strict

CUSTOMER_CONTROL_SIGNAL = "customer_control"
MAX_PAUSE = timedelta(days=366)  # an until-date at most this far ahead
MIN_PAUSE = timedelta(minutes=1)  # and at least this far: an until-date in the past is a mistake
MAX_DECISIONS_KEPT = 50


class PauseCustomer(Strict):
    """Pause every escalation of the customer's invoices, until ``resume`` or the until-date."""

    customer_id: Identifier
    reason: FreeText = Field(min_length=1, max_length=500)
    requested_by: FreeText = Field(min_length=1, max_length=200, description="who asks")
    until: BoundedMoment | None = Field(
        default=None, description="the pause ends by itself then (at most a year ahead)"
    )


class ResumeCustomer(Strict):
    """End the customer's pause now; its invoices' steps come later by the pause's length."""

    customer_id: Identifier
    reason: FreeText = Field(default="", max_length=500)
    requested_by: FreeText = Field(min_length=1, max_length=200, description="who asks")


class CutsRequest(Strict):
    """Keep the customer's equipment out of automatic cuts (``excluded``), or put it back in."""

    customer_id: Identifier
    excluded: bool
    reason: FreeText = Field(min_length=1, max_length=500)
    requested_by: FreeText = Field(min_length=1, max_length=200, description="who asks")


class ControlMessage(Strict):
    """What the customer tells each open invoice (signal ``customer_control``): paused or not, from the
    ``sequence``-th decision on; an invoice ignores a message no newer than the last it took."""

    customer_id: str
    sequence: int = Field(ge=1)
    paused: bool
    reason: str = ""
    requested_by: str = ""
    until: datetime | None = None


class _Mutable(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Pause(_Mutable):
    """The customer's pause under way."""

    since: datetime
    until: datetime | None = None
    reason: str
    requested_by: str


class Decision(_Mutable):
    """One ops decision about the customer, with who and why."""

    at: datetime
    what: str
    reason: str = ""
    requested_by: str = ""


class CustomerControl(_Mutable):
    """What ops decided about the customer; continue-as-new carries it."""

    pause: Pause | None = None
    cuts_excluded: bool = Field(default=False, description="never cut its equipment automatically")
    sequence: int = Field(default=0, description="pause and resume messages sent so far")
    to_tell: list[str] = Field(default_factory=list, description="invoice ids the latest message has not reached")
    decisions: list[Decision] = Field(default_factory=list, description="the newest decisions")

    def decide(self, at: datetime, what: str, reason: str = "", requested_by: str = "") -> None:
        """Keep a decision (the newest ``MAX_DECISIONS_KEPT``)."""
        self.decisions.append(Decision(at=at, what=what, reason=reason, requested_by=requested_by))
        del self.decisions[:-MAX_DECISIONS_KEPT]

    def message(self, customer_id: str) -> ControlMessage:
        """The message that says the pause as it is now."""
        pause = self.pause
        return ControlMessage(
            customer_id=customer_id,
            sequence=self.sequence,
            paused=pause is not None,
            reason=pause.reason if pause else "",
            requested_by=pause.requested_by if pause else "",
            until=pause.until if pause else None,
        )


def until_problem(until: datetime | None, now: datetime) -> str | None:
    """Why an until-date is refused: not in the future, or more than ``MAX_PAUSE`` ahead (None: fine)."""
    if until is None:
        return None
    if until.tzinfo is None:
        return "until must name its time zone (e.g. 2027-01-31T09:00:00Z)"
    if until < now + MIN_PAUSE:
        return f"until {until.isoformat()} is not in the future (now {now.isoformat(timespec='seconds')})"
    if until > now + MAX_PAUSE:
        return f"until {until.isoformat()} is more than {MAX_PAUSE.days} days ahead"
    return None
