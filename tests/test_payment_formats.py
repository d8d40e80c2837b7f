"""Reading the formats payments arrive in, without a stack: ISO 11649 references, camt.053/054, Stripe signatures."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from api import camt, stripe_events
from api.camt import Direction, StatementError, StatementLine
from api.cash import naming_first
from api.payment_matching import quoted_references
from api.statement_import import LineStatus, _import_line
from api.stripe_events import StripeEventError, StripeSignatureRefused
from workflows import creditor_reference
from workflows.cash import named_invoices

SAMPLE = Path(__file__).parent / "data" / "camt" / "statement.camt.053.001.08.xml"


# --- ISO 11649 creditor references ------------------------------------------------------------------


@pytest.mark.parametrize(
    "reference", ["RF18539007547034", "RF18 5390 0754 7034", "rf18539007547034", "RF712348231", "RF45G72UUR"]
)
def test_valid_references_from_the_standard_and_the_epc_guidance_are_accepted(reference):
    assert creditor_reference.normalized(reference) == "".join(reference.split()).upper()


@pytest.mark.parametrize(
    "reference", ["RF19539007547034", "RF18539007547035", "RF18", "XX18539007547034", "RF1853900754703#", ""]
)
def test_references_with_wrong_check_digits_or_characters_are_refused(reference):
    assert creditor_reference.normalized(reference) is None


def test_check_digits_are_computed_as_the_standard_does():
    assert creditor_reference.with_check_digits("539007547034") == "RF18539007547034"
    assert creditor_reference.with_check_digits("2348231") == "RF712348231"


def test_each_invoice_has_its_own_valid_reference_always_the_same():
    references = {creditor_reference.for_invoice(f"INV-2026-{n:04d}") for n in range(2000)}
    assert len(references) == 2000
    for reference in references:
        assert creditor_reference.normalized(reference) == reference and len(reference) <= 25
    assert creditor_reference.for_invoice("INV-2026-1107") == "RF7890OVQAR7366GXNY"  # printed in tests/data/camt
    assert creditor_reference.printed("RF18539007547034") == "RF18 5390 0754 7034"


# --- camt.053 / camt.054 ----------------------------------------------------------------------------------


def test_the_sample_statement_is_read_line_by_line():
    statement = camt.parse(SAMPLE.read_bytes())
    assert (statement.kind, statement.message_id) == ("camt.053", "STMT-20261204-0001")
    lines = statement.lines
    assert [(line.line, line.direction, line.booked, line.amount_minor, line.currency) for line in lines] == [
        (1, Direction.CREDIT, True, 100_000, "EUR"),
        (2, Direction.CREDIT, True, 40_000, "EUR"),
        (3, Direction.CREDIT, True, 7_550, "EUR"),
        (4, Direction.DEBIT, True, 1_200, "EUR"),
        (5, Direction.CREDIT, True, 40_000, "EUR"),
        (6, Direction.CREDIT, False, 25_000, "EUR"),
    ]
    assert lines[0].creditor_reference == "RF7890OVQAR7366GXNY" and lines[0].debtor == "Alpha Logistics SA"
    assert "INV-2026-1108" in lines[1].unstructured
    assert lines[0].value_date == date(2026, 12, 3)
    assert lines[0].received_at == datetime(2026, 12, 3, tzinfo=timezone.utc)
    # the bank's reference names a credit: the same one in the next day's statement is the same payment
    assert lines[4].payment_id == lines[1].payment_id
    assert len({line.payment_id for line in lines}) == 5
    assert camt.parse(SAMPLE.read_bytes()).lines[0].payment_id == lines[0].payment_id


CAMT054 = b"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.054.001.02">
 <BkToCstmrDbtCdtNtfctn>
  <GrpHdr><MsgId>NTF-1</MsgId><CreDtTm>2026-12-04T10:00:00</CreDtTm></GrpHdr>
  <Ntfctn><Id>NTF-1-1</Id><CreDtTm>2026-12-04T10:00:00</CreDtTm>
   <Acct><Id><IBAN>DE89370400440532013000</IBAN></Id></Acct>
   <Ntry><NtryRef>B7</NtryRef><Amt Ccy="EUR">300.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>BOOK</Sts>
    <BookgDt><Dt>2026-12-04</Dt></BookgDt><ValDt><Dt>2026-12-04</Dt></ValDt>
    <BkTxCd/>
    <NtryDtls>
     <TxDtls><Refs><EndToEndId>E1</EndToEndId></Refs><AmtDtls><TxAmt><Amt Ccy="EUR">100.00</Amt></TxAmt></AmtDtls>
      <RmtInf><Strd><CdtrRefInf><Ref>RF18 5390 0754 7034</Ref></CdtrRefInf></Strd></RmtInf></TxDtls>
     <TxDtls><Refs><EndToEndId>E2</EndToEndId></Refs><AmtDtls><TxAmt><Amt Ccy="EUR">200.00</Amt></TxAmt></AmtDtls>
      <RmtInf><Ustrd>Rechnung</Ustrd><Ustrd>INV-9</Ustrd></RmtInf></TxDtls>
    </NtryDtls>
   </Ntry>
  </Ntfctn>
 </BkToCstmrDbtCdtNtfctn>
</Document>"""


