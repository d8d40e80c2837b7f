"""The escalation ladder as one table: what each stage action means, declared once.

A policy (``DunningPolicy.stages``) says which rungs an invoice climbs and when; this table says
what a rung does. The workflow performs it, customer standing ranks it, the projections name it
in the funnel, the notices follow from it and the docs draw it (``mermaid_state_diagram``).
Pure data and pure functions: the workflow sandbox passes this module through.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from workflows.models import DunningPolicy, InvoiceState, NoticeKind, StageAction


class StageWork(StrEnum):
    """What the workflow does at a rung, after recording that the invoice reached it."""

    NOTICE_ONLY = "notice_only"
    CHARGE_LATE_FEE = "charge_late_fee"
    SUSPEND_SERVICE = "suspend_service"
    HAND_OVER_TO_AGENCY = "hand_over_to_agency"
    OPEN_LEGAL_REVIEW = "open_legal_review"

    @property
    def sends_own_notice(self) -> bool:
        """The work sends the rung's notice itself: it also runs between rungs (a monthly fee, a renewed review)."""
        return self in (StageWork.CHARGE_LATE_FEE, StageWork.OPEN_LEGAL_REVIEW)


@dataclass(frozen=True)
class Rung:
    """One stage action of the ladder."""

    action: StageAction
    state_after: InvoiceState | None  # None: the invoice's state does not move (a courtesy note)
    notice: NoticeKind  # what the client is told
    work: StageWork
    windowed: bool  # waits for the client's sending window (business hours, no holidays)
    stops_new_orders: bool  # standing: by default, new orders stop once an open invoice reached this rung
    notice_names_cut_date: bool  # the notice tells when the suspend rung will cut (or cut) the service

    @property
    def suspends_service(self) -> bool:
        """The rung blocks support and orders and cuts the equipment the contract allows."""
        return self.work is StageWork.SUSPEND_SERVICE

    @property
    def funnel_stage(self) -> str:
        """The rung's name in the collections funnel: the ``stage`` its ``stage_reached`` event carries."""
        return self.action.value


# window: waits for the sending window; orders: stops new orders (standing); cut date: its notice names it
A, S, N, W = StageAction, InvoiceState, NoticeKind, StageWork  # short names for the table
# fmt: off
#        action          state after      notice              work                    window  orders  cut date
LADDER: tuple[Rung, ...] = (
    Rung(A.COURTESY,     None,            N.COURTESY,         W.NOTICE_ONLY,          True,   False,  False),
    Rung(A.REMINDER,     S.REMINDED,      N.REMINDER,         W.NOTICE_ONLY,          True,   False,  False),
    Rung(A.WARNING,      S.WARNED,        N.WARNING,          W.NOTICE_ONLY,          True,   False,  False),
    Rung(A.LATE_FEE,     S.LATE_FEE,      N.LATE_FEE,         W.CHARGE_LATE_FEE,      True,   False,  False),
    Rung(A.ULTIMATUM,    S.ULTIMATUM,     N.ULTIMATUM,        W.NOTICE_ONLY,          True,   True,   True),
    Rung(A.SUSPEND,      S.SUSPENDED,     N.SUSPENDED,        W.SUSPEND_SERVICE,      True,   True,   True),
    Rung(A.AGENCY,       S.AGENCY,        N.AGENCY_HANDOVER,  W.HAND_OVER_TO_AGENCY,  True,   True,   False),
    Rung(A.LEGAL_REVIEW, S.LEGAL_REVIEW,  N.LEGAL_REVIEW,     W.OPEN_LEGAL_REVIEW,    True,   True,   False),
)
# fmt: on
del A, S, N, W
RUNGS: dict[StageAction, Rung] = {rung.action: rung for rung in LADDER}

