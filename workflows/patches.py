"""``workflow.patched()`` ids: each guards a change made while invoices were in flight (README, Versioning).

A history recorded before a change has no marker for its id, so it replays the old path.
"""

from __future__ import annotations

from temporalio import workflow

from workflows.state import InvoiceLedger

PATCH_SENDING_WINDOW = "sending-window"
PATCH_EQUIPMENT = "equipment-adapters"
PATCH_AGENCY_PACKAGE = "agency-package"
PATCH_STAGE_STOPS_AT_CLOSE = "stage-stops-at-close"
PATCH_DISCOUNT_LAPSE_EVENT = "discount-lapse-event"
# issue 20: the late-charge cap and freezes, small balances, the cut interlock, per-currency legal
# thresholds and rejected disputes, recoveries after a write-off (``InvoiceLedger.money_rules``)
PATCH_MONEY_RULES = "money-rules"
# bounded input and output (issue 21): each is asked for only where the old code would do otherwise
PATCH_COUNTED_REJECTIONS = "counted-rejections"  # beyond the daily rate, rejections are counted
PATCH_SPLIT_EVENT_BATCHES = "split-event-batches"  # a large batch of events goes in several appends
PATCH_WAKE_ON_LONG_HISTORY = "wake-on-long-history"  # a dropped signal wakes the loop to continue as new
PATCH_CONTINUE_ON_SIGNALS = "continue-on-signals"  # a run continues as new after SIGNALS_PER_RUN signals
PATCH_CUSTOMER_HOLDS = "customer-holds"  # the customer workflow cuts and restores what its invoices hold
PATCH_CUSTOMER_NOTICES = "customer-notices"  # stage notices go through the customer, in digests (issue 19, item 3)
# issue 20 item 4: a policy's statutory interest instead of the percent fee (``InvoiceLedger.interest_rules``)
PATCH_STATUTORY_INTEREST = "statutory-interest"
# issue 20 item 1: a payment's value date bounded, and deciding its discount and the late fees it reverses
# (``InvoiceLedger.value_dates``, asked once a run like money-rules)
PATCH_VALUE_DATES = "value-dates"
# issue 20 item 7: steps that fell due together tell one notice, and the stages still to come count from then;
# an invoice started with a stage already due sends no invoice notice (``InvoiceLedger.catch_up``)
PATCH_CATCH_UP = "catch-up"
# issue 19 item 5: an invoice takes its customer's pause (the ``customer_control`` signal; asked when one comes)
PATCH_CUSTOMER_CONTROL = "customer-control"

# release v8: the run-wide patches above in one marker. Every patch asked in ``__init__`` costs a new run a
# marker and an upsert of TemporalChangeVersion (the SDK's), nine of them on each invoice's first task;
# a run started since v8 asks this one instead, and a history without it asks each as before, in this order
RUN_WIDE = (
    PATCH_SENDING_WINDOW,
    PATCH_MONEY_RULES,
    PATCH_VALUE_DATES,
    PATCH_STATUTORY_INTEREST,
    PATCH_CATCH_UP,
    PATCH_COUNTED_REJECTIONS,
    PATCH_WAKE_ON_LONG_HISTORY,
    PATCH_CONTINUE_ON_SIGNALS,
    PATCH_CUSTOMER_NOTICES,
)
PATCH_RUN_WIDE_V8 = "run-wide-v8"


def taken_this_run() -> frozenset[str]:
    """The run-wide patches this run takes; ask once a run, in the workflow's ``__init__``."""
    if workflow.patched(PATCH_RUN_WIDE_V8):
        return frozenset(RUN_WIDE)
    return frozenset(patch for patch in RUN_WIDE if workflow.patched(patch))


def closed_meanwhile(ledger: InvoiceLedger) -> bool:
    """A request closed the invoice while a stage waited on its activities: the stage stops there."""
    return ledger.escalation.closed and workflow.patched(PATCH_STAGE_STOPS_AT_CLOSE)