def test_a_camt054_batch_entry_is_one_line_per_transaction_in_the_older_version():
    statement = camt.parse(CAMT054)
    assert statement.kind == "camt.054"
    first, second = statement.lines
    assert (first.amount_minor, second.amount_minor) == (10_000, 20_000)
    assert first.booked and first.creditor_reference == "RF18 5390 0754 7034"
    assert second.unstructured == "Rechnung INV-9"
    assert first.payment_id != second.payment_id


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Document><BkToCstmrStmt><GrpHdr><MsgId>&lol3;</MsgId></GrpHdr></BkToCstmrStmt></Document>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE Document [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<Document><BkToCstmrStmt><GrpHdr><MsgId>&secret;</MsgId></GrpHdr></BkToCstmrStmt></Document>"""


@pytest.mark.parametrize("document", [BILLION_LAUGHS, XXE], ids=["billion-laughs", "xxe"])
def test_entity_expansion_and_external_entities_are_refused(document):
    with pytest.raises(StatementError, match="DTD or entities"):
        camt.parse(document)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"<Document><BkToCstmrStmt>", "not well-formed"),
        (
            b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"><CstmrCdtTrfInitn/></Document>',
            "not an ISO 20022 camt",
        ),
        (SAMPLE.read_bytes().replace(b'<Amt Ccy="EUR">75.50</Amt>', b'<Amt Ccy="EUR">75.505</Amt>', 1), "minor units"),
        (SAMPLE.read_bytes().replace(b'Ccy="EUR">1000.00', b'Ccy="XYZ">1000.00', 1), "currency"),
    ],
)
def test_a_document_that_is_not_a_readable_statement_is_refused_with_the_reason(document, message):
    with pytest.raises(StatementError, match=message):
        camt.parse(document)


# --- Stripe ---------------------------------------------------------------------------------------------

SECRET = "whsec_test_5f3c5beb0a9e4c"
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)


def stripe_header(body: bytes, secret: str = SECRET, at: datetime = NOW) -> str:
    """Stripe's scheme computed here with hmac, independently of the service's code."""
    timestamp = str(int(at.timestamp()))
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"


def payment_event(**object_fields) -> bytes:
    obj = {
        "id": "pi_3MtwBwLkdIwHu7ix28a3tqPa",
        "object": "payment_intent",
        "amount_received": 12550,
        "currency": "eur",
        "metadata": {"invoice_id": "INV-2026-0042"},
        **object_fields,
    }
    return json.dumps(
        {
            "id": "evt_1",
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": 1796385600,
            "data": {"object": obj},
        }
    ).encode()


def test_a_stripe_signature_made_with_the_endpoint_secret_is_accepted():
    body = payment_event()
    assert stripe_events.verify(SECRET, stripe_header(body), body, 300, NOW + timedelta(seconds=30)) == NOW


def test_a_fixed_stripe_test_vector_is_accepted():
    # `printf '1796385600.{}' | openssl dgst -sha256 -hmac whsec_test_5f3c5beb0a9e4c`
    digest = "1b1aa44deb5b7a0bbab2bccce1e65a25f9067ddeea9baee74713b4cef530195a"
    header = f"t=1796385600,v1={'0' * 64},v1={digest}"  # a second v1 (a secret being rolled) is allowed
    assert stripe_events.verify(SECRET, header, b"{}", 300, NOW) == datetime.fromtimestamp(1796385600, timezone.utc)


@pytest.mark.parametrize(
    ("header", "now", "message"),
    [
        (lambda body: stripe_header(body, secret="whsec_other"), NOW, "no v1 signature matches"),
        (lambda body: stripe_header(body), NOW + timedelta(seconds=301), "beyond the tolerance"),
        (lambda body: stripe_header(body, at=NOW + timedelta(minutes=10)), NOW, "beyond the tolerance"),
        (lambda body: stripe_header(body + b" "), NOW, "no v1 signature matches"),
        (lambda body: stripe_header(body).split(",v1=")[0], NOW, "no v1 signature"),
        (lambda body: "v1=abc", NOW, "no timestamp"),
        (lambda body: None, NOW, "no Stripe-Signature header"),
    ],
    ids=["wrong-secret", "stale", "future", "body-changed", "no-v1", "no-timestamp", "no-header"],
)
def test_stripe_signatures_that_do_not_hold_are_refused(header, now, message):
    body = payment_event()
    with pytest.raises(StripeSignatureRefused, match=message):
        stripe_events.verify(SECRET, header(body), body, 300, now)


def test_a_succeeded_payment_intent_is_a_payment_in_minor_units_and_upper_case_currency():
    reported = stripe_events.report(stripe_events.parse_event(payment_event()))
    assert reported is not None and not reported.refund
    assert reported.invoice_reference == "INV-2026-0042"
    assert (reported.payment.payment_id, reported.payment.amount_minor, reported.payment.currency) == (
        "pi_3MtwBwLkdIwHu7ix28a3tqPa",
        12550,
        "EUR",
    )
    assert reported.payment.received_at == datetime.fromtimestamp(1796385600, timezone.utc)


def test_a_refund_is_reported_as_such_and_other_events_are_not_used():
    refund = json.dumps(
        {
            "id": "evt_R",
            "type": "charge.refunded",
            "created": 1796385600,
            "data": {
                "object": {
                    "id": "ch_1",
                    "amount_refunded": 500,
                    "currency": "ron",
                    "payment_intent": "pi_1",
                    "metadata": {"invoice_id": "INV-7"},
                }
            },
        }
    )
    reported = stripe_events.report(stripe_events.parse_event(refund.encode()))
    assert reported is not None and reported.refund and reported.payment.payment_id == "evt_R"
    assert "5.00 RON" in reported.note and "records no refunds" in reported.note
    other = json.dumps({"id": "evt_O", "type": "customer.created", "created": 1, "data": {"object": {}}})
    assert stripe_events.report(stripe_events.parse_event(other.encode())) is None


def test_a_payment_event_without_an_amount_is_refused_with_the_field():
    with pytest.raises(StripeEventError, match="amount_received"):
        stripe_events.report(stripe_events.parse_event(payment_event(amount_received=None)))


def test_references_are_found_in_the_structured_remittance_and_in_free_text():
    line = camt.parse(SAMPLE.read_bytes()).lines[0]
    assert quoted_references(line) == ["RF7890OVQAR7366GXNY"]
    typed = replace(line, creditor_reference=None, unstructured="Invoice payment rf78 90OV QAR7 366G XNY, thank you")
    assert "RF7890OVQAR7366GXNY" in quoted_references(typed)
    assert quoted_references(replace(line, creditor_reference="RF00 1234", unstructured="RF99 nothing")) == []


@pytest.mark.parametrize("value_date", [date(1, 1, 1), date(9999, 12, 31)])
async def test_a_line_whose_value_date_no_payment_may_carry_is_not_recorded_and_says_why(value_date):
    """Refused before anything is looked up or recorded (no database is given), the rest of the file goes on."""
    line = StatementLine(
        line=3, statement_id="STMT-1", entry_ref="E3", key="k", direction=Direction.CREDIT, booked=True,
        amount_minor=1_000, currency="EUR", value_date=value_date, creditor_reference=None, unstructured="", debtor=None,
    )
    result = await _import_line(None, None, line, set())  # type: ignore[arg-type]
    assert result.status == LineStatus.IGNORED
    assert result.reason is not None and result.reason.startswith("not recorded:") and "2000" in result.reason


# --- a payment matched to one invoice, paid through its customer ---------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "pays INV-3 and INV-7", "INV-3 first please", "RF" + "9" * 30 + " INV-3 " + "x" * 600],
)
def test_the_matched_invoice_is_named_first_in_the_remittance_the_customer_gets(text):
    """The cash application pays the invoices a remittance names in its order: the matched one goes first even
    when the payer's text names another first (or the match was by the structured reference, not in the text)."""
    for invoice_id in ("INV-7", "INV-7."):  # the second is no single word of the text: named by its RF reference
        remittance = naming_first(invoice_id, text)
        assert len(remittance) <= 500
        assert named_invoices(remittance, ["INV-3", invoice_id])[0] == invoice_id
    assert naming_first("INV-7", text).startswith("INV-7")
    assert naming_first("INV-7.", text).startswith(creditor_reference.for_invoice("INV-7."))