STATE_AFTER_STAGE: dict[StageAction, InvoiceState] = {r.action: r.state_after for r in LADDER if r.state_after}
# the states an open invoice climbs through, in order (legal action follows a decision at legal review)
ESCALATION_STATES: list[InvoiceState] = [InvoiceState.ISSUED, *STATE_AFTER_STAGE.values(), InvoiceState.LEGAL_ACTION]
# standing's default ``new_orders_block_at``
NEW_ORDERS_STOP_AT: InvoiceState = next(r.state_after for r in LADDER if r.stops_new_orders and r.state_after)
NOTICES_NAMING_CUT_DATE = frozenset(rung.notice for rung in LADDER if rung.notice_names_cut_date)
# the rungs' notices by height: of several due at once (a catch-up), the highest is the one told
NOTICE_HEIGHT: dict[NoticeKind, int] = {rung.notice: height for height, rung in enumerate(LADDER)}
FUNNEL_STAGES: list[str] = [InvoiceState.ISSUED.value, *(rung.funnel_stage for rung in LADDER)]


class StepKind(StrEnum):
    """What falls due in the run loop: the next rung, or one of the steps between rungs."""

    STAGE = "stage"
    LATE_FEE = "late_fee"  # a further monthly late fee
    INSTALMENT = "instalment"  # an instalment's deadline passed: check it was paid
    LEGAL_REVIEW = "legal_review"  # review again after the agency had another go
    DISCOUNT_ENDS = "discount_ends"  # the early-payment discount lapses
    INTEREST = "interest"  # the month-end posting of statutory interest (no notice)


# the steps between rungs that talk to the client, so wait for its sending window (a rung says it itself)
WINDOWED_BETWEEN_RUNGS = frozenset({StepKind.LATE_FEE, StepKind.INSTALMENT, StepKind.LEGAL_REVIEW})


def mermaid_state_diagram(policy: DunningPolicy | None = None) -> str:
    """The invoice's states and transitions as Mermaid ``stateDiagram-v2`` text, drawn from the ladder.

    ``policy`` None draws every rung (a policy climbs a subset of them, in this order); a policy
    draws its own rungs, each with its offset from the due moment. The requests (payments,
    disputes, plans, legal decisions, factoring) move the invoice as the workflow handles them.
    """
    rungs = LADDER if policy is None else tuple(RUNGS[stage.action] for stage in policy.stages)
    offsets = {} if policy is None else {stage.action: _days(stage.offset) for stage in policy.stages}
    ladder = ["[*] --> issued"]
    state = InvoiceState.ISSUED
    for rung in rungs:
        target = rung.state_after or state
        offset = f" ({offsets[rung.action]})" if rung.action in offsets else ""
        ladder.append(f"{state} --> {target} : {_words(rung.action)}{offset}")
        state = target
    if StageAction.LEGAL_REVIEW in (rung.action for rung in rungs):
        again = f" after {_days(policy.legal_review_again_after).lstrip('+')}" if policy else ""
        ladder += [
            "legal_review --> legal_action : decision sue or settle",
            "legal_review --> agency : decision back to agency",
            f"agency --> legal_review : legal review again{again}",
        ]
    lines = [
        "stateDiagram-v2",
        "    [*] --> open",
        "    state open {",
        "        [*] --> escalation",
        "        state escalation {",
        *(f"            {line}" for line in ladder),
        "        }",
        "        escalation --> disputed : dispute opened",
        "        disputed --> escalation : dispute resolved, the clock shifted by the pause",
        "        escalation --> payment_plan : payment plan agreed",
        "        payment_plan --> escalation : instalment missed, the clock shifted by the plan",
        "    }",
        "    open --> paid : paid in full",
        "    open --> settled : the settlement paid, or a credit from a dispute clears the balance",
        "    open --> factored : receivable sold to a factor (not during legal action)",
        "    open --> written_off : legal decision write off (at legal review or legal action)",
        "    note right of written_off : a suspended service stays suspended until recoveries cover it,"
        " the other closings restore it",
        *(f"    {closed} --> [*]" for closed in InvoiceState if closed.closed),
    ]
    return "\n".join(lines) + "\n"


def _words(action: StageAction) -> str:
    return action.value.replace("_", " ")


def _days(offset: timedelta) -> str:
    days, rest = divmod(offset, timedelta(days=1))
    return f"{days:+d} d" if not rest else f"{offset.total_seconds() / 3600:+g} h"
