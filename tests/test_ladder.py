"""The ladder table and what the rest of the service derives from it; the state diagram drawn from it. No Temporal."""

from __future__ import annotations

import re
from datetime import timedelta

from workflows import ladder
from workflows.ladder import LADDER, RUNGS, StageWork, mermaid_state_diagram
from workflows.models import DunningPolicy, InvoiceState, NoticeKind, Stage, StageAction

EDGE = re.compile(r"^\s*(\S+) --> (\S+)(?: : (.*))?$")


def edges(diagram: str) -> list[tuple[str, str, str]]:
    return [(m[1], m[2], m[3] or "") for line in diagram.splitlines() if (m := EDGE.match(line))]


def test_one_rung_per_stage_action_in_escalation_order() -> None:
    assert [rung.action for rung in LADDER] == list(StageAction)
    assert all(RUNGS[rung.action] is rung for rung in LADDER)


def test_each_rung_but_the_courtesy_note_moves_the_invoice_to_a_state_of_its_own() -> None:
    states = [rung.state_after for rung in LADDER]
    assert states[0] is None and RUNGS[StageAction.COURTESY].state_after is None
    assert len(set(states[1:])) == len(states) - 1 and None not in states[1:]
    assert ladder.STATE_AFTER_STAGE[StageAction.SUSPEND] == InvoiceState.SUSPENDED
    assert StageAction.COURTESY not in ladder.STATE_AFTER_STAGE


def test_each_rung_tells_the_client_with_a_notice_of_its_own() -> None:
    notices = [rung.notice for rung in LADDER]
    assert len(set(notices)) == len(notices)
    assert RUNGS[StageAction.SUSPEND].notice == NoticeKind.SUSPENDED
    assert RUNGS[StageAction.AGENCY].notice == NoticeKind.AGENCY_HANDOVER


def test_the_ultimatum_and_the_suspension_notice_name_the_cut_date() -> None:
    assert {NoticeKind.ULTIMATUM, NoticeKind.SUSPENDED} == ladder.NOTICES_NAMING_CUT_DATE


def test_only_the_suspend_rung_touches_the_service() -> None:
    assert [rung.action for rung in LADDER if rung.suspends_service] == [StageAction.SUSPEND]


def test_the_works_that_run_between_rungs_too_send_their_own_notice() -> None:
    own = {rung.action for rung in LADDER if rung.work.sends_own_notice}
    assert own == {StageAction.LATE_FEE, StageAction.LEGAL_REVIEW}
    assert not StageWork.NOTICE_ONLY.sends_own_notice


def test_every_rung_waits_for_the_sending_window() -> None:
    assert all(rung.windowed for rung in LADDER)


def test_standing_ranks_the_escalation_states_in_ladder_order() -> None:
    assert ladder.ESCALATION_STATES == [
        InvoiceState.ISSUED,
        InvoiceState.REMINDED,
        InvoiceState.WARNED,
        InvoiceState.LATE_FEE,
        InvoiceState.ULTIMATUM,
        InvoiceState.SUSPENDED,
        InvoiceState.AGENCY,
        InvoiceState.LEGAL_REVIEW,
        InvoiceState.LEGAL_ACTION,
    ]


def test_new_orders_stop_from_the_ultimatum_on_by_default() -> None:
    stops = [rung.stops_new_orders for rung in LADDER]
    assert stops == sorted(stops), "once a rung stops new orders, every later one does"
    assert ladder.NEW_ORDERS_STOP_AT == InvoiceState.ULTIMATUM


def test_the_funnel_names_each_rung_by_the_stage_its_event_carries() -> None:
    assert ["issued", *(action.value for action in StageAction)] == ladder.FUNNEL_STAGES


# --- the state diagram -----------------------------------------------------------------------


def test_diagram_of_the_default_policy_climbs_its_rungs_with_their_offsets() -> None:
    diagram = mermaid_state_diagram(DunningPolicy.default())
    assert diagram.startswith("stateDiagram-v2\n")
    climbed = [(a, b, label) for a, b, label in edges(diagram) if "(+" in label]
    assert climbed == [
        ("issued", "reminded", "reminder (+1 d)"),
        ("reminded", "warned", "warning (+5 d)"),
        ("warned", "late_fee", "late fee (+10 d)"),
        ("late_fee", "ultimatum", "ultimatum (+15 d)"),
        ("ultimatum", "suspended", "suspend (+20 d)"),
        ("suspended", "agency", "agency (+90 d)"),
        ("agency", "legal_review", "legal review (+120 d)"),
    ]
    assert ("agency", "legal_review", "legal review again after 90 d") in edges(diagram)


def test_diagram_shows_pauses_legal_decisions_and_every_closing() -> None:
    found = {(a, b) for a, b, _ in edges(mermaid_state_diagram())}
    assert {
        ("escalation", "disputed"),
        ("disputed", "escalation"),
        ("escalation", "payment_plan"),
        ("payment_plan", "escalation"),
        ("legal_review", "legal_action"),
        ("legal_review", "agency"),
        ("open", "paid"),
        ("open", "settled"),
        ("open", "factored"),
        ("open", "written_off"),
    } <= found
    assert {b for a, b in found if b != "[*]"} | {a for a, b in found} >= {state.value for state in InvoiceState}
    assert {a for a, b in found if b == "[*]"} == {state.value for state in InvoiceState if state.closed}


def test_whole_ladder_diagram_draws_the_courtesy_note_as_a_stay_in_issued() -> None:
    diagram = mermaid_state_diagram()
    assert ("issued", "issued", "courtesy") in edges(diagram)
    assert "(+" not in diagram  # no policy: no offsets


def test_diagram_of_a_short_policy_skips_the_missing_rungs() -> None:
    short = DunningPolicy(
        stages=[
            Stage(action=StageAction.COURTESY, offset=timedelta(days=-3)),
            Stage(action=StageAction.WARNING, offset=timedelta(days=7)),
            Stage(action=StageAction.SUSPEND, offset=timedelta(hours=36) + timedelta(days=7)),
        ]
    )
    found = edges(mermaid_state_diagram(short))
    assert ("issued", "issued", "courtesy (-3 d)") in found
    assert ("issued", "warned", "warning (+7 d)") in found
    assert ("warned", "suspended", "suspend (+204 h)") in found
    assert not any(b in ("legal_action", "agency", "legal_review") for _, b, _ in found)
